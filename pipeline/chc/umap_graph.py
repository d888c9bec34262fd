"""The graph half of UMAP for the block engine: k-NN by faiss, UMAP's fuzzy graph, its spectral
initial layout.

Why not umap-learn here: importing it imports pynndescent, whose eagerly typed numba kernels
compile for ~18 s (2 cores) in a process without numba's cache, and NN-descent then compiles
~12 s more of kernels that no cache can keep (they take a jitted distance as an argument);
both are paid before a single point is laid out (README "Speed"). This module computes the same
objects as umap-learn 0.5 from faiss, numpy and scipy, which compile nothing:

* ``nearest_neighbors``: each point's ``k`` nearest (itself first), exact below
  ``EXACT_BELOW`` rows; above, a seeded faiss IVF index, then one round of NN-descent's idea
  (Dong et al. 2011: a neighbour of a neighbour is likely a neighbour) over the graph made
  symmetric, which lifts its recall from 0.95 to 0.986 for ~2 s at 100k captions;
* ``fuzzy_graph``: ``umap.umap_.fuzzy_simplicial_set`` on a given k-NN (tests compare them);
* ``spectral_init``: ``umap.spectral.spectral_layout`` (the same eigenvectors, found as the
  largest of the normalised adjacency rather than the smallest of the Laplacian, which
  ARPACK reaches several times faster), including its layout of a graph in several pieces.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph
import scipy.sparse.linalg

from .backends import usable_cpus

#: below this many rows the k-NN is exact (one matrix product); above, a faiss IVF index
EXACT_BELOW = 20_000
#: umap-learn's constants (umap/umap_.py)
SMOOTH_K_TOLERANCE = 1e-5
MIN_K_DIST_SCALE = 1e-3
METRICS = ("cosine", "euclidean")


def nearest_neighbors(
    X: np.ndarray, k: int, metric: str, seed: int, probes: int = 32, threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each [n, k]: every row's ``k`` nearest rows, itself first at
    distance 0, by ``metric`` (cosine: 1 - cosine similarity; euclidean).

    Exact below ``EXACT_BELOW`` rows. Above, a faiss IVF index with ``4 sqrt(n)`` lists
    (k-means seeded by ``seed``) searched in the ``probes`` lists nearest each row, then
    ``refine``: deterministic for a given machine, and about NN-descent's recall (README
    "Speed": recall, and why it matters for the topics)."""
    import faiss

    check_metric(metric)
    threads = threads or usable_cpus()
    faiss.omp_set_num_threads(threads)
    X = np.ascontiguousarray(X, dtype=np.float32)
    n, dim = X.shape
    if metric == "cosine":
        X = X / np.linalg.norm(X, axis=1, keepdims=True)
    inner = metric == "cosine"
    flat = faiss.IndexFlatIP(dim) if inner else faiss.IndexFlatL2(dim)
    if n < EXACT_BELOW:
        flat.add(X)
        scores, indices = flat.search(X, k)
        distances = 1.0 - scores if inner else np.sqrt(np.maximum(scores, 0.0))
        return _self_first(indices, np.maximum(distances, 0.0).astype(np.float32))
    # vectors stored in bfloat16: half the memory traffic of the scan, which is what limits
    # it; the distances of the neighbours found are then computed again in float32
    lists = int(4 * np.sqrt(n))
    kind = faiss.METRIC_INNER_PRODUCT if inner else faiss.METRIC_L2
    index = faiss.IndexIVFScalarQuantizer(flat, dim, lists, faiss.ScalarQuantizer.QT_bf16, kind)
    index.cp.seed = seed
    index.cp.max_points_per_centroid = 40  # k-means on a seeded sample: half the time, same recall
    index.train(X)
    index.add(X)
    index.nprobe = min(probes, lists)
    _, indices = index.search(X, k)
    indices, distances = _sorted(indices, _distances(X, indices, inner))
    return refine(X, *_self_first(indices, distances), inner, threads)


