"""DVC stage `filter`: keep pairs with image-caption cosine similarity >= filter.min_similarity.

Reads params: filter.min_similarity.
Writes data/pairs/kept.parquet (key, caption, similarity; sorted by key),
metrics/filter.json {"input", "kept", "dropped": {reason}, "min_similarity",
"shuffled_pass_rate"} and the
similarity histogram plots/filter/similarity_histogram.csv + .png (threshold marked).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.pairs.embed import load_embeddings
from pipeline.pairs.filter import filter_pairs, histogram, plot_histogram
from pipeline.params import check_range, get, load_params

INDEX = "data/pairs/index.parquet"
EMBEDDINGS = "data/pairs/embeddings.npz"
KEPT = "data/pairs/kept.parquet"
METRICS = "metrics/filter.json"
HISTOGRAM_CSV = "plots/filter/similarity_histogram.csv"
HISTOGRAM_PNG = "plots/filter/similarity_histogram.png"


def main() -> None:
    params = load_params()
    threshold = check_range(
        "filter.min_similarity", get(params, "filter.min_similarity"), -1.0, 1.0
    )
    index = pd.read_parquet(INDEX, columns=["key", "status"])
    kept, metrics, similarity, shuffled = filter_pairs(
        load_embeddings(EMBEDDINGS), index, threshold
    )
    kept.to_parquet(KEPT, index=False)
    write_json(METRICS, metrics)
    table = histogram(similarity, threshold, shuffled)
    Path(HISTOGRAM_CSV).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(HISTOGRAM_CSV, index=False)
    title = f"{metrics['kept']} of {metrics['input']} pairs kept"
    plot_histogram(table, threshold, HISTOGRAM_PNG, title)
    print(f"filter: kept {metrics['kept']} of {metrics['input']}, dropped {metrics['dropped']}")


if __name__ == "__main__":
    run_stage(main)
