"""The outer loop around ``gram.py``: optimiser, checkpoints that resume exactly, dvclive curves.

``MetaTrainer`` owns theta (leaf tensors) and the regulators (phi), one optimiser with two
parameter groups (lambda_1 for theta, lambda_2 for phi). ``mode="gram"`` is Algorithm 1;
``mode="pretrain"`` is the "- meta-learning" ablation of GRAM Table 6 (plain prompt
pre-training: minimise ``loss_fn(theta, batch)`` on the cluster data, phi untouched).

Exact resume: the batch of step s is a pure function of s (the caller's ``batches(s)``),
and a checkpoint holds theta, phi, the optimiser state, every RNG state, the step and the
metric history; :func:`run` replays the history into dvclive on resume, so an interrupted
run leaves the same parameters and the same curves as an uninterrupted one.

Meta-validation: every ``val_every`` steps (and once at the end) :meth:`MetaTrainer.validate`
measures Algorithm 1's query loss L(theta'_t, D_query_t) after the regulated inner step(s)
on held-out tasks, with theta and phi fixed (no update, RNG states restored), logged as
``val_query_loss`` at the step whose theta/phi it measures (the same point as that step's
``query_loss``; the point at step = ``total_steps`` is the final theta*, R_phi).
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from ..io import save_atomic
from .gram import InnerLoop, LossFn, Task, meta_gradients, query_loss, support_gradients
from .regulator import Regulators

VAL_METRIC = "val_query_loss"
OPTIMIZERS = ("adam", "sgd")
MODES = ("gram", "pretrain")


class MetaTrainer:
    def __init__(
        self,
        loss_fn: LossFn,
        theta: Mapping[str, Tensor],
        regulators: Regulators,
        inner: InnerLoop,
        optimizer: str = "adam",
        lr_theta: float = 1e-3,
        lr_phi: float = 1e-3,
        mode: str = "gram",
    ):
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"meta optimizer {optimizer!r} must be one of {list(OPTIMIZERS)}")
        if mode not in MODES:
            raise ValueError(f"meta mode {mode!r} must be one of {list(MODES)}")
        self.loss_fn, self.regulators, self.inner, self.mode = loss_fn, regulators, inner, mode
        self.theta = {name: nn.Parameter(t.detach().clone()) for name, t in theta.items()}
        groups = [{"params": list(self.theta.values()), "lr": lr_theta}]
        phi = [p for p in regulators.parameters()]
        if phi and mode == "gram":
            groups.append({"params": phi, "lr": lr_phi})
        # Plain SGD is Eq. 8-9 as written; Adam is the usual practical choice (our default).
        self.optimizer = (
            torch.optim.Adam(groups) if optimizer == "adam" else torch.optim.SGD(groups)
        )
        self.step = 0
        self.history: list[dict[str, float]] = []
        #: step -> meta-validation query loss at the theta/phi of that step
        self.validation: dict[int, float] = {}

    def phi(self) -> dict[str, Tensor]:
        return self.regulators.phi()

    def validate(self, tasks: Sequence[Task]) -> float:
        """Mean query loss of held-out ``tasks`` after the regulated inner step(s) (Eq. 7),
        recorded for the current step; theta, phi and every RNG state are left unchanged."""
        theta = {name: t.detach() for name, t in self.theta.items()}
        phi = {name: t.detach() for name, t in self.phi().items()}
        # the value of L(theta'_t, D_query) is the same in either order; first order builds
        # no graph for a gradient nobody takes
        inner = dataclasses.replace(self.inner, second_order=False)
        devices = sorted({t.device.index or 0 for t in theta.values() if t.is_cuda})
        losses = []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            for task in tasks:
                grads = support_gradients(
                    self.loss_fn, self.regulators, theta, phi, task.support, inner
                )
                value = query_loss(self.loss_fn, self.regulators, theta, phi, task, inner, grads)
                losses.append(float(value))
        if not losses:
            raise ValueError("meta-validation needs at least one held-out task")
        self.validation[self.step] = sum(losses) / len(losses)
        return self.validation[self.step]

    def train_step(self, tasks: Sequence[Task], track_alignment: bool = False) -> dict[str, float]:
        """One outer update on a batch of tasks (Algorithm 1 lines 3-10)."""
        theta, phi = dict(self.theta), self.phi()
        stats: dict[str, float] = {}
        if self.mode == "gram":
            result = meta_gradients(
                self.loss_fn, self.regulators, theta, phi, tasks, self.inner, track_alignment
            )
            grads = {**result.grad_theta, **{f"phi:{k}": g for k, g in result.grad_phi.items()}}
            stats["query_loss"] = result.query_loss
            if result.alignments:  # measured at the theta/phi of this step, before the update
                stats["grad_cosine"] = float(np.mean([a.regulated for a in result.alignments]))
                stats["grad_cosine_raw"] = float(np.mean([a.raw for a in result.alignments]))
        else:
            grads, loss = _pretrain_gradients(self.loss_fn, theta, tasks)
            stats["train_loss"] = loss
        self.optimizer.zero_grad(set_to_none=True)
        for name, parameter in self.theta.items():
            parameter.grad = grads[name]
        if self.mode == "gram":
            for name, parameter in phi.items():
                parameter.grad = grads[f"phi:{name}"]
        self.optimizer.step()
        self.step += 1
        self.history.append(stats)
        return stats

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "theta": {name: t.detach().clone() for name, t in self.theta.items()},
            "regulators": self.regulators.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "history": list(self.history),
            "validation": dict(self.validation),
            "rng": {
                "torch": torch.get_rng_state(),
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        with torch.no_grad():
            for name, parameter in self.theta.items():
                parameter.copy_(state["theta"][name])
        self.regulators.load_state_dict(state["regulators"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.history = list(state["history"])
        self.validation = {int(k): float(v) for k, v in state["validation"].items()}
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])


def _pretrain_gradients(
    loss_fn: LossFn, theta: dict[str, Tensor], tasks: Sequence[Task]
) -> tuple[dict[str, Tensor], float]:
    """Gradient of sum_t L(theta, batch_t): each task's ``support`` holds its batch."""
    from torch.func import grad_and_value

    theta = {name: t.detach() for name, t in theta.items()}
    total = {name: torch.zeros_like(t) for name, t in theta.items()}
    losses = []
    for task in tasks:
        g, value = grad_and_value(loss_fn)(theta, task.support)
        for name in total:
            total[name] += g[name]
        losses.append(float(value))
    return total, sum(losses) / max(len(losses), 1)