def _distances(X, indices, inner: bool, chunk: int = 8192) -> np.ndarray:
    """float32 distances from each row to the rows ``indices`` names (-1: infinity)."""
    distances = np.empty(indices.shape, dtype=np.float32)
    for start in range(0, len(X), chunk):
        rows = slice(start, start + chunk)
        neighbours = X[np.maximum(indices[rows], 0)]
        if inner:
            block = 1.0 - np.einsum("nd,nkd->nk", X[rows], neighbours)
        else:
            block = np.linalg.norm(X[rows, None, :] - neighbours, axis=2)
        distances[rows] = np.where(indices[rows] >= 0, np.maximum(block, 0.0), np.inf)
    return distances


def _sorted(indices, distances):
    order = np.argsort(distances, axis=1, kind="stable")
    return np.take_along_axis(indices, order, axis=1), np.take_along_axis(distances, order, axis=1)


def refine(X, indices, distances, inner: bool, threads: int, chunks: int = 64):
    """One round of neighbours-of-neighbours over the k-NN made symmetric: each row keeps
    the ``k`` nearest of its neighbours, the rows that have it as a neighbour, and their
    neighbours. An IVF index misses the neighbours across the border of a row's lists, and
    those are what this finds (each row is computed from the old graph alone, in chunks on
    ``threads`` threads: the same result for any number of threads)."""
    indices, distances = _with_reverse(indices, distances)
    new_indices, new_distances = np.empty_like(indices), np.empty_like(distances)
    bounds = np.linspace(0, len(X), chunks + 1).astype(np.int64)

    def run(chunk: int) -> None:
        _refine_rows(
            X, indices, distances, bounds[chunk], bounds[chunk + 1], new_indices,
            new_distances, inner,
        )  # fmt: skip

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(run, range(chunks)))
    return _self_first(new_indices, new_distances)


def _with_reverse(indices, distances):
    """Each row's ``k`` nearest among its neighbours and the rows that have it as one (the
    distance is symmetric, so nothing is computed)."""
    n, k = indices.shape
    rows = np.repeat(np.arange(n), k)
    found = indices.ravel() >= 0
    source = np.concatenate([rows[found], indices.ravel()[found]])
    target = np.concatenate([indices.ravel()[found], rows[found]])
    distance = np.concatenate([distances.ravel()[found], distances.ravel()[found]])
    order = np.lexsort((target, distance, source))
    source, target, distance = source[order], target[order], distance[order]
    _, first = np.unique(source * np.int64(n) + target, return_index=True)
    first.sort()
    source, target, distance = source[first], target[first], distance[first]
    rank = np.arange(len(source)) - np.searchsorted(source, source)
    keep = rank < k
    out_indices = np.full((n, k), -1, dtype=indices.dtype)
    out_distances = np.full((n, k), np.inf, dtype=np.float32)
    out_indices[source[keep], rank[keep]] = target[keep]
    out_distances[source[keep], rank[keep]] = distance[keep]
    return out_indices, out_distances


@numba.njit(nogil=True, fastmath=True, cache=True)
def _refine_rows(X, indices, distances, first, stop, out_indices, out_distances, inner):
    k = indices.shape[1]
    for i in range(first, stop):
        best = indices[i].copy()
        best_distance = distances[i].copy()
        for a in range(1, k):
            neighbour = indices[i, a]
            if neighbour < 0:
                continue
            for b in range(1, k):
                candidate = indices[neighbour, b]
                if candidate < 0 or candidate == i:
                    continue
                seen = False
                for q in range(k):
                    if best[q] == candidate:
                        seen = True
                        break
                if seen:
                    continue
                total = np.float32(0.0)
                if inner:
                    for t in range(X.shape[1]):
                        total += X[i, t] * X[candidate, t]
                    distance = max(np.float32(1.0) - total, np.float32(0.0))
                else:
                    for t in range(X.shape[1]):
                        diff = X[i, t] - X[candidate, t]
                        total += diff * diff
                    distance = np.sqrt(total)
                if distance < best_distance[k - 1]:  # insert, keeping the row sorted
                    p = k - 1
                    while p > 1 and best_distance[p - 1] > distance:
                        best[p] = best[p - 1]
                        best_distance[p] = best_distance[p - 1]
                        p -= 1
                    best[p] = candidate
                    best_distance[p] = distance
        out_indices[i] = best
        out_distances[i] = best_distance


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(
            f"topics.umap.metric = {metric!r}: the block engine supports {list(METRICS)}; "
            "use topics.umap.engine: umap-learn for other metrics"
        )


