"""``meta.train``, ``meta.regulator`` and ``meta.variants``: one variant's settings for the
``meta_train`` stage (GRAM Algorithm 1)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..meta.regulator import BIASES, INITS, KINDS
from ..meta.supervised import SOURCES
from ..meta.tasks import SUPPORT_SAMPLING
from ..meta.trainer import MODES, OPTIMIZERS
from ..params import ParamError, get
from .fields import Bound, bounded, check, read, read_bounds
from .learners import check_learner

META_MODES = (*MODES, "none")
#: keys of ``meta.train`` that a variant may override (``meta.variants.<v>.steps: 10``)
META_OVERRIDABLE = {
    "steps": Bound(0, 10**7, integer=True),
    "tasks_per_batch": Bound(1, 10**5, integer=True),
    "alignment_every": Bound(0, None, integer=True),
}
META_TRAIN = {
    "mode": Bound(choices=META_MODES),
    "inner_steps": Bound(1, 100, integer=True),
    "alpha": Bound(0.0, None),
    "second_order": Bound(choices=(True, False)),
    "optimizer": Bound(choices=OPTIMIZERS),
    "lr_theta": Bound(0.0, None),
    "lr_phi": Bound(0.0, None),
    "seed": Bound(0, None, integer=True),
    "checkpoint_every": Bound(1, None, integer=True),
}
META_REGULATOR = {
    "kind": Bound(choices=KINDS),
    "init": Bound(choices=INITS),
    "eps": Bound(1e-12, 1 - 1e-12),
    "bias": Bound(choices=BIASES),
}
META_LEARNERS = ("coop", "vpt", "joint")
VARIANT_KEYS = ("learner", "options", *META_OVERRIDABLE)


def read_meta(params: Mapping, variant: str) -> dict[str, Any]:
    """One variant's meta-training settings: ``meta.train`` + ``meta.regulator`` with the
    variant's overrides; an error names the key where the value was written."""
    train = dict(get(params, "meta.train"))
    variants = get(params, "meta.variants")
    if variant not in variants:
        raise ParamError(
            f"params.yaml: meta.variants has no variant {variant!r} (have {sorted(variants)})"
        )
    where = f"meta.variants.{variant}"
    own = dict(variants[variant] or {})
    unknown = sorted(set(own) - set(VARIANT_KEYS))
    if unknown:
        raise ParamError(f"params.yaml: {where}.{unknown[0]} is not one of {list(VARIANT_KEYS)}")
    cfg: dict[str, Any] = {}
    for key, bound in META_OVERRIDABLE.items():
        written = where if key in own else "meta.train"
        cfg[key] = check(f"{written}.{key}", own.get(key, train.pop(key, None)), bound)
        train.pop(key, None)
    learner = check(f"{where}.learner", own.get("learner"), Bound(choices=META_LEARNERS))
    options = check_learner(learner, own.get("options"), where)
    if options.get("class_specific"):
        raise ParamError(
            f"params.yaml: {where}.options.class_specific: a class-specific "
            "context cannot move between tasks"
        )
    cfg.update(variant=variant, learner=learner, options=options)
    cfg.update(read_bounds(train, "meta.train", META_TRAIN))
    regulator = get(params, "meta.regulator")
    cfg["regulator"] = read_bounds(regulator, "meta.regulator", META_REGULATOR)
    return cfg


@dataclass(frozen=True)
class TasksConfig:
    """``tasks``: GRAM Sec. 3.3 meta-training tasks (the paper gives no sizes)."""

    ways: int = bounded(5, 2, 1000, integer=True)
    support_shots: int = bounded(1, 1, 10_000, integer=True)
    query_shots: int = bounded(3, 1, 10_000, integer=True)
    num_tasks: int = bounded(200, 1, 10**7, integer=True)
    seed: int = bounded(0, 0, None, integer=True)
    support_sampling: str = bounded("one_domain", choices=SUPPORT_SAMPLING)
    tasks_per_shard: int = bounded(1000, 1, None, integer=True)
    # GRAM Table 6 "- CHC": tasks from a labelled dataset's train split instead of the topics
    # (read by pipeline.meta.supervised.labelled_source).
    source: str = bounded("chc", choices=SOURCES)
    dataset: str | None = None


def read_tasks(params: Mapping) -> TasksConfig:
    return read(TasksConfig, get(params, "tasks"), "tasks")
