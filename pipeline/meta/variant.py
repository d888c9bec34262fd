"""Meta-training one prompt variant end to end (GRAM Algorithm 1; the ``meta_train`` stage
around it parses arguments and writes the outputs).

``mode``: ``gram`` (Algorithm 1), ``pretrain`` (GRAM Table 6, "- meta-learning": plain
prompt pre-training on the cluster data; phi = identity) or ``none`` (Table 6, "joint
textual & visual prompt tuning": no meta-training; theta = the learner's own random init,
phi = identity).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..backbones import Backbone, full_precision
from ..errors import UserError
from ..io import open_live
from ..learners import build_learner
from .adapters import (
    LearnerLoss,
    PairFeatures,
    PairImages,
    keys_used,
    pretrain_batches,
    task_batches,
    task_set,
)
from .artifacts import save_meta_prompt
from .gram import InnerLoop
from .regulator import Regulators, build_regulators
from .supervised import LabelledSource, labelled_inputs
from .tasks import read_task_shards
from .trainer import MetaTrainer, run

#: the training curves whose start and end the stage's metrics report
CURVES = ("query_loss", "train_loss", "grad_cosine", "grad_cosine_raw")


@dataclass(frozen=True)
class VariantPaths:
    """What meta-training reads and where it keeps its curves and checkpoint."""

    tasks: Path = Path("data/tasks")
    embeddings: Path = Path("data/pairs/embeddings.npz")
    shards: Path = Path("data/pairs/shards")
    live: Path = Path("plots/meta_train")
    checkpoints: Path = Path(".cache/meta_train")


@dataclass
class MetaResult:
    theta: dict[str, Tensor]
    regulators: Regulators
    regulator_config: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    #: step -> mean query loss of the held-out tasks at that step's theta/phi
    validation: dict[int, float] = field(default_factory=dict)
    seconds: float = 0.0  # this process only (not resumed steps)


def fingerprint(cfg: dict, backbone_name: str, shards: list[Path]) -> str:
    """Identity of a run: config, backbone and the task shards' bytes (checkpoint key)."""
    digest = hashlib.sha256(json.dumps([cfg, backbone_name], sort_keys=True).encode())
    for shard in shards:
        digest.update(shard.read_bytes())
    return digest.hexdigest()


def validation_summary(validation: dict[int, float], val_tasks: int) -> dict[str, float]:
    """Meta-validation loss at the first and last evaluation, its minimum and where."""
    if not validation:
        return {}
    steps = sorted(validation)
    best = min(steps, key=lambda s: (validation[s], s))
    return {
        "val_tasks": val_tasks,
        "val_query_loss_start": round(validation[steps[0]], 5),
        "val_query_loss_end": round(validation[steps[-1]], 5),
        "val_query_loss_min": round(validation[best], 5),
        "val_query_loss_min_step": best,
    }


