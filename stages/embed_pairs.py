"""DVC stage `embed_pairs`: image and caption features of every pair in the shards.

Reads params: backbone, embed_pairs (batch_size, num_workers, checkpoint_every).
Writes data/pairs/embeddings.npz (keys, image, text, captions, sha256, failed_keys,
failed_reasons, failed_details) and metrics/embed_pairs.json {"input", "embedded", "failed"}.
A separate stage so that changing filter.min_similarity never re-embeds.
"""

from __future__ import annotations

import pandas as pd

from pipeline.backbones import load_backbone
from pipeline.errors import UserError, run_stage
from pipeline.io import write_json
from pipeline.pairs.embed import backbone_id, embed_pairs
from pipeline.pairs.shards import list_shards
from pipeline.params import check_range, get, load_params

SHARDS_DIR = "data/pairs/shards"
INDEX = "data/pairs/index.parquet"
EMBEDDINGS = "data/pairs/embeddings.npz"
PARTS_DIR = "data/pairs/embed_parts"  # saved progress, kept only until the run completes
METRICS = "metrics/embed_pairs.json"


def main() -> None:
    params = load_params()
    batch_size = check_range(
        "embed_pairs.batch_size", get(params, "embed_pairs.batch_size"), 1, 65536, integer=True
    )
    workers = check_range(
        "embed_pairs.num_workers", get(params, "embed_pairs.num_workers"), 0, 256, integer=True
    )
    checkpoint_every = check_range(
        "embed_pairs.checkpoint_every",
        get(params, "embed_pairs.checkpoint_every"),
        1,
        10**9,
        integer=True,
    )
    if not list_shards(SHARDS_DIR):  # checked before the backbone loads
        raise UserError(f"{SHARDS_DIR}: no shards to embed (run the ingest stage)")
    total = int((pd.read_parquet(INDEX, columns=["status"])["status"] == "success").sum())
    backbone = load_backbone(params["backbone"])
    metrics = embed_pairs(
        SHARDS_DIR,
        backbone,
        backbone_id(backbone, params["backbone"]),
        EMBEDDINGS,
        PARTS_DIR,
        batch_size=batch_size,
        num_workers=workers,
        total=total,
        checkpoint_every=checkpoint_every,
    )
    write_json(METRICS, metrics)
    print(
        f"embed_pairs: {metrics['embedded']} of {metrics['input']} embedded, "
        f"failed: {metrics['failed']}"
    )


if __name__ == "__main__":
    run_stage(main)
