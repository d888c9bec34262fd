"""faiss k-means domains inside topics: clipping, determinism, no silent subsampling."""

import numpy as np
import pytest

from pipeline.chc.domains import cluster_domains, domain_count, kmeans_domains, make_kmeans


def three_blobs(sizes=(40, 25, 10), dim=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = 5 * np.eye(dim)[: len(sizes)]
    rows = [centres[i] + 0.1 * rng.normal(size=(n, dim)) for i, n in enumerate(sizes)]
    truth = np.repeat(np.arange(len(sizes)), sizes)
    return np.concatenate(rows).astype(np.float32), truth


def test_domain_count_is_clipped_to_the_topic():
    assert domain_count(100, 4, min_points_per_domain=5) == 4
    assert domain_count(12, 4, min_points_per_domain=5) == 2
    assert domain_count(3, 4, min_points_per_domain=5) == 1  # smaller than one domain
    assert domain_count(3, 4, min_points_per_domain=1) == 3
    with pytest.raises(ValueError, match="k = 0"):
        domain_count(10, 0)


def test_kmeans_finds_the_blobs_largest_first():
    features, truth = three_blobs()
    domains = kmeans_domains(features, 3, seed=0)
    np.testing.assert_array_equal(domains, truth)  # sizes 40, 25, 10 -> ids 0, 1, 2


def test_topic_smaller_than_k():
    features, _ = three_blobs(sizes=(2, 1))
    assert sorted(kmeans_domains(features, 5)) == [0, 1, 2]  # k clipped to the 3 points
    assert set(kmeans_domains(features, 5, min_points_per_domain=2)) == {0}  # one domain
    assert kmeans_domains(features[:0], 5).shape == (0,)


def test_domains_per_topic_are_deterministic():
    features, truth = three_blobs(sizes=(60, 60, 60))
    rng = np.random.default_rng(1)
    topics = rng.permutation(np.repeat([0, 1, -1], 60))  # -1: noise gets no domain
    first = cluster_domains(features, topics, 3, min_points_per_domain=10, seed=7)
    second = cluster_domains(features, topics, 3, min_points_per_domain=10, seed=7)
    np.testing.assert_array_equal(first, second)
    assert np.all(first[topics == -1] == -1)
    for topic in (0, 1):
        inside = first[topics == topic]
        assert inside.min() == 0 and inside.max() <= 2
        # each topic mixes the three blobs: k-means separates them within the topic
        for blob in range(3):
            assert len(set(inside[truth[topics == topic] == blob])) == 1


def test_faiss_never_subsamples():
    kmeans = make_kmeans(16, 3, 100_000, seed=0, niter=5)
    assert kmeans.cp.max_points_per_centroid * 3 >= 100_000
    assert kmeans.cp.seed == 0


def test_feature_and_topic_lengths_must_match():
    features, _ = three_blobs()
    with pytest.raises(ValueError, match="75 feature rows but 3 topic ids"):
        cluster_domains(features, np.zeros(3, dtype=int), 2)
