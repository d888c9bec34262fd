"""Meta-training tasks from a labelled dataset instead of CHC: GRAM Table 6, row 4,
"- CHC = supervised meta-learning".

GRAM Sec. 4.6, ablation (4): "instead of using unlabeled data, we directly use an annotated
image classification dataset (i.e., WebVision) for meta-training. We construct meta-training
tasks by sub-sampling from the set of classes." Here the dataset is any one the pipeline reads
(``tasks.dataset``: a ``data.own`` entry or a built-in CoOp dataset under ``data.root``); its
train split becomes the table the CHC path builds (``key, topic_id, topic_word, domain``):

* topic = class (``topic_id`` = label, ``topic_word`` = class name);
* domain = 0 for every image: a labelled dataset has no visual domains, so with
  ``support_sampling: one_domain`` the support is just any images of the class, and the
  task sampler (:mod:`pipeline.meta.tasks`) runs unchanged on it;
* key = ``<dataset>:<image path relative to the dataset's folder>``. A pair key never holds
  a ``:`` (img2dataset numbers its samples), so the two kinds of key cannot collide, and a
  key alone says which dataset and which file it is.

``meta_train`` then reads a task's images from the dataset: frozen image features through
:func:`pipeline.features.image_features` (its on-disk cache, as downstream tuning uses) for
textual prompts, preprocessed images for visual prompts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import Tensor

from ..backbones import Backbone
from ..data import DATASETS, DatasetError, DatasetSpec, load_dataset
from ..features import image_features, load_rgb
from ..params import ParamError, check_choice, data_root, dataset_spec, get

SOURCES = ("chc", "dataset")
#: ``features`` params passed on to :func:`pipeline.features.image_features`
FEATURE_OPTIONS = ("batch_size", "num_workers", "cache_dir")


@dataclass(frozen=True)
class LabelledSource:
    """The labelled dataset the tasks come from (``tasks.source: dataset``)."""

    spec: DatasetSpec
    root: Path

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def folder(self) -> Path:
        """The dataset's folder; keys are image paths relative to it."""
        return Path(os.path.abspath(os.path.expanduser(self.root))) / self.spec.folder

    def key(self, path: Path) -> str:
        return f"{self.name}:{Path(os.path.relpath(path, self.folder)).as_posix()}"

    def path(self, key: str) -> Path:
        """The image file a task key names (an error if the key is not of this dataset)."""
        prefix = f"{self.name}:"
        if not key.startswith(prefix):
            raise DatasetError(
                f"task key {key!r} is not an image of dataset {self.name} (tasks.dataset): the "
                "tasks were built from another source; rerun the `tasks` stage"
            )
        path = self.folder / key[len(prefix) :]
        if not path.is_file():
            raise DatasetError(f"{self.name}: task key {key!r} names no image ({path} missing)")
        return path


def labelled_source(params: Mapping[str, Any]) -> LabelledSource | None:
    """The dataset of ``tasks.source: dataset`` (None for ``chc``, the default when absent)."""
    section = get(params, "tasks")
    source = check_choice("tasks.source", section.get("source", "chc"), SOURCES)
    if source == "chc":
        return None
    name = section.get("dataset")
    if not isinstance(name, str) or not name:
        raise ParamError(
            f"params.yaml: tasks.dataset = {name!r} must name a dataset (a data.own entry or a "
            "built-in CoOp dataset) when tasks.source is 'dataset'"
        )
    own = (params.get("data") or {}).get("own") or {}
    try:
        spec = dataset_spec(dict(params), name)
    except DatasetError:
        raise ParamError(
            f"params.yaml: tasks.dataset = {name!r} is neither a data.own entry "
            f"({sorted(own)}) nor a built-in dataset ({sorted(DATASETS)})"
        ) from None
    return LabelledSource(spec, data_root(dict(params)))


def labelled_table(source: LabelledSource) -> pd.DataFrame:
    """The train split as a task table: one topic per class, domain 0, one row per image."""
    splits = load_dataset(source.spec, source.root, splits=("train",))
    if not splits.train:
        raise DatasetError(f"{source.name}: the train split is empty; no tasks to build")
    table = pd.DataFrame(
        [(source.key(d.path), d.label, splits.classnames[d.label], 0) for d in splits.train],
        columns=["key", "topic_id", "topic_word", "domain"],
    ).drop_duplicates()
    twice = table["key"].duplicated()
    if twice.any():
        raise DatasetError(
            f"{source.name}: image {table['key'][twice].iloc[0]!r} is listed under two labels "
            "in the train split"
        )
    names = table.drop_duplicates("topic_id")["topic_word"]
    if names.duplicated().any():
        raise DatasetError(
            f"{source.name}: class name {names[names.duplicated()].iloc[0]!r} names several "
            "labels; the class names of a task must differ"
        )
    return table.reset_index(drop=True)


class DatasetFeatures:
    """Frozen image features (test preprocessing) of the task images, by key.

    Encoded once at construction for ``keys`` (those the run will read) through the feature
    cache, so a rerun or a downstream stage on the same images encodes nothing again.
    """

    def __init__(
        self, source: LabelledSource, backbone: Backbone, keys: Iterable[str], **options: Any
    ):
        self.source = source
        self.keys = sorted(set(keys))
        paths = [source.path(key) for key in self.keys]
        self.image = image_features(
            backbone, paths, desc=f"encoding {source.name} task images", **options
        )
        self.row = {key: i for i, key in enumerate(self.keys)}

    def __call__(self, keys: Sequence[str]) -> Tensor:
        missing = [k for k in keys if k not in self.row]
        if missing:
            raise KeyError(f"{self.source.name}: no features for task key {missing[0]!r}")
        return self.image[[self.row[k] for k in keys]]


class DatasetImages:
    """Preprocessed task images by key, decoded from the dataset's files at each use."""

    def __init__(self, source: LabelledSource, keys: Iterable[str], transform):
        self.paths = {key: source.path(key) for key in keys}
        self.source, self.transform = source, transform

    def __call__(self, keys: Sequence[str]) -> Tensor:
        missing = [k for k in keys if k not in self.paths]
        if missing:
            raise KeyError(f"{self.source.name}: no image for task key {missing[0]!r}")
        return torch.stack([self.transform(load_rgb(self.paths[key])) for key in keys])


def labelled_inputs(
    source: LabelledSource,
    backbone: Backbone,
    keys: Iterable[str],
    needs_images: bool,
    params: Mapping[str, Any],
) -> tuple[DatasetFeatures | None, DatasetImages | None]:
    """(features, images) for ``pipeline.meta.adapters.task_batches``: images for a learner
    that runs the image encoder (visual prompts), frozen features otherwise."""
    if needs_images:
        return None, DatasetImages(source, keys, backbone.image_transform(train=False))
    options = {k: v for k, v in (params.get("features") or {}).items() if k in FEATURE_OPTIONS}
    return DatasetFeatures(source, backbone, keys, **options), None
