"""DVC stage `domains`: k-means on frozen image features inside each topic (GRAM 3.2).

Reads params: domains.* (k, min_points_per_domain, seed, niter, nredo, montage_topics,
montage_images).
Reads data/pairs/embeddings.npz (keys, image), data/chc/assignments.parquet and, for the
montages, the images in data/pairs/shards/*.tar.
Writes data/chc/domains.parquet (key, topic_id, topic_word, domain), metrics/domains.json
{"num_topics", "domain_sizes": {topic word: [sizes, largest first]}} and
plots/domains/montages/<id>_<word>.png for the largest topics (a row per domain).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.chc.config import domain_settings
from pipeline.chc.domains import cluster_domains
from pipeline.chc.montage import write_domain_montages
from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.meta.adapters import PairFeatures
from pipeline.params import load_params

EMBEDDINGS = "data/pairs/embeddings.npz"
ASSIGNMENTS = "data/chc/assignments.parquet"
SHARDS = "data/pairs/shards"
DOMAINS = "data/chc/domains.parquet"
METRICS = "metrics/domains.json"
MONTAGES = "plots/domains/montages"


def main() -> None:
    settings = domain_settings(load_params())
    table = pd.read_parquet(ASSIGNMENTS, columns=["key", "topic_id", "topic_word"])
    keys = table["key"].astype(str).to_numpy()
    features = PairFeatures(EMBEDDINGS)(list(keys)).numpy()
    table["domain"] = cluster_domains(
        features,
        table["topic_id"].to_numpy(),
        settings.k,
        min_points_per_domain=settings.min_points_per_domain,
        seed=settings.seed,
        niter=settings.niter,
        nredo=settings.nredo,
    )
    Path(DOMAINS).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(DOMAINS, index=False)

    topics = table.groupby("topic_id", sort=True)
    sizes = {
        str(group["topic_word"].iloc[0]): np.bincount(group["domain"]).tolist()
        for _, group in topics
    }
    write_json(METRICS, {"num_topics": len(sizes), "domain_sizes": sizes})
    shards = sorted(Path(SHARDS).glob("*.tar"))
    write_domain_montages(
        table, features, settings.montage_topics, settings.montage_images, shards, MONTAGES
    )
    print(f"domains: {len(sizes)} topics, {table['domain'].max() + 1} domains at most")


if __name__ == "__main__":
    run_stage(main)
