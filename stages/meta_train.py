"""DVC stage `meta_train <variant>`: GRAM meta-training (Algorithm 1) of one prompt variant.

Reads params: backbone, meta.train, meta.regulator, meta.variants.<variant>, tasks.source,
tasks.dataset, data.root, data.own, features.
Reads data/tasks/tasks-*.tar and the held-out data/tasks/val/tasks-*.tar;
data/pairs/embeddings.npz (textual prompts: frozen image features by key) or
data/pairs/shards/*.tar (visual prompts: images through the encoder); with
``tasks.source: dataset`` the task images of ``tasks.dataset`` instead (GRAM Table 6,
"- CHC = supervised meta-learning"; see ``pipeline.meta.supervised``).
Writes models/gram/<variant>/{theta.pt, phi.pt, learner.json},
metrics/meta_train/<variant>.json (with the meta-validation loss's start / end / min) and
dvclive curves under plots/meta_train/<variant>/ (``val_query_loss`` beside ``query_loss``).
Checkpoints go to .cache/meta_train/<variant>.pt (outside DVC, so an interrupted run
resumes there: same config and tasks -> same fingerprint -> identical result).
``meta.train.mode`` (gram | pretrain | none): see ``pipeline.meta.variant``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import torch

from pipeline.backbones import load_backbone
from pipeline.config import read_meta
from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.meta.supervised import labelled_source
from pipeline.meta.tasks import read_task_shards
from pipeline.meta.variant import (
    VariantPaths,
    held_out_tasks,
    meta_train_variant,
    save_variant,
    variant_card,
    variant_metrics,
)
from pipeline.params import load_params


def settings(params: dict, variant: str) -> dict[str, Any]:
    """The validated configuration of one variant (see ``pipeline.config.read_meta``)."""
    return read_meta(params, variant)


def main(variant: str) -> None:
    params = load_params()
    cfg = settings(params, variant)
    tasks = read_task_shards(VariantPaths().tasks)  # before the backbone: bad tasks fail fast
    val_tasks = held_out_tasks(cfg, VariantPaths().tasks / "val")
    labelled = labelled_source(params)  # None: tasks from CHC, images from the pairs
    torch.manual_seed(cfg["seed"])
    backbone = load_backbone(params["backbone"])
    result = meta_train_variant(
        cfg, backbone, tasks, labelled=labelled, params=params, val_tasks=val_tasks
    )
    card = variant_card(cfg, backbone.name, result)
    save_variant(Path("models/gram") / variant, cfg, result, card)
    metrics = variant_metrics(cfg, result, card, val_tasks)
    write_json(Path("metrics/meta_train") / f"{variant}.json", metrics)
    # timings are not compared between experiments: a plain output, not a DVC metric
    write_json(
        Path("metrics/timings/meta_train") / f"{variant}.json",
        {"seconds": round(result.seconds, 2)},
    )
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.meta_train <variant>  (a key of meta.variants)")
    run_stage(main, sys.argv[1])
