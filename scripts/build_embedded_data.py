"""Build the committed embedded sample (``data/embedded/``) from offline Debian/PyPI packages.

Regenerates, byte for byte, the image-caption pairs, the CoOp-layout downstream datasets,
their domain-shifted variants, ``PROVENANCE.md`` and ``manifest.json``:

    python scripts/build_embedded_data.py --source-root /path/to/unpacked --out data/embedded

Without ``--source-root`` the Debian packages are fetched with ``apt-get download`` and
unpacked with ``dpkg-deb -x`` into a temporary folder. Every random choice comes from
``--seed`` and every listing is sorted, so two runs give identical files.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import sklearn
from embedded_images import VARIANTS, ImageWriter, clipart_image, grey_image
from embedded_provenance import render_provenance
from embedded_sources import (
    CLIPART_DIR,
    DEBIAN_PACKAGES,
    FASHION_DIR,
    debian_version,
    fetch_debian_packages,
    make_caption,
    read_idx,
    read_svg_metadata,
    scan_openclipart,
)
from PIL import Image
from sklearn.datasets import load_digits
from tqdm import tqdm

# Top-level openclipart folders with >= 52 single-folder images and a meaningful name
# ("unsorted" and "special" are not visual categories).
CLIPART_CLASSES = tuple(
    "animals buildings computer food geography office people plants recreation shapes"
    " signs_and_symbols tools transportation".split()
)
# Fashion-MNIST's label order (its README's table), names as a prompt would say them.
FASHION_CLASSES = tuple(
    "t-shirt,trouser,pullover,dress,coat,sandal,shirt,sneaker,bag,ankle boot".split(",")
)
DIGIT_CLASSES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

NUM_PAIRS = 2400
CLIPART_QUOTA = {"train": 24, "val": 4, "test": 24}
FASHION_QUOTA = {"train": 24, "val": 4, "test": 30}
DIGITS_QUOTA = {"train": 24, "val": 4, "test": 20}
VARIANT_TEST_PER_CLASS = 25


def rng_for(seed: int, name: str) -> np.random.Generator:
    """One independent, name-stable random stream per dataset."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# ----------------------------------------------------------------------------- datasets


class Downstream:
    """One CoOp-layout dataset being written: ``<name>/images/`` and ``split_<name>.json``."""

    def __init__(self, out: Path, name: str, classes: tuple[str, ...], writer: ImageWriter):
        self.folder, self.name, self.classes, self.writer = out / name, name, classes, writer
        self.entries: dict[str, list] = {"train": [], "val": [], "test": []}

    def add(self, split: str, label: int, relpath: str, image: Image.Image | None) -> bool:
        if image is None or not self.writer.write(image, self.folder / "images" / relpath):
            return False
        self.entries[split].append([relpath, label, self.classes[label]])
        return True

    def save(self) -> dict[str, int]:
        """One entry per line (readable diffs), sorted by (label, path)."""
        blocks = []
        for split, items in self.entries.items():
            items = sorted(items, key=lambda entry: (entry[1], entry[0]))
            lines = [json.dumps(entry, ensure_ascii=False) for entry in items]
            body = "[\n  " + ",\n  ".join(lines) + "\n ]" if lines else "[]"
            blocks.append(f' "{split}": {body}')
        text = "{\n" + ",\n".join(blocks) + "\n}\n"
        (self.folder / f"split_{self.name}.json").write_text(text, encoding="utf-8")
        counts = {split: len(items) for split, items in self.entries.items()}
        return counts | {"num_classes": len(self.classes), "classes": list(self.classes)}


def fill_splits(candidates, quota: dict[str, int], emit: Callable[[object, str], bool], where):
    """Walk the candidates in order, filling each slot of the quota in turn; emit False = skip."""
    candidates = iter(candidates)
    for slot, wanted in quota.items():
        taken = 0
        while taken < wanted:
            candidate = next(candidates, None)
            if candidate is None:
                raise SystemExit(f"{where}: not enough distinct usable images for {quota}")
            taken += emit(candidate, slot)


