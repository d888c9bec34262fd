"""The one trainer loop every downstream method runs (method.md section 5).

SGD (lr 0.002, momentum 0.9, weight decay 5e-4: Dassl's defaults), a cosine schedule stepped
once per epoch after one constant warm-up epoch at 1e-5, the last epoch's prompt kept.

Samples come from a :class:`TrainingSet`:

* cached: frozen image features per image and augmented view (``features.image_features``
  with ``view=v``), plus, for ProGrad, the frozen zero-shot teacher logits of each; a step
  then costs the text encoder only. Each epoch every sample gets one of its ``views`` at
  random (seeded), the cached counterpart of a fresh random crop per epoch;
* images: the same samples and views decoded and preprocessed on the fly (VPT and the joint
  learner need them, and the reference way re-encodes every step); view v of an image is
  the very crop the feature cache holds.

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
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from .backbones import Backbone, cosine_logits
from .features import ImageFiles, image_features
from .io import seed_everything
from .learners import Batch, PromptLearner
from .params import ParamError, check_range

GradientTransform = Callable[[dict[str, Tensor]], dict[str, Tensor]]
EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: int = 1
    warmup_lr: float = 1e-5
    # prompt tensor name -> multiplier of lr for it: a pixel prompt's gradients are ~1e-3 of
    # a text context's, so the joint (UNIGRAM) learner on a CNN needs one lr per group
    lr_scale: Mapping[str, float] = field(default_factory=dict)
    seed: int = 1

    @classmethod
    def from_params(cls, section: Mapping, seed: int, where: str = "finetune") -> TrainConfig:
        """Read and range-check the keys this class knows from a params.yaml mapping."""
        fields = set(cls.__dataclass_fields__) - {"seed"}
        unknown = sorted(set(section) - fields)
        if unknown:
            raise ParamError(f"params.yaml: {where}.{unknown[0]} is not one of {sorted(fields)}")
        config = cls(seed=seed, **section)
        check_range(f"{where}.epochs", config.epochs, 1, 100_000, integer=True)
        check_range(f"{where}.batch_size", config.batch_size, 1, 1_000_000, integer=True)
        check_range(f"{where}.lr", config.lr, 0.0, 1e4)
        check_range(f"{where}.momentum", config.momentum, 0.0, 1.0)
        check_range(f"{where}.weight_decay", config.weight_decay, 0.0, 1.0)
        check_range(f"{where}.warmup_epochs", config.warmup_epochs, 0, 100_000, integer=True)
        check_range(f"{where}.warmup_lr", config.warmup_lr, 0.0, 1e4)
        if not isinstance(config.lr_scale, Mapping):
            raise ParamError(f"params.yaml: {where}.lr_scale must map prompt names to numbers")
        for name, scale in config.lr_scale.items():
            check_range(f"{where}.lr_scale.{name}", scale, 0.0, 1e6)
        return config


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


@dataclass
class TrainingSet:
    """N labelled samples with ``len(view_ids)`` preprocessing views each.

    ``view_ids``: ``[None]`` without augmentation (the test preprocessing), else
    ``[0, ..., V-1]`` (fixed augmented views). ``features`` [V, N, D] and
    ``teacher_logits`` [V, N, C] for the cached path; ``paths`` for the image path.
    """

    labels: Tensor
    view_ids: list[int | None]
    features: Tensor | None = None
    teacher_logits: Tensor | None = None
    paths: list[Path] | None = None
    backbone: Backbone | None = None
    aug_seed: int = 0
    teacher_classifier: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def cached(self) -> bool:
        return self.features is not None

    def batch(self, indices: np.ndarray, views: np.ndarray) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        labels = self.labels[index]
        if self.cached:
            view = torch.as_tensor(views, dtype=torch.long)
            teacher = None if self.teacher_logits is None else self.teacher_logits[view, index]
            return Batch(labels, features=self.features[view, index], teacher_logits=teacher)
        backbone = self.backbone
        images = torch.stack(
            [
                self._image(int(i), self.view_ids[int(v)])
                for i, v in zip(indices, views, strict=True)
            ]
        ).to(backbone.device)
        teacher = None
        if self.teacher_classifier is not None:  # the reference way: a frozen teacher pass
            with torch.no_grad():
                teacher = cosine_logits(
                    backbone.encode_image(images), self.teacher_classifier, backbone.logit_scale
                )
        return Batch(labels, images=images, teacher_logits=teacher)

    def _image(self, index: int, view: int | None) -> Tensor:
        transform = self.backbone.image_transform(train=view is not None)
        # the same seeded preprocessing as the feature cache, so view v is the same crop
        return ImageFiles([self.paths[index]], transform, view, self.aug_seed)[0]

    def fingerprint(self) -> str:
        digest = hashlib.sha1(self.labels.cpu().numpy().tobytes())
        digest.update(repr(self.view_ids).encode())
        if self.cached:
            digest.update(self.features.cpu().numpy().tobytes())
            if self.teacher_logits is not None:
                digest.update(self.teacher_logits.cpu().numpy().tobytes())
        else:
            digest.update("|".join(str(p) for p in self.paths).encode())
            digest.update(str(self.aug_seed).encode())
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
) -> TrainingSet:
    """Frozen features of every (image, view), encoded once and cached on disk, and the
    ProGrad teacher's logits of each when ``teacher_classifier`` [C, D] is given."""
    ids = view_ids(views)
    options = dict(features_options or {})
    per_view = [
        image_features(backbone, paths, view=v, aug_seed=aug_seed,
                       desc=f"{desc} view {v}", **options)
        for v in ids
    ]  # fmt: skip
    features = torch.stack(per_view)
    teacher = None
    if teacher_classifier is not None:
        teacher = torch.stack(
            [cosine_logits(f, teacher_classifier.cpu(), backbone.logit_scale) for f in features]
        )
    return TrainingSet(
        torch.as_tensor(list(labels)),
        ids,
        features=features,
        teacher_logits=teacher,
        aug_seed=aug_seed,
    )


