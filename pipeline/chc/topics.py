"""Semantic topic clustering (GRAM 3.2): Sentence-BERT -> UMAP -> HDBSCAN -> Eq. 3 topic words.

``TopicModel`` is a BERTopic-style orchestrator whose four sub-models are injected and each
replaceable: ``embedder.encode(captions)``, ``reducer.fit_transform(X)``,
``clusterer.fit(X).labels_`` and a scikit-learn ``CountVectorizer``. Our choices:

* HDBSCAN's noise (label -1) gets no topic and is dropped downstream (the paper is silent).
* Topic ids are renumbered by final size, largest first (ties: HDBSCAN's order).
* Scale (``fit_sample_size``): UMAP and HDBSCAN are fitted on a seeded random sample only;
  every other caption goes to the topic whose centroid (mean sentence embedding of the
  topic's sampled captions) is nearest by cosine. With ``assign_noise`` an assigned caption
  whose best cosine is below a threshold becomes noise; the threshold is the
  ``noise_fraction``-quantile of the sampled captions' own best cosines, so the rest gets
  about the sample's noise fraction. Memory and time then grow linearly in the number of
  captions beyond the sample (one pass of matrix products against the centroids).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..errors import UserError
from .ctfidf import cluster_tfidf, make_vectorizer, unique_labels

CHUNK = 65_536  # rows per matrix product against the centroids: bounded extra memory


class TopicError(UserError):
    """Clustering gave no usable topics; the message names the params to change."""


@dataclass
class TopicResult:
    labels: np.ndarray  # [N] int64 topic id per caption, -1 for noise
    topics: pd.DataFrame  # topic_id, topic_word, size, words, scores, examples
    fit_index: np.ndarray  # [M] the captions UMAP and HDBSCAN were fitted on
    reduced: np.ndarray  # [M, n_components] their UMAP coordinates

    @property
    def num_topics(self) -> int:
        return len(self.topics)

    @property
    def noise_fraction(self) -> float:
        return float(np.mean(self.labels < 0)) if len(self.labels) else 0.0

    @property
    def topic_words(self) -> list[str]:
        return self.topics["topic_word"].tolist()

    def words_of(self, labels: np.ndarray) -> np.ndarray:
        """Topic word for each label (``""`` for noise)."""
        lookup = np.asarray([""] + self.topic_words, dtype=object)
        return lookup[np.asarray(labels) + 1]


class TopicModel:
    def __init__(
        self,
        embedder=None,
        reducer=None,
        clusterer=None,
        vectorizer=None,
        *,
        min_topics: int = 1,
        fit_sample_size: int | None = None,
        sample_seed: int = 0,
        assign_noise: bool = True,
        top_n_words: int = 10,
        n_examples: int = 3,
    ) -> None:
        from .backends import make_clusterer, make_reducer
        from .embed import SentenceEmbedder

        self.embedder = embedder if embedder is not None else SentenceEmbedder()
        self.reducer = reducer if reducer is not None else make_reducer()
        self.clusterer = clusterer if clusterer is not None else make_clusterer()
        self.vectorizer = vectorizer if vectorizer is not None else make_vectorizer()
        self.min_topics = min_topics
        self.fit_sample_size = fit_sample_size
        self.sample_seed = sample_seed
        self.assign_noise = assign_noise
        self.top_n_words = top_n_words
        self.n_examples = n_examples

    def fit(self, captions: Sequence[str], embeddings: np.ndarray | None = None) -> TopicResult:
        captions = [str(c) for c in captions]
        if embeddings is None:
            embeddings = self.embedder.encode(captions)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != len(captions):
            raise ValueError(
                f"TopicModel.fit: {len(captions)} captions but embeddings of shape "
                f"{embeddings.shape}; expected one row per caption"
            )
        inverse_norms = _inverse_norms(embeddings)

        fit_index = self._fit_index(len(captions))
        self._check_enough(len(fit_index))
        reduced = np.asarray(self.reducer.fit_transform(embeddings[fit_index]))
        raw = np.asarray(self.clusterer.fit(reduced).labels_)
        fitted = _by_size(raw)
        self._check_topics(fitted, len(captions))

        labels = np.full(len(captions), -1, dtype=np.int64)
        labels[fit_index] = fitted
        if len(fit_index) < len(captions):
            rest = np.setdiff1d(np.arange(len(captions)), fit_index)
            labels[rest] = assign_to_topics(
                embeddings, fit_index, fitted, rest, self.assign_noise, inverse_norms
            )
            labels = _by_size(labels)  # ids by final size, not by size in the sample
        topics = self._topic_table(captions, embeddings, inverse_norms, labels)
        return TopicResult(labels=labels, topics=topics, fit_index=fit_index, reduced=reduced)

    # -- steps ---------------------------------------------------------------------------

    def _fit_index(self, n: int) -> np.ndarray:
        if self.fit_sample_size is None or n <= self.fit_sample_size:
            return np.arange(n)
        rng = np.random.default_rng(self.sample_seed)
        return np.sort(rng.choice(n, size=self.fit_sample_size, replace=False))

    def _check_enough(self, n_fit: int) -> None:
        """Outcomes known before UMAP runs: HDBSCAN's clusters hold at least
        ``min_cluster_size`` points each, so ``min_topics`` of them need that many times more
        captions; UMAP needs more captions than ``n_neighbors``."""
        more = "raise topics.fit_sample_size or keep more pairs (filter.min_similarity)"
        if self.fit_sample_size is None or n_fit < self.fit_sample_size:
            more = "keep more pairs (filter.min_similarity)"
        size = getattr(self.clusterer, "min_cluster_size", None)
        wanted = max(self.min_topics, 1)
        if size is not None and n_fit < wanted * size:
            raise TopicError(
                f"topics.hdbscan.min_cluster_size: {size}: {n_fit} captions to fit cannot "
                f"form topics.min_topics = {wanted} topics of at least {size} captions each "
                f"(that takes {wanted * size}); lower topics.hdbscan.min_cluster_size or "
                f"topics.min_topics, or {more}"
            )
        n_neighbors = getattr(self.reducer, "n_neighbors", None)
        if n_neighbors is not None and n_fit <= n_neighbors:
            raise TopicError(
                f"topics.umap.n_neighbors: {n_neighbors}: {n_fit} captions to fit are too few "
                f"for UMAP (it needs more than n_neighbors); lower topics.umap.n_neighbors, "
                f"or {more}"
            )

    def _check_topics(self, fitted: np.ndarray, n_captions: int) -> None:
        found = int(fitted.max()) + 1 if len(fitted) else 0
        if found >= self.min_topics and found > 0:
            return
        noise = float(np.mean(fitted < 0)) if len(fitted) else 1.0
        size = getattr(self.clusterer, "min_cluster_size", "?")
        neighbours = getattr(self.reducer, "n_neighbors", "?")
        what = "only noise (no topic)" if found == 0 else f"{found} topics"
        raise TopicError(
            f"HDBSCAN found {what} in {len(fitted)} captions ({noise:.0%} noise) but at "
            f"least {max(self.min_topics, 1)} are needed (topics.min_topics; a meta-task "
            f"needs as many topics as ways). Lower topics.hdbscan.min_cluster_size "
            f"(now {size}), lower topics.umap.n_neighbors (now {neighbours}), raise "
            f"topics.fit_sample_size, or give more captions (now {n_captions})."
        )

    def _topic_table(self, captions, embeddings, inverse_norms, labels) -> pd.DataFrame:
        n_topics = int(labels.max()) + 1
        members = [np.flatnonzero(labels == t) for t in range(n_topics)]
        documents = ["\n".join(captions[i] for i in m) for m in members]
        tfidf = cluster_tfidf(documents, self.vectorizer)
        words = unique_labels(tfidf)
        centroids = _centroids(embeddings, inverse_norms, np.arange(len(labels)), labels)
        rows = []
        for topic, (member, word) in enumerate(zip(members, words, strict=True)):
            top = tfidf.top_words(topic, self.top_n_words)
            rows.append(
                {
                    "topic_id": topic,
                    "topic_word": word,
                    "size": len(member),
                    "words": [w for w, _ in top],
                    "scores": [round(s, 6) for _, s in top],
                    "examples": _examples(
                        captions,
                        embeddings,
                        inverse_norms,
                        member,
                        centroids[topic],
                        self.n_examples,
                    ),
                }
            )
        return pd.DataFrame(rows)


def assign_to_topics(
    embeddings: np.ndarray,
    fit_index: np.ndarray,
    fit_labels: np.ndarray,
    rest: np.ndarray,
    assign_noise: bool = True,
    inverse_norms: np.ndarray | None = None,
) -> np.ndarray:
    """Topic of each row in ``rest``: the nearest topic centroid by cosine.

    Centroids are the normalised means of the unit-length embeddings of the fitted rows of
    each topic. With ``assign_noise`` a row whose best cosine falls below the
    ``noise_fraction``-quantile (numpy's linear interpolation) of the fitted rows' own best
    cosines becomes noise (-1), so the rest gets about the fitted noise fraction.
    """
    if inverse_norms is None:
        inverse_norms = _inverse_norms(embeddings)
    centroids = _centroids(embeddings, inverse_norms, fit_index, fit_labels)
    best, nearest = _nearest(embeddings, inverse_norms, rest, centroids, progress=True)
    if assign_noise and np.any(fit_labels < 0):
        sample_best, _ = _nearest(embeddings, inverse_norms, fit_index, centroids)
        threshold = np.quantile(sample_best, np.mean(fit_labels < 0))
        nearest[best < threshold] = -1
    return nearest


# -- helpers -----------------------------------------------------------------------------


def _inverse_norms(embeddings: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(embeddings, axis=1)
    if not np.all(np.isfinite(norms)) or np.any(norms == 0):
        bad = int(np.flatnonzero(~np.isfinite(norms) | (norms == 0))[0])
        raise ValueError(f"TopicModel.fit: embedding row {bad} is zero or not finite")
    return (1.0 / norms).astype(np.float32)


def _by_size(raw: np.ndarray) -> np.ndarray:
    """Relabel clusters 0..k-1 by size, largest first (ties: original label); noise stays -1."""
    found, sizes = np.unique(raw[raw >= 0], return_counts=True)
    order = found[np.lexsort((found, -sizes))]
    relabel = np.full(int(raw.max()) + 2 if len(raw) else 1, -1, dtype=np.int64)
    relabel[order + 1] = np.arange(len(order))  # shifted by one so noise (-1) indexes slot 0
    return relabel[raw.astype(np.int64) + 1]


def _centroids(embeddings, inverse_norms, index, labels) -> np.ndarray:
    n_topics = int(labels.max()) + 1
    sums = np.zeros((n_topics, embeddings.shape[1]), dtype=np.float64)
    keep = labels >= 0
    rows = index[keep]
    for start in range(0, len(rows), CHUNK):
        chunk = rows[start : start + CHUNK]
        unit = embeddings[chunk] * inverse_norms[chunk, None]
        np.add.at(sums, labels[keep][start : start + CHUNK], unit)
    sums /= np.linalg.norm(sums, axis=1, keepdims=True)
    return sums.astype(np.float32)


def _nearest(embeddings, inverse_norms, index, centroids, progress=False):
    """(best cosine, nearest centroid) for the rows ``index``, in bounded-memory chunks."""
    best = np.empty(len(index), dtype=np.float32)
    nearest = np.empty(len(index), dtype=np.int64)
    starts = range(0, len(index), CHUNK)
    for start in tqdm(starts, desc="assign to topics", disable=not progress or len(starts) < 4):
        chunk = index[start : start + CHUNK]
        cosine = (embeddings[chunk] @ centroids.T) * inverse_norms[chunk, None]
        nearest[start : start + CHUNK] = np.argmax(cosine, axis=1)
        best[start : start + CHUNK] = cosine[np.arange(len(chunk)), nearest[start : start + CHUNK]]
    return best, nearest


def _examples(captions, embeddings, inverse_norms, member, centroid, n) -> list[str]:
    """The ``n`` distinct captions closest to the topic's centroid (most typical first)."""
    cosine, _ = _nearest(embeddings, inverse_norms, member, centroid[None, :])
    order = np.argsort(-cosine, kind="stable")
    picked: list[str] = []
    for i in order:
        text = captions[member[i]]
        if text not in picked:
            picked.append(text)
        if len(picked) == n:
            break
    return picked
