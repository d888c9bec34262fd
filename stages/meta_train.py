"""DVC stage `meta_train <variant>`: GRAM meta-training (Algorithm 1) of one prompt variant.

Reads params: backbone, meta.train, meta.regulator, meta.variants.<variant>, tasks.source,
tasks.dataset, data.root, data.own, features.
Reads data/tasks/tasks-*.tar; data/pairs/embeddings.npz (textual prompts: frozen image
features by key) or data/pairs/shards/*.tar (visual prompts: images through the encoder);
with ``tasks.source: dataset`` the task images of ``tasks.dataset`` instead (GRAM Table 6,
"- CHC = supervised meta-learning"; see ``pipeline.meta.supervised``).
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
from pipeline.errors import run_stage
from pipeline.io import write_json
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
from pipeline.meta.regulator import BIASES, INITS, KINDS, build_regulators
from pipeline.meta.supervised import labelled_inputs, labelled_source
from pipeline.meta.tasks import read_task_shards
from pipeline.meta.trainer import MODES, OPTIMIZERS, MetaTrainer, run
from pipeline.params import ParamError, check_choice, check_range, get, load_params

TASKS_DIR = "data/tasks"
EMBEDDINGS = "data/pairs/embeddings.npz"
SHARDS_DIR = "data/pairs/shards"
#: keys of ``meta.train`` that a variant may override (``meta.variants.<v>.steps: 10``)
OVERRIDABLE = ("steps", "tasks_per_batch", "alignment_every")
LEARNERS = ("coop", "vpt", "joint")


def settings(params: dict, variant: str) -> dict[str, Any]:
    """The validated configuration of one variant: ``meta.train`` + ``meta.regulator`` with
    the variant's own overrides (``meta.variants.<v>.steps: 10``)."""
    train = get(params, "meta.train")
    variants = get(params, "meta.variants")
    if variant not in variants:
        raise ParamError(f"params.yaml: meta.variants has no variant {variant!r} "
                         f"(have {sorted(variants)})")
    own = dict(variants[variant])
    where = f"meta.variants.{variant}"
    cfg = {key: own.get(key, get(params, f"meta.train.{key}")) for key in OVERRIDABLE}
    key = "meta.train."
    cfg.update(
        variant=variant,
        learner=check_choice(f"{where}.learner", own.get("learner"), LEARNERS),
        options=dict(own.get("options") or {}),
        mode=check_choice(key + "mode", train.get("mode"), MODES + ("none",)),
        inner_steps=check_range(key + "inner_steps", train.get("inner_steps"), 1, 100,
                                integer=True),
        alpha=check_range(key + "alpha", train.get("alpha"), 0.0, None),
        second_order=check_choice(key + "second_order", train.get("second_order"),
                                  (True, False)),
        optimizer=check_choice(key + "optimizer", train.get("optimizer"), OPTIMIZERS),
        lr_theta=check_range(key + "lr_theta", train.get("lr_theta"), 0.0, None),
        lr_phi=check_range(key + "lr_phi", train.get("lr_phi"), 0.0, None),
        seed=check_range(key + "seed", train.get("seed"), 0, None, integer=True),
        checkpoint_every=check_range(
            key + "checkpoint_every", train.get("checkpoint_every"), 1, None, integer=True
        ),
    )
    check_range(f"{where}.steps", cfg["steps"], 0, 10**7, integer=True)
    check_range(f"{where}.tasks_per_batch", cfg["tasks_per_batch"], 1, 10**5, integer=True)
    check_range(f"{where}.alignment_every", cfg["alignment_every"], 0, None, integer=True)
    if cfg["options"].get("class_specific"):
        raise ParamError(f"params.yaml: {where}.options.class_specific: a class-specific "
                         "context cannot move between tasks")
    regulator = get(params, "meta.regulator")
    cfg["regulator"] = {
        "kind": check_choice("meta.regulator.kind", regulator.get("kind"), KINDS),
        "init": check_choice("meta.regulator.init", regulator.get("init"), INITS),
        "eps": check_range("meta.regulator.eps", regulator.get("eps"), 1e-12, 1 - 1e-12),
        "bias": check_choice("meta.regulator.bias", regulator.get("bias"), BIASES),
    }
    return cfg


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


def open_live(directory: Path):
    """dvclive logger for the curves; it writes no dvc.yaml and saves no experiment itself
    (the stage's outputs are DVC's business)."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
    except SCMError as error:  # dvclive 3.49 reads HEAD before checking for commits
        raise RuntimeError(
            f"dvclive cannot log to {directory}: {error}. Commit once (`git commit`) first"
        ) from error


def main(variant: str) -> None:
    params = load_params()
    cfg = settings(params, variant)
    labelled = labelled_source(params)  # None: tasks from CHC, images from the pairs
    torch.manual_seed(cfg["seed"])
    backbone = load_backbone(params["backbone"])
    tasks = read_task_shards(TASKS_DIR)
    learner = build_learner(
        cfg["learner"], backbone, tasks[0].classnames, cfg["options"], seed=cfg["seed"],
        where=f"meta.variants.{variant}.options",
    )
    theta = {name: p.detach().clone() for name, p in learner.prompt_parameters().items()}
    pixel_prompt = backbone.vision_width is None and "visual_prompt" in theta
    regulator_config = {
        **cfg["regulator"],
        # only Algorithm 1 learns phi: the ablations fine-tune downstream with raw gradients
        "kind": cfg["regulator"]["kind"] if cfg["mode"] == "gram" else "identity",
        "channel_dims": {"visual_prompt": 0} if pixel_prompt else {},
    }
    regulators = build_regulators(theta, **regulator_config)

    history: list[dict[str, float]] = []
    seconds = 0.0
    if cfg["mode"] != "none" and cfg["steps"] > 0:
        device = backbone.device
        needs_images = learner.needs_images
        keys = keys_used(tasks, cfg["steps"], cfg["tasks_per_batch"], cfg["seed"])
        if labelled is not None:  # GRAM Table 6 "- CHC": the images of a labelled dataset
            features, images = labelled_inputs(labelled, backbone, keys, needs_images, params)
        else:
            features = None if needs_images else PairFeatures(EMBEDDINGS)
            images = None
            if needs_images:
                transform = backbone.image_transform(train=False)
                images = PairImages(SHARDS_DIR, sorted(keys), transform)
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
