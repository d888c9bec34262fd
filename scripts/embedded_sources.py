"""Reading the offline sources of the embedded sample: Debian packages and their files."""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

DEBIAN_PACKAGES = ("openclipart-png", "openclipart-svg", "dataset-fashion-mnist")
CLIPART_DIR = "usr/share/openclipart"
FASHION_DIR = "usr/share/datasets/fashion-mnist"
XML_NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
TSV_UNSAFE = str.maketrans({"\t": " ", "\n": " ", "\r": " "})


def fetch_debian_packages(dest: Path) -> Path:
    """apt-get download + dpkg-deb -x the source packages into ``dest/root``."""
    root = dest / "root"
    root.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", *DEBIAN_PACKAGES], cwd=dest, check=True)
    except (OSError, subprocess.CalledProcessError) as err:
        raise SystemExit(
            f"apt-get download {' '.join(DEBIAN_PACKAGES)} failed ({err}); run `apt-get update`"
            " first or pass --source-root with the packages already unpacked"
        ) from err
    for deb in sorted(dest.glob("*.deb")):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def debian_version(root: Path, package: str) -> str:
    """Package version from the first line of its changelog.Debian.gz ("pkg (VERSION) ...")."""
    changelog = root / "usr/share/doc" / package / "changelog.Debian.gz"
    with gzip.open(changelog, "rt", encoding="utf-8") as fh:
        match = re.match(r"\S+ \(([^)]+)\)", fh.readline())
    if not match:
        raise SystemExit(f"{changelog}: cannot read the package version from its first line")
    return match.group(1)


def scan_openclipart(png_root: Path) -> list[dict]:
    """Unique openclipart PNG files, sorted by real path.

    The package holds 8,121 PNG paths, 1,221 of them symlinks into other category folders;
    a file is kept once, under its real path, with every top-level folder that lists it.
    Files with identical bytes are also kept once (the first real path in sorted order).
    """
    folders: dict[str, set[str]] = {}
    for dirpath, _, files in os.walk(png_root):
        for name in files:
            if not name.endswith(".png"):
                continue
            listed = Path(dirpath, name)
            real = Path(os.path.realpath(listed)).relative_to(png_root.resolve()).as_posix()
            top = listed.relative_to(png_root).parts[0]
            folders.setdefault(real, set()).add(top)
    records, seen = [], set()
    for real in sorted(folders):
        digest = hashlib.sha256((png_root / real).read_bytes()).hexdigest()
        if digest not in seen:
            seen.add(digest)
            records.append({"rel": real, "folders": sorted(folders[real])})
    return records


def read_svg_metadata(svg_path: Path) -> dict:
    """dc:title, dc:description and dc:subject keywords of the SVG's cc:Work (XML-decoded)."""
    tree = ET.parse(svg_path)
    work = tree.getroot().find(".//cc:Work", XML_NS)
    if work is None:
        return {"title": "", "description": "", "keywords": []}
    keywords = [li.text or "" for li in work.findall("dc:subject/rdf:Bag/rdf:li", XML_NS)]
    return {
        "title": work.findtext("dc:title", default="", namespaces=XML_NS),
        "description": work.findtext("dc:description", default="", namespaces=XML_NS),
        "keywords": keywords,
    }


def make_caption(title: str, description: str) -> str:
    """Title, then the description when it says something else; TSV-unsafe chars -> space."""
    if not description.strip() or description.strip() == title.strip():
        caption = title
    elif not title.strip():
        caption = description
    else:
        head = title.rstrip()
        caption = head + (" " if head.endswith((".", "!", "?", ":", ";")) else ". ") + description
    return caption.translate(TSV_UNSAFE)


def read_idx(path: Path) -> np.ndarray:
    """An MNIST-style idx file (gzip): big-endian header of dims, then uint8 data."""
    with gzip.open(path, "rb") as fh:
        data = fh.read()
    ndim = data[3]
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)
