"""Training images decoded through a torch ``DataLoader`` (README "Downstream training").

Two ways to augment a training image, both pure functions of their seeds so a resumed run
sees the very crops an uninterrupted one does:

* :class:`ViewCrops`: fixed view v of an image, the crop the feature cache holds (``augment.
  mode: cached``; VPT and the joint learner re-encode it every step);
* :class:`FreshCrops`: a new random crop and flip per sample and epoch, seeded by
  (seed, epoch, sample index): Dassl's training transform, as CoOp, CoCoOp and ProGrad run it
  (``augment.mode: fresh``).

:func:`epoch_loader` batches either along an epoch's sampled batches, with ``num_workers``
decoding processes and pinned memory when the backbone is on CUDA.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from .backbones import Backbone, cosine_logits
from .features import DecodedImages, ImageFiles, load_rgb
from .learners import Batch
from .training import TrainingSet, view_ids

Transform = Callable


@dataclass(frozen=True)
class ViewCrops(Dataset):
    """Key (sample, view id) -> the preprocessed image; view None = the test preprocessing."""

    paths: Sequence[Path]
    train_transform: Transform
    test_transform: Transform
    aug_seed: int
    memo: DecodedImages | None = None

    def __getitem__(self, key: tuple[int, int | None]) -> Tensor:
        index, view = key
        transform = self.test_transform if view is None else self.train_transform
        return ImageFiles([self.paths[index]], transform, view, self.aug_seed, self.memo)[0]

    def __len__(self) -> int:
        return len(self.paths)


def fresh_seed(seed: int, epoch: int, index: int) -> int:
    """The torch seed of sample ``index``'s crop at ``epoch`` (independent of batch and worker)."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


@dataclass(frozen=True)
class FreshCrops(Dataset):
    """Key sample index -> its random crop and flip of epoch ``epoch`` (``train_transform``)."""

    paths: Sequence[Path]
    train_transform: Transform
    seed: int
    epoch: int = 0

    def __getitem__(self, index: int) -> Tensor:
        image = load_rgb(self.paths[index])
        # torchvision draws from the global generator: fork it, leave the caller's untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(fresh_seed(self.seed, self.epoch, index))
            return self.train_transform(image)

    def __len__(self) -> int:
        return len(self.paths)


def epoch_loader(
    images: Dataset, keys: Sequence[Sequence], device: torch.device, num_workers: int = 0
) -> Iterator[Tensor]:
    """[B, 3, H, W] images of each batch of ``keys`` (one list of dataset keys per batch), in
    order, on ``device``."""
    on_cuda = device.type == "cuda"
    loader = DataLoader(
        images,
        batch_sampler=[list(batch) for batch in keys],
        num_workers=num_workers,
        pin_memory=on_cuda,
    )
    for batch in loader:
        yield batch.to(device, non_blocking=on_cuda)


@dataclass
class ImageTrainingSet(TrainingSet):
    """The images themselves, decoded and preprocessed per batch (visual prompts) through a
    DataLoader of ``num_workers`` processes; view v of an image is the very crop the feature
    cache holds."""

    labels: Tensor
    view_ids: list[int | None]
    paths: list[Path]
    backbone: Backbone
    aug_seed: int = 0
    num_workers: int = 0
    memo: DecodedImages | None = None  # crops kept between epochs (no worker processes)

    def batch(self, indices: np.ndarray, views: np.ndarray) -> Batch:
        return next(iter(self.epoch_batches([(indices, views)], 0)))

    def epoch_batches(self, batches, epoch: int) -> Iterator[Batch]:
        crops = ViewCrops(
            self.paths,
            self.backbone.image_transform(train=True),
            self.backbone.image_transform(train=False),
            self.aug_seed,
            self.memo if self.num_workers == 0 else None,
        )
        keys = [
            [(int(i), self.view_ids[int(v)]) for i, v in zip(indices, views, strict=True)]
            for indices, views in batches
        ]
        loader = epoch_loader(crops, keys, self.backbone.device, self.num_workers)
        for (indices, _), images in zip(batches, loader, strict=True):
            yield Batch(self.labels[torch.as_tensor(indices, dtype=torch.long)], images=images)

    def fingerprint(self) -> str:
        digest = hashlib.sha1(self.labels.cpu().numpy().tobytes())
        digest.update(repr(self.view_ids).encode())
        digest.update("|".join(str(p) for p in self.paths).encode())
        digest.update(str(self.aug_seed).encode())
        return digest.hexdigest()


