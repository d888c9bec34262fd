"""Every dataset of the paper's tables in miniature: the 11 CoOp datasets and ImageNet-V2,
-Sketch, -A and -R, each written in its own on-disk layout (CoOp's DATASETS.md, as the
README's dataset section describes it), with tiny seeded-noise JPEGs.

:func:`write_paper_datasets` returns what a correct reader must find in each, so a test can
compare the pipeline's readers against it entry by entry.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

SPLITS = ("train", "val", "test")

# name -> (folder, images folder, class-folder stem, image path pattern); the split file is
# ``split_zhou_<name>.json``. The patterns copy each dataset's real file naming: ``{cls}`` the
# class folder, ``{n}`` a running image number, ``{initial}`` the class folder's first letter,
# ``{cars}`` Stanford Cars' cars_train / cars_test.
JSON_DATASETS = {
    "Caltech101": ("caltech-101", "101_ObjectCategories", "object", "{cls}/image_{n:04d}.jpg"),
    "OxfordPets": ("oxford_pets", "images", "Pet_Breed", "{cls}_{n}.jpg"),
    "StanfordCars": ("stanford_cars", "", "car_model", "{cars}/{n:05d}.jpg"),
    "OxfordFlowers": ("oxford_flowers", "jpg", "flower", "image_{n:05d}.jpg"),
    "Food101": ("food-101", "images", "dish", "{cls}/{n}.jpg"),
    "SUN397": ("sun397", "SUN397", "scene", "{initial}/{cls}/sun_{n:06d}.jpg"),
    "DescribableTextures": ("dtd", "images", "texture", "{cls}/{cls}_{n:04d}.jpg"),
    "EuroSAT": ("eurosat", "2750", "Land_Use", "{cls}/{cls}_{n}.jpg"),
    "UCF101": ("ucf101", "UCF-101-midframes", "Playing_Sport", "{cls}/v_{cls}_g{n:02d}_c01.jpg"),
}
# Where the split file names a class other than its folder does (as the real ones do).
SPLIT_NAMES = {"OxfordPets": str.lower, "EuroSAT": lambda folder: folder + " Area"}
# ImageNet-A/-R keep 200 of ImageNet's 1000 classes; scaled down, each keeps a different
# subset that is neither a prefix nor contiguous, so relabelling in sorted order is visible.
WNID_SUBSETS = {"ImageNetA": (1, 2), "ImageNetR": (0, 2)}  # kept where index % 3 is in these


@dataclass
class ExpectedDataset:
    """What the reader must return: prompt-ready class names, and per split the images
    (paths relative to the data root) with their labels, in any order."""

    classnames: list[str]
    splits: dict[str, list[tuple[str, int]]]


class _NoiseWriter:
    """Seeded noise JPEGs of ``size`` px; every image differs, the same seed gives the same
    bytes."""

    def __init__(self, root: Path, seed: int, size: int):
        self.root, self.rng, self.size = root, np.random.default_rng(seed), size

    def __call__(self, relative: str) -> str:
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        pixels = self.rng.integers(0, 256, (self.size, self.size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, format="JPEG", quality=90)
        return relative


def _json_dataset(write, name: str, per_class: int, n_classes: int) -> ExpectedDataset:
    folder, images, stem, pattern = JSON_DATASETS[name]
    class_folders = [f"{stem}_{i}" for i in range(n_classes)]
    raw_names = [SPLIT_NAMES.get(name, str)(cls) for cls in class_folders]
    split: dict[str, list] = {s: [] for s in SPLITS}
    expected: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    number = 0
    for which in SPLITS:
        cars = "cars_test" if which == "test" else "cars_train"
        for label, (cls, raw_name) in enumerate(zip(class_folders, raw_names, strict=True)):
            for _ in range(per_class):
                number += 1
                rel = pattern.format(cls=cls, n=number, initial=cls[0].lower(), cars=cars)
                write(str(Path(folder, images, rel)))
                split[which].append([rel, label, raw_name])
                expected[which].append((str(Path(folder, images, rel)), label))
    (write.root / folder / f"split_zhou_{name}.json").write_text(json.dumps(split, indent=1))
    return ExpectedDataset([n.replace("_", " ") for n in raw_names], expected)


def _fgvc_aircraft(write, per_class: int, n_classes: int) -> ExpectedDataset:
    """``variants.txt`` (label = line index), ``images_variant_<split>.txt`` lines ``<id>
    <variant>``; variant names hold spaces and are used as they are."""
    base = write.root / "fgvc_aircraft"
    variants = [f"Model {700 + i}-{i}00" for i in range(n_classes)]
    expected: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    number = 1000000
    for which in SPLITS:
        lines = []
        for label, variant in enumerate(variants):
            for _ in range(per_class):
                number += 1
                image_id = f"{number:07d}"
                expected[which].append((write(f"fgvc_aircraft/images/{image_id}.jpg"), label))
                lines.append(f"{image_id} {variant}\n")
        (base / f"images_variant_{which}.txt").write_text("".join(lines))
    (base / "variants.txt").write_text("".join(f"{v}\n" for v in variants))
    return ExpectedDataset(variants, expected)


def _wnids(n_classes: int) -> list[str]:
    return [f"n{1440764 + 1371 * i:08d}" for i in range(n_classes)]  # sorted = index order


def _write_classnames(folder: Path, wnids: list[str], names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join(f"{wnid} {name}\n" for wnid, name in zip(wnids, names, strict=True))
    (folder / "classnames.txt").write_text(text)


def _class_folders(write, image_dir: str, folders: list[str], per_class: int, name: str):
    """``per_class`` images in each of ``folders``; returns [(path, label)], label = index."""
    return [
        (write(f"{image_dir}/{folder}/{name.format(folder=folder, i=i)}"), label)
        for label, folder in enumerate(folders)
        for i in range(per_class)
    ]


def _imagenet_family(write, per_class: int, n_classes: int) -> dict[str, ExpectedDataset]:
    wnids = _wnids(n_classes)
    names = [f"imagenet class {i}" for i in range(n_classes)]
    # every variant carries a copy of ImageNet's full class list
    for folder in (
        "imagenet",
        "imagenetv2",
        "imagenet-sketch",
        "imagenet-adversarial",
        "imagenet-rendition",
    ):
        _write_classnames(write.root / folder, wnids, names)
    train = _class_folders(write, "imagenet/images/train", wnids, per_class, "{folder}_{i}.JPEG")
    val = _class_folders(
        write, "imagenet/images/val", wnids, per_class, "ILSVRC2012_val_{folder}{i}.JPEG"
    )
    numbers = [str(i) for i in range(n_classes)]  # "10" sorts before "2": labels are numeric
    v2_dir = "imagenetv2/imagenetv2-matched-frequency-format-val"
    expected = {
        "ImageNet": ExpectedDataset(names, {"train": train, "val": val, "test": val}),
        "ImageNetV2": _test_only(
            names, _class_folders(write, v2_dir, numbers, per_class, "{i}.jpeg")
        ),
        "ImageNetSketch": _test_only(
            names,
            _class_folders(write, "imagenet-sketch/images", wnids, per_class, "sketch_{i}.JPEG"),
        ),
    }
    for name, folder, images in (
        ("ImageNetA", "imagenet-adversarial", "imagenet-a"),
        ("ImageNetR", "imagenet-rendition", "imagenet-r"),
    ):
        kept = [i for i in range(n_classes) if i % 3 in WNID_SUBSETS[name]]
        image_dir = f"{folder}/{images}"
        found = _class_folders(write, image_dir, [wnids[i] for i in kept], per_class, "{i}.jpg")
        (write.root / image_dir / "README.txt").write_text("not a class folder\n")
        expected[name] = _test_only([names[i] for i in kept], found)
    return expected


def _test_only(classnames: list[str], test: list[tuple[str, int]]) -> ExpectedDataset:
    return ExpectedDataset(classnames, {"train": [], "val": [], "test": test})


def write_paper_datasets(
    root: str | Path, images_per_class: int = 2, n_classes: int = 3, size: int = 32, seed: int = 0
) -> dict[str, ExpectedDataset]:
    """Write all 15 datasets under ``root`` (a CoOp ``$DATA`` folder) and return, by the
    pipeline's dataset name, what each holds.

    ``images_per_class`` images per class in each split (ImageNet: train and val; the
    test-only variants: their one split). ``n_classes`` classes each; ImageNet-A/-R keep
    the subset of those given by ``WNID_SUBSETS`` (at least 3 classes for both to be
    non-empty), with the full ``classnames.txt``.
    """
    if n_classes < 3 or images_per_class < 1:
        raise ValueError(
            f"need n_classes >= 3 and images_per_class >= 1, got {n_classes}, {images_per_class}"
        )
    write = _NoiseWriter(Path(root), seed, size)
    expected = {
        name: _json_dataset(write, name, images_per_class, n_classes) for name in JSON_DATASETS
    }
    expected["FGVCAircraft"] = _fgvc_aircraft(write, images_per_class, n_classes)
    expected.update(_imagenet_family(write, images_per_class, n_classes))
    return expected
