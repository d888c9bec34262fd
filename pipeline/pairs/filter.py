"""Keep the pairs whose image and caption agree under the backbone (``filter`` stage).

GRAM "adopts a filtering model to filter out mismatched noisy image-text pairs" without
naming it; ours is the backbone itself: cosine similarity of the normalised image and caption
features, kept when at least ``filter.min_similarity``.

Every pair ingest wrote is accounted for exactly once, as kept or under one reason:
the embed failure reasons (``decode_error``, ``missing_image``, ``empty_caption``,
``caption_not_utf8``, ``duplicate_key``), ``missing_from_shards`` (in the index, absent from
the shards), ``duplicate_image`` (the same image bytes, by SHA-256, as another pair: the
copy with the highest similarity stays, ties to the smallest key, so a generic caption does
not win over a specific one by being first), then ``below_threshold``.

To judge a threshold, the histogram and the metrics also show deliberately mismatched pairs
(each image with another pair's caption): ``shuffled_pass_rate`` is the fraction of them
that the threshold would keep, i.e. how often a wrong caption gets through.

A filter that keeps nothing is an error naming ``filter.min_similarity`` (the stages after it
cannot run on zero pairs); too few pairs for the topics is caught by the ``topics`` stage,
before UMAP, naming its own params.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError
from . import reasons

MISSING_FROM_SHARDS = "missing_from_shards"
BIN_WIDTH = 0.02


class FilterError(UserError):
    """The filter leaves no pair; the message names the param and its value."""


def check_kept(kept: int, similarity: np.ndarray, metrics: dict, min_similarity: float) -> None:
    """Raise :class:`FilterError` when nothing is kept, with what would keep something."""
    if kept:
        return
    if not len(similarity):
        raise FilterError(
            f"data/pairs/embeddings.npz: no embedded pair to filter ({metrics['input']} "
            f"input, dropped {metrics['dropped']}); check the ingest and embed_pairs metrics"
        )
    highest = float(similarity.max())
    median = float(np.median(similarity))
    raise FilterError(
        f"filter.min_similarity: {min_similarity}: keeps 0 of {metrics['input']} pairs "
        f"(dropped {metrics['dropped']}); the highest similarity is {highest:.4f}, the "
        f"median {median:.4f}: lower the threshold"
    )


def cosine_similarity(image: np.ndarray, text: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity, in float64 so the threshold test is reproducible."""
    image = image.astype(np.float64)
    text = text.astype(np.float64)
    image /= np.clip(np.linalg.norm(image, axis=1, keepdims=True), 1e-12, None)
    text /= np.clip(np.linalg.norm(text, axis=1, keepdims=True), 1e-12, None)
    return (image * text).sum(axis=1)


def shuffled_similarity(image: np.ndarray, text: np.ndarray, seed: int = 0) -> np.ndarray:
    """Similarity of deliberately mismatched pairs: image p[j] with caption p[j + 1] of a seeded
    permutation p, so no image meets its own caption. Its distribution is what a threshold
    has to beat: ``shuffled >= min_similarity`` is how often a wrong caption would pass."""
    if len(image) < 2:
        return np.zeros(0)
    order = np.random.default_rng(seed).permutation(len(image))
    return cosine_similarity(image[order], text[np.roll(order, -1)])


