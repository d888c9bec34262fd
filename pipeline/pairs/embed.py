"""Image and caption features of every shard sample under the backbone (``embed_pairs``).

Each shard becomes one partial result under ``parts_dir`` (fingerprinted with the backbone
and the shard's bytes), so an interrupted run recomputes only the shards it had not finished.
The merge then walks the shards in order; the first sample with a key wins and any later one
is recorded as ``duplicate_key``. Samples that cannot be embedded (no image, an image PIL
cannot fully decode, a missing, empty or non-UTF-8 caption) are recorded with their reason,
never embedded, never dropped silently.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from tqdm import tqdm

from ..backbones import Backbone
from . import reasons
from .shards import ShardSample, iter_shard, list_shards

PART_FORMAT = 1  # bump when a part's contents change meaning
SUCCESS_FIELDS = ("keys", "positions", "captions", "sha256", "image", "text")
FAILURE_FIELDS = ("failed_keys", "failed_positions", "failed_reasons", "failed_details")


@dataclass
class Prepared:
    key: str
    position: int
    caption: str = ""
    image: torch.Tensor | None = None
    sha256: str = ""
    reason: str | None = None
    detail: str = ""


def prepare(sample: ShardSample, transform: Callable[[Image.Image], torch.Tensor]) -> Prepared:
    """Decode one sample; caption problems are checked first (no decode needed for those)."""
    item = Prepared(sample.key, sample.position)
    text = sample.members.get("txt")
    data = sample.image
    if text is None:
        item.reason = reasons.EMPTY_CAPTION
        item.detail = "no .txt member"
    else:
        try:
            item.caption = text.decode("utf-8").strip()
        except UnicodeDecodeError as error:
            item.reason, item.detail = reasons.CAPTION_NOT_UTF8, str(error)
        else:
            if not item.caption:
                item.reason = reasons.EMPTY_CAPTION
    if item.reason is None and data is None:
        item.reason = reasons.MISSING_IMAGE
        item.detail = f"members: {sorted(sample.members)}"
    if item.reason is None:
        try:
            with Image.open(io.BytesIO(data)) as image:
                image.load()  # full decode: a truncated file fails here, not later
                item.image = transform(image.convert("RGB"))
            item.sha256 = hashlib.sha256(data).hexdigest()
        except Exception as error:  # PIL raises many types for bad bytes
            item.reason, item.detail = reasons.DECODE_ERROR, f"{type(error).__name__}: {error}"
    return item


class _ShardSamples(IterableDataset):
    """Prepared samples of one shard; DataLoader workers take every n-th sample."""

    def __init__(self, path: Path, transform: Callable) -> None:
        self.path, self.transform = path, transform

    def __iter__(self):
        worker = get_worker_info()
        count, rank = (worker.num_workers, worker.id) if worker else (1, 0)
        for sample in iter_shard(self.path):
            if sample.position % count == rank:
                yield prepare(sample, self.transform)


@torch.inference_mode()
def embed_shard(
    path: Path, backbone: Backbone, batch_size: int, num_workers: int = 0, progress=None
) -> dict[str, np.ndarray]:
    """One shard -> arrays of embedded samples and of failures, in sample order."""
    transform = backbone.image_transform(train=False)
    loader = DataLoader(
        _ShardSamples(path, transform),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
    )
    done: list[Prepared] = []
    failed: list[Prepared] = []
    image_features, text_features = [], []
    for batch in loader:
        good = [item for item in batch if item.reason is None]
        failed += [item for item in batch if item.reason is not None]
        if good:
            images = torch.stack([item.image for item in good]).to(backbone.device)
            image_features.append(backbone.encode_image(images).float().cpu())
            tokens = backbone.tokenize([item.caption for item in good]).to(backbone.device)
            text_features.append(backbone.encode_text(tokens).float().cpu())
            done += good
        if progress is not None:
            progress.update(len(batch))
    order = np.argsort([item.position for item in done], kind="stable")
    empty = torch.zeros(0, backbone.embed_dim)
    done = [done[i] for i in order]
    failed.sort(key=lambda item: item.position)
    return {
        "keys": np.array([item.key for item in done], dtype=str),
        "positions": np.array([item.position for item in done], dtype=np.int64),
        "captions": np.array([item.caption for item in done], dtype=str),
        "sha256": np.array([item.sha256 for item in done], dtype=str),
        "image": torch.cat(image_features or [empty]).numpy()[order].astype(np.float32),
        "text": torch.cat(text_features or [empty]).numpy()[order].astype(np.float32),
        "failed_keys": np.array([item.key for item in failed], dtype=str),
        "failed_positions": np.array([item.position for item in failed], dtype=np.int64),
        "failed_reasons": np.array([item.reason for item in failed], dtype=str),
        "failed_details": np.array([item.detail for item in failed], dtype=str),
    }


def _fingerprint(shard: Path, backbone_id: str) -> str:
    with shard.open("rb") as f:
        content = hashlib.file_digest(f, "sha256").hexdigest()
    return hashlib.sha256(f"{PART_FORMAT}|{backbone_id}|{content}".encode()).hexdigest()


def _load_part(path: Path, fingerprint: str) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path) as part:
            if str(part["fingerprint"]) != fingerprint:
                return None
            return {name: part[name] for name in SUCCESS_FIELDS + FAILURE_FIELDS}
    except (OSError, ValueError, KeyError):  # a part cut short by the interruption
        return None


def _save_part(path: Path, part: dict[str, np.ndarray], fingerprint: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with partial.open("wb") as f:
        np.savez(f, fingerprint=np.array(fingerprint), **part)
    os.replace(partial, path)


def merge_parts(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Shard results in shard order -> one result; later repeats of a key become failures.
    Embedded rows come out sorted by key, failures by (key, reason): independent of sharding
    and of the number of DataLoader workers."""
    seen: set[str] = set()
    rows: dict[str, list] = {name: [] for name in ("keys", "captions", "sha256")}
    image, text, failures = [], [], []
    for part in parts:
        events = [(int(p), "ok", i) for i, p in enumerate(part["positions"])]
        events += [(int(p), "failed", i) for i, p in enumerate(part["failed_positions"])]
        for _, kind, i in sorted(events):
            key = str(part["keys"][i] if kind == "ok" else part["failed_keys"][i])
            if key in seen:
                failures.append((key, reasons.DUPLICATE_KEY, "key seen earlier"))
                continue
            seen.add(key)
            if kind == "failed":
                failures.append(
                    (key, str(part["failed_reasons"][i]), str(part["failed_details"][i]))
                )
                continue
            for name in rows:
                rows[name].append(str(part[name][i]))
            image.append(part["image"][i])
            text.append(part["text"][i])
    order = np.argsort(np.array(rows["keys"], dtype=str), kind="stable")
    dim = parts[0]["image"].shape[1] if parts else 0
    failures.sort()
    return {
        **{name: np.array(values, dtype=str)[order] for name, values in rows.items()},
        "image": np.array(image, dtype=np.float32).reshape(-1, dim)[order],
        "text": np.array(text, dtype=np.float32).reshape(-1, dim)[order],
        "failed_keys": np.array([f[0] for f in failures], dtype=str),
        "failed_reasons": np.array([f[1] for f in failures], dtype=str),
        "failed_details": np.array([f[2] for f in failures], dtype=str),
    }