def save_checkpoint(trainer: MetaTrainer, path: Path, fingerprint: str) -> None:
    """Write then rename, so a kill during the write never leaves a torn checkpoint."""
    save_atomic({"fingerprint": fingerprint, **trainer.state_dict()}, path)


def try_resume(trainer: MetaTrainer, path: Path, fingerprint: str) -> bool:
    """Load ``path`` into ``trainer`` if it exists and was written for the same config."""
    if not path.exists():
        return False
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return False
    trainer.load_state_dict(state)
    return True


def run(
    trainer: MetaTrainer,
    batches: Callable[[int], Sequence[Task]],
    total_steps: int,
    checkpoint: Path | None = None,
    fingerprint: str = "",
    checkpoint_every: int = 10,
    alignment_every: int = 1,
    live: Any | None = None,
    stop_after: int | None = None,
    progress: bool = True,
    val_tasks: Callable[[], Sequence[Task]] | None = None,
    val_every: int = 0,
) -> list[dict[str, float]]:
    """Train until ``total_steps`` outer steps, resuming from ``checkpoint`` when it matches.

    ``batches(step)`` must return the same tasks for the same step in every run.
    ``live`` is a ``dvclive.Live``: each step's stats are logged as one step of its curves.
    ``val_tasks()`` (the held-out tasks) is validated before steps 0, ``val_every``,
    2 ``val_every``... and after the last step (``val_every`` 0: never).
    ``stop_after`` stops early after that many steps of THIS call (tests use it to simulate
    an interruption).
    """
    validating = val_tasks is not None and val_every > 0
    if checkpoint is not None and try_resume(trainer, checkpoint, fingerprint) and live:
        for step in range(trainer.step + 1):  # replay: the curves equal an uninterrupted run's
            _log(live, trainer, step)
    done_here = 0
    bar = tqdm(
        total=total_steps,
        initial=trainer.step,
        desc=f"meta-train ({trainer.mode})",
        disable=not progress,
    )
    while trainer.step < total_steps:
        if stop_after is not None and done_here >= stop_after:
            break
        step = trainer.step
        if validating and step % val_every == 0 and step not in trainer.validation:
            trainer.validate(val_tasks())
        track = alignment_every > 0 and step % alignment_every == 0
        stats = trainer.train_step(batches(step), track_alignment=track)
        done_here += 1
        if live is not None:
            _log(live, trainer, step)
        bar.update(1)
        bar.set_postfix({k: f"{v:.3f}" for k, v in stats.items()})
        finished = trainer.step >= total_steps
        if finished and validating and trainer.step not in trainer.validation:
            trainer.validate(val_tasks())  # the final theta*, R_phi
            if live is not None:
                _log(live, trainer, trainer.step)
        if checkpoint is not None and (trainer.step % checkpoint_every == 0 or finished):
            save_checkpoint(trainer, checkpoint, fingerprint)
    if checkpoint is not None and trainer.step > 0:
        save_checkpoint(trainer, checkpoint, fingerprint)
    bar.close()
    return trainer.history


def _log(live: Any, trainer: MetaTrainer, step: int) -> None:
    """One dvclive step: the training stats of ``step`` and its meta-validation loss, if any
    (the step after the last update has only the latter; a step with neither logs nothing)."""
    stats = trainer.history[step] if step < len(trainer.history) else {}
    if not stats and step not in trainer.validation:
        return
    for name, value in stats.items():
        live.log_metric(name, value)
    if step in trainer.validation:
        live.log_metric(VAL_METRIC, trainer.validation[step])
    live.next_step()
