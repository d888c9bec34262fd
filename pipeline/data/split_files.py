"""Readers for datasets whose split is a file: CoOp's json splits and FGVCAircraft's txt files.

Shared with :mod:`pipeline.data.imagenet_folders`: the result record, the prompt-ready
class name, and the one-listing-per-folder check that every listed image exists.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from tqdm import tqdm

from pipeline.data.types import SPLITS, DatasetError, Datum, Problems

if TYPE_CHECKING:
    from pipeline.data.coop import DatasetSpec


class ReadResult(NamedTuple):
    """What a reader found; ``val_is_test`` for ImageNet, whose val split is its test set."""

    classnames: list[str]
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    val_is_test: bool = False


def prompt_name(raw: str) -> str:
    return raw.replace("_", " ")


def _short(entry: Any, limit: int = 120) -> str:
    text = repr(entry)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing_files(paths: Iterable[str]) -> set[str]:
    """Paths that do not exist, with one directory listing per folder instead of a stat each."""
    by_dir: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        folder, name = os.path.split(path)
        by_dir[folder].append(name)
    missing: set[str] = set()
    for folder, names in tqdm(by_dir.items(), desc="checking images", disable=len(by_dir) < 200):
        try:
            with os.scandir(folder) as entries:
                present = {e.name for e in entries if e.is_file()}
        except OSError:  # folder absent or not a folder: every file in it is missing
            present = set()
        missing.update(os.path.join(folder, n) for n in names if n not in present)
    return missing


def _check_listed_images(
    listed: list[tuple[str, int, str]], describe: Callable[[str, int], str], source: Path
) -> None:
    """``listed`` = [(split, index, absolute path)]: raise, naming each entry, if any is absent."""
    missing = _missing_files(path for _, _, path in listed)
    problems = Problems(f"images listed in {source} but not found")
    for split, index, path in listed:
        if path in missing:
            problems.add(f"{describe(split, index)} -> {path}")
    problems.raise_if_any()


def _escapes(relative: str) -> bool:
    """Whether a listed path leaves the image folder (``..`` parts that climb out of it)."""
    normal = os.path.normpath(relative)
    return normal == os.pardir or normal.startswith(os.pardir + os.sep)


def _check_repeats(
    listed: list[tuple[str, int, str]], describe: Callable[[str, int], str], source: Path
) -> None:
    """``listed`` = [(split, index, relative path)]. An image listed twice in one split would
    count twice (and could be drawn as two of its class's shots); one in train and also in val
    or test would leak evaluation images into training. Both are errors naming both entries.
    val and test may share images (some datasets use their test set as val)."""
    first: dict[tuple[str, str], int] = {}  # (split, path) -> first index
    train: dict[str, int] = {}
    repeated = Problems(f"images listed twice in one split of {source}")
    leaked = Problems(f"images of {source} listed in train and in val or test")
    for split, index, relative in listed:
        path = os.path.normpath(relative)
        earlier = first.setdefault((split, path), index)
        if earlier != index:
            repeated.add(f"{describe(split, index)}: same image as {describe(split, earlier)}")
            continue
        if split == "train":
            train[path] = index
        elif path in train:
            leaked.add(f"{describe(split, index)}: same image as {describe('train', train[path])}")
    repeated.raise_if_any()
    leaked.raise_if_any()


def read_text_lines(path: Path, what: str) -> list[tuple[int, str]]:
    """Non-blank stripped lines with their 1-based line numbers."""
    if not path.is_file():
        raise DatasetError(f"{what}: {path} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{what}: {path} is not UTF-8 text ({err})") from err
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), 1) if line.strip()]


def _load_split_json(name: str, path: Path) -> dict[str, list]:
    """The parsed split file, checked to hold a list per split."""
    if not path.is_file():
        raise DatasetError(f"{name}: split file {path} not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise DatasetError(f"{path}: expected an object with keys {list(SPLITS)}")
    absent = [s for s in SPLITS if s not in data]
    if absent:
        raise DatasetError(f"{path}: missing key(s) {absent} (need {list(SPLITS)})")
    for split in SPLITS:
        if not isinstance(data[split], list):
            kind = type(data[split]).__name__
            raise DatasetError(f"{path}: '{split}' must be a list, got {kind}")
    return data


def _check_labels(path: Path, first_seen: dict, rows: list, where) -> int:
    """The number of classes: labels run 0..C-1 and every label is in the train split."""
    if not first_seen:
        raise DatasetError(f"{path}: every split is empty")
    num_classes = max(first_seen) + 1
    holes = [label for label in range(num_classes) if label not in first_seen]
    if holes:
        raise DatasetError(
            f"{path}: labels must run 0..{num_classes - 1}, but {len(holes)} have no entry "
            f"in any split: {holes[:10]}"
        )
    train_labels = {label for split, _, _, label, _ in rows if split == "train"}
    if train_labels:
        # CoOp takes the class list from the train split; a class only seen at test time
        # would have no prompt and would shift every base/new boundary.
        outside = Problems(f"labels in {path} outside the class list of its train split")
        for split, i, _, label, _ in rows:
            if label not in train_labels:
                outside.add(where(split, i))
        outside.raise_if_any()
    return num_classes


def read_json_split(spec: DatasetSpec, base: Path, image_dir: Path, wanted: set[str]) -> ReadResult:
    """CoOp's ``split_zhou_*.json``: the class list is the set of (label, name) pairs."""
    path = base / spec.split_file
    data = _load_split_json(spec.name, path)

    def where(split: str, index: int) -> str:
        return f"{split}[{index}] {_short(data[split][index])}"

    bad = Problems(f"malformed entries in {path} (each must be [relative_path, label >= 0, name])")
    clash = Problems(f"labels with two class names in {path}")
    first_seen: dict[int, tuple[str, str, int]] = {}  # label -> (name, split, index)
    rows: list[tuple[str, int, str, int, str]] = []  # (split, index, path, label, name)
    for split in SPLITS:
        for i, entry in enumerate(data[split]):
            if not (
                isinstance(entry, list)
                and len(entry) == 3
                and isinstance(entry[0], str)
                and entry[0]
                and type(entry[1]) is int
                and entry[1] >= 0
                and isinstance(entry[2], str)
                and entry[2]
            ):
                bad.add(where(split, i))
                continue
            rel, label, name = entry
            if os.path.isabs(rel) or _escapes(rel):
                bad.add(f"{where(split, i)}: the path must stay inside {image_dir}")
                continue
            seen_name, seen_split, seen_i = first_seen.setdefault(label, (name, split, i))
            if seen_name != name:
                clash.add(
                    f"{where(split, i)}: label {label} is {seen_name!r} at "
                    f"{where(seen_split, seen_i)}"
                )
            rows.append((split, i, rel, label, name))
    bad.raise_if_any()
    clash.raise_if_any()
    num_classes = _check_labels(path, first_seen, rows, where)
    _check_repeats([(split, i, rel) for split, i, rel, _, _ in rows], where, path)

    rows = [row for row in rows if row[0] in wanted]
    located = [
        (split, i, os.path.normpath(os.path.join(image_dir, rel))) for split, i, rel, _, _ in rows
    ]
    _check_listed_images(located, where, path)
    items: dict[str, list[Datum]] = {s: [] for s in SPLITS}
    for (split, _, abs_path), (_, _, _, label, name) in zip(located, rows, strict=True):
        items[split].append(Datum(Path(abs_path), label, prompt_name(name)))
    classnames = [prompt_name(first_seen[label][0]) for label in range(num_classes)]
    return ReadResult(classnames, items["train"], items["val"], items["test"])


def read_fgvc(spec: DatasetSpec, base: Path, image_dir: Path, wanted: set[str]) -> ReadResult:
    """FGVCAircraft: label = line index in ``variants.txt``; image ``images/<id>.jpg``."""
    variants_file = base / "variants.txt"
    variants = [line for _, line in read_text_lines(variants_file, spec.name)]
    label_of = {name: label for label, name in enumerate(variants)}
    if len(label_of) != len(variants):
        raise DatasetError(f"{variants_file}: a variant is listed twice")
    items: dict[str, list[Datum]] = {s: [] for s in SPLITS}
    listed: list[tuple[str, int, str]] = []  # every split, for the repeat check
    described: dict[str, Callable[[str, int], str]] = {}
    for split in SPLITS:
        split_file = base / f"images_variant_{split}.txt"
        lines = dict(read_text_lines(split_file, spec.name))

        def where(_: str, number: int, lines: dict[int, str] = lines) -> str:
            return f"line {number} {lines[number]!r}"

        bad = Problems(f"bad lines in {split_file} (each must be '<image id> <variant>')")
        unknown = Problems(f"lines in {split_file} naming a variant not in {variants_file}")
        located: list[tuple[str, int, str]] = []
        described[split] = where
        for number, line in lines.items():
            image_id, _, variant = line.partition(" ")
            if not variant or os.sep in image_id or image_id in (os.curdir, os.pardir):
                bad.add(where(split, number))
            elif variant not in label_of:
                unknown.add(where(split, number))
            else:
                listed.append((split, number, image_id))
                if split in wanted:
                    path = os.path.join(image_dir, f"{image_id}.jpg")
                    located.append((split, number, path))
                    label = label_of[variant]
                    items[split].append(Datum(Path(path), label, prompt_name(variant)))
        bad.raise_if_any()
        unknown.raise_if_any()
        _check_listed_images(located, where, split_file)
    _check_repeats(
        listed,
        lambda split, n: f"images_variant_{split}.txt {described[split](split, n)}",
        base,
    )
    classnames = [prompt_name(v) for v in variants]
    return ReadResult(classnames, items["train"], items["val"], items["test"])
