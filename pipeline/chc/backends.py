"""The two replaceable sub-models of topic clustering: UMAP (reducer) and HDBSCAN (clusterer).

``backend`` picks the implementation: ``cpu`` (umap-learn + hdbscan), ``cuml`` (RAPIDS cuML's
GPU UMAP/HDBSCAN, same parameters; install the ``[gpu]`` extra on a CUDA machine), or
``auto`` (cuML when it imports, else CPU with a message saying so). Anything with
``fit_transform(X)`` / ``fit(X).labels_`` can also be passed to ``TopicModel`` directly.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

BACKENDS = ("cpu", "cuml", "auto")
#: UMAP on the CPU: umap-learn (BERTopic's exact fit) or ours, ``BlockUMAP`` (block_umap.py)
ENGINES = ("umap-learn", "block")


def cuml_available() -> bool:
    try:
        import cuml  # noqa: F401
    except Exception:  # ImportError, or a CUDA runtime error on a machine without a GPU
        return False
    return True


def resolve_backend(backend: str) -> str:
    """``cpu`` or ``cuml``; ``cuml`` requested but missing is an error, ``auto`` falls back."""
    if backend not in BACKENDS:
        raise ValueError(f"topics.backend = {backend!r} must be one of {list(BACKENDS)}")
    if backend == "cpu":
        return "cpu"
    if cuml_available():
        return "cuml"
    if backend == "cuml":
        raise ImportError(
            "topics.backend = cuml but cuML cannot be imported: on a CUDA machine install the "
            "gpu extra (pip install -e '.[gpu]'), or set topics.backend to cpu or auto"
        )
    log.warning("topics.backend = auto: cuML is not importable, using umap-learn + hdbscan")
    return "cpu"


def make_reducer(
    backend: str = "cpu",
    *,
    n_components: int = 5,
    n_neighbors: int = 15,
    min_dist: float = 0.0,
    metric: str = "cosine",
    random_state: int | None = 42,
    n_epochs: int | None = None,
    init: str = "spectral",
    low_memory: bool = True,
    verbose: bool = False,
    cache: str | None = None,
    engine: str = "umap-learn",
    blocks: int = 4,
):
    """UMAP with BERTopic's settings by default. ``random_state`` pins the layout (and makes
    umap-learn single-threaded, the price of identical output twice in a row).
    ``n_epochs=None`` is umap-learn's default (200 above 10k points, else 500).
    ``cache``: a folder keeping UMAP's output, k-NN graph and initial layout between fits
    (``CachedUMAP``, the same output as a plain UMAP); used on the CPU with a seed, ignored
    otherwise. ``engine`` (CPU only): ``umap-learn``, or ``block``, our reproducible
    multi-core UMAP (``BlockUMAP``, ``blocks`` vertex blocks in its layout)."""
    options = dict(
        n_components=n_components,
        n_neighbors=n_neighbors,
        min_dist=min_dist,
        metric=metric,
        random_state=random_state,
        n_epochs=n_epochs,
        init=init,
        verbose=verbose,
    )
    if resolve_backend(backend) == "cuml":
        from cuml.manifold import UMAP as CumlUMAP

        return CumlUMAP(**options)
    if engine not in ENGINES:
        raise ValueError(f"topics.umap.engine = {engine!r} must be one of {list(ENGINES)}")
    if engine == "block":
        from .block_umap import BlockUMAP

        del options["verbose"]
        return BlockUMAP(**options, blocks=blocks, cache=cache)
    # A seeded umap-learn runs on one thread anyway; saying so silences its warning.
    n_jobs = 1 if random_state is not None else -1
    if cache is not None and random_state is not None:
        from .umap_cache import CachedUMAP  # imports umap only if it must fit

        return CachedUMAP(cache, low_memory=low_memory, n_jobs=n_jobs, **options)
    from umap import UMAP

    from .numba_kernels import cache_kernels

    cache_kernels()
    return UMAP(low_memory=low_memory, n_jobs=n_jobs, **options)


def make_clusterer(
    backend: str = "cpu",
    *,
    min_cluster_size: int = 10,
    min_samples: int | None = None,
    cluster_selection_method: str = "eom",
):
    """HDBSCAN on the reduced coordinates (euclidean), BERTopic's settings by default.
    ``min_samples=None`` means ``min_cluster_size`` (the library default)."""
    options = dict(
        min_cluster_size=min_cluster_size,
        min_samples=min_samples,
        cluster_selection_method=cluster_selection_method,
        metric="euclidean",
    )
    if resolve_backend(backend) == "cuml":
        from cuml.cluster import HDBSCAN as CumlHDBSCAN

        return CumlHDBSCAN(**options)
    from hdbscan import HDBSCAN

    # hdbscan's default of 4 core-distance workers costs ~1.8 s more than one per CPU on 2
    # CPUs at 100k captions (process start-up); the labels do not depend on it.
    return HDBSCAN(**options, core_dist_n_jobs=usable_cpus())


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):  # Linux: the CPUs this process may run on
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
