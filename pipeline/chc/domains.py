"""Visual domain clustering (GRAM 3.2): k-means on frozen image features inside each topic.

Our choices (the paper gives no U and no k-means setting):

* Features are L2-normalised first (so k-means groups by the cosine geometry CLIP uses).
* faiss k-means, seeded, with ``max_points_per_centroid`` raised to the topic's size so faiss
  never silently fits on a subsample, and one OpenMP thread so the sums are identical on any
  machine (topics are small; speed does not suffer).
* ``k`` is clipped to what a topic can hold: ``min(k, floor(n / min_points_per_domain))``,
  at least 1, so every domain can give a support set of ``min_points_per_domain`` images.
  k-means can still leave a domain smaller than that; it is reported, not hidden.
* Domains are renumbered by size within a topic, largest first (ties: faiss's order).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
from tqdm import tqdm


def domain_count(n_points: int, k: int, min_points_per_domain: int = 1) -> int:
    """How many domains a topic of ``n_points`` gets: ``k`` clipped to its size, >= 1."""
    if k < 1 or min_points_per_domain < 1:
        raise ValueError(
            f"domains: k = {k} and min_points_per_domain = "
            f"{min_points_per_domain} must both be >= 1"
        )
    return max(1, min(k, n_points // min_points_per_domain))


@contextmanager
def _faiss_threads(n: int):
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def kmeans_domains(
    features: np.ndarray,
    k: int,
    *,
    min_points_per_domain: int = 1,
    seed: int = 0,
    niter: int = 25,
    nredo: int = 5,
) -> np.ndarray:
    """Domain id (0 = largest) of each row of ``features`` [n, d].

    faiss starts from random points (no k-means++), so it keeps the best of ``nredo`` runs
    to avoid merging two clear groups while splitting a third."""
    features = np.asarray(features, dtype=np.float32)
    n = len(features)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    clusters = domain_count(n, k, min_points_per_domain)
    if clusters == 1:
        return np.zeros(n, dtype=np.int64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    unit = np.ascontiguousarray(features / np.maximum(norms, 1e-12), dtype=np.float32)
    kmeans = make_kmeans(unit.shape[1], clusters, n, seed=seed, niter=niter, nredo=nredo)
    with _faiss_threads(1):
        kmeans.train(unit)
        _, assigned = kmeans.index.search(unit, 1)
    return _by_size(assigned.ravel().astype(np.int64))


def make_kmeans(dim: int, k: int, n_points: int, *, seed: int, niter: int, nredo: int = 5):
    """faiss k-means that trains on all ``n_points`` (no subsampling) with a fixed seed."""
    import faiss

    return faiss.Kmeans(
        dim,
        k,
        niter=niter,
        nredo=nredo,
        seed=seed,
        max_points_per_centroid=n_points,  # faiss subsamples above k * this: never here
        min_points_per_centroid=1,  # we clip k ourselves; this silences faiss's warning
        verbose=False,
    )


def cluster_domains(
    features: np.ndarray,
    topic_ids: np.ndarray,
    k: int,
    *,
    min_points_per_domain: int = 1,
    seed: int = 0,
    niter: int = 25,
    nredo: int = 5,
) -> np.ndarray:
    """Domain of every row, k-means run separately inside each topic (noise rows: -1)."""
    topic_ids = np.asarray(topic_ids)
    if len(features) != len(topic_ids):
        raise ValueError(
            f"cluster_domains: {len(features)} feature rows but {len(topic_ids)} topic ids"
        )
    domains = np.full(len(topic_ids), -1, dtype=np.int64)
    for topic in tqdm(np.unique(topic_ids[topic_ids >= 0]), desc="domains", leave=False):
        rows = np.flatnonzero(topic_ids == topic)
        domains[rows] = kmeans_domains(
            features[rows],
            k,
            min_points_per_domain=min_points_per_domain,
            seed=seed,
            niter=niter,
            nredo=nredo,
        )
    return domains


def _by_size(labels: np.ndarray) -> np.ndarray:
    found, sizes = np.unique(labels, return_counts=True)
    order = found[np.lexsort((found, -sizes))]
    relabel = np.empty(int(found.max()) + 1, dtype=np.int64)
    relabel[order] = np.arange(len(order))
    return relabel[labels]
