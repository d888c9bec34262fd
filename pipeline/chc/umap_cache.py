"""UMAP whose output and k-nearest-neighbour graph are kept on disk between fits.

A rerun of `topics` after a params change (the normal experiment loop) need not compute again
what those params do not touch (README "Speed"):

* **the output**, when no UMAP param changed (a change to ``topics.hdbscan`` or the
  topic-naming params): keyed by the embeddings, every UMAP option, and what the layout's bits
  depend on beyond them (the umap-learn, pynndescent and numba versions and the CPU numba
  compiles for);
* **the k-NN graph**, when only layout params changed (``n_components``, ``min_dist``,
  ``n_epochs``, ``init``): umap-learn's fit spends its first phase on NN-descent (pynndescent),
  and that graph depends only on the embeddings, ``n_neighbors``, ``metric``, ``low_memory``
  and the seed. ``CachedUMAP`` computes it exactly as ``UMAP.fit`` would (the same
  ``umap.umap_.nearest_neighbors`` call on the same ``RandomState``), stores it with the state
  that random generator is left in, and on a later fit hands both to UMAP (``precomputed_knn``
  and a ``RandomState`` at that state), so the layout draws the random numbers it would have
  drawn after its own NN search;
* **the initial layout** (spectral init, ~7 s at 100k), when only options that act on the SGD
  alone changed (``LAYOUT_ONLY``: ``min_dist``, ``spread``, ``learning_rate``, ...): kept with
  the generator's state after it and handed back to UMAP as an array ``init``. ``n_epochs``
  is not among them: umap-learn prunes the graph's weakest edges by it before the init.

Every way the result is bit for bit a plain seeded ``UMAP.fit_transform``
(tests/test_umap_cache.py proves it). Files are written under a temporary name and renamed,
so an interrupted fit never leaves half a file under the real name.
"""

from __future__ import annotations

import hashlib
import logging
import os
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: below this many rows umap-learn computes exact distances instead of NN-descent
SMALL_DATA = 4096

#: UMAP options that act on the SGD only, not on the k-NN graph or the initial layout
LAYOUT_ONLY = frozenset(
    {"min_dist", "spread", "a", "b", "learning_rate", "negative_sample_rate"}
    | {"repulsion_strength", "verbose"}
)


class CachedUMAP:
    """A seeded umap-learn ``UMAP`` (``options`` as its keyword arguments) whose output and
    k-NN graph are cached under ``cache_dir``. Needs an integer ``random_state`` (both keys
    hold it). ``reused`` says what the last fit read from disk: ``"output"``,
    ``"k-NN graph and init"``, ``"k-NN graph"`` or ``None`` (nothing)."""

    def __init__(self, cache_dir: str | Path, **options) -> None:
        if not isinstance(options.get("random_state"), int):
            raise ValueError("CachedUMAP needs an integer random_state (topics.umap)")
        self.cache_dir = Path(cache_dir)
        self.options = options
        self.n_neighbors = options.get("n_neighbors", 15)
        self.reused: str | None = None

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        data = digest(X)
        output = self.cache_dir / f"umap_{self.output_key(data)}.npy"
        if output.exists():
            self.reused = "output"
            return np.load(output, allow_pickle=False)
        self.reused = None
        from umap import UMAP  # here, not above: a read output needs neither umap nor numba

        from .numba_kernels import cache_kernels

        cache_kernels()

        if len(X) < SMALL_DATA:  # umap-learn's exact path: no NN-descent to save
            embedding = UMAP(**self.options).fit_transform(X)
        else:
            embedding = self._fit_from_graph(X, data)
        save_atomic(output, lambda partial: np.save(partial, embedding))
        return embedding

    def graph_key(self, data: hashlib._Hash) -> str:
        """Key of the k-NN graph: the embeddings' digest and what NN-descent reads."""
        parts = [
            self.n_neighbors,
            self.options.get("metric", "euclidean"),
            self.options.get("low_memory", True),
            self.options["random_state"],
        ]
        return cache_key(data, parts + environment())

    def output_key(self, data: hashlib._Hash) -> str:
        """Key of the output: the embeddings' digest and every UMAP option."""
        return cache_key(data, [sorted(self.options.items())] + environment())

    def init_key(self, data: hashlib._Hash) -> str:
        """Key of the initial layout: the graph's key and every option but the layout-only."""
        kept = sorted((k, v) for k, v in self.options.items() if k not in LAYOUT_ONLY)
        return cache_key(data, [self.graph_key(data), kept])

    def _fit_from_graph(self, X: np.ndarray, data: hashlib._Hash) -> np.ndarray:
        """UMAP on the cached (or computed) k-NN graph. Its initial layout is read from disk
        when only layout-only options changed since it was kept (an array ``init`` then stands
        in for it, with the random generator at the state the init left it in); otherwise it is
        computed and kept."""
        from umap import UMAP

        indices, distances, rng = self._graph(X, data)
        knn = dict(precomputed_knn=(indices, distances))
        path = self.cache_dir / f"init_{self.init_key(data)}.npz"
        if path.exists():
            stored = np.load(path, allow_pickle=False)
            self.reused = "k-NN graph and init"
            options = {**self.options, "init": stored["init"], "random_state": _generator(stored)}
            return UMAP(**options, **knn).fit_transform(X)
        with _captured_init() as captured:
            embedding = UMAP(**{**self.options, "random_state": rng}, **knn).fit_transform(X)
        if len(captured) == 1:  # spectral, tswspectral or pca: computed once, as expected
            init, state = captured[0]
            # UMAP jitters a given init that has repeated rows: that one cannot stand in
            if len(np.unique(init, axis=0)) == len(init):
                save_atomic(path, lambda partial: np.savez(partial, init=init, **state))
        return embedding

    def _graph(self, X: np.ndarray, data: hashlib._Hash):
        """(indices, distances, RandomState after the NN search), from disk or computed."""
        path = self.cache_dir / f"knn_{self.graph_key(data)}.npz"
        if path.exists():
            stored = np.load(path, allow_pickle=False)
            self.reused = "k-NN graph"
            return stored["indices"], stored["distances"], _generator(stored)
        rng = np.random.RandomState(self.options["random_state"])
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
        graph = dict(indices=indices, distances=distances, **_state(rng))
        save_atomic(path, lambda partial: np.savez(partial, **graph))
        log.info("topics: k-NN graph cached in %s", path)
        return indices, distances, rng


