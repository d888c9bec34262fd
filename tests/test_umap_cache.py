"""The cached UMAP (pipeline/chc/umap_cache.py) gives exactly the plain seeded UMAP output,
whether it computes everything, reuses the k-NN graph or reuses the output."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.chc.umap_cache import SMALL_DATA, CachedUMAP, digest

OPTIONS = dict(
    n_neighbors=10,
    n_components=3,
    min_dist=0.0,
    metric="cosine",
    random_state=7,
    n_epochs=15,
    low_memory=True,
    n_jobs=1,
)


def blobs(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((8, 12))
    return (centres[rng.integers(0, 8, n)] + 0.3 * rng.standard_normal((n, 12))).astype(np.float32)


def plain(X: np.ndarray, **changes) -> np.ndarray:
    from umap import UMAP

    return UMAP(**{**OPTIONS, **changes}).fit_transform(X)


def test_cold_graph_and_output_reuse_equal_plain_umap(tmp_path):
    X = blobs(SMALL_DATA + 200)
    expected = plain(X)
    reducer = CachedUMAP(tmp_path, **OPTIONS)
    cold = reducer.fit_transform(X)
    assert reducer.reused is None
    assert len(list(tmp_path.glob("knn_*.npz"))) == 1
    assert len(list(tmp_path.glob("umap_*.npy"))) == 1
    np.testing.assert_array_equal(cold, expected)
    # the output again: read, not computed
    again = reducer.fit_transform(X)
    assert reducer.reused == "output"
    np.testing.assert_array_equal(again, expected)
    # the output gone, the graph and the initial layout kept: the SGD runs again, equal
    assert len(list(tmp_path.glob("init_*.npz"))) == 1
    next(tmp_path.glob("umap_*.npy")).unlink()
    warm = reducer.fit_transform(X)
    assert reducer.reused == "k-NN graph and init"
    np.testing.assert_array_equal(warm, expected)
    # the init gone too: computed again from the graph, equal
    for path in [*tmp_path.glob("umap_*.npy"), *tmp_path.glob("init_*.npz")]:
        path.unlink()
    warm = reducer.fit_transform(X)
    assert reducer.reused == "k-NN graph"
    np.testing.assert_array_equal(warm, expected)
    # an SGD-only change (min_dist) reuses graph and init and still equals its plain UMAP
    changed = CachedUMAP(tmp_path, **{**OPTIONS, "min_dist": 0.1})
    layout = changed.fit_transform(X)
    assert changed.reused == "k-NN graph and init"
    np.testing.assert_array_equal(layout, plain(X, min_dist=0.1))
    # n_epochs prunes the graph before the init: the graph only, and equal
    changed = CachedUMAP(tmp_path, **{**OPTIONS, "n_epochs": 25})
    layout = changed.fit_transform(X)
    assert changed.reused == "k-NN graph"
    np.testing.assert_array_equal(layout, plain(X, n_epochs=25))
    assert not list(tmp_path.glob("*.tmp.*"))  # no partial file left behind


def test_small_data_caches_the_output_only(tmp_path):
    X = blobs(300)
    reducer = CachedUMAP(tmp_path, **OPTIONS)
    first = reducer.fit_transform(X)
    assert reducer.reused is None and not list(tmp_path.glob("knn_*"))
    second = reducer.fit_transform(X)
    assert reducer.reused == "output"
    np.testing.assert_array_equal(first, plain(X))
    np.testing.assert_array_equal(second, first)


def test_keys_change_with_what_they_depend_on(tmp_path):
    X = blobs(SMALL_DATA + 10)
    data = digest(X)

    def keys(**changes):
        reducer = CachedUMAP(tmp_path, **{**OPTIONS, **changes})
        return reducer.graph_key(data), reducer.init_key(data), reducer.output_key(data)

    graph, init, output = keys()
    for sgd_only in ({"min_dist": 0.5}, {"learning_rate": 0.5}, {"negative_sample_rate": 3}):
        changed_graph, changed_init, changed_output = keys(**sgd_only)
        assert (changed_graph, changed_init) == (graph, init), sgd_only
        assert changed_output != output, sgd_only
    for layout in ({"n_components": 5}, {"n_epochs": 20}, {"init": "pca"}):
        changed_graph, changed_init, changed_output = keys(**layout)
        assert changed_graph == graph and changed_init != init, layout
        assert changed_output != output, layout
    for every in ({"n_neighbors": 11}, {"random_state": 8}, {"metric": "euclidean"}):
        changed_graph, changed_init, changed_output = keys(**every)
        assert changed_graph != graph and changed_init != init, every
        assert changed_output != output, every
    other = X.copy()
    other[0, 0] += 1e-3
    reducer = CachedUMAP(tmp_path, **OPTIONS)
    assert reducer.graph_key(digest(other)) != graph
    assert reducer.output_key(digest(other)) != output


def test_needs_an_integer_seed(tmp_path):
    with pytest.raises(ValueError, match="integer random_state"):
        CachedUMAP(tmp_path, **{**OPTIONS, "random_state": None})
