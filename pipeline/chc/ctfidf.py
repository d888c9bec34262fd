"""Topic words by the paper's cluster-wise TF-IDF (GRAM Eq. 3) and unique topic labels.

GRAM names each cluster by the word with the highest

    tfidf(w, l) = N_{w,l} / N_l * log(L / (L_w + 1))

where all captions of cluster l form one document, N_{w,l} counts word w in it, N_l counts
all its words, L is the number of clusters and L_w the number of clusters containing w.
This is the paper's formula, NOT BERTopic's c-TF-IDF (BERTopic uses
``tf * log(1 + A / f_w)`` with A the average cluster size in words and f_w the word's total
frequency, and L1-normalises rows). ``log`` is the natural logarithm; the base only scales
every score by the same positive factor, so it never changes a topic word.

Note the IDF term ``log(L / (L_w + 1))`` is 0 for a word found in L - 1 clusters and negative
for a word found in every cluster, so such words can never beat a word that is specific to
fewer clusters; with L = 2 every IDF is <= 0 and words found in one cluster only (score 0)
are tied. Ties are broken by the raw count N_{w,l}, then alphabetically.

Our choices (the paper is silent):

* Tokens: scikit-learn ``CountVectorizer`` with lower-casing and ``token_pattern``
  (default: runs of two or more letters, so numbers and single letters are not words).
* Stop words: scikit-learn's English list is removed (``stop_words=None`` keeps them, as
  BERTopic's default vectoriser does).
* N_l counts the words left after stop-word removal (the row sum of the count matrix).
  N_l is the same for every word of a cluster, so counting before removal would rescale a
  cluster's scores but could not change its arg-max word; it only affects the order in which
  label conflicts are settled below.
* Unique labels: two clusters must not share a topic word (they would be the same class in a
  meta-task). All (cluster, word) pairs are visited from the highest score down and a pair is
  taken when neither its cluster nor its word is taken yet, i.e. a contested word goes to the
  cluster where it scores highest and the other cluster takes its next-best free word. A
  cluster whose every word is taken (or that has no words) is labelled ``topic_<id>``.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse
from sklearn.feature_extraction.text import CountVectorizer

LETTER_WORDS = r"(?u)\b[^\W\d_]{2,}\b"


def make_vectorizer(
    stop_words: str | None = "english", token_pattern: str = LETTER_WORDS
) -> CountVectorizer:
    """The default vectoriser: lower-cased letter words, English stop words removed."""
    return CountVectorizer(lowercase=True, stop_words=stop_words, token_pattern=token_pattern)


@dataclass(frozen=True)
class ClusterTfidf:
    """Eq. 3 scores: ``scores[l, j]`` for cluster ``l`` and word ``vocabulary[j]``.

    ``scores`` and ``counts`` are sparse with the same structure: an entry exists exactly
    where the word occurs in the cluster (a stored score may be 0 or negative, see above).
    """

    scores: sparse.csr_matrix  # [L, V] float64
    counts: sparse.csr_matrix  # [L, V] N_{w,l}
    vocabulary: np.ndarray  # [V] str, sorted

    def top_words(self, cluster: int, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` best words of a cluster that occur in it, best first (ties: count, word)."""
        words, scores, _ = self.ranked(cluster)
        pairs = zip(words[:n], scores[:n], strict=True)
        return [(str(self.vocabulary[j]), float(score)) for j, score in pairs]

    def ranked(self, cluster: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(word indices, scores, counts) of the words in a cluster, best first."""
        start, stop = self.counts.indptr[cluster], self.counts.indptr[cluster + 1]
        words = self.counts.indices[start:stop]
        counts = self.counts.data[start:stop]
        scores = self.scores.data[start:stop]
        # lexsort: last key is primary -> score desc, then count desc, then word index asc.
        order = np.lexsort((words, -counts, -scores))
        return words[order], scores[order], counts[order]


def cluster_tfidf(documents: Sequence[str], vectorizer: CountVectorizer) -> ClusterTfidf:
    """Eq. 3 for one document per cluster (the cluster's captions joined)."""
    if len(documents) == 0:
        raise ValueError("cluster_tfidf: no clusters")
    try:
        counts = sparse.csr_matrix(vectorizer.fit_transform(documents), dtype=np.float64)
    except ValueError as error:  # sklearn: "empty vocabulary; perhaps the documents only
        # contain stop words" -> keep going with no words so every cluster gets topic_<id>.
        if "empty vocabulary" not in str(error):
            raise
        counts = sparse.csr_matrix((len(documents), 0), dtype=np.float64)
        return ClusterTfidf(counts.copy(), counts, np.array([], dtype=str))
    counts.sum_duplicates()
    counts.eliminate_zeros()
    n_clusters = counts.shape[0]
    words_per_cluster = np.asarray(counts.sum(axis=1)).ravel()  # N_l
    clusters_per_word = np.bincount(counts.indices, minlength=counts.shape[1])  # L_w
    idf = np.log(n_clusters / (clusters_per_word + 1.0))
    # Scores only where the word occurs, kept even when 0 (a sparse product would drop them).
    rows = np.repeat(np.arange(n_clusters), np.diff(counts.indptr))
    scores = counts.copy()
    scores.data = counts.data / words_per_cluster[rows] * idf[counts.indices]
    vocabulary = np.asarray(vectorizer.get_feature_names_out())
    return ClusterTfidf(scores, counts, vocabulary)


def unique_labels(tfidf: ClusterTfidf, cluster_ids: Sequence[int] | None = None) -> list[str]:
    """One distinct word per cluster, contested words going to the highest score.

    Exact greedy matching over all (cluster, word) pairs in descending score order (ties:
    count, then cluster index, then word), done lazily with a heap of each cluster's best
    word not yet taken. ``cluster_ids`` name the fallback labels (default: row index).
    """
    n_clusters = tfidf.counts.shape[0]
    ids = list(range(n_clusters)) if cluster_ids is None else list(cluster_ids)
    ranked = [tfidf.ranked(c) for c in range(n_clusters)]
    position = [0] * n_clusters
    heap: list[tuple[float, float, int, int]] = []

    def push(cluster: int) -> None:
        words, scores, counts = ranked[cluster]
        k = position[cluster]
        if k < len(words):
            heapq.heappush(heap, (-scores[k], -counts[k], cluster, int(words[k])))

    for cluster in range(n_clusters):
        push(cluster)
    labels: list[str | None] = [None] * n_clusters
    taken: set[int] = set()
    while heap:
        _, _, cluster, j = heapq.heappop(heap)
        if j in taken:
            position[cluster] += 1
            push(cluster)
            continue
        labels[cluster] = str(tfidf.vocabulary[j])
        taken.add(j)
    fallback = {f"topic_{i}" for i in ids}
    clash = fallback & {label for label in labels if label is not None}
    if clash:  # a caption word like "topic_3" cannot occur with LETTER_WORDS, but be safe
        raise ValueError(f"unique_labels: fallback label(s) {sorted(clash)} are also words")
    return [f"topic_{i}" if label is None else label for label, i in zip(labels, ids, strict=True)]
