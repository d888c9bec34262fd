"""GRAM Eq. 3 on hand-computed examples, and unique topic words."""

from math import log

import numpy as np
import pytest

from pipeline.chc.ctfidf import cluster_tfidf, make_vectorizer, unique_labels


def scores_by_word(tfidf, cluster):
    row = tfidf.scores.getrow(cluster)
    return {str(tfidf.vocabulary[j]): v for j, v in zip(row.indices, row.data, strict=True)}


def test_eq3_matches_hand_computation():
    # L = 3 clusters. After lower-casing and removing stop words ("the", "a", "of", "is"):
    #   c0: apple x2, banana x1           N_0 = 3
    #   c1: banana x1, cherry x1          N_1 = 2
    #   c2: cherry x1, date x3            N_2 = 4
    # L_apple = 1, L_banana = 2, L_cherry = 2, L_date = 1.
    documents = [
        "The apple and a banana\nAPPLE",
        "banana of cherry",
        "cherry date, date is date 42",
    ]
    tfidf = cluster_tfidf(documents, make_vectorizer())
    assert list(tfidf.vocabulary) == ["apple", "banana", "cherry", "date"]
    np.testing.assert_allclose(tfidf.counts.toarray(), [[2, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 3]])
    expected = {
        0: {"apple": 2 / 3 * log(3 / 2), "banana": 1 / 3 * log(3 / 3)},
        1: {"banana": 1 / 2 * log(3 / 3), "cherry": 1 / 2 * log(3 / 3)},
        2: {"cherry": 1 / 4 * log(3 / 3), "date": 3 / 4 * log(3 / 2)},
    }
    for cluster, words in expected.items():
        got = scores_by_word(tfidf, cluster)
        assert got.keys() == words.keys()  # zero scores are kept: the word occurs there
        for word, value in words.items():
            assert got[word] == pytest.approx(value, abs=1e-12)
    assert tfidf.scores[0, 0] == pytest.approx(0.2703100720721096)
    assert tfidf.scores[2, 3] == pytest.approx(0.3040988310811233)
    # c1's two words tie at 0 with equal counts -> alphabetical.
    assert unique_labels(tfidf) == ["apple", "banana", "date"]
    assert tfidf.top_words(2, 2) == [("date", pytest.approx(0.3040988310811233)), ("cherry", 0.0)]


def test_word_in_every_cluster_has_negative_idf():
    tfidf = cluster_tfidf(["sun moon", "sun star", "sun rain"], make_vectorizer())
    assert scores_by_word(tfidf, 0)["sun"] == pytest.approx(0.5 * log(3 / 4))
    assert unique_labels(tfidf) == ["moon", "star", "rain"]


def test_contested_word_goes_to_the_cluster_where_it_scores_highest():
    # "dog" is the arg-max of both c0 and c1; L = 5, L_dog = 2 -> idf log(5/3).
    # c0: dog 3/4*log(5/3) = 0.383 > cat 1/4*log(5/2) = 0.229
    # c1: dog 4/5*log(5/3) = 0.409 > fish 1/5*log(5/2) = 0.183  -> c1 keeps "dog".
    documents = ["dog dog dog cat", "dog dog dog dog fish", "tree", "car", "boat"]
    tfidf = cluster_tfidf(documents, make_vectorizer())
    assert [tfidf.top_words(c, 1)[0][0] for c in range(2)] == ["dog", "dog"]
    labels = unique_labels(tfidf)
    assert labels == ["cat", "dog", "tree", "car", "boat"]
    assert len(set(labels)) == len(labels)


def test_labels_unique_on_many_overlapping_clusters():
    rng = np.random.default_rng(0)
    vocabulary = ["red", "green", "blue", "cat", "dog", "sky", "sea", "sun"]
    documents = [
        " ".join(rng.choice(vocabulary, size=12, p=[0.5] + [0.5 / 7] * 7)) for _ in range(12)
    ]
    labels = unique_labels(cluster_tfidf(documents, make_vectorizer()), range(12))
    assert len(set(labels)) == 12
    # 8 words for 12 clusters: 4 clusters fall back to their ids.
    assert sum(label.startswith("topic_") for label in labels) == 4


def test_clusters_without_words_get_fallback_labels():
    tfidf = cluster_tfidf(["the of", "and 123"], make_vectorizer())
    assert unique_labels(tfidf, cluster_ids=[7, 9]) == ["topic_7", "topic_9"]


def test_stop_words_can_be_kept():
    tfidf = cluster_tfidf(["the cat", "the dog", "a bird"], make_vectorizer(stop_words=None))
    assert "the" in set(tfidf.vocabulary)
    # N_l counts what the vectoriser kept: "the" and "cat" -> tf 1/2 each.
    assert scores_by_word(tfidf, 0)["cat"] == pytest.approx(0.5 * log(3 / 2))
