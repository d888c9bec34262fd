"""The cached k-NN graph (pipeline/chc/knn.py) gives exactly the plain seeded UMAP layout."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.chc.knn import SMALL_DATA, CachedKnnUMAP

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


def test_cold_and_warm_fits_equal_plain_umap(tmp_path):
    from umap import UMAP

    X = blobs(SMALL_DATA + 200)
    plain = UMAP(**OPTIONS).fit_transform(X)
    reducer = CachedKnnUMAP(tmp_path, **OPTIONS)
    cold = reducer.fit_transform(X)
    assert reducer.last_fit_cached is False
    assert len(list(tmp_path.glob("knn_*.npz"))) == 1
    warm = reducer.fit_transform(X)
    assert reducer.last_fit_cached is True
    np.testing.assert_array_equal(cold, plain)
    np.testing.assert_array_equal(warm, plain)
    # a layout-only change (min_dist) reuses the graph and still equals its plain UMAP
    changed = CachedKnnUMAP(tmp_path, **{**OPTIONS, "min_dist": 0.1})
    layout = changed.fit_transform(X)
    assert changed.last_fit_cached is True
    np.testing.assert_array_equal(layout, UMAP(**{**OPTIONS, "min_dist": 0.1}).fit_transform(X))


def test_key_changes_with_what_the_graph_depends_on(tmp_path):
    X = blobs(SMALL_DATA + 10)
    base = CachedKnnUMAP(tmp_path, **OPTIONS).key(X)
    assert CachedKnnUMAP(tmp_path, **{**OPTIONS, "min_dist": 0.5}).key(X) == base
    assert CachedKnnUMAP(tmp_path, **{**OPTIONS, "n_components": 5}).key(X) == base
    assert CachedKnnUMAP(tmp_path, **{**OPTIONS, "n_neighbors": 11}).key(X) != base
    assert CachedKnnUMAP(tmp_path, **{**OPTIONS, "random_state": 8}).key(X) != base
    assert CachedKnnUMAP(tmp_path, **{**OPTIONS, "metric": "euclidean"}).key(X) != base
    other = X.copy()
    other[0, 0] += 1e-3
    assert CachedKnnUMAP(tmp_path, **OPTIONS).key(other) != base


def test_needs_an_integer_seed(tmp_path):
    with pytest.raises(ValueError, match="integer random_state"):
        CachedKnnUMAP(tmp_path, **{**OPTIONS, "random_state": None})
