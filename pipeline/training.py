"""The one trainer loop every downstream method runs (Dassl's ``TrainerX``, as CoOp uses it;
README "Downstream prompt tuning").

SGD (lr 0.002, momentum 0.9, weight decay 5e-4: Dassl's defaults), a cosine schedule stepped
once per epoch after one constant warm-up epoch at 1e-5, the last epoch's prompt kept.

Samples come from a :class:`TrainingSet`:

* :class:`CachedTrainingSet`: frozen image features per image and augmented view
  (``features.image_features`` with ``view=v``), plus, for ProGrad, the frozen zero-shot
  teacher logits of each; a step then costs the text encoder only. Each epoch every
  sample gets one of its ``views`` at random (seeded), the cached counterpart of a fresh
  random crop per epoch;
* :class:`~pipeline.training_images.ImageTrainingSet`: the same samples and views decoded
  and preprocessed on the fly (VPT and the joint learner need them); view v of an image is
  the crop the feature cache holds;
* :class:`~pipeline.training_images.FreshTrainingSet` (``augment.mode: fresh``): a new
  random crop per sample and step, encoded by the frozen image encoder at every step.

The per-epoch order and views are a pure function of (seed, epoch), and a checkpoint after
every epoch holds the prompt, the optimiser state and the metric history, so an interrupted
run resumes to exactly the result of an uninterrupted one.

Hooks for "+GRAM": ``init_state`` (theta*) overwrites the initial prompt, and
``gradient_transform`` (R_phi) maps the named gradients before the optimiser step; the
SGD step (momentum, weight decay, schedule) then applies as usual.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .backbones import Backbone, cosine_logits
from .config import TrainConfig
from .features import image_features
from .io import save_atomic, seed_everything
from .learners import Batch, PromptLearner
from .params import ParamError

#: precisions a training loop accepts (``backbone.precision``); see ``check_training_precision``
TRAINING_PRECISIONS = ("fp32", "bf16")

GradientTransform = Callable[[dict[str, Tensor]], dict[str, Tensor]]
EpochCallback = Callable[[int, dict[str, float]], None]


def check_training_precision(precision: object, stage: str) -> None:
    """Refuse ``backbone.precision: fp16`` for a stage that trains (finetune, meta_train).

    Why not a ``torch.amp.GradScaler``: our steps do not call ``loss.backward()``; they take
    gradients with ``torch.autograd.grad`` and transform them before the optimiser sees
    them: ProGrad's projection (Eq. 6) compares two losses' gradients, R_phi (GRAM Eq. 5-7)
    is a small network of the gradient, and Eq. 10 differentiates through it. A scaled loss
    would have to be unscaled inside every one of those, and a scaled gradient fed to R_phi
    changes its output (it is not linear). bf16 autocast has fp32's exponent range, needs no
    scaling and runs on the same GPUs (Ampere and later) and on the CPU, so it is the
    low-precision training path; fp16 stays for the stages that only encode (zeroshot,
    embed_pairs).
    """
    if precision == "fp16":
        raise ParamError(
            f"params.yaml: backbone.precision = 'fp16': fp16 training is not supported in "
            f"{stage} (its gradients would need loss scaling through ProGrad's projection and "
            f"R_phi); use bf16 (or fp32)"
        )


def epoch_lr(epoch: int, config: TrainConfig) -> float:
    """Dassl's ConstantWarmupScheduler around CosineAnnealingLR(T_max = epochs).

    Warm-up epochs run at ``warmup_lr``; epoch e after them runs at
    lr * (1 + cos(pi * (e - warmup) / epochs)) / 2 (the cosine count starts after the
    warm-up and never reaches zero within the run). Written in closed form so a resumed run
    needs no scheduler state.
    """
    if epoch < config.warmup_epochs:
        return config.warmup_lr
    t = epoch - config.warmup_epochs
    return config.lr * (1 + math.cos(math.pi * t / config.epochs)) / 2


class TrainingSet:
    """N labelled samples with ``len(view_ids)`` preprocessing views each; ``batch`` gives
    the samples and views asked for. ``view_ids``: ``[None]`` without augmentation (the test
    preprocessing), else ``[0, ..., V-1]`` (fixed augmented views)."""

    labels: Tensor
    view_ids: list[int | None]

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def batch(self, indices: np.ndarray, views: np.ndarray) -> Batch:
        raise NotImplementedError

    def epoch_batches(
        self, batches: Sequence[tuple[np.ndarray, np.ndarray]], epoch: int
    ) -> Iterator[Batch]:
        """The :class:`Batch` of each (sample indices, view indices) of epoch ``epoch``."""
        for indices, views in batches:
            yield self.batch(indices, views)

    def fingerprint(self) -> str:
        """Identity of the samples (part of a checkpoint's key)."""
        raise NotImplementedError


@dataclass
class CachedTrainingSet(TrainingSet):
    """Frozen image features [V, N, D] per view and sample, and the teacher's logits
    [V, N, C] of each when the learner has a teacher (ProGrad)."""

    labels: Tensor
    view_ids: list[int | None]
    features: Tensor
    teacher_logits: Tensor | None = None

    def batch(self, indices: np.ndarray, views: np.ndarray) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        view = torch.as_tensor(views, dtype=torch.long)
        teacher = None if self.teacher_logits is None else self.teacher_logits[view, index]
        return Batch(
            self.labels[index], features=self.features[view, index], teacher_logits=teacher
        )

    def fingerprint(self) -> str:
        digest = hashlib.sha1(self.labels.cpu().numpy().tobytes())
        digest.update(repr(self.view_ids).encode())
        digest.update(self.features.cpu().numpy().tobytes())
        if self.teacher_logits is not None:
            digest.update(self.teacher_logits.cpu().numpy().tobytes())
        return digest.hexdigest()


def view_ids(views: int) -> list[int | None]:
    """``views`` = 0: no augmentation (test preprocessing); V > 0: fixed views 0..V-1."""
    return [None] if views == 0 else list(range(views))


def cached_training_set(
    backbone: Backbone,
    paths: Sequence[Path],
    labels: Sequence[int],
    views: int,
    aug_seed: int = 0,
    teacher_classifier: Tensor | None = None,
    features_options: Mapping | None = None,
    desc: str = "train",
) -> CachedTrainingSet:
    """Frozen features of every (image, view), encoded once and cached on disk, and the
    teacher's logits of each when ``teacher_classifier`` [C, D] is given."""
    ids = view_ids(views)
    options = dict(features_options or {})
    per_view = [
        image_features(
            backbone, paths, view=v, aug_seed=aug_seed, desc=f"{desc} view {v}", **options
        )
        for v in ids
    ]
    features = torch.stack(per_view)
    teacher = None
    if teacher_classifier is not None:
        teacher = torch.stack(
            [cosine_logits(f, teacher_classifier.cpu(), backbone.logit_scale) for f in features]
        )
    return CachedTrainingSet(torch.as_tensor(list(labels)), ids, features, teacher)


def epoch_batches(
    n: int, n_views: int, batch_size: int, seed: int, epoch: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (sample indices, view indices) of each batch of one epoch.

    Shuffled from a generator seeded by (seed, epoch); like Dassl's train loader the last
    partial batch is dropped when there is at least one full batch.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    views = rng.integers(n_views, size=n)
    stop = n - n % batch_size if n >= batch_size else n
    return [
        (order[start : min(start + batch_size, stop)], views[start : min(start + batch_size, stop)])
        for start in range(0, stop, batch_size)
    ]


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    resumed_from: int = 0


def load_init_state(learner: PromptLearner, init_state: Mapping[str, Tensor]) -> None:
    """Copy ``init_state`` (e.g. GRAM's theta*) into the learner's prompt tensors."""
    params = learner.prompt_parameters()
    unknown = sorted(set(init_state) - set(params))
    if unknown:
        raise KeyError(f"init_state has tensors the learner does not: {unknown}")
    with torch.no_grad():
        for name, value in init_state.items():
            if tuple(value.shape) != tuple(params[name].shape):
                raise ValueError(
                    f"init_state[{name!r}] has shape {tuple(value.shape)}, the learner's is "
                    f"{tuple(params[name].shape)}"
                )
            params[name].copy_(value)


def learner_settings(learner: PromptLearner) -> dict[str, object]:
    """The learner's plain-value attributes (ProGrad's ``lam`` and ``temperature``, CoOp's
    ``n_ctx``...): options that shape every step but live outside its ``state_dict``."""
    plain = (bool, int, float, str, type(None))
    return {
        name: value
        for name, value in sorted(vars(learner).items())
        if not name.startswith("_") and name != "training" and isinstance(value, plain)
    }


def _fingerprint(learner: PromptLearner, data: TrainingSet, config: TrainConfig, key: str) -> str:
    settings = learner_settings(learner)
    digest = hashlib.sha1(
        json.dumps([asdict(config), type(learner).__name__, settings, key]).encode()
    )
    for name, tensor in sorted(learner.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(data.fingerprint().encode())
    return digest.hexdigest()


def _optimizer(learner: PromptLearner, config: TrainConfig) -> torch.optim.SGD:
    """SGD with one parameter group per prompt tensor, each with its ``lr_scale``."""
    params = learner.prompt_parameters()
    unknown = sorted(set(config.lr_scale) - set(params))
    if unknown:
        raise ValueError(
            f"lr_scale.{unknown[0]} is not a prompt of {type(learner).__name__}; "
            f"its prompts are {sorted(params)}"
        )
    groups = [
        {"params": [p], "lr_scale": float(config.lr_scale.get(name, 1.0))}
        for name, p in params.items()
    ]
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _resume(learner, optimizer, checkpoint: Path | None, fingerprint: str) -> list[dict]:
    """The history of a checkpoint written by the same run (its state loaded), else []."""
    if checkpoint is None or not checkpoint.exists():
        return []
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return []
    learner.load_state_dict(state["learner"])
    optimizer.load_state_dict(state["optimizer"])
    return list(state["history"])


def _epoch(
    learner: PromptLearner,
    optimizer: torch.optim.SGD,
    data: TrainingSet,
    config: TrainConfig,
    epoch: int,
    gradient_transform: GradientTransform | None,
    desc: str,
) -> dict[str, float]:
    """One epoch of steps (CoOp's ``forward_backward``, ProGrad's
    ``prograd_backward_and_update``: ``learner.training_gradients``); its metrics."""
    lr = epoch_lr(epoch, config)
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    params = learner.prompt_parameters()
    loss_sum, correct, count = 0.0, 0, 0
    batches = epoch_batches(len(data), len(data.view_ids), config.batch_size, config.seed, epoch)
    for batch in tqdm(
        data.epoch_batches(batches, epoch),
        total=len(batches),
        desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
        leave=False,
        disable=len(batches) < 20,
    ):
        step = learner.training_gradients(batch)
        grads = step.grads if gradient_transform is None else gradient_transform(step.grads)
        for name, parameter in params.items():
            parameter.grad = grads[name].detach().to(parameter.dtype)
        optimizer.step()
        loss_sum += step.loss * step.count
        correct += step.correct
        count += step.count
    return {"loss": loss_sum / count, "accuracy": 100.0 * correct / count, "lr": lr}


def train(
    learner: PromptLearner,
    data: TrainingSet,
    config: TrainConfig,
    *,
    gradient_transform: GradientTransform | None = None,
    init_state: Mapping[str, Tensor] | None = None,
    checkpoint: Path | None = None,
    run_key: str = "",
    on_epoch_end: EpochCallback | None = None,
    stop_after: int | None = None,
    desc: str = "finetune",
) -> TrainResult:
    """Fine-tune ``learner``'s prompt in place (Dassl's ``TrainerX.train``); returns the
    per-epoch history.

    ``checkpoint``: file rewritten after every epoch; an existing one written by the same run
    (same config, initial prompt, data and ``run_key``, which must name anything else that
    changes the result, e.g. the regulator's file) is resumed, any other is ignored.
    ``on_epoch_end(epoch, metrics)`` is called once per epoch in order, replaying the
    history of resumed epochs first. ``stop_after`` ends the run after that many epochs
    (tests use it to simulate an interruption).
    """
    seed_everything(config.seed)
    if init_state:
        load_init_state(learner, init_state)
    result = TrainResult()
    if not learner.prompt_parameters():  # zero-shot: nothing to train
        return result
    optimizer = _optimizer(learner, config)
    fingerprint = _fingerprint(learner, data, config, run_key)
    result.history = _resume(learner, optimizer, checkpoint, fingerprint)
    result.resumed_from = len(result.history)
    if on_epoch_end is not None:
        for epoch, metrics in enumerate(result.history):
            on_epoch_end(epoch, metrics)
    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    for epoch in range(result.resumed_from, last):
        metrics = _epoch(learner, optimizer, data, config, epoch, gradient_transform, desc)
        result.history.append(metrics)
        if checkpoint is not None:
            state = {"learner": learner.state_dict(), "optimizer": optimizer.state_dict()}
            save_atomic(
                {"fingerprint": fingerprint, **state, "history": result.history}, checkpoint
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return result
