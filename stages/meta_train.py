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
from pipeline.errors import UserError, run_stage
from pipeline.io import write_json
from pipeline.meta.artifacts import save_meta_prompt
from pipeline.meta.supervised import labelled_source
from pipeline.meta.tasks import read_task_shards
from pipeline.meta.variant import (
    VariantPaths,
    meta_train_variant,
    summary,
    validation_summary,
)
from pipeline.params import load_params

CURVES = ("query_loss", "train_loss", "grad_cosine", "grad_cosine_raw")


def settings(params: dict, variant: str) -> dict[str, Any]:
    """The validated configuration of one variant (see ``pipeline.config.read_meta``)."""
    return read_meta(params, variant)


def held_out_tasks(cfg: dict[str, Any], directory: Path) -> list:
    """The meta-validation tasks (none when ``val_every`` is off); asking for validation
    without held-out tasks is an error naming both keys."""
    if not cfg["val_every"] or cfg["mode"] == "none" or cfg["steps"] == 0:
        return []
    if not sorted(directory.glob("tasks-*.tar")):
        raise UserError(
            f"meta.train.val_every: {cfg['val_every']} (variant {cfg['variant']}): {directory} "
            "has no held-out tasks; set tasks.val_topics and tasks.val_tasks (or val_every: 0)"
        )
    return read_task_shards(directory)


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

    order = "second-order (Eq. 10)" if cfg["second_order"] else "first-order approximation"
    info = {
        "variant": variant,
        "mode": cfg["mode"],
        "order": order,
        "backbone": backbone.name,
        "regulator": result.regulator_config,
    }
    save_meta_prompt(
        Path("models/gram") / variant,
        result.theta,
        result.regulators.cpu(),
        result.regulator_config,
        cfg["learner"],
        cfg["options"],
        info,
    )
    metrics = {
        **info,
        "steps": len(result.history),
        "tasks_per_batch": cfg["tasks_per_batch"],
        "val_every": cfg["val_every"] or 0,
        "theta_shapes": {name: list(t.shape) for name, t in result.theta.items()},
        "phi_parameters": sum(p.numel() for p in result.regulators.parameters()),
    }
    for name in CURVES:
        metrics.update(summary(result.history, name))
    used = len(val_tasks[: cfg["val_max_tasks"]])
    metrics.update(validation_summary(result.validation, used))
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