def build_clipart(records, png_root: Path, out: Path, writer: ImageWriter, seed: int):
    """Classes = top-level folders; only files listed in exactly one folder (clear labels)."""
    rng, used = rng_for(seed, "clipart"), set()
    classes = tuple(folder.replace("_", " ") for folder in CLIPART_CLASSES)
    dataset = Downstream(out, "clipart", classes, writer)
    for label, folder in enumerate(tqdm(CLIPART_CLASSES, desc="clipart", unit="class")):
        pool = [r["rel"] for r in records if r["folders"] == [folder]]

        def emit(rel: str, split: str, label=label, folder=folder) -> bool:
            relpath = f"{folder}/{rel.split('/', 1)[1].replace('/', '__')[:-4]}.jpg"
            added = dataset.add(split, label, relpath, clipart_image(png_root / rel))
            if added:
                used.add(rel)
            return added

        fill_splits([pool[i] for i in rng.permutation(len(pool))], CLIPART_QUOTA, emit, folder)
    return used, {"clipart": dataset.save()}


def build_pairs(records, used: set, root: Path, out: Path, writer: ImageWriter, seed: int):
    """NUM_PAIRS random openclipart files not used downstream, captioned from their SVG."""
    png_root, svg_root = root / CLIPART_DIR / "png", root / CLIPART_DIR / "svg"
    pool = [r for r in records if r["rel"] not in used]
    chosen = []
    skipped = dict.fromkeys(("no_svg", "svg_unreadable", "oversized_png", "duplicate_pixels"), 0)
    progress = tqdm(total=NUM_PAIRS, desc="pairs", unit="img")
    staging = out / "pairs/staging"
    for index in rng_for(seed, "pairs").permutation(len(pool)):
        if len(chosen) == NUM_PAIRS:
            break
        record = pool[index]
        svg = svg_root / (record["rel"][:-4] + ".svg")
        try:
            meta = read_svg_metadata(svg)
        except FileNotFoundError:
            skipped["no_svg"] += 1
            continue
        except ET.ParseError:
            skipped["svg_unreadable"] += 1
            continue
        image = clipart_image(png_root / record["rel"])
        if image is None:
            skipped["oversized_png"] += 1
        elif not writer.write(image, staging / f"{index}.jpg"):
            skipped["duplicate_pixels"] += 1
        else:
            chosen.append((record, meta, index))
            progress.update()
    progress.close()
    if len(chosen) < NUM_PAIRS:
        raise SystemExit(f"{png_root}: only {len(chosen)} usable pairs, {NUM_PAIRS} wanted")

    # Keys follow the sorted source path so the listing does not depend on the draw order.
    rows, meta_lines = ["key\tcaption\timage\tsource"], []
    (out / "pairs/images").mkdir(parents=True)
    for number, (record, meta, index) in enumerate(sorted(chosen, key=lambda c: c[0]["rel"])):
        key, source = f"oc{number:05d}", f"/{CLIPART_DIR}/png/{record['rel']}"
        (staging / f"{index}.jpg").rename(out / f"pairs/images/{key}.jpg")
        caption = make_caption(meta["title"], meta["description"])
        rows.append(f"{key}\t{caption}\timages/{key}.jpg\t{source}")
        meta_lines.append(
            json.dumps(
                {
                    "key": key,
                    "title": meta["title"],
                    "description": meta["description"],
                    "keywords": meta["keywords"],
                    "folders": record["folders"],
                    "source_png": source,
                    "source_svg": f"/{CLIPART_DIR}/svg/{record['rel'][:-4]}.svg",
                },
                ensure_ascii=False,
            )
        )
    staging.rmdir()
    (out / "pairs/pairs.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (out / "pairs/metadata.jsonl").write_text("\n".join(meta_lines) + "\n", encoding="utf-8")
    non_empty = sum(1 for row in rows[1:] if row.split("\t")[1].strip())
    return {"pairs": len(chosen), "non_empty_captions": non_empty, "skipped": skipped}


def build_fashion(root: Path, out: Path, writer: ImageWriter, seed: int) -> dict:
    """Fashion-MNIST: train/val from the source's train set; test and variants from t10k."""
    folder = root / FASHION_DIR
    train_x, train_y, test_x, test_y = (
        read_idx(folder / f"{part}-{kind}-idx{dims}-ubyte.gz")
        for part in ("train", "t10k")
        for kind, dims in (("images", 3), ("labels", 1))
    )
    rng = rng_for(seed, "fashion_mnist")
    datasets = {
        name: Downstream(out, name, FASHION_CLASSES, writer)
        for name in ["fashion_mnist", *(f"fashion_mnist_{v}" for v in VARIANTS)]
    }
    # The test permutation first fills fashion_mnist's test split, then each variant's, so
    # no two of them share a t10k image.
    test_quota = {"fashion_mnist": FASHION_QUOTA["test"]}
    test_quota |= {f"fashion_mnist_{v}": VARIANT_TEST_PER_CLASS for v in VARIANTS}
    for label, classname in enumerate(tqdm(FASHION_CLASSES, desc="fashion_mnist", unit="class")):
        subdir = classname.replace(" ", "_")

        def emit_train(i: int, split: str, label=label, subdir=subdir) -> bool:
            image = grey_image(train_x[i])
            return datasets["fashion_mnist"].add(split, label, f"{subdir}/train_{i:05d}.png", image)

        def emit_test(i: int, name: str, label=label, subdir=subdir) -> bool:
            image, variant = grey_image(test_x[i]), VARIANTS.get(name.split("fashion_mnist_")[-1])
            image = variant(image, rng) if variant else image
            return datasets[name].add("test", label, f"{subdir}/test_{i:05d}.png", image)

        train_ids, test_ids = np.flatnonzero(train_y == label), np.flatnonzero(test_y == label)
        fill_splits(
            train_ids[rng.permutation(len(train_ids))],
            {s: FASHION_QUOTA[s] for s in ("train", "val")},
            emit_train,
            folder,
        )
        fill_splits(test_ids[rng.permutation(len(test_ids))], test_quota, emit_test, folder)
    return {name: dataset.save() for name, dataset in datasets.items()}


def build_digits(out: Path, writer: ImageWriter, seed: int) -> dict:
    """scikit-learn's 8x8 digits (ink counts 0..16) as dark ink on white, upscaled."""
    digits = load_digits()
    rng, dataset = rng_for(seed, "digits"), Downstream(out, "digits", DIGIT_CLASSES, writer)
    for label, classname in enumerate(tqdm(DIGIT_CLASSES, desc="digits", unit="class")):

        def emit(i: int, split: str, label=label, classname=classname) -> bool:
            ink = np.round(255 - digits.images[i] * 255 / 16).astype(np.uint8)
            return dataset.add(split, label, f"{classname}/digits_{i:04d}.png", grey_image(ink))

        indices = np.flatnonzero(digits.target == label)
        fill_splits(indices[rng.permutation(len(indices))], DIGITS_QUOTA, emit, "load_digits()")
    return {"digits": dataset.save()}


# ----------------------------------------------------------------------------- main


def build(root: Path, out: Path, seed: int) -> dict:
    png_root, downstream, writer = root / CLIPART_DIR / "png", out / "downstream", ImageWriter()
    records = scan_openclipart(png_root)
    # Downstream first: the pairs are drawn from what the clipart classes leave.
    used, datasets = build_clipart(records, png_root, downstream, writer, seed)
    datasets |= build_fashion(root, downstream, writer, seed)
    datasets |= build_digits(downstream, writer, seed)
    pairs = build_pairs(records, used, root, out, writer, seed)
    versions = {pkg: debian_version(root, pkg) for pkg in DEBIAN_PACKAGES}
    manifest = {
        "seed": seed,
        "sources": versions | {"scikit-learn": sklearn.__version__},
        "openclipart_unique_png_files": len(records),
        "pairs": pairs,
        "downstream": dict(sorted(datasets.items())),
    }
    (out / "PROVENANCE.md").write_text(render_provenance(manifest), encoding="utf-8")
    files = (p for p in out.rglob("*") if p.is_file())
    manifest["total_bytes_excluding_manifest"] = sum(p.stat().st_size for p in files)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source-root",
        type=Path,
        default=None,
        help="folder holding the unpacked Debian packages (a dpkg-deb -x root);"
        " default: apt-get download them into a temporary folder",
    )
    parser.add_argument("--out", type=Path, default=Path("data/embedded"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    out = args.out
    if out.exists():
        if any(out.iterdir()) and not (out / "manifest.json").is_file():
            raise SystemExit(
                f"{out}: exists, is not empty and holds no manifest.json; refusing to overwrite it"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="embedded-src-") as tmp:
        root = args.source_root or fetch_debian_packages(Path(tmp))
        manifest = build(root, out, args.seed)
    print(json.dumps({key: manifest[key] for key in ("pairs", "downstream")}))
    print(f"{out}: {manifest['total_bytes_excluding_manifest']:,} bytes")


if __name__ == "__main__":
    main()
