"""Readers for the ImageNet family, whose classes are folders named by label or WordNet id.

* ImageNet: ``images/{train,val}/nXXXXXXXX/``; label = index in the sorted folder list;
  val is the test set (and the val split).
* ImageNetV2: folders ``0..999``; folder ``i`` = label ``i`` = line ``i`` of classnames.txt.
* ImageNet-Sketch/-A/-R: the ``n*`` folders present, labelled 0.. in sorted order (200 for
  -A and -R), named through the full 1000-line classnames.txt.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm import tqdm

from pipeline.data.split_files import ReadResult, prompt_name, read_text_lines
from pipeline.data.types import DatasetError, Datum, Problems

if TYPE_CHECKING:
    from pipeline.data.coop import DatasetSpec


def _read_classnames_txt(path: Path, what: str) -> dict[str, str]:
    """``classnames.txt``: ``nXXXXXXXX class name`` per line -> {wnid: name}, in file order."""
    names: dict[str, str] = {}
    bad = Problems(f"bad lines in {path} (each must be '<wnid> <class name>')")
    for number, line in read_text_lines(path, what):
        wnid, _, name = line.partition(" ")
        if not name.strip() or wnid in names:
            bad.add(f"line {number} {line!r}" + (" (repeated wnid)" if wnid in names else ""))
            continue
        names[wnid] = name.strip()
    bad.raise_if_any()
    return names


def _subfolders(folder: Path, what: str) -> list[str]:
    """Sorted, non-hidden sub-folders (files such as ImageNet-A's README.txt are skipped)."""
    if not folder.is_dir():
        raise DatasetError(f"{what}: image folder {folder} not found")
    with os.scandir(folder) as entries:
        return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def _list_classes(image_root: Path, folders: list[str], labels: list[int], names: list[str]):
    """Every image of each class folder, sorted, as Datums; also the folders left empty."""
    items: list[Datum] = []
    empty: list[str] = []
    progress = tqdm(
        zip(folders, labels, names, strict=True),
        total=len(folders),
        leave=False,
        desc=f"listing {image_root.name}",
        disable=len(folders) < 200,
    )
    for folder, label, name in progress:
        class_dir = image_root / folder
        with os.scandir(class_dir) as entries:
            files = sorted(e.name for e in entries if e.is_file() and not e.name.startswith("."))
        if not files:
            empty.append(str(class_dir))
        items.extend(Datum(class_dir / f, label, name) for f in files)
    return items, empty


def _raise_if_empty(empty: list[str], what: str) -> None:
    problems = Problems(f"class folders of {what} without any image")
    for folder in empty:
        problems.add(folder)
    problems.raise_if_any()


def _named_wnids(folders: list[str], names: dict[str, str], names_file: Path) -> list[str]:
    unknown = Problems(f"class folders whose wnid is not in {names_file}")
    for folder in folders:
        if folder not in names:
            unknown.add(folder)
    unknown.raise_if_any()
    return [prompt_name(names[f]) for f in folders]


def read_imagenet(spec: DatasetSpec, base: Path, image_dir: Path, wanted: set[str]) -> ReadResult:
    names_file = base / "classnames.txt"
    names = _read_classnames_txt(names_file, spec.name)
    val_folders = _subfolders(image_dir / "val", spec.name)
    classnames = _named_wnids(val_folders, names, names_file)
    labels = list(range(len(val_folders)))
    train: list[Datum] = []
    if "train" in wanted:
        train_folders = _subfolders(image_dir / "train", spec.name)
        if train_folders != val_folders:
            only = sorted(set(train_folders) ^ set(val_folders))
            raise DatasetError(
                f"{spec.name}: {image_dir / 'train'} and {image_dir / 'val'} must hold the same "
                f"class folders (labels are the sorted folder index); differing: {only[:10]}"
            )
        train, empty = _list_classes(image_dir / "train", train_folders, labels, classnames)
        _raise_if_empty(empty, f"{spec.name} train")
    test: list[Datum] = []
    if wanted & {"val", "test"}:
        test, empty = _list_classes(image_dir / "val", val_folders, labels, classnames)
        _raise_if_empty(empty, f"{spec.name} val")
    # CoOp evaluates on ImageNet's val set and uses it as the val split as well.
    return ReadResult(classnames, train, test, test, val_is_test=True)


def read_imagenetv2(spec: DatasetSpec, base: Path, image_dir: Path, wanted: set[str]) -> ReadResult:
    names_file = base / "classnames.txt"
    classnames = [prompt_name(n) for n in _read_classnames_txt(names_file, spec.name).values()]
    folders = _subfolders(image_dir, spec.name)
    outside = Problems(
        f"folders of {image_dir} that are not a label 0..{len(classnames) - 1} of {names_file}"
    )
    for folder in folders:
        if not (folder.isdigit() and int(folder) < len(classnames)):
            outside.add(folder)
    outside.raise_if_any()
    absent = sorted(set(range(len(classnames))) - {int(f) for f in folders})
    if absent:
        raise DatasetError(
            f"{spec.name}: {len(absent)} label folder(s) missing under {image_dir}: {absent[:10]}"
        )
    folders.sort(key=int)
    labels = [int(f) for f in folders]
    test, empty = _list_classes(image_dir, folders, labels, [classnames[i] for i in labels])
    _raise_if_empty(empty, spec.name)
    return ReadResult(classnames, [], [], test)


def read_wnid_folders(
    spec: DatasetSpec, base: Path, image_dir: Path, wanted: set[str]
) -> ReadResult:
    names_file = base / "classnames.txt"
    names = _read_classnames_txt(names_file, spec.name)
    folders = _subfolders(image_dir, spec.name)
    if not folders:
        raise DatasetError(f"{spec.name}: no class folders under {image_dir}")
    classnames = _named_wnids(folders, names, names_file)
    test, empty = _list_classes(image_dir, folders, list(range(len(folders))), classnames)
    _raise_if_empty(empty, spec.name)
    return ReadResult(classnames, [], [], test)
