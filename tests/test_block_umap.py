"""The block UMAP engine (pipeline/chc/block_umap.py and its two halves) against umap-learn:
the fuzzy graph, the spectral init and a one-block layout are umap-learn's; more blocks give
a layout that depends on the blocks and never on the threads; the k-NN is exact on small
data and near it above; the whole fit is reproducible, separates clusters, and its cache
gives back exactly what it computed."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.chc import umap_graph
from pipeline.chc.block_umap import BlockUMAP
from pipeline.chc.umap_graph import fuzzy_graph, nearest_neighbors, smooth_knn_dist, spectral_init
from pipeline.chc.umap_layout import find_ab_params, optimize_layout


def blobs(n: int, dim: int = 12, centres: int = 6, seed: int = 0, spread: float = 0.3):
    rng = np.random.default_rng(seed)
    middle = 3 * rng.standard_normal((centres, dim))
    truth = rng.integers(0, centres, n)
    return (middle[truth] + spread * rng.standard_normal((n, dim))).astype(np.float32), truth


def umap_graph_of(X, k=10):
    """umap-learn's k-NN (exact below 4096 rows) and fuzzy graph, pruned as its fit does."""
    from umap.umap_ import fuzzy_simplicial_set
    from umap.umap_ import nearest_neighbors as umap_neighbours

    rng = np.random.RandomState(0)
    indices, distances, _ = umap_neighbours(X, k, "cosine", {}, False, rng)
    graph, sigmas, rhos = fuzzy_simplicial_set(
        X, k, rng, "cosine", knn_indices=indices, knn_dists=distances
    )
    return indices, distances.astype(np.float32), graph.tocsr(), sigmas, rhos


def layout_inputs(n=500, epochs=30):
    X, _ = blobs(n)
    _, _, graph, _, _ = umap_graph_of(X)
    graph = graph.tocoo()
    graph.sum_duplicates()
    graph.data[graph.data < graph.data.max() / epochs] = 0.0
    graph.eliminate_zeros()
    rng = np.random.RandomState(3)
    start = rng.uniform(0, 10, (n, 2)).astype(np.float32)
    state = rng.randint(-(2**31) + 1, 2**31 - 1, 3).astype(np.int64)
    return start, graph, state


def test_one_block_layout_is_umap_learns_bit_for_bit():
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import make_epochs_per_sample

    start, graph, state = layout_inputs()
    a, b = find_ab_params(1.0, 0.1)
    theirs = start.copy()
    optimize_layout_euclidean(
        theirs, theirs, graph.row, graph.col, 30, len(start),
        make_epochs_per_sample(graph.data, 30), a, b, state, 1.0, 1.0, 5.0, move_other=True,
    )  # fmt: skip
    ours = optimize_layout(start.copy(), graph.row, graph.col, graph.data, 30, a, b, state)
    np.testing.assert_array_equal(ours, theirs)


def test_blocks_change_the_layout_threads_do_not():
    start, graph, state = layout_inputs()
    a, b = find_ab_params(1.0, 0.1)

    def run(blocks, threads):
        return optimize_layout(
            start.copy(), graph.row, graph.col, graph.data, 30, a, b, state,
            blocks=blocks, threads=threads,
        )  # fmt: skip

    four = run(4, 1)
    np.testing.assert_array_equal(four, run(4, 2))
    np.testing.assert_array_equal(four, run(4, 3))
    assert not np.array_equal(four, run(1, 1))
    assert not np.array_equal(four, run(6, 2))
    with pytest.raises(ValueError, match="blocks = 3: must be 1 or an even number"):
        run(3, 2)


def test_ab_params_are_umap_learns():
    from umap.umap_ import find_ab_params as theirs

    for spread, min_dist in [(1.0, 0.0), (1.0, 0.1), (2.0, 0.5)]:
        np.testing.assert_allclose(find_ab_params(spread, min_dist), theirs(spread, min_dist))


def test_fuzzy_graph_is_umap_learns_on_the_same_neighbours():
    X, _ = blobs(400)
    indices, distances, theirs, their_sigmas, their_rhos = umap_graph_of(X)
    sigmas, rhos = smooth_knn_dist(distances, float(indices.shape[1]))
    np.testing.assert_allclose(rhos, their_rhos, rtol=1e-6)
    np.testing.assert_allclose(sigmas, their_sigmas, rtol=1e-4)
    ours = fuzzy_graph(indices, distances).tocsr()
    ours.sort_indices()
    theirs.sort_indices()
    np.testing.assert_array_equal(ours.indptr, theirs.indptr)
    np.testing.assert_array_equal(ours.indices, theirs.indices)
    np.testing.assert_allclose(ours.data, theirs.data, rtol=1e-4, atol=1e-6)


def test_spectral_init_has_umap_learns_eigenvectors():
    from umap.spectral import spectral_layout

    X, _ = blobs(600, centres=1, spread=1.0)  # one connected piece
    _, _, graph, _, _ = umap_graph_of(X, k=15)
    ours = spectral_init(graph, 3, X, "cosine", np.random.RandomState(0))
    theirs = spectral_layout(X, graph, 3, np.random.RandomState(0), metric="cosine")
    cosines = np.abs(np.sum(ours * theirs, axis=0)) / (
        np.linalg.norm(ours, axis=0) * np.linalg.norm(theirs, axis=0)
    )
    np.testing.assert_allclose(cosines, 1.0, atol=1e-3)  # the same vectors up to sign