def _state(rng: np.random.RandomState) -> dict:
    _, keys, pos, has_gauss, gaussian = rng.get_state()
    return dict(mt_keys=keys, mt_pos=pos, has_gauss=has_gauss, cached_gaussian=gaussian)


def _generator(stored) -> np.random.RandomState:
    """A RandomState at the state ``_state`` stored."""
    rng = np.random.RandomState()
    rng.set_state(
        (
            "MT19937",
            stored["mt_keys"],
            int(stored["mt_pos"]),
            int(stored["has_gauss"]),
            float(stored["cached_gaussian"]),
        )
    )
    return rng


@contextmanager
def _captured_init():
    """Records each (initial layout, random-generator state after it) umap-learn computes.

    umap-learn has no hook between its initial layout and the SGD that follows, and computes
    the layout inside ``simplicial_set_embedding``; every non-random init ends in
    ``noisy_scale_coords`` (scale to [-10, 10] plus seeded noise), so its result and the
    generator after it are the whole state the SGD starts from."""
    import umap.umap_ as umap_module

    original, captured = umap_module.noisy_scale_coords, []

    def recording(coords, random_state, *args, **kwargs):
        result = original(coords, random_state, *args, **kwargs)
        captured.append((result.copy(), _state(random_state)))
        return result

    umap_module.noisy_scale_coords = recording
    try:
        yield captured
    finally:
        umap_module.noisy_scale_coords = original


def digest(X: np.ndarray) -> hashlib._Hash:
    digest = hashlib.sha256(X.tobytes())
    digest.update(repr(X.shape).encode())
    return digest


def cache_key(data: hashlib._Hash, parts: list) -> str:
    digest = data.copy()
    for part in parts:
        digest.update(repr(part).encode())
    return digest.hexdigest()[:24]


def environment(libraries=("umap-learn", "pynndescent", "numba")) -> list[str]:
    """What the bits of a fit depend on beyond the inputs: the ``libraries``' versions (read
    from the installed metadata, without importing them; "?" for one not installed under
    that name) and the CPU numba compiles for (README "Same params, same bytes")."""
    import llvmlite.binding

    cpu = os.environ.get("NUMBA_CPU_NAME") or llvmlite.binding.get_host_cpu_name()
    return [_installed_version(name) for name in libraries] + [cpu]


def _installed_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:  # faiss-gpu installed instead of faiss-cpu, say
        return "?"


def save_atomic(path: Path, write) -> None:
    """``write(partial)`` then rename, so no reader ever sees half a file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.tmp{path.suffix}")
    write(partial)
    partial.replace(path)
