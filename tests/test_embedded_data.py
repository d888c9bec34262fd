"""Checks on the committed embedded sample under data/embedded/ (built by
scripts/build_embedded_data.py): size budget, pair count, CoOp split files, image integrity,
and that no image is shared between the pairs and the downstream datasets."""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "data" / "embedded"
DOWNSTREAM = EMBEDDED / "downstream"
MAX_BYTES = 25 * 1024 * 1024
SPLITS = ("train", "val", "test")


def load_manifest() -> dict:
    return json.loads((EMBEDDED / "manifest.json").read_text(encoding="utf-8"))


DATASETS = sorted(load_manifest()["downstream"])


def variant_source(name: str) -> str | None:
    """``fashion_mnist_sketch`` -> ``fashion_mnist``: the longest other dataset it extends."""
    bases = [other for other in DATASETS if other != name and name.startswith(other + "_")]
    return max(bases, key=len) if bases else None


BASES = [name for name in DATASETS if variant_source(name) is None]
VARIANTS = [name for name in DATASETS if variant_source(name) is not None]


def read_split(name: str) -> dict:
    return json.loads((DOWNSTREAM / name / f"split_{name}.json").read_text(encoding="utf-8"))


def read_pairs() -> list[dict]:
    with open(EMBEDDED / "pairs" / "pairs.tsv", encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))


def pixel_hash(path: Path) -> str:
    """Verifies the file, decodes it, and hashes mode-independent RGB pixels plus size."""
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    return hashlib.sha256(repr(rgb.size).encode() + rgb.tobytes()).hexdigest()


@cache
def pair_hashes() -> dict[str, str]:
    return {row["key"]: pixel_hash(EMBEDDED / "pairs" / row["image"]) for row in read_pairs()}


@cache
def downstream_hashes() -> dict[tuple[str, str, str], str]:
    """(dataset, split, relative path) -> pixel hash, for every listed image."""
    hashes = {}
    for name in DATASETS:
        for split, entries in read_split(name).items():
            for relpath, _, _ in entries:
                hashes[name, split, relpath] = pixel_hash(DOWNSTREAM / name / "images" / relpath)
    return hashes


def test_total_size_within_budget_and_matches_manifest():
    # Bytes as git stores them (du without --apparent-size rounds each file up to a block).
    total = sum(p.stat().st_size for p in EMBEDDED.rglob("*") if p.is_file())
    assert total <= MAX_BYTES, f"data/embedded is {total:,} bytes, budget {MAX_BYTES:,}"
    manifest_path = EMBEDDED / "manifest.json"
    without_manifest = total - manifest_path.stat().st_size
    assert load_manifest()["total_bytes_excluding_manifest"] == without_manifest


def test_pairs_table_is_well_formed():
    with open(EMBEDDED / "pairs" / "pairs.tsv", encoding="utf-8", newline="") as fh:
        header = fh.readline()
        assert header == "key\tcaption\timage\tsource\n"
        for number, line in enumerate(fh, start=2):
            assert line.count("\t") == 3, f"pairs.tsv line {number}: expected 4 fields"
    rows = read_pairs()
    keys = [row["key"] for row in rows]
    assert len(set(keys)) == len(keys)
    assert all(row["image"] == f"images/{row['key']}.jpg" for row in rows)
    assert all(row["source"].startswith("/usr/share/openclipart/png/") for row in rows)
    listed = {row["image"].split("/", 1)[1] for row in rows}
    on_disk = {p.name for p in (EMBEDDED / "pairs" / "images").iterdir()}
    assert listed == on_disk, "pairs/images holds files pairs.tsv does not list, or misses some"


