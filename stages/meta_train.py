"""DVC stage `meta_train <variant>`: GRAM meta-training (Algorithm 1) of one prompt variant.

Reads params: backbone, meta.train, meta.regulator, meta.variants.<variant>.
Reads data/tasks/tasks-*.tar; data/pairs/embeddings.npz (textual prompts: frozen image
features by key) or data/pairs/shards/*.tar (visual prompts: images through the encoder).
Writes models/gram/<variant>/{theta.pt, phi.pt, learner.json},
metrics/meta_train/<variant>.json and dvclive curves under plots/meta_train/<variant>/.
Checkpoints go to .cache/meta_train/<variant>.pt (outside DVC, so an interrupted run
resumes there: same config and tasks -> same fingerprint -> identical result).

``meta.train.mode``: ``gram`` (Algorithm 1), ``pretrain`` (GRAM Table 6 row 3, "- meta-learning":
plain prompt pre-training on the cluster data; phi = identity) or ``none`` (Table 6 row 5,
"joint textual & visual prompt tuning": no meta-training at all; theta = the learner's own
random init, phi = identity).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipeline.backbones import load_backbone
from pipeline.config import read_meta
from pipeline.errors import run_stage
from pipeline.io import open_live, write_json
from pipeline.learners import build_learner
from pipeline.meta.adapters import (
    LearnerLoss,
    PairFeatures,
    PairImages,
    keys_used,
    pretrain_batches,
    task_batches,
)
from pipeline.meta.artifacts import save_meta_prompt
from pipeline.meta.gram import InnerLoop
from pipeline.meta.regulator import build_regulators
from pipeline.meta.tasks import read_task_shards
from pipeline.meta.trainer import MetaTrainer, run
from pipeline.params import load_params

TASKS_DIR = "data/tasks"
EMBEDDINGS = "data/pairs/embeddings.npz"
SHARDS_DIR = "data/pairs/shards"


def settings(params: dict, variant: str) -> dict[str, Any]:
    """The validated configuration of one variant (see ``pipeline.config.read_meta``)."""
    return read_meta(params, variant)


def fingerprint(cfg: dict, backbone_name: str, shards: list[Path]) -> str:
    """Identity of a run: config, backbone and the task shards' bytes (checkpoint key)."""
    digest = hashlib.sha256(json.dumps([cfg, backbone_name], sort_keys=True).encode())
    for shard in shards:
        digest.update(shard.read_bytes())
    return digest.hexdigest()


def summary(history: list[dict[str, float]], name: str) -> dict[str, float]:
    """Mean of ``name`` over the first and the last tenth of the run (at least one step)."""
    values = [h[name] for h in history if name in h]
    if not values:
        return {}
    k = max(1, len(values) // 10)
    return {f"{name}_start": round(float(np.mean(values[:k])), 5),
            f"{name}_end": round(float(np.mean(values[-k:])), 5)}


def main(variant: str) -> None:
    params = load_params()
    cfg = settings(params, variant)
    torch.manual_seed(cfg["seed"])
    backbone = load_backbone(params["backbone"])
    tasks = read_task_shards(TASKS_DIR)
    learner = build_learner(
        cfg["learner"], backbone, tasks[0].classnames, cfg["options"], seed=cfg["seed"]
    )
    theta = {name: p.detach().clone() for name, p in learner.prompt_parameters().items()}
    regulator_config = {
        **cfg["regulator"],
        # only Algorithm 1 learns phi: the ablations fine-tune downstream with raw gradients
        "kind": cfg["regulator"]["kind"] if cfg["mode"] == "gram" else "identity",
        "channel_dims": learner.regulator_channel_dims(),
    }
    regulators = build_regulators(theta, **regulator_config)

    history: list[dict[str, float]] = []
    seconds = 0.0
    if cfg["mode"] != "none" and cfg["steps"] > 0:
        device = backbone.device
        needs_images = learner.needs_images
        features = None if needs_images else PairFeatures(EMBEDDINGS)
        images = None
        if needs_images:
            keys = keys_used(tasks, cfg["steps"], cfg["tasks_per_batch"], cfg["seed"])
            images = PairImages(SHARDS_DIR, sorted(keys), backbone.image_transform(train=False))
        make = task_batches if cfg["mode"] == "gram" else pretrain_batches
        batches = make(tasks, cfg["tasks_per_batch"], cfg["seed"], features, images, device)
        trainer = MetaTrainer(
            LearnerLoss(learner), theta, regulators.to(device),
            InnerLoop(cfg["alpha"], cfg["inner_steps"], cfg["second_order"]),
            cfg["optimizer"], cfg["lr_theta"], cfg["lr_phi"], cfg["mode"],
        )
        shards = sorted(Path(TASKS_DIR).glob("tasks-*.tar"))
        live_dir = Path("plots/meta_train") / variant
        started = time.perf_counter()
        with open_live(live_dir) as live:
            history = run(
                trainer, batches, cfg["steps"],
                checkpoint=Path(".cache/meta_train") / f"{variant}.pt",
                fingerprint=fingerprint(cfg, backbone.name, shards),
                checkpoint_every=cfg["checkpoint_every"],
                alignment_every=cfg["alignment_every"], live=live,
            )
        theta = trainer.theta
        seconds = time.perf_counter() - started  # this process only (not resumed steps)

    order = "second-order (Eq. 10)" if cfg["second_order"] else "first-order approximation"
    info = {"variant": variant, "mode": cfg["mode"], "order": order,
            "backbone": backbone.name, "regulator": regulator_config}
    save_meta_prompt(Path("models/gram") / variant, theta, regulators.cpu(), regulator_config,
                     cfg["learner"], cfg["options"], info)
    steps_run = len(history)
    metrics = {
        **info,
        "steps": steps_run,
        "tasks_per_batch": cfg["tasks_per_batch"],
        "seconds": round(seconds, 2),
        "theta_shapes": {name: list(t.shape) for name, t in theta.items()},
        "phi_parameters": sum(p.numel() for p in regulators.parameters()),
    }
    for name in ("query_loss", "train_loss", "grad_cosine", "grad_cosine_raw"):
        metrics.update(summary(history, name))
    write_json(Path("metrics/meta_train") / f"{variant}.json", metrics)
    print(json.dumps(metrics, indent=1, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m stages.meta_train <variant>  (a key of meta.variants)")
    run_stage(main, sys.argv[1])