def _self_first(indices: np.ndarray, distances: np.ndarray):
    """Each row's own index in column 0 at distance 0, as umap-learn's k-NN has it (rounding
    can rank an exact duplicate first, or leave self at 1e-7; a row that misses itself
    gets it in front of the rest)."""
    rows = np.arange(len(indices))[:, None]
    is_self = indices == rows
    order = np.argsort(~is_self, axis=1, kind="stable")
    indices = np.take_along_axis(indices, order, axis=1)
    distances = np.take_along_axis(distances, order, axis=1)
    missing = ~is_self.any(axis=1)
    indices[missing, 1:] = indices[missing, :-1]
    distances[missing, 1:] = distances[missing, :-1]
    indices[:, 0] = rows[:, 0]
    distances[:, 0] = 0.0
    return indices, distances


def fuzzy_graph(indices: np.ndarray, distances: np.ndarray) -> scipy.sparse.csr_matrix:
    """UMAP's fuzzy simplicial set of a k-NN (local connectivity 1, fuzzy union), as
    ``umap.umap_.fuzzy_simplicial_set`` computes it."""
    n, k = indices.shape
    sigmas, rhos = smooth_knn_dist(distances, float(k))
    gap = distances - rhos[:, None]
    with np.errstate(divide="ignore", over="ignore"):
        values = np.where(
            (gap <= 0.0) | (sigmas[:, None] == 0.0), 1.0, np.exp(-(gap / sigmas[:, None]))
        ).astype(np.float32)
    values[indices == np.arange(n)[:, None]] = 0.0
    found = indices >= 0  # faiss marks a neighbour it could not find with -1
    rows = np.repeat(np.arange(n, dtype=np.int32), k)[found.ravel()]
    graph = scipy.sparse.coo_matrix(
        (values[found], (rows, indices[found].astype(np.int32))), shape=(n, n)
    )
    graph.eliminate_zeros()
    transpose = graph.transpose()
    union = graph + transpose - graph.multiply(transpose)
    union.eliminate_zeros()
    return union


def smooth_knn_dist(distances: np.ndarray, k: float, n_iter: int = 64):
    """(sigma, rho) per row as umap-learn's ``smooth_knn_dist`` with local connectivity 1:
    rho is the distance to the nearest other point, sigma is bisected so that the row's
    memberships (self left out) sum to log2(k). All rows bisect at once, in float32 as
    umap-learn does; a row stops when it is within tolerance."""
    distances = np.asarray(distances, dtype=np.float32)
    n = len(distances)
    target = np.float32(np.log2(k))
    nonzero = distances > 0.0
    first = np.argmax(nonzero, axis=1)
    rho = np.where(nonzero.any(axis=1), distances[np.arange(n), first], 0.0).astype(np.float32)
    lo = np.zeros(n, np.float32)
    hi = np.full(n, np.inf, np.float32)
    mid = np.ones(n, np.float32)
    active = np.arange(n)
    gaps = distances[:, 1:] - rho[:, None]
    for _ in range(n_iter):
        gap, m = gaps[active], mid[active][:, None]
        psum = np.exp(-(np.maximum(gap, 0) / m)).sum(axis=1)  # a gap <= 0 counts 1
        done = np.abs(psum - target) < SMOOTH_K_TOLERANCE
        above = ~done & (psum > target)
        below = ~done & ~above
        hi[active[above]] = mid[active[above]]
        lo[active[below]] = mid[active[below]]
        unbounded = below & np.isinf(hi[active])
        mid[active[unbounded]] *= 2
        halve = active[(above | below) & ~unbounded]
        mid[halve] = (lo[halve] + hi[halve]) / np.float32(2.0)
        active = active[~done]
        if len(active) == 0:
            break
    floor = MIN_K_DIST_SCALE * np.where(rho > 0.0, distances.mean(axis=1), distances.mean()).astype(
        np.float32
    )
    return np.maximum(mid, floor), rho