def summary(history: list[dict[str, float]], name: str) -> dict[str, float]:
    """Mean of ``name`` over the first and the last tenth of the run (at least one step)."""
    values = [h[name] for h in history if name in h]
    if not values:
        return {}
    k = max(1, len(values) // 10)
    return {
        f"{name}_start": round(float(np.mean(values[:k])), 5),
        f"{name}_end": round(float(np.mean(values[-k:])), 5),
    }


def precision_of_meta_steps(backbone: Backbone, second_order: bool):
    """The block meta-training runs in: fp32 for second-order steps (GRAM Eq. 10), whose
    double backward through attention fails under bf16/fp16 autocast; else the backbone's
    own precision."""
    if second_order and backbone.precision != "fp32":
        return full_precision(backbone)
    return contextlib.nullcontext()


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


def meta_train_variant(
    cfg: dict[str, Any],
    backbone: Backbone,
    tasks: list,
    paths: VariantPaths = VariantPaths(),
    labelled: LabelledSource | None = None,
    params: dict | None = None,
    val_tasks: list | None = None,
) -> MetaResult:
    """theta* and R_phi of one variant (``pipeline.config.read_meta`` settings).

    ``val_tasks``: the held-out meta-validation tasks, validated every ``val_every`` steps
    (the first ``val_max_tasks`` of them; see ``pipeline.meta.trainer``).
    ``labelled`` (GRAM Table 6, "- CHC"): the tasks' images come from that labelled dataset
    (``params`` gives its feature cache settings) instead of the image-text pairs.
    """
    from ..training import check_training_precision

    check_training_precision(backbone.precision, "meta_train")
    learner = build_learner(
        cfg["learner"], backbone, tasks[0].classnames, cfg["options"], seed=cfg["seed"]
    )
    result = _initial_result(cfg, learner)
    if cfg["mode"] == "none" or cfg["steps"] == 0:
        return result
    device = backbone.device
    val_tasks = list(val_tasks or [])[: cfg["val_max_tasks"]] if cfg["val_every"] else []
    features, images = _task_inputs(
        cfg, learner, backbone, tasks, val_tasks, paths, labelled, params
    )
    make = task_batches if cfg["mode"] == "gram" else pretrain_batches
    batches = make(tasks, cfg["tasks_per_batch"], cfg["seed"], features, images, device)
    held_out = task_set(val_tasks, features, images, device)
    trainer = _meta_trainer(cfg, learner, result, device)
    shards = _task_shards(paths)
    started = time.perf_counter()
    with (
        precision_of_meta_steps(backbone, cfg["second_order"]),
        open_live(paths.live / cfg["variant"]) as live,
    ):
        result.history = run(
            trainer,
            batches,
            cfg["steps"],
            checkpoint=paths.checkpoints / f"{cfg['variant']}.pt",
            fingerprint=fingerprint(cfg, backbone.name, shards),
            checkpoint_every=cfg["checkpoint_every"],
            alignment_every=cfg["alignment_every"],
            live=live,
            val_tasks=held_out if val_tasks else None,
            val_every=cfg["val_every"] or 0,
        )
    result.theta = trainer.theta
    result.validation = dict(trainer.validation)
    result.seconds = time.perf_counter() - started
    return result


def _initial_result(cfg: dict[str, Any], learner) -> MetaResult:
    """theta = the learner's own initial prompts; R_phi as ``meta.regulator`` says."""
    theta = {name: p.detach().clone() for name, p in learner.prompt_parameters().items()}
    regulator_config = {
        **cfg["regulator"],
        # only Algorithm 1 learns phi: the ablations fine-tune downstream with raw gradients
        "kind": cfg["regulator"]["kind"] if cfg["mode"] == "gram" else "identity",
        "channel_dims": learner.regulator_channel_dims(),
    }
    return MetaResult(theta, build_regulators(theta, **regulator_config), regulator_config)


def _meta_trainer(cfg: dict[str, Any], learner, result: MetaResult, device) -> MetaTrainer:
    """Algorithm 1's outer loop from the initial theta and phi (moved to ``device``)."""
    return MetaTrainer(
        LearnerLoss(learner),
        result.theta,
        result.regulators.to(device),
        InnerLoop(cfg["alpha"], cfg["inner_steps"], cfg["second_order"]),
        cfg["optimizer"],
        cfg["lr_theta"],
        cfg["lr_phi"],
        cfg["mode"],
    )


def _task_inputs(
    cfg: dict[str, Any],
    learner,
    backbone: Backbone,
    tasks: list,
    val_tasks: list,
    paths: VariantPaths,
    labelled: LabelledSource | None,
    params: dict | None,
) -> tuple[Any, Any]:
    """(features, images) the task batches read: from the labelled dataset, or the pairs'
    images through the encoder (visual prompts), or the pairs' frozen image features."""
    features, images = None, None
    if labelled is not None or learner.needs_images:
        # only the images some training step or validation reads are decoded or encoded
        keys = keys_used(tasks, cfg["steps"], cfg["tasks_per_batch"], cfg["seed"])
        keys |= {key for t in val_tasks for key in t.support.keys + t.query.keys}
    if labelled is not None:
        features, images = labelled_inputs(labelled, backbone, keys, learner.needs_images, params)
    elif learner.needs_images:
        images = PairImages(paths.shards, sorted(keys), backbone.image_transform(train=False))
    else:
        features = PairFeatures(paths.embeddings)
    return features, images


def _task_shards(paths: VariantPaths) -> list[Path]:
    """The training and held-out task shards, whose bytes key the checkpoint."""
    shards = sorted(Path(paths.tasks).glob("tasks-*.tar"))
    return shards + sorted((Path(paths.tasks) / "val").glob("tasks-*.tar"))


def variant_card(cfg: dict[str, Any], backbone_name: str, result: MetaResult) -> dict[str, Any]:
    """How theta* was trained: stored in learner.json and repeated in the metrics."""
    order = "second-order (Eq. 10)" if cfg["second_order"] else "first-order approximation"
    return {
        "variant": cfg["variant"],
        "mode": cfg["mode"],
        "order": order,
        "backbone": backbone_name,
        "regulator": result.regulator_config,
    }


def save_variant(
    directory: Path, cfg: dict[str, Any], result: MetaResult, card: dict[str, Any]
) -> None:
    """theta*, phi (moved to the CPU) and the card in ``pipeline.meta.artifacts``' layout."""
    save_meta_prompt(
        directory,
        result.theta,
        result.regulators.cpu(),
        result.regulator_config,
        cfg["learner"],
        cfg["options"],
        card,
    )


def variant_metrics(
    cfg: dict[str, Any], result: MetaResult, card: dict[str, Any], val_tasks: list
) -> dict[str, Any]:
    """metrics/meta_train/<variant>.json: the card, the run's size, the start and end of
    every curve of ``CURVES`` and the meta-validation loss (``validation_summary``) over
    the ``val_max_tasks`` of ``val_tasks`` that were validated."""
    metrics = {
        **card,
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
    return metrics
