"""Readers for the dataset layout of CoOp's DATASETS.md (``spec/datasets.md``).

Every prompt-learning codebase since CoOp reads the same ``$DATA`` root; pointing the
pipeline at it must just work. CoOp reads it through Dassl, which is not on PyPI and pulls
in its whole trainer stack, so the reading is hand-written here (``split_files.py``,
``imagenet_folders.py``), with the checks Dassl does not make: every problem is reported
with the file and the entry that caused it, before any training starts.

A dataset is described as data (:class:`DatasetSpec`): its folder under the root, where
its images are and how its split is stored (``layout``):

* ``json``: ``{"train"|"val"|"test": [[relative_image_path, label, "class name"], ...]}``
  (10 of CoOp's datasets and any dataset of the user's own);
* ``fgvc``: FGVCAircraft's ``variants.txt`` + ``images_variant_{train,val,test}.txt``;
* ``imagenet``: ``images/{train,val}/nXXXXXXXX/`` with ``classnames.txt``; val is the test;
* ``imagenetv2``: folders ``0..999``, folder ``i`` = line ``i`` of ``classnames.txt``;
* ``wnid_folders``: ImageNet-Sketch/-A/-R, the ``n*`` folders present labelled by sorted
  index and named through ``classnames.txt``.

Caltech101's split file already leaves out ``BACKGROUND_Google`` and ``Faces_easy``, as
CoOp does. Images inside a class folder are listed in sorted order (CoOp's ``os.listdir``
order depends on the file system), so a draw is reproducible across machines.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.data.imagenet_folders import read_imagenet, read_imagenetv2, read_wnid_folders
from pipeline.data.split_files import read_fgvc, read_json_split
from pipeline.data.templates import (
    COOP_TEMPLATES,
    DEFAULT_TEMPLATE,
    PROGRAD_TEMPLATES,
    check_template,
)
from pipeline.data.types import SPLITS, DatasetError, DatasetSplits
from pipeline.params import ParamError

LAYOUTS = ("json", "fgvc", "imagenet", "imagenetv2", "wnid_folders")


@dataclass(frozen=True)
class DatasetSpec:
    """Where a dataset lives under the root and how to read it.

    ``images`` is relative to ``root/folder`` ("" for the folder itself); ``split_file``
    (``json`` layout only) is relative to ``root/folder``. ``prograd_template`` defaults to
    ``template``.
    """

    name: str
    folder: str
    images: str = "images"
    layout: str = "json"
    split_file: str | None = None
    template: str = DEFAULT_TEMPLATE
    prograd_template: str | None = None

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise ValueError(f"dataset {self.name}: layout {self.layout!r} not in {LAYOUTS}")
        if self.layout == "json" and not self.split_file:
            raise ValueError(f"dataset {self.name}: the json layout needs a split_file")
        check_template(self.template, f"dataset {self.name}")
        if self.prograd_template is None:
            object.__setattr__(self, "prograd_template", self.template)
        check_template(self.prograd_template, f"dataset {self.name} (ProGrad)")


def _coop(name: str, folder: str, images: str, layout: str = "json") -> DatasetSpec:
    split_file = f"split_zhou_{name}.json" if layout == "json" else None
    return DatasetSpec(
        name, folder, images, layout, split_file, COOP_TEMPLATES[name], PROGRAD_TEMPLATES[name]
    )


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in [
        _coop("Caltech101", "caltech-101", "101_ObjectCategories"),
        _coop("OxfordPets", "oxford_pets", "images"),
        _coop("StanfordCars", "stanford_cars", ""),
        _coop("OxfordFlowers", "oxford_flowers", "jpg"),
        _coop("Food101", "food-101", "images"),
        _coop("FGVCAircraft", "fgvc_aircraft", "images", "fgvc"),
        _coop("SUN397", "sun397", "SUN397"),
        _coop("DescribableTextures", "dtd", "images"),
        _coop("EuroSAT", "eurosat", "2750"),
        _coop("UCF101", "ucf101", "UCF-101-midframes"),
        _coop("ImageNet", "imagenet", "images", "imagenet"),
        _coop("ImageNetV2", "imagenetv2", "imagenetv2-matched-frequency-format-val", "imagenetv2"),
        _coop("ImageNetSketch", "imagenet-sketch", "images", "wnid_folders"),
        _coop("ImageNetA", "imagenet-adversarial", "imagenet-a", "wnid_folders"),
        _coop("ImageNetR", "imagenet-rendition", "imagenet-r", "wnid_folders"),
    ]
}


def _alias(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


# "oxford_pets", "oxfordpets", "OxfordPets", "dtd", "imagenet-a", "ImageNet-Sketch", ...
_ALIASES = {_alias(key): spec for spec in DATASETS.values() for key in (spec.name, spec.folder)}
_ALIASES.update({"imageneta": DATASETS["ImageNetA"], "imagenetr": DATASETS["ImageNetR"]})


def get_spec(name: str) -> DatasetSpec:
    """The built-in spec for a CoOp dataset name, its folder name, or any case/punctuation."""
    spec = _ALIASES.get(_alias(name))
    if spec is None:
        raise DatasetError(
            f"unknown dataset {name!r}; built-in datasets are {sorted(DATASETS)} "
            "(a dataset of your own needs a folder/images/split mapping in params.yaml)"
        )
    return spec


_CONFIG_KEYS = {"folder", "images", "split", "template", "prograd_template"}


def spec_from_config(name: str, cfg: Mapping[str, Any], key: str | None = None) -> DatasetSpec:
    """A user's own json-split dataset from its params.yaml mapping.

    ``{folder: my_data, images: images, split: split_my_data.json, template: "a photo of a
    {}."}``; defaults: folder = ``name``, images = ``images``, split =
    ``split_<name>.json``, template = ``a photo of a {}.``, prograd_template = template.
    ``key`` is where the mapping sits in params.yaml, for error messages.
    """
    key = key or f"datasets.{name}"
    if not isinstance(cfg, Mapping):
        raise ParamError(f"params.yaml: {key} must be a mapping, got {cfg!r}")
    unknown = sorted(set(cfg) - _CONFIG_KEYS)
    if unknown:
        raise ParamError(f"params.yaml: {key}.{unknown[0]} is not one of {sorted(_CONFIG_KEYS)}")
    for field_name in _CONFIG_KEYS & set(cfg):
        if not isinstance(cfg[field_name], str):
            raise ParamError(
                f"params.yaml: {key}.{field_name} = {cfg[field_name]!r} must be a string"
            )
    template = cfg.get("template", DEFAULT_TEMPLATE)
    for field_name in ("template", "prograd_template"):
        value = cfg.get(field_name)
        if value is not None and value.count("{}") != 1:
            raise ParamError(
                f"params.yaml: {key}.{field_name} = {value!r} needs exactly one '{{}}'"
            )
    return DatasetSpec(
        name=name,
        folder=cfg.get("folder", name),
        images=cfg.get("images", "images"),
        layout="json",
        split_file=cfg.get("split", f"split_{name}.json"),
        template=template,
        prograd_template=cfg.get("prograd_template"),
    )


def resolve_spec(name: str, cfg: Mapping[str, Any] | None = None) -> DatasetSpec:
    """A built-in dataset when ``cfg`` is None, else the user's own from ``cfg``."""
    return get_spec(name) if cfg is None else spec_from_config(name, cfg)


_READERS = {
    "json": read_json_split,
    "fgvc": read_fgvc,
    "imagenet": read_imagenet,
    "imagenetv2": read_imagenetv2,
    "wnid_folders": read_wnid_folders,
}


def load_dataset(
    name_or_spec: str | DatasetSpec,
    root: str | Path,
    *,
    splits: Collection[str] = SPLITS,
) -> DatasetSplits:
    """Read and validate one dataset under ``root`` (a CoOp ``$DATA`` folder).

    Only the images of ``splits`` are checked and returned (the others come back empty);
    zero-shot evaluation asks for ``("test",)`` and never lists ImageNet's train folders.
    Raises :class:`DatasetError` naming the file and the entries at fault.
    """
    spec = name_or_spec if isinstance(name_or_spec, DatasetSpec) else get_spec(name_or_spec)
    wanted = set(splits)
    if not wanted or wanted - set(SPLITS):
        raise ValueError(f"splits must be a non-empty subset of {SPLITS}, got {sorted(splits)}")
    base = Path(os.path.abspath(os.path.expanduser(root))) / spec.folder
    if not base.is_dir():
        raise DatasetError(
            f"{spec.name}: folder {base} not found (expected '{spec.folder}' under the data "
            f"root {root}, laid out as in CoOp's DATASETS.md)"
        )
    image_dir = base / spec.images if spec.images else base
    read = _READERS[spec.layout](spec, base, image_dir, wanted)
    keep = {s: (getattr(read, s) if s in wanted else []) for s in SPLITS}
    if "test" in wanted and not keep["test"]:
        raise DatasetError(f"{spec.name}: the test split under {base} is empty")
    return DatasetSplits(
        name=spec.name,
        classnames=read.classnames,
        template=spec.template,
        prograd_template=spec.prograd_template,
        val_is_test=read.val_is_test,
        **keep,
    )
