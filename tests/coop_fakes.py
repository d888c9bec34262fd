"""Tiny fake dataset trees in CoOp's layouts and seeded noise images, for the tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path) -> None:
    """A 2x2 image in the format its extension names (PNG or JPEG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (120, 30, 200)).save(path)


def write_noise_images(
    folder: Path, count: int, seed: int, shape: tuple[int, int], prefix: str = "img"
) -> list[Path]:
    """``count`` PNGs of seeded uniform noise, ``shape`` = (height, width)."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"{prefix}{i}.png"
        Image.fromarray(rng.integers(0, 255, (*shape, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def json_entries(classes: list[str], per_class: int, prefix: str) -> list[list]:
    """``per_class`` entries ``[<class>/<prefix>_<i>.png, label, class]`` for each class."""
    return [
        [f"{name}/{prefix}_{i}.png", label, name]
        for label, name in enumerate(classes)
        for i in range(per_class)
    ]


def make_json_dataset(
    root: Path,
    folder: str,
    images: str,
    split_file: str,
    classes: list[str],
    counts: tuple[int, int, int] = (3, 2, 2),
    write_images: bool = True,
) -> dict[str, list[list]]:
    """A json-split dataset: ``counts`` images per class for train/val/test."""
    split = {
        name: json_entries(classes, n, name)
        for name, n in zip(("train", "val", "test"), counts, strict=True)
    }
    base = root / folder
    base.mkdir(parents=True, exist_ok=True)
    (base / split_file).write_text(json.dumps(split))
    if write_images:
        image_dir = base / images if images else base
        for entries in split.values():
            for rel, _, _ in entries:
                write_image(image_dir / rel)
    return split


def make_wnid_folders(image_dir: Path, wnids: list[str], per_class: int = 2) -> None:
    for wnid in wnids:
        for i in range(per_class):
            write_image(image_dir / wnid / f"{wnid}_{i}.png")


def write_classnames(path: Path, names: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{wnid} {name}\n" for wnid, name in names.items()))
