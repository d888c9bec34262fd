"""From task shards and prompt learners to GRAM's ``loss_fn(params, batch)`` and task batches.

* :class:`LearnerLoss`: cross-entropy of ``functional_call(learner, params, (batch,))`` for
  any ``pipeline.learners`` learner; the batch carries its task's class names and the
  learner is pointed at them (``set_classes``) when they change.
* :class:`PairFeatures` / :class:`PairImages`: a task's images as frozen image features
  (rows of ``embeddings.npz``: textual prompts never need the image encoder again) or as
  preprocessed images from the pair shards (visual prompts change the image features, so
  the image encoder runs every step). Tasks from a labelled dataset (GRAM Table 6, "- CHC")
  read theirs through ``supervised.DatasetFeatures`` / ``DatasetImages``, same call shape.
* :func:`task_batches` / :func:`pretrain_batches`: ``batches(step)`` for
  :func:`pipeline.meta.trainer.run`, a pure function of (seed, step); :func:`task_set`:
  the held-out meta-validation tasks, all of them every time.
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.func import functional_call

from ..decode import open_rgb
from ..learners import Batch, PromptLearner
from .gram import Task
from .tasks import MetaTask


@dataclass(frozen=True)
class ClassBatch:
    """A ``loss_fn`` batch: the task's class names and the learner's :class:`Batch`."""

    classnames: tuple[str, ...]
    batch: Batch


class LearnerLoss:
    """``loss_fn(params, ClassBatch)`` = CE of the learner's logits under ``params``."""

    def __init__(self, learner: PromptLearner):
        self.learner = learner

    def __call__(self, params: dict[str, Tensor], batch: ClassBatch) -> Tensor:
        if tuple(self.learner.classnames) != batch.classnames:
            self.learner.set_classes(list(batch.classnames))
        logits = functional_call(self.learner, params, (batch.batch,))
        return F.cross_entropy(logits, batch.batch.labels.to(logits.device))