def duplicate_images(sha256: np.ndarray, similarity: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Mask of pairs whose image another, better pair already has (see module doc)."""
    frame = pd.DataFrame({"sha256": sha256, "similarity": -similarity, "key": keys})
    best = frame.sort_values(["sha256", "similarity", "key"], kind="stable")
    best = best[best["sha256"] != ""]
    return best.duplicated("sha256").reindex(frame.index, fill_value=False).to_numpy()


def filter_pairs(
    embeddings: dict[str, np.ndarray], index: pd.DataFrame, min_similarity: float
) -> tuple[pd.DataFrame, dict, np.ndarray, np.ndarray]:
    """-> (kept pairs sorted by key, metrics, similarity of every embedded pair, similarity
    of as many shuffled pairs)."""
    keys = embeddings["keys"]
    similarity = cosine_similarity(embeddings["image"], embeddings["text"])
    shuffled = shuffled_similarity(embeddings["image"], embeddings["text"])
    dropped = Counter(embeddings["failed_reasons"].tolist())
    written = set(index.loc[index["status"] == reasons.SUCCESS, "key"])
    missing = len(written - set(keys.tolist()) - set(embeddings["failed_keys"].tolist()))
    if missing:
        dropped[MISSING_FROM_SHARDS] = missing

    duplicate = duplicate_images(embeddings["sha256"], similarity, keys)
    below = ~duplicate & ~(similarity >= min_similarity)
    dropped[reasons.DUPLICATE_IMAGE] += int(duplicate.sum())
    dropped[reasons.BELOW_THRESHOLD] += int(below.sum())
    keep = ~duplicate & ~below
    kept = pd.DataFrame(
        {
            "key": keys[keep],
            "caption": embeddings["captions"][keep],
            "similarity": similarity[keep],
        }
    )
    kept = kept.sort_values("key", kind="stable").reset_index(drop=True)
    metrics = {
        "input": len(keys) + len(embeddings["failed_keys"]) + missing,
        "kept": len(kept),
        "dropped": {reason: n for reason, n in sorted(dropped.items()) if n},
        "min_similarity": min_similarity,
        "shuffled_pass_rate": round(float((shuffled >= min_similarity).mean()), 4)
        if len(shuffled)
        else None,
    }
    check_kept(len(kept), similarity, metrics, min_similarity)
    return kept, metrics, similarity, shuffled


def histogram(
    similarity: np.ndarray, min_similarity: float, shuffled: np.ndarray | None = None
) -> pd.DataFrame:
    """Counts per similarity bin: the pairs below and at/above the threshold, and the
    shuffled (mismatched) pairs for comparison."""
    shuffled = np.zeros(0) if shuffled is None else shuffled
    values = np.concatenate([similarity, shuffled])
    if len(values):
        low = np.floor(values.min() / BIN_WIDTH) * BIN_WIDTH
        high = np.ceil(values.max() / BIN_WIDTH) * BIN_WIDTH
    else:
        low, high = 0.0, BIN_WIDTH
    edges = np.arange(max(round((high - low) / BIN_WIDTH), 1) + 1) * BIN_WIDTH + low
    above = similarity >= min_similarity
    return pd.DataFrame(
        {
            "similarity": np.round((edges[:-1] + edges[1:]) / 2, 6),
            "below_threshold": np.histogram(similarity[~above], bins=edges)[0],
            "at_or_above_threshold": np.histogram(similarity[above], bins=edges)[0],
            "shuffled_pairs": np.histogram(shuffled, bins=edges)[0],
        }
    )


def plot_histogram(table: pd.DataFrame, min_similarity: float, path: str | Path, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    width = BIN_WIDTH * 0.95
    axis.bar(
        table["similarity"],
        table["below_threshold"],
        width,
        color="#c44e52",
        label="below threshold",
    )
    axis.bar(
        table["similarity"],
        table["at_or_above_threshold"],
        width,
        bottom=table["below_threshold"],
        color="#4c72b0",
        label="at or above threshold",
    )
    if "shuffled_pairs" in table:
        axis.step(
            table["similarity"],
            table["shuffled_pairs"],
            where="mid",
            color="dimgray",
            label="shuffled pairs (each image, another caption)",
        )
    axis.axvline(
        min_similarity, color="black", linestyle="--", label=f"min_similarity = {min_similarity:g}"
    )
    axis.set_xlabel("image-caption cosine similarity")
    axis.set_ylabel("pairs")
    axis.set_title(title)
    axis.legend(fontsize="small")
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
