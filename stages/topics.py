"""DVC stage `topics`: UMAP -> HDBSCAN -> topic words by GRAM Eq. 3 (see pipeline/chc/topics.py).

Reads params: topics.* (backend, umap.* (engine, blocks, ...), hdbscan.*, stop_words, min_topics,
fit_sample_size, sample_seed, assign_noise, umap_cache, top_n_words, n_examples, map_max_points).
Reads data/pairs/kept.parquet and data/chc/caption_embeddings.npy (rows aligned).
Writes data/chc/topics.parquet (topic_id, topic_word, size, words, scores, examples),
data/chc/topics.md (the same, readable), data/chc/assignments.parquet (key, topic_id,
topic_word; noise dropped), metrics/topics.json, plots/topics/sizes.csv + sizes.png and
plots/topics/topic_map.png (2-D UMAP of the 5-D reduction, coloured by topic).
"""

from __future__ import annotations

import os
from pathlib import Path

# numba's compiled umap-learn/pynndescent kernels (those it can cache) are kept in the repo's
# .cache/, so a rerun of this stage does not compile them again (README "Speed"). Set before
# numba is imported.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(".cache/numba").resolve()))

import numpy as np
import pandas as pd

from pipeline.chc.config import topic_model_from_params
from pipeline.chc.report import (
    assignments_table,
    plot_fitted_map,
    plot_topic_sizes,
    topics_markdown,
    topics_summary,
)
from pipeline.errors import UserError, run_stage
from pipeline.io import write_json
from pipeline.params import check_range, get, load_params

KEPT = "data/pairs/kept.parquet"
EMBEDDINGS = "data/chc/caption_embeddings.npy"
TOPICS = "data/chc/topics.parquet"
TOPICS_MD = "data/chc/topics.md"
ASSIGNMENTS = "data/chc/assignments.parquet"
METRICS = "metrics/topics.json"
SIZES_CSV = "plots/topics/sizes.csv"
SIZES_PNG = "plots/topics/sizes.png"
MAP_PNG = "plots/topics/topic_map.png"


def main() -> None:
    params = load_params()
    model = topic_model_from_params(params)
    map_points = check_range(
        "topics.map_max_points", get(params, "topics.map_max_points"), 10, integer=True
    )
    kept = pd.read_parquet(KEPT, columns=["key", "caption"])
    embeddings = np.load(EMBEDDINGS)
    if len(embeddings) != len(kept):
        raise UserError(
            f"{EMBEDDINGS}: {len(embeddings)} rows but {KEPT} has {len(kept)} "
            "pairs; rerun embed_captions"
        )
    result = model.fit(kept["caption"].fillna("").astype(str).tolist(), embeddings)

    for path in (TOPICS, SIZES_CSV, METRICS):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    result.topics.to_parquet(TOPICS, index=False)
    Path(TOPICS_MD).write_text(topics_markdown(result.topics, len(kept), result.noise_fraction))
    assignments_table(kept["key"].to_numpy(), result).to_parquet(ASSIGNMENTS, index=False)
    write_json(METRICS, topics_summary(result, len(kept)))

    result.topics[["topic_word", "size"]].to_csv(SIZES_CSV, index=False)
    plot_topic_sizes(result.topics, SIZES_PNG)
    seed, cache = get(params, "topics.umap.random_state"), get(params, "topics.umap_cache")
    engine = get(params, "topics.umap.engine")
    plot_fitted_map(result, map_points, seed, MAP_PNG, cache=cache, engine=engine)
    print(
        f"topics: {result.num_topics} topics over {len(kept)} captions, "
        f"{result.noise_fraction:.1%} noise; largest: {', '.join(result.topic_words[:10])}"
    )


if __name__ == "__main__":
    run_stage(main)