def spectral_init(graph, dim: int, X: np.ndarray, metric: str, rng: np.random.RandomState):
    """UMAP's spectral layout [n, dim]: the eigenvectors of the normalised graph Laplacian
    after the constant one. A graph in several pieces gets umap-learn's multi-component
    layout: each piece laid out on its own, scaled into its slot of a layout of the pieces
    (the axes for a few pieces; for more, a spectral embedding of their data centroids)."""
    pieces, labels = scipy.sparse.csgraph.connected_components(graph)
    if pieces == 1:
        return _eigenvectors(graph, dim)
    if pieces <= 2 * dim:
        half = int(np.ceil(pieces / 2.0))
        base = np.hstack([np.eye(half), np.zeros((half, dim - half))])
        slots = np.vstack([base, -base])[:pieces]
    else:
        slots = _centroid_layout(X, labels, pieces, dim, metric, rng)
    layout = np.empty((graph.shape[0], dim), dtype=np.float32)
    graph = graph.tocsr()
    for piece in range(pieces):
        members = np.flatnonzero(labels == piece)
        gaps = np.linalg.norm(slots - slots[piece], axis=1)
        reach = gaps[gaps > 0].min() / 2.0
        if len(members) < 2 * dim or len(members) <= dim + 1:
            own = rng.uniform(-reach, reach, size=(len(members), dim))
        else:
            own = _eigenvectors(graph[members][:, members], dim)
            own *= reach / np.max(np.abs(own))
        layout[members] = own + slots[piece]
    return layout


def _eigenvectors(graph, dim: int) -> np.ndarray:
    """The ``dim`` eigenvectors of I - D^-1/2 A D^-1/2 with the smallest eigenvalues after the
    first, found as those of D^-1/2 A D^-1/2 with the largest (the same vectors; Lanczos
    reaches them several times faster than the smallest of the Laplacian)."""
    n = graph.shape[0]
    inverse_sqrt_degree = 1.0 / np.sqrt(np.asarray(graph.sum(axis=0)).squeeze())
    scale = scipy.sparse.diags(inverse_sqrt_degree)
    adjacency = scale @ graph @ scale
    k = dim + 1
    if n <= 4 * k + 32:  # too small for ARPACK's Krylov space: a dense solve
        values, vectors = np.linalg.eigh(adjacency.toarray())
    else:
        values, vectors = scipy.sparse.linalg.eigsh(
            adjacency.tocsr(),
            k,
            which="LA",
            ncv=2 * k + 22,
            tol=1e-4,
            v0=np.ones(n),
            maxiter=n * 5,
        )
    return vectors[:, np.argsort(-values, kind="stable")[1:k]]


def _centroid_layout(X, labels, pieces: int, dim: int, metric: str, rng) -> np.ndarray:
    """umap-learn's ``component_layout``: the pieces' data centroids, embedded spectrally by
    the affinity exp(-distance^2)."""
    from sklearn.manifold import SpectralEmbedding
    from sklearn.metrics import pairwise_distances

    centroids = np.stack([X[labels == piece].mean(axis=0) for piece in range(pieces)])
    affinity = np.exp(-(pairwise_distances(centroids, metric=metric) ** 2))
    embedding = SpectralEmbedding(
        n_components=dim, affinity="precomputed", random_state=rng
    ).fit_transform(affinity)
    return embedding / embedding.max()
