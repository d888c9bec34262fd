"""UMAP whose k-nearest-neighbour graph is computed once and kept on disk (README "Speed").

umap-learn's fit spends its first phase on NN-descent (pynndescent) over the sentence
embeddings; that graph depends only on the embeddings, ``n_neighbors``, ``metric``,
``low_memory`` and the seed, not on ``n_components``, ``min_dist``, ``n_epochs``, ``init`` or
anything of HDBSCAN. ``CachedKnnUMAP`` computes it exactly as ``UMAP.fit`` would (the same
``umap.umap_.nearest_neighbors`` call on the same ``RandomState``), stores it with the state
that random generator is left in, and on a later fit with the same key hands both to UMAP
(``precomputed_knn`` and a ``RandomState`` at that state). The layout then draws the same
random numbers it would have drawn after its own NN search, so the output is identical to a
plain seeded ``UMAP.fit_transform`` (tests/test_topics_knn.py proves it), cold or warm.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: below this many rows umap-learn computes exact distances instead of NN-descent
SMALL_DATA = 4096


class CachedKnnUMAP:
    """A seeded umap-learn ``UMAP`` (``options`` as its keyword arguments) with the k-NN graph
    cached under ``cache_dir``. Needs an integer ``random_state`` (the cache is keyed by it)."""

    def __init__(self, cache_dir: str | Path, **options) -> None:
        if not isinstance(options.get("random_state"), int):
            raise ValueError("CachedKnnUMAP needs an integer random_state (topics.umap)")
        self.cache_dir = Path(cache_dir)
        self.options = options
        self.n_neighbors = options.get("n_neighbors", 15)
        self.last_fit_cached: bool | None = None  # whether the last fit read the graph

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        from umap import UMAP

        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(X) < SMALL_DATA:  # umap-learn's exact path: no NN-descent to save
            self.last_fit_cached = None
            return UMAP(**self.options).fit_transform(X)
        indices, distances, rng = self._graph(X)
        model = UMAP(**{**self.options, "random_state": rng}, precomputed_knn=(indices, distances))
        return model.fit_transform(X)

    def key(self, X: np.ndarray) -> str:
        import pynndescent
        import umap

        digest = hashlib.sha256(X.tobytes())
        digest.update(repr(X.shape).encode())
        for part in (
            self.n_neighbors,
            self.options.get("metric", "euclidean"),
            self.options.get("low_memory", True),
            self.options["random_state"],
            umap.__version__,
            pynndescent.__version__,
        ):
            digest.update(repr(part).encode())
        return digest.hexdigest()[:24]

    def _graph(self, X: np.ndarray):
        """(indices, distances, RandomState after the NN search), from disk or computed."""
        path = self.cache_dir / f"knn_{self.key(X)}.npz"
        rng = np.random.RandomState(self.options["random_state"])
        if path.exists():
            stored = np.load(path, allow_pickle=False)
            rng.set_state(
                (
                    "MT19937",
                    stored["mt_keys"],
                    int(stored["mt_pos"]),
                    int(stored["has_gauss"]),
                    float(stored["cached_gaussian"]),
                )
            )
            self.last_fit_cached = True
            return stored["indices"], stored["distances"], rng
        from umap.umap_ import nearest_neighbors

        indices, distances, _ = nearest_neighbors(
            X,
            self.n_neighbors,
            self.options.get("metric", "euclidean"),
            {},
            False,  # angular_rp_forest: UMAP's default
            rng,
            self.options.get("low_memory", True),
            use_pynndescent=True,
            n_jobs=self.options.get("n_jobs", 1),
            verbose=self.options.get("verbose", False),
        )
        _, keys, pos, has_gauss, gaussian = rng.get_state()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".tmp.npz")
        np.savez(
            partial,
            indices=indices,
            distances=distances,
            mt_keys=keys,
            mt_pos=pos,
            has_gauss=has_gauss,
            cached_gaussian=gaussian,
        )
        partial.replace(path)  # a killed fit never leaves half a graph under the real name
        log.info("topics: k-NN graph cached in %s", path)
        self.last_fit_cached = False
        return indices, distances, rng