class PairFeatures:
    """Frozen image features of the pairs (``embeddings.npz``: keys, image), by key."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no pair embeddings (run the `embed_pairs` stage)")
        with np.load(path, allow_pickle=False) as data:
            for name in ("keys", "image"):
                if name not in data:
                    raise ValueError(f"{path}: missing array {name!r}")
            self.keys = [str(k) for k in data["keys"]]
            self.image = torch.from_numpy(np.ascontiguousarray(data["image"], dtype=np.float32))
        self.path = path
        self.row = {key: i for i, key in enumerate(self.keys)}

    def __call__(self, keys: Sequence[str]) -> Tensor:
        missing = [k for k in keys if k not in self.row]
        if missing:
            raise KeyError(f"{self.path}: no features for pair key {missing[0]!r}")
        return self.image[[self.row[k] for k in keys]]


class PairImages:
    """Preprocessed pair images by key, read from the WebDataset shards (``<key>.jpg``).

    Only the encoded bytes of the keys asked for at construction are kept; each use decodes
    and preprocesses again (cheap next to the image encoder's forward and backward). The
    shards are scanned once: fine at the embedded scale; at CC3M scale pass ``shards`` for
    just the shards that hold the keys (``index.parquet`` lists each key's shard).
    """

    def __init__(
        self,
        shards_dir: str | Path,
        keys: Iterable[str],
        transform: Callable,
        shards: Sequence[str] | None = None,
    ):
        import webdataset as wds

        wanted = set(keys)
        paths = list(shards) if shards else sorted(glob.glob(str(Path(shards_dir) / "*.tar")))
        if not paths:
            raise FileNotFoundError(f"{shards_dir}: no pair shards (run the `ingest` stage)")
        self.encoded: dict[str, bytes] = {}
        for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
            if sample["__key__"] in wanted and "jpg" in sample:
                self.encoded[sample["__key__"]] = sample["jpg"]
        missing = wanted - set(self.encoded)
        if missing:
            raise KeyError(f"{shards_dir}: no image <key>.jpg for pair key {sorted(missing)[0]!r}")
        self.transform = transform

    def __call__(self, keys: Sequence[str]) -> Tensor:
        images = []
        for key in keys:
            images.append(self.transform(open_rgb(self.encoded[key])))
        return torch.stack(images)


def class_batch(
    classnames: Sequence[str],
    keys: Sequence[str],
    labels: Sequence[int],
    features: PairFeatures | None,
    images: PairImages | None,
    device: str | torch.device = "cpu",
) -> ClassBatch:
    batch = Batch(
        labels=torch.as_tensor(list(labels), dtype=torch.long, device=device),
        features=features(keys).to(device) if features is not None else None,
        images=images(keys).to(device) if images is not None else None,
    )
    return ClassBatch(tuple(classnames), batch)


def step_task_indices(num_tasks: int, per_step: int, seed: int, step: int) -> list[int]:
    """The tasks of outer step ``step``: a draw without replacement seeded by (seed, step)."""
    rng = np.random.default_rng([seed, step])
    return [int(i) for i in rng.choice(num_tasks, min(per_step, num_tasks), replace=False)]


def keys_used(tasks: Sequence[MetaTask], steps: int, per_step: int, seed: int) -> set[str]:
    """Every image key the first ``steps`` outer steps will read (to preload images)."""
    used: set[str] = set()
    for step in range(steps):
        for i in step_task_indices(len(tasks), per_step, seed, step):
            used.update(tasks[i].support.keys)
            used.update(tasks[i].query.keys)
    return used


def as_task(
    task: MetaTask,
    features: PairFeatures | None,
    images: PairImages | None,
    device: str | torch.device = "cpu",
) -> Task:
    """A stored task as GRAM's (support, query) pair of :class:`ClassBatch`."""
    support, query = (
        class_batch(task.classnames, split.keys, split.labels, features, images, device)
        for split in (task.support, task.query)
    )
    return Task(support, query)


def task_batches(
    tasks: Sequence[MetaTask],
    per_step: int,
    seed: int,
    features: PairFeatures | None = None,
    images: PairImages | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[int], list[Task]]:
    """``batches(step)``: B tasks as (support, query) :class:`ClassBatch` pairs."""

    def batches(step: int) -> list[Task]:
        return [
            as_task(tasks[i], features, images, device)
            for i in step_task_indices(len(tasks), per_step, seed, step)
        ]

    return batches


def task_set(
    tasks: Sequence[MetaTask],
    features: PairFeatures | None = None,
    images: PairImages | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[], list[Task]]:
    """``tasks()``: every task of a fixed set (the held-out ones), built again at each call
    so that decoded images are not held between validations."""
    return lambda: [as_task(t, features, images, device) for t in tasks]


def pretrain_batches(
    tasks: Sequence[MetaTask],
    per_step: int,
    seed: int,
    features: PairFeatures | None = None,
    images: PairImages | None = None,
    device: str | torch.device = "cpu",
) -> Callable[[int], list[Task]]:
    """The "- meta-learning" ablation's data: the SAME images as GRAM's steps, classified
    over ALL topics of the task set (plain prompt pre-training on the cluster data), one
    batch per task in ``Task.support``."""
    topics = sorted(
        {(tid, name) for t in tasks for tid, name in zip(t.topic_ids, t.classnames, strict=True)}
    )
    label_of = {tid: i for i, (tid, _) in enumerate(topics)}
    classnames = [name for _, name in topics]

    def batches(step: int) -> list[Task]:
        out = []
        for i in step_task_indices(len(tasks), per_step, seed, step):
            t = tasks[i]
            keys = t.support.keys + t.query.keys
            labels = [label_of[t.topic_ids[y]] for y in t.support.labels + t.query.labels]
            batch = class_batch(classnames, keys, labels, features, images, device)
            out.append(Task(batch, None))
        return out

    return batches