def embed_pairs(
    shards_dir: str | Path,
    backbone: Backbone,
    backbone_id: str,
    out_path: str | Path,
    parts_dir: str | Path,
    batch_size: int = 64,
    num_workers: int = 0,
    total: int | None = None,
) -> dict:
    """Embed every shard under ``shards_dir`` into ``out_path`` (npz: keys, image, text,
    captions, sha256, failed_keys, failed_reasons, failed_details); returns the metrics."""
    parts_dir = Path(parts_dir)
    parts = []
    with tqdm(total=total, desc="embed pairs", unit="pair") as progress:
        for shard in list_shards(shards_dir):
            fingerprint = _fingerprint(shard, backbone_id)
            part_path = parts_dir / f"{shard.stem}.npz"
            part = _load_part(part_path, fingerprint)
            if part is None:
                part = embed_shard(shard, backbone, batch_size, num_workers, progress)
                _save_part(part_path, part, fingerprint)
            else:
                progress.update(len(part["positions"]) + len(part["failed_positions"]))
            parts.append(part)
    result = merge_parts(parts)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with out_path.open("wb") as f:
        np.savez(f, **result)
    shutil.rmtree(parts_dir, ignore_errors=True)  # only needed to resume an interrupted run
    failed = Counter(result["failed_reasons"].tolist())
    return {
        "input": len(result["keys"]) + len(result["failed_keys"]),
        "embedded": len(result["keys"]),
        "failed": dict(sorted(failed.items())),
    }


def backbone_id(backbone: Backbone, config: dict) -> str:
    """What the features depend on: the backbone's name and its params.yaml section."""
    return json.dumps({"name": backbone.name, "config": config}, sort_keys=True)


def load_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
