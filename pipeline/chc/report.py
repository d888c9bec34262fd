"""Views of the topics a person can read: a markdown table, a 2-D topic map, topic sizes;
and the tables and numbers the ``topics`` stage writes from a fit."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .topics import TopicResult


def _matplotlib():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def topics_markdown(topics: pd.DataFrame, num_pairs: int, noise_fraction: float) -> str:
    lines = [
        "# Topics",
        "",
        f"{len(topics)} topics over {num_pairs} captions; {noise_fraction:.1%} noise "
        "(no topic, dropped). Words scored by GRAM Eq. 3.",
        "",
        "| id | topic word | size | top words (score) | examples |",
        "|---:|---|---:|---|---|",
    ]
    for row in topics.itertuples():
        words = ", ".join(f"{w} ({s:.3f})" for w, s in zip(row.words, row.scores, strict=True))
        examples = " / ".join(_cell(e) for e in row.examples)
        lines.append(
            f"| {row.topic_id} | **{row.topic_word}** | {row.size} | {words} | {examples} |"
        )
    return "\n".join(lines) + "\n"


def _cell(text: str, limit: int = 80) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def assignments_table(keys: np.ndarray, result: TopicResult) -> pd.DataFrame:
    """key, topic_id, topic_word of every caption in a topic (noise rows dropped)."""
    assigned = result.labels >= 0
    return pd.DataFrame(
        {
            "key": keys[assigned],
            "topic_id": result.labels[assigned],
            "topic_word": result.words_of(result.labels[assigned]).astype(str),
        }
    )


def topics_summary(result: TopicResult, num_pairs: int) -> dict:
    """The ``topics`` stage's metrics: how many topics, how much noise, their words."""
    return {
        "num_pairs": num_pairs,
        "num_topics": result.num_topics,
        "noise_fraction": round(result.noise_fraction, 6),
        "topic_words": result.topic_words,
    }


def plot_fitted_map(
    result: TopicResult,
    max_points: int,
    random_state: int,
    path: str | Path,
    cache: str | Path | None = None,
    engine: str = "umap-learn",
) -> None:
    """The topic map of at most ``max_points`` of the fitted captions (a seeded sample, kept
    in fit order), laid out in 2-D from their UMAP coordinates (kept in ``cache``, if given,
    like the fit's own UMAP: a rerun after an HDBSCAN change draws the same map at once) by
    the fit's UMAP ``engine``."""
    rng = np.random.default_rng(random_state)
    shown = np.sort(rng.permutation(len(result.fit_index))[:max_points])
    xy = map_2d(result.reduced[shown], random_state=random_state, cache=cache, engine=engine)
    plot_topic_map(xy, result.labels[result.fit_index[shown]], result.topic_words, path)


def map_2d(
    reduced: np.ndarray,
    random_state: int = 0,
    n_neighbors: int = 15,
    cache: str | Path | None = None,
    engine: str = "umap-learn",
) -> np.ndarray:
    """2-D UMAP of the (already reduced) coordinates, for the topic map only."""
    from .umap_cache import CachedUMAP

    n_neighbors = max(2, min(n_neighbors, len(reduced) - 1))
    options = dict(n_components=2, n_neighbors=n_neighbors, min_dist=0.1, random_state=random_state)
    if engine == "block":
        from .block_umap import BlockUMAP

        return BlockUMAP(**options, metric="euclidean", cache=cache).fit_transform(reduced)
    options["n_jobs"] = 1
    if cache is None:
        from umap import UMAP

        from .numba_kernels import cache_kernels

        cache_kernels()
        reducer = UMAP(**options)
    else:
        reducer = CachedUMAP(cache, **options)
    return reducer.fit_transform(reduced)


def plot_topic_map(
    xy: np.ndarray, labels: np.ndarray, words: list[str], path: str | Path, n_named: int = 20
) -> None:
    """Scatter of the captions coloured by topic (noise grey), largest topics named."""
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(10, 8), dpi=110)
    noise = labels < 0
    ax.scatter(xy[noise, 0], xy[noise, 1], s=3, c="#cccccc", linewidths=0, label="noise")
    colours = plt.get_cmap("tab20")
    for topic in np.unique(labels[~noise]):
        inside = labels == topic
        ax.scatter(xy[inside, 0], xy[inside, 1], s=4, color=colours(topic % 20), linewidths=0)
        if topic < n_named:
            x, y = np.median(xy[inside], axis=0)
            ax.annotate(words[topic], (x, y), fontsize=8, weight="bold", ha="center")
    ax.set_title(
        f"Caption embeddings by topic ({len(words)} topics, {noise.mean():.0%} noise in grey)"
    )
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_topic_sizes(topics: pd.DataFrame, path: str | Path, n_shown: int = 60) -> None:
    plt = _matplotlib()
    shown = topics.head(n_shown)
    fig, ax = plt.subplots(figsize=(max(6, 0.22 * len(shown) + 2), 4.5), dpi=110)
    ax.bar(range(len(shown)), shown["size"], color="#4c72b0")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(shown["topic_word"], rotation=90, fontsize=7)
    ax.set_ylabel("captions")
    more = f" (largest {n_shown} of {len(topics)})" if len(topics) > n_shown else ""
    ax.set_title(f"Topic sizes{more}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