def test_spectral_init_of_a_graph_in_pieces_places_each_in_its_slot():
    from scipy.sparse.csgraph import connected_components

    X, _ = blobs(300, centres=3, spread=0.05)
    _, _, graph, _, _ = umap_graph_of(X, k=8)
    pieces, labels = connected_components(graph)
    assert pieces == 3
    layout = spectral_init(graph, 2, X, "cosine", np.random.RandomState(0))
    centres = np.stack([layout[labels == p].mean(axis=0) for p in range(pieces)])
    # umap-learn's slots for few pieces: +-unit axes; each piece within half a slot gap
    slots = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -0.0]])
    np.testing.assert_allclose(np.sort(centres, axis=0), np.sort(slots, axis=0), atol=0.5)
    for p in range(pieces):
        assert np.abs(layout[labels == p] - slots[p]).max() <= np.sqrt(2) / 2 + 1e-6


def brute_force(X, k):
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    distance = 1.0 - unit @ unit.T
    return np.argsort(distance, axis=1, kind="stable")[:, :k], distance


def test_small_data_neighbours_are_exact_with_self_first():
    X, _ = blobs(300)
    indices, distances = nearest_neighbors(X, 8, "cosine", seed=0)
    expected, distance = brute_force(X, 8)
    assert np.all(indices[:, 0] == np.arange(len(X))) and np.all(distances[:, 0] == 0)
    assert all(set(a) == set(b) for a, b in zip(indices, expected, strict=True))
    rows = np.arange(len(X))[:, None]
    np.testing.assert_allclose(distances[:, 1:], distance[rows, indices][:, 1:], atol=1e-5)
    assert np.all(np.diff(distances, axis=1) >= 0)


def test_large_data_neighbours_are_near_exact_and_reproducible(monkeypatch):
    monkeypatch.setattr(umap_graph, "EXACT_BELOW", 1000)  # the IVF path on small data
    X, _ = blobs(3000, dim=16, centres=20, spread=1.0)
    indices, distances = nearest_neighbors(X, 10, "cosine", seed=0, probes=4, threads=2)
    expected, _ = brute_force(X, 10)
    recall = np.mean([len(set(a) & set(b)) for a, b in zip(indices, expected, strict=True)]) / 10
    assert recall >= 0.97
    assert np.all(indices[:, 0] == np.arange(len(X)))
    again = nearest_neighbors(X, 10, "cosine", seed=0, probes=4, threads=1)
    np.testing.assert_array_equal(indices, again[0])
    np.testing.assert_array_equal(distances, again[1])
    # the refinement is what lifts the IVF graph: without it, recall is lower
    monkeypatch.setattr(umap_graph, "refine", lambda X, i, d, *args: (i, d))
    raw, _ = nearest_neighbors(X, 10, "cosine", seed=0, probes=4)
    raw_recall = np.mean([len(set(a) & set(b)) for a, b in zip(raw, expected, strict=True)]) / 10
    assert raw_recall < recall


def test_fit_is_reproducible_for_any_threads_and_separates_clusters():
    from sklearn.neighbors import KNeighborsClassifier

    X, truth = blobs(800)
    options = dict(n_components=2, n_neighbors=10, random_state=1, n_epochs=60)
    first = BlockUMAP(**options, threads=1).fit_transform(X)
    np.testing.assert_array_equal(first, BlockUMAP(**options, threads=2).fit_transform(X))
    assert first.shape == (800, 2) and first.dtype == np.float32
    assert not np.array_equal(first, BlockUMAP(**options, blocks=1).fit_transform(X))
    accuracy = KNeighborsClassifier(5).fit(first[::2], truth[::2]).score(first[1::2], truth[1::2])
    assert accuracy >= 0.98


def test_cache_gives_back_what_was_computed(tmp_path):
    X, _ = blobs(500)
    options = dict(n_components=3, n_neighbors=10, random_state=2, n_epochs=40)
    expected = BlockUMAP(**options).fit_transform(X)
    reducer = BlockUMAP(**options, cache=tmp_path)
    np.testing.assert_array_equal(reducer.fit_transform(X), expected)
    assert reducer.reused is None
    np.testing.assert_array_equal(reducer.fit_transform(X), expected)
    assert reducer.reused == "output"
    next(tmp_path.glob("block_umap_*.npy")).unlink()
    np.testing.assert_array_equal(reducer.fit_transform(X), expected)
    assert reducer.reused == "k-NN graph"
    changed = BlockUMAP(**{**options, "min_dist": 0.3}, cache=tmp_path)
    np.testing.assert_array_equal(
        changed.fit_transform(X), BlockUMAP(**{**options, "min_dist": 0.3}).fit_transform(X)
    )
    assert changed.reused == "k-NN graph"


def test_unsupported_metric_and_too_few_rows_are_clear_errors():
    with pytest.raises(ValueError, match="engine: umap-learn for other metrics"):
        BlockUMAP(metric="manhattan")
    with pytest.raises(ValueError, match="more rows than n_neighbors = 15"):
        BlockUMAP().fit_transform(np.ones((10, 4), dtype=np.float32))
