"""Image montages of a topic's visual domains: one row per domain, most typical images first.

Images are read by key from the ingest's WebDataset shards (members ``<key>.jpg``) or, when
given instead, from a folder of ``<key>.jpg`` files.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from ..decode import open_rgb

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def typical_rows(features: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` rows (of ``rows``) whose L2-normalised features are closest to their mean."""
    unit = features[rows] / np.maximum(np.linalg.norm(features[rows], axis=1, keepdims=True), 1e-12)
    order = np.argsort(-(unit @ unit.mean(axis=0)), kind="stable")
    return rows[order[:n]]


def load_images(
    keys: Iterable[str],
    shards: Sequence[str | Path] = (),
    image_dir: str | Path | None = None,
) -> dict[str, Image.Image]:
    """The images of ``keys`` that can be found (RGB); missing ones are simply absent."""
    wanted = set(keys)
    found: dict[str, Image.Image] = {}
    if image_dir is not None:
        for key in sorted(wanted):
            for ext in IMAGE_EXTENSIONS:
                path = Path(image_dir) / f"{key}.{ext}"
                if path.exists():
                    found[key] = open_rgb(path)
                    break
    if shards and len(found) < len(wanted):
        import webdataset as wds

        dataset = wds.WebDataset([str(s) for s in shards], shardshuffle=False, empty_check=False)
        for sample in dataset:
            key = sample["__key__"]
            if key in wanted and key not in found:
                data = next((sample[e] for e in IMAGE_EXTENSIONS if e in sample), None)
                if data is not None:
                    found[key] = open_rgb(data)
            if len(found) == len(wanted):
                break
    return found


def domain_montage(
    title: str,
    rows: Sequence[tuple[str, Sequence[str]]],
    images: dict[str, Image.Image],
    thumb: int = 96,
) -> Image.Image:
    """A grid: one row per ``(row label, keys)``, a blank cell for an image not found."""
    label_width, header, pad = 110, 24, 4
    columns = max((len(keys) for _, keys in rows), default=1)
    width = label_width + columns * (thumb + pad) + pad
    height = header + len(rows) * (thumb + pad) + pad
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 4), title, fill="black")
    for r, (label, keys) in enumerate(rows):
        top = header + r * (thumb + pad)
        draw.text((pad, top + thumb // 2 - 6), label, fill="black")
        for c, key in enumerate(keys):
            left = label_width + c * (thumb + pad)
            if key in images:
                image = images[key].copy()
                image.thumbnail((thumb, thumb))
                canvas.paste(
                    image, (left + (thumb - image.width) // 2, top + (thumb - image.height) // 2)
                )
            else:
                draw.rectangle((left, top, left + thumb - 1, top + thumb - 1), outline="#bbbbbb")
    return canvas


def write_domain_montages(
    table: pd.DataFrame,
    features: np.ndarray,
    n_topics: int,
    n_images: int,
    shards: Sequence[Path],
    out: str | Path,
) -> None:
    """One montage per topic of the ``n_topics`` largest (ties: lower id first), a row of
    ``n_images`` typical images per visual domain, written to ``out/<id>_<word>.png``."""
    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    counts = table["topic_id"].value_counts()
    by_size = counts.index.to_numpy()[np.lexsort((counts.index, -counts.to_numpy()))]
    chosen = sorted(by_size[:n_topics])
    plan = {}
    for topic in chosen:
        rows = np.flatnonzero(table["topic_id"].to_numpy() == topic)
        domains = table["domain"].to_numpy()[rows]
        plan[topic] = [
            (
                f"domain {d} ({np.sum(domains == d)})",
                table["key"]
                .to_numpy()[typical_rows(features, rows[domains == d], n_images)]
                .tolist(),
            )
            for d in range(domains.max() + 1)
        ]
    wanted = {key for rows in plan.values() for _, keys in rows for key in keys}
    images = load_images(wanted, shards=shards)
    if len(images) < len(wanted):
        print(f"domains: {len(wanted) - len(images)} montage images not found in the shards")
    for topic, rows in plan.items():
        word = table.loc[table["topic_id"] == topic, "topic_word"].iloc[0]
        montage = domain_montage(f"topic {topic}: {word}", rows, images)
        montage.save(out / f"{topic:03d}_{word}.png")
