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

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.chc.config import domain_settings
from pipeline.chc.domains import cluster_domains
from pipeline.chc.montage import domain_montage, load_images, typical_rows
from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.pairs.embed import load_embeddings
from pipeline.params import load_params

EMBEDDINGS = "data/pairs/embeddings.npz"
ASSIGNMENTS = "data/chc/assignments.parquet"
SHARDS = "data/pairs/shards"
DOMAINS = "data/chc/domains.parquet"
METRICS = "metrics/domains.json"
MONTAGES = "plots/domains/montages"


def image_features(keys: np.ndarray) -> np.ndarray:
    stored = load_embeddings(EMBEDDINGS)
    row_of = {str(key): i for i, key in enumerate(stored["keys"])}
    missing = [k for k in keys if k not in row_of]
    if missing:
        raise KeyError(f"{EMBEDDINGS}: no image features for {len(missing)} assigned keys, "
                       f"e.g. {missing[0]!r}; rerun embed_pairs and the stages after it")
    return stored["image"][[row_of[k] for k in keys]]


def main() -> None:
    settings = domain_settings(load_params())
    table = pd.read_parquet(ASSIGNMENTS, columns=["key", "topic_id", "topic_word"])
    keys = table["key"].astype(str).to_numpy()
    features = image_features(keys)
    table["domain"] = cluster_domains(
        features, table["topic_id"].to_numpy(), settings.k,
        min_points_per_domain=settings.min_points_per_domain, seed=settings.seed,
        niter=settings.niter, nredo=settings.nredo,
    )
    Path(DOMAINS).parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(DOMAINS, index=False)

    topics = table.groupby("topic_id", sort=True)
    sizes = {
        str(group["topic_word"].iloc[0]): np.bincount(group["domain"]).tolist()
        for _, group in topics
    }
    write_json(METRICS, {"num_topics": len(sizes), "domain_sizes": sizes})
    write_montages(table, features, settings)
    print(f"domains: {len(sizes)} topics, {table['domain'].max() + 1} domains at most")


def write_montages(table: pd.DataFrame, features: np.ndarray, settings) -> None:
    shutil.rmtree(MONTAGES, ignore_errors=True)
    Path(MONTAGES).mkdir(parents=True)
    counts = table["topic_id"].value_counts()
    by_size = counts.index.to_numpy()[np.lexsort((counts.index, -counts.to_numpy()))]
    chosen = sorted(by_size[: settings.montage_topics])
    plan = {}
    for topic in chosen:
        rows = np.flatnonzero(table["topic_id"].to_numpy() == topic)
        domains = table["domain"].to_numpy()[rows]
        plan[topic] = [
            (f"domain {d} ({np.sum(domains == d)})",
             table["key"].to_numpy()[typical_rows(features, rows[domains == d],
                                                  settings.montage_images)].tolist())
            for d in range(domains.max() + 1)
        ]
    wanted = {key for rows in plan.values() for _, keys in rows for key in keys}
    images = load_images(wanted, shards=sorted(Path(SHARDS).glob("*.tar")))
    if len(images) < len(wanted):
        print(f"domains: {len(wanted) - len(images)} montage images not found in {SHARDS}")
    for topic, rows in plan.items():
        word = table.loc[table["topic_id"] == topic, "topic_word"].iloc[0]
        montage = domain_montage(f"topic {topic}: {word}", rows, images)
        montage.save(Path(MONTAGES) / f"{topic:03d}_{word}.png")


if __name__ == "__main__":
    run_stage(main)
