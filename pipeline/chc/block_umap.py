"""``BlockUMAP``: UMAP for the `topics` stage, reproducible and using every CPU core.

The same algorithm as umap-learn's ``UMAP.fit_transform`` (McInnes et al. 2018) with the
same defaults, in four steps, each in its own module:

1. k nearest neighbours: faiss (``umap_graph.nearest_neighbors``), where umap-learn uses
   pynndescent's NN-descent; exact below 20k rows, a seeded IVF index above;
2. the fuzzy graph: ``umap_graph.fuzzy_graph``, umap-learn's ``fuzzy_simplicial_set``;
3. the initial layout: ``umap_graph.spectral_init``, umap-learn's spectral layout, scaled
   and jittered as umap-learn does;
4. the layout SGD: ``umap_layout.optimize_layout``, umap-learn's arithmetic on ``blocks``
   vertex blocks side by side (``blocks=1``: umap-learn's layout bit for bit).

So it compiles almost nothing (umap-learn's import alone compiles pynndescent for ~18 s in a
fresh numba cache) and lays out on several cores. Same params, same output, whatever the
number of threads; the topics it gives are compared with BERTopic's in README "Speed".
With ``cache`` (``topics.umap_cache``) the output and the k-NN graph are kept on disk, so a
rerun after an HDBSCAN or naming change skips UMAP and one after a layout change skips the
k-NN search.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .backends import usable_cpus
from .umap_cache import cache_key, digest, environment, save_atomic
from .umap_graph import check_metric, fuzzy_graph, nearest_neighbors, spectral_init
from .umap_layout import INT32_MAX, INT32_MIN, find_ab_params, optimize_layout

INITS = ("spectral", "random", "pca")
#: rows from which the layout shows a progress bar
PROGRESS_FROM = 20_000


class BlockUMAP:
    """UMAP with umap-learn's parameters and defaults (those BERTopic sets by default:
    5 components, 15 neighbours, min_dist 0, cosine), plus ``blocks`` (the layout's vertex
    blocks: the result depends on it), ``threads`` (how many run at once: the result does
    not depend on it; default every usable CPU) and ``knn_probes`` (IVF lists searched per
    point above 20k rows). ``reused`` says what the last fit read from ``cache``:
    ``"output"``, ``"k-NN graph"`` or ``None``."""

    def __init__(
        self,
        n_components: int = 5,
        n_neighbors: int = 15,
        min_dist: float = 0.0,
        metric: str = "cosine",
        random_state: int = 42,
        n_epochs: int | None = None,
        init: str = "spectral",
        *,
        blocks: int = 4,
        threads: int | None = None,
        knn_probes: int = 32,
        spread: float = 1.0,
        learning_rate: float = 1.0,
        negative_sample_rate: int = 5,
        repulsion_strength: float = 1.0,
        cache: str | Path | None = None,
    ) -> None:
        check_metric(metric)
        if init not in INITS:
            raise ValueError(f"topics.umap.init = {init!r} must be one of {list(INITS)}")
        if not isinstance(random_state, int):
            raise ValueError("BlockUMAP needs an integer random_state (topics.umap)")
        self.n_components = n_components
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.metric = metric
        self.random_state = random_state
        self.n_epochs = n_epochs
        self.init = init
        self.blocks = blocks
        self.threads = threads
        self.knn_probes = knn_probes
        self.spread = spread
        self.learning_rate = learning_rate
        self.negative_sample_rate = negative_sample_rate
        self.repulsion_strength = repulsion_strength
        self.cache_dir = None if cache is None else Path(cache)
        self.reused: str | None = None

    def fit_transform(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if len(X) <= self.n_neighbors:
            raise ValueError(
                f"UMAP needs more rows than n_neighbors = {self.n_neighbors}; got {len(X)}"
            )
        self.reused = None
        data = digest(X)
        output = self._cached("umap", self._key(data, self._options()), ".npy")
        if output is not None and output.exists():
            self.reused = "output"
            return np.load(output, allow_pickle=False)
        embedding = self._fit(X, data)
        if output is not None:
            save_atomic(output, lambda partial: np.save(partial, embedding))
        return embedding

    def _fit(self, X: np.ndarray, data) -> np.ndarray:
        threads = self.threads or usable_cpus()
        indices, distances = self._neighbours(X, data, threads)
        graph = fuzzy_graph(indices, distances).tocoo()
        graph.sum_duplicates()
        default_epochs = 500 if len(X) <= 10_000 else 200
        n_epochs = self.n_epochs or default_epochs
        # umap-learn drops the edges too weak to be sampled once in the run
        prune_by = n_epochs if n_epochs > 10 else default_epochs
        graph.data[graph.data < graph.data.max() / float(prune_by)] = 0.0
        graph.eliminate_zeros()

        rng = np.random.RandomState(self.random_state)
        start = self._initial_layout(X, graph, rng)
        start = (10.0 * (start - start.min(0)) / (start.max(0) - start.min(0))).astype(
            np.float32, order="C"
        )
        rng_state = rng.randint(INT32_MIN, INT32_MAX, 3).astype(np.int64)
        a, b = find_ab_params(self.spread, self.min_dist)
        return optimize_layout(
            start, graph.row, graph.col, graph.data, n_epochs, a, b, rng_state,
            blocks=self.blocks, threads=threads, gamma=self.repulsion_strength,
            initial_alpha=self.learning_rate, negative_sample_rate=self.negative_sample_rate,
            progress=len(X) >= PROGRESS_FROM,
        )  # fmt: skip

    def _initial_layout(self, X, graph, rng: np.random.RandomState) -> np.ndarray:
        """umap-learn's init: spectral or PCA scaled to [-10, 10] plus N(0, 1e-4) jitter
        (``noisy_scale_coords``), or uniform in [-10, 10]."""
        if self.init == "random":
            return rng.uniform(-10.0, 10.0, size=(len(X), self.n_components)).astype(np.float32)
        if self.init == "spectral":
            coords = spectral_init(graph, self.n_components, X, self.metric, rng)
        else:
            from sklearn.decomposition import PCA

            coords = PCA(n_components=self.n_components, random_state=rng).fit_transform(X)
        coords = (coords * (10.0 / np.abs(coords).max())).astype(np.float32)
        return coords + rng.normal(scale=0.0001, size=coords.shape).astype(np.float32)

    def _neighbours(self, X: np.ndarray, data, threads: int):
        """(indices, distances) of the k-NN graph, from ``cache`` or computed (and kept)."""
        options = [self.n_neighbors, self.metric, self.random_state, self.knn_probes]
        path = self._cached("knn", self._key(data, options), ".npz")
        if path is not None and path.exists():
            stored = np.load(path, allow_pickle=False)
            self.reused = "k-NN graph"
            return stored["indices"], stored["distances"]
        indices, distances = nearest_neighbors(
            X, self.n_neighbors, self.metric, self.random_state, self.knn_probes, threads
        )
        if path is not None:
            save_atomic(
                path, lambda partial: np.savez(partial, indices=indices, distances=distances)
            )
        return indices, distances

    def _options(self) -> list:
        names = ("n_components", "n_neighbors", "min_dist", "metric", "random_state", "n_epochs")
        names += ("init", "blocks", "knn_probes", "spread", "learning_rate")
        names += ("negative_sample_rate", "repulsion_strength")
        return [(name, getattr(self, name)) for name in names]

    def _cached(self, kind: str, key: str, suffix: str) -> Path | None:
        return None if self.cache_dir is None else self.cache_dir / f"block_{kind}_{key}{suffix}"

    def _key(self, data, parts: list) -> str:
        """``parts`` and what the bits depend on beyond them (library versions, CPU)."""
        return cache_key(data, parts + environment(("faiss-cpu", "numba", "numpy", "scipy")))
