"""DVC stage `ingest`: pre-training pairs -> WebDataset shards + an index of every input row.

Reads params: ingest (source sample|cc3m, input, image options, download options).
Writes data/pairs/shards/pairs-%06d.tar, data/pairs/index.parquet (key, caption, status,
shard, line, sha256, detail) and metrics/ingest.json {"rows", "written", "failed": {reason}}.
"""

from __future__ import annotations

from pipeline.errors import run_stage
from pipeline.pairs.ingest import ingest_config, run_ingest
from pipeline.params import load_params

SHARDS_DIR = "data/pairs/shards"
INDEX = "data/pairs/index.parquet"
METRICS = "metrics/ingest.json"


def main() -> None:
    config = ingest_config(load_params())
    _, metrics = run_ingest(config, SHARDS_DIR, INDEX, METRICS)
    print(
        f"ingest ({config.source}): {metrics['written']} of {metrics['rows']} rows written, "
        f"failed: {metrics['failed']}"
    )


if __name__ == "__main__":  # img2dataset's multiprocessing spawns and re-imports this module
    run_stage(main)
