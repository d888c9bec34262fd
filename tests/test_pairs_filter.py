"""Filter maths on hand-made embeddings: similarity, duplicates, threshold, accounting."""

import numpy as np
import pandas as pd
import pytest

from pipeline.pairs import reasons
from pipeline.pairs.filter import (
    MISSING_FROM_SHARDS,
    FilterError,
    cosine_similarity,
    filter_pairs,
    histogram,
    plot_histogram,
    shuffled_similarity,
)


def embeddings(keys, image, text, sha256, failed=()):
    n = len(keys)
    return {
        "keys": np.array(keys, dtype=str),
        "image": np.array(image, dtype=np.float32),
        "text": np.array(text, dtype=np.float32),
        "captions": np.array([f"caption {k}" for k in keys], dtype=str),
        "sha256": np.array(sha256 if sha256 else [""] * n, dtype=str),
        "failed_keys": np.array([k for k, _ in failed], dtype=str),
        "failed_reasons": np.array([r for _, r in failed], dtype=str),
        "failed_details": np.array(["" for _ in failed], dtype=str),
    }


def index(keys, status="success"):
    return pd.DataFrame({"key": list(keys), "status": status})


def test_cosine_similarity_is_scale_free():
    image = np.array([[3.0, 4.0], [1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    text = np.array([[6.0, 8.0], [-5.0, 0.0], [1.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(cosine_similarity(image, text), [1.0, -1.0, np.sqrt(0.5)])


def test_threshold_duplicates_and_accounting():
    # similarities: a 1.0, b 0.0, c sqrt(.5)=0.7071, d -1, e 0.6 (exactly the threshold), f 0.8
    data = embeddings(
        keys=["d", "a", "b", "c", "e", "f"],
        image=[[2, 0], [1, 0], [0, 1], [1, 1], [0.6, 0.8], [0.8, 0.6]],
        text=[[-1, 0], [1, 0], [1, 0], [1, 0], [1, 0], [1, 0]],
        # c and f show the same image: f (0.8) beats c (0.707)
        sha256=["h1", "h2", "h3", "hc", "h5", "hc"],
        failed=[("g", reasons.DECODE_ERROR), ("a", reasons.DUPLICATE_KEY)],
    )
    written = index(["a", "b", "c", "d", "e", "f", "g", "lost"])
    kept, metrics, similarity, shuffled = filter_pairs(data, written, min_similarity=0.6)
    assert kept["key"].tolist() == ["a", "e", "f"]  # sorted by key
    np.testing.assert_allclose(kept["similarity"], [1.0, 0.6, 0.8], atol=1e-7)
    assert kept["caption"].tolist() == ["caption a", "caption e", "caption f"]
    assert metrics == {
        "input": 9,
        "kept": 3,
        "dropped": {
            reasons.BELOW_THRESHOLD: 2,
            reasons.DECODE_ERROR: 1,
            reasons.DUPLICATE_IMAGE: 1,
            reasons.DUPLICATE_KEY: 1,
            MISSING_FROM_SHARDS: 1,
        },
        "min_similarity": 0.6,
        "shuffled_pass_rate": round(float((shuffled >= 0.6).mean()), 4),
    }
    assert metrics["input"] == metrics["kept"] + sum(metrics["dropped"].values())
    assert len(similarity) == 6


def test_duplicate_tie_goes_to_smallest_key_and_empty_hash_is_not_a_duplicate():
    data = embeddings(
        keys=["z", "y", "x", "w"],
        image=[[1, 0]] * 4,
        text=[[1, 0]] * 4,
        sha256=["same", "same", "", ""],
    )
    kept, metrics, _, _ = filter_pairs(data, index(["z", "y", "x", "w"]), min_similarity=-1.0)
    assert kept["key"].tolist() == ["w", "x", "y"]
    assert metrics["dropped"] == {reasons.DUPLICATE_IMAGE: 1}


@pytest.mark.parametrize("threshold", [-1.0, 0.25, 0.5, 0.8])
def test_kept_is_exactly_the_pairs_at_or_above_threshold(threshold):
    rng = np.random.default_rng(0)
    keys = [f"k{i:03d}" for i in range(200)]
    data = embeddings(
        keys, rng.normal(size=(200, 8)), rng.normal(size=(200, 8)), [f"h{i}" for i in range(200)]
    )
    kept, metrics, similarity, _ = filter_pairs(data, index(keys), threshold)
    expected = sorted(k for k, s in zip(keys, similarity, strict=True) if s >= threshold)
    assert kept["key"].tolist() == expected
    assert (kept["similarity"] >= threshold).all()
    assert metrics["input"] == 200 == metrics["kept"] + sum(metrics["dropped"].values())


def test_a_threshold_that_keeps_nothing_is_an_error_naming_it():
    image = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    text = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])  # similarities 1, 0.7071, 0
    data = embeddings(["a", "b", "c"], image, text, None)
    kept, _, _, _ = filter_pairs(data, index("abc"), 0.999)
    assert kept["key"].tolist() == ["a"]
    data["text"][0] = [0.0, 1.0]  # now the highest is b's
    with pytest.raises(FilterError) as error:
        filter_pairs(data, index("abc"), 0.999)
    assert str(error.value) == (
        "filter.min_similarity: 0.999: keeps 0 of 3 pairs (dropped {'below_threshold': 3}); "
        "the highest similarity is 0.7071, the median 0.0000: lower the threshold"
    )


def test_no_embedded_pair_is_an_error_naming_the_embeddings():
    data = embeddings([], np.zeros((0, 2)), np.zeros((0, 2)), None, [("a", "decode_error")])
    with pytest.raises(
        FilterError,
        match=r"^data/pairs/embeddings.npz: no embedded pair .*"
        r"1 input, dropped \{'decode_error': 1\}",
    ):
        filter_pairs(data, index("a"), 0.1)


def test_shuffled_pairs_never_meet_their_own_caption():
    n = 7
    image = np.eye(n)  # image i is orthogonal to every caption but caption i
    text = np.eye(n)
    shuffled = shuffled_similarity(image, text, seed=3)
    np.testing.assert_array_equal(shuffled, np.zeros(n))  # no pair kept its own caption
    assert np.array_equal(shuffled_similarity(image, text, 3), shuffled)  # seeded
    assert len(shuffled_similarity(image[:1], text[:1])) == 0


def test_histogram_splits_at_threshold_and_counts_everything(tmp_path):
    similarity = np.array([-0.05, 0.1, 0.11, 0.29, 0.3, 0.31, 0.55])
    shuffled = np.array([-0.3, 0.0, 0.01, 0.2])
    table = histogram(similarity, 0.3, shuffled)
    assert table["below_threshold"].sum() == 4
    assert table["at_or_above_threshold"].sum() == 3
    assert table["shuffled_pairs"].sum() == 4
    np.testing.assert_allclose(np.diff(table["similarity"]), 0.02)
    assert table["similarity"].min() - 0.01 <= -0.3 and 0.55 <= table["similarity"].max() + 0.01
    plot_histogram(table, 0.3, tmp_path / "h.png", "test")
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    assert histogram(np.array([]), 0.3)["below_threshold"].sum() == 0