def image_training_set(
    backbone: Backbone,
    paths: Sequence[Path],
    labels: Sequence[int],
    views: int,
    aug_seed: int = 0,
    teacher_classifier: Tensor | None = None,
) -> TrainingSet:
    return TrainingSet(
        torch.as_tensor(list(labels)),
        view_ids(views),
        paths=[Path(p) for p in paths],
        backbone=backbone,
        aug_seed=aug_seed,
        teacher_classifier=teacher_classifier,
    )


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


def _fingerprint(learner: PromptLearner, data: TrainingSet, config: TrainConfig, key: str) -> str:
    digest = hashlib.sha1(json.dumps([asdict(config), type(learner).__name__, key]).encode())
    for name, tensor in sorted(learner.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    digest.update(data.fingerprint().encode())
    return digest.hexdigest()


def _save_atomic(payload: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(payload, partial)
    os.replace(partial, path)


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
    """Fine-tune ``learner``'s prompt in place; returns the per-epoch history.

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
    params = learner.prompt_parameters()
    result = TrainResult()
    if not params:  # zero-shot: nothing to train
        return result
    unknown = sorted(set(config.lr_scale) - set(params))
    if unknown:
        raise ParamError(f"lr_scale.{unknown[0]} is not a prompt of {type(learner).__name__}; "
                         f"its prompts are {sorted(params)}")
    groups = [{"params": [p], "lr_scale": float(config.lr_scale.get(name, 1.0))}
              for name, p in params.items()]  # fmt: skip
    optimizer = torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )
    fingerprint = _fingerprint(learner, data, config, run_key)
    if checkpoint is not None and checkpoint.exists():
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        if state.get("fingerprint") == fingerprint:
            learner.load_state_dict(state["learner"])
            optimizer.load_state_dict(state["optimizer"])
            result.history = list(state["history"])
            result.resumed_from = len(result.history)
    if on_epoch_end is not None:
        for epoch, metrics in enumerate(result.history):
            on_epoch_end(epoch, metrics)

    last = config.epochs if stop_after is None else min(config.epochs, stop_after)
    for epoch in range(result.resumed_from, last):
        lr = epoch_lr(epoch, config)
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        loss_sum, correct, count = 0.0, 0, 0
        batches = epoch_batches(len(data), len(data.view_ids), config.batch_size, config.seed,
                                epoch)  # fmt: skip
        for indices, views in tqdm(batches, desc=f"{desc} epoch {epoch + 1}/{config.epochs}",
                                   leave=False, disable=len(batches) < 20):  # fmt: skip
            step = learner.training_gradients(data.batch(indices, views))
            grads = step.grads if gradient_transform is None else gradient_transform(step.grads)
            for name, parameter in params.items():
                parameter.grad = grads[name].detach().to(parameter.dtype)
            optimizer.step()
            loss_sum += step.loss * step.count
            correct += step.correct
            count += step.count
        metrics = {"loss": loss_sum / count, "accuracy": 100.0 * correct / count, "lr": lr}
        result.history.append(metrics)
        if checkpoint is not None:
            _save_atomic(
                {
                    "fingerprint": fingerprint,
                    "learner": learner.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": result.history,
                },
                checkpoint,
            )
        if on_epoch_end is not None:
            on_epoch_end(epoch, metrics)
    return result