@dataclass
class FreshTrainingSet(TrainingSet):
    """``augment.mode: fresh`` (Dassl, as CoOp/CoCoOp/ProGrad train): every sample gets a
    new random crop and flip at every step, seeded by (``aug_seed``, epoch, sample index).
    Learners with a visual prompt get the images; the others the frozen encoder's features
    of them, computed per batch (no cache), and, for ProGrad, the teacher's logits of each.
    """

    labels: Tensor
    paths: list[Path]
    backbone: Backbone
    needs_images: bool
    aug_seed: int = 0
    teacher_classifier: Tensor | None = None
    num_workers: int = 0
    view_ids: list[int | None] = field(default_factory=lambda: [0])  # one (fresh) view

    def epoch_batches(self, batches, epoch: int) -> Iterator[Batch]:
        crops = FreshCrops(
            self.paths, self.backbone.image_transform(train=True), self.aug_seed, epoch
        )
        keys = [[int(i) for i in indices] for indices, _ in batches]
        loader = epoch_loader(crops, keys, self.backbone.device, self.num_workers)
        for (indices, _), images in zip(batches, loader, strict=True):
            labels = self.labels[torch.as_tensor(indices, dtype=torch.long)]
            if self.needs_images:
                yield Batch(labels, images=images)
                continue
            with torch.no_grad():
                features = self.backbone.encode_image(images).float()
            teacher = None
            if self.teacher_classifier is not None:
                classifier = self.teacher_classifier.to(features.device)
                teacher = cosine_logits(features, classifier, self.backbone.logit_scale)
            yield Batch(labels, features=features, teacher_logits=teacher)

    def fingerprint(self) -> str:
        digest = hashlib.sha1(b"fresh")
        digest.update(self.labels.cpu().numpy().tobytes())
        digest.update("|".join(str(p) for p in self.paths).encode())
        digest.update(f"{self.aug_seed}|{self.needs_images}".encode())
        if self.teacher_classifier is not None:
            digest.update(self.teacher_classifier.detach().cpu().numpy().tobytes())
        return digest.hexdigest()


def image_training_set(
    backbone: Backbone,
    paths: Sequence[Path],
    labels: Sequence[int],
    views: int,
    aug_seed: int = 0,
    num_workers: int = 0,
    memo: DecodedImages | None = None,
) -> ImageTrainingSet:
    """The images of ``paths`` with ``views`` fixed views each (0: the test preprocessing);
    ``memo`` keeps the decoded crops for later epochs and runs."""
    return ImageTrainingSet(
        torch.as_tensor(list(labels)),
        view_ids(views),
        [Path(p) for p in paths],
        backbone,
        aug_seed,
        num_workers,
        memo,
    )


def fresh_training_set(
    backbone: Backbone,
    paths: Sequence[Path],
    labels: Sequence[int],
    needs_images: bool,
    aug_seed: int = 0,
    teacher_classifier: Tensor | None = None,
    num_workers: int = 0,
) -> FreshTrainingSet:
    """Samples augmented afresh at every step (``augment.mode: fresh``); ProGrad's teacher
    classifier [C, D] gives the teacher logits of each fresh crop."""
    teacher = None if teacher_classifier is None else teacher_classifier.detach()
    return FreshTrainingSet(
        torch.as_tensor(list(labels)),
        [Path(p) for p in paths],
        backbone,
        needs_images,
        aug_seed,
        teacher,
        num_workers,
    )