def test_at_least_2000_pairs_with_real_captions():
    rows = read_pairs()
    non_empty = [row for row in rows if row["caption"].strip()]
    assert len(non_empty) >= 2000
    assert load_manifest()["pairs"]["non_empty_captions"] == len(non_empty)
    metadata = (EMBEDDED / "pairs" / "metadata.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["key"] for line in metadata] == [row["key"] for row in rows]


def test_every_pair_image_decodes():
    assert len(pair_hashes()) == len(read_pairs())


@pytest.mark.parametrize("name", DATASETS)
def test_split_file_is_coop_format_with_consistent_labels(name):
    split = read_split(name)
    assert set(split) == set(SPLITS), f"split_{name}.json: keys {sorted(split)}"
    classes = load_manifest()["downstream"][name]["classes"]
    for part in SPLITS:
        for entry in split[part]:
            where = f"split_{name}.json[{part}] entry {entry}"
            assert isinstance(entry, list) and len(entry) == 3, where
            relpath, label, classname = entry
            assert isinstance(relpath, str) and not Path(relpath).is_absolute(), where
            assert isinstance(label, int) and 0 <= label < len(classes), where
            assert classname == classes[label], where
            assert (DOWNSTREAM / name / "images" / relpath).is_file(), where
    listed = {entry[0] for part in SPLITS for entry in split[part]}
    images = DOWNSTREAM / name / "images"
    on_disk = {p.relative_to(images).as_posix() for p in images.rglob("*") if p.is_file()}
    assert listed == on_disk, f"{name}/images and split_{name}.json disagree"


def test_every_downstream_image_decodes():
    counted = sum(len(entries) for name in DATASETS for entries in read_split(name).values())
    assert len(downstream_hashes()) == counted


def test_no_image_shared_between_pairs_and_downstream_or_between_splits():
    pairs = set(pair_hashes().values())
    assert len(pairs) == len(pair_hashes()), "two pairs have identical pixels"
    seen: dict[str, tuple] = {}
    for where, digest in downstream_hashes().items():
        assert digest not in pairs, f"{where} has the same pixels as a pair image"
        assert digest not in seen, f"{where} and {seen.get(digest)} have identical pixels"
        seen[digest] = where


def test_at_least_three_datasets_one_with_ten_classes_and_two_variants():
    assert len(BASES) >= 3, BASES
    assert max(len(load_manifest()["downstream"][n]["classes"]) for n in BASES) >= 10
    assert len(VARIANTS) >= 2, VARIANTS


@pytest.mark.parametrize("name", BASES)
def test_every_class_has_enough_shots(name):
    split = read_split(name)
    classes = load_manifest()["downstream"][name]["classes"]
    for part, least in (("train", 20), ("val", 4), ("test", 10)):
        counts = [0] * len(classes)
        for _, label, _ in split[part]:
            counts[label] += 1
        assert min(counts) >= least, f"{name}/{part}: per-class counts {counts}"


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_shares_classes_with_its_source_and_is_test_only(name):
    source = variant_source(name)
    manifest = load_manifest()["downstream"]
    assert manifest[name]["classes"] == manifest[source]["classes"]
    split = read_split(name)
    assert split["train"] == [] and split["val"] == []
    assert {label for _, label, _ in split["test"]} == set(range(len(manifest[name]["classes"])))
    # Same source images (t10k) as the source's test split, but never the same ones.
    source_tests = {Path(entry[0]).name for entry in read_split(source)["test"]}
    assert not source_tests & {Path(entry[0]).name for entry in split["test"]}


def test_manifest_counts_match_split_files():
    for name, counts in load_manifest()["downstream"].items():
        split = read_split(name)
        assert {part: counts[part] for part in SPLITS} == {p: len(split[p]) for p in SPLITS}


def test_provenance_names_every_source_and_licence():
    text = (EMBEDDED / "PROVENANCE.md").read_text(encoding="utf-8")
    for package, version in load_manifest()["sources"].items():
        assert package in text and version in text, package
    for licence in ("public domain", "mit (expat)", "cc by 4.0"):
        assert licence in text.lower(), licence


def _load_sources_module():
    path = REPO / "scripts" / "embedded_sources.py"
    spec = importlib.util.spec_from_file_location("embedded_sources", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("title", "description", "caption"),
    [
        ("Tux", "", "Tux"),
        ("Owl on Branch", "Owl on Branch", "Owl on Branch"),
        ("Tux", "Tux the linux mascot", "Tux. Tux the linux mascot"),
        ("Yes!", "a\tb\nc\r", "Yes! a b c "),
        ("Yes ", "more", "Yes. more"),
        ("", "only description", "only description"),
        (" somalia", "", " somalia"),
        ("", "", ""),
    ],
)
def test_caption_construction(title, description, caption):
    assert _load_sources_module().make_caption(title, description) == caption
