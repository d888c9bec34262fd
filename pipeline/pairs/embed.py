"""Image and caption features of every shard sample under the backbone (``embed_pairs``).

What the stored features depend on: the samples (in shard order), the backbone and
``embed_pairs.batch_size``, nothing else. CPU and GPU kernels give a row last-bit different
results depending on how many rows share its call (measured here: up to 1.2e-7 for the
embedded CNN's images, 1.2e-6 for a ViT's texts, between batches of 1 and 40), so exact
equality under any batching is out of reach; instead the encoder always sees the same
blocks: the whole sample stream (all shards, in order) cut into consecutive blocks of
``batch_size`` samples, whatever ``ingest.shard_size``, ``num_workers`` or
``checkpoint_every``. ``batch_size`` is therefore part of the result, like the backbone.

Progress is saved every ``checkpoint_every`` samples (rounded up to whole blocks), as one part
under ``parts_dir`` fingerprinted with the backbone, the block size and the samples' bytes,
so an interrupted run recomputes only the parts it had not finished, however large a shard.
The merge then walks the parts in order; the first sample with a key wins and any later one
is recorded as ``duplicate_key``. Samples that cannot be embedded (no image, an image PIL
cannot fully decode, a missing, empty or non-UTF-8 caption) are recorded with their reason,
never embedded, never dropped silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..backbones import Backbone
from ..decode import open_rgb
from . import reasons
from .shards import ShardSample, iter_shard, list_shards

PART_FORMAT = 2  # bump when a part's contents change meaning
CHECKPOINT_EVERY = 1024  # params.yaml's default for embed_pairs.checkpoint_every
SUCCESS_FIELDS = ("keys", "positions", "captions", "sha256", "image", "text")
FAILURE_FIELDS = ("failed_keys", "failed_positions", "failed_reasons", "failed_details")


@dataclass
class Prepared:
    key: str
    position: int  # in the whole sample stream, all shards
    caption: str = ""
    image: torch.Tensor | None = None
    sha256: str = ""
    reason: str | None = None
    detail: str = ""


def prepare(
    sample: ShardSample, position: int, transform: Callable[[Image.Image], torch.Tensor]
) -> Prepared:
    """Decode one sample; caption problems are checked first (no decode needed for those)."""
    item = Prepared(sample.key, position)
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
            item.image = transform(open_rgb(data))
            item.sha256 = hashlib.sha256(data).hexdigest()
        except Exception as error:  # PIL raises many types for bad bytes
            item.reason, item.detail = reasons.DECODE_ERROR, f"{type(error).__name__}: {error}"
    return item


def iter_samples(shards: Iterable[Path]) -> Iterator[ShardSample]:
    """The one sample stream: every shard's samples, shards in name order."""
    return chain.from_iterable(iter_shard(shard) for shard in shards)


def iter_chunks(samples: Iterator[ShardSample], size: int) -> Iterator[list[ShardSample]]:
    """Consecutive lists of ``size`` samples (the last may be shorter): the saved parts."""
    while chunk := list(islice(samples, size)):
        yield chunk


class _Blocks(Dataset):
    """Block ``i`` of a chunk -> its prepared samples; DataLoader workers decode whole blocks."""

    def __init__(self, samples: list[ShardSample], start: int, block: int, transform) -> None:
        self.samples, self.start, self.block, self.transform = samples, start, block, transform

    def __len__(self) -> int:
        return -(-len(self.samples) // self.block)

    def __getitem__(self, index: int) -> list[Prepared]:
        first = index * self.block
        block = self.samples[first : first + self.block]
        return [prepare(s, self.start + first + i, self.transform) for i, s in enumerate(block)]


def _unbatched(block: list[Prepared]) -> list[Prepared]:
    return block  # a module-level function: DataLoader workers pickle their collate_fn


@torch.inference_mode()
def embed_chunk(
    samples: list[ShardSample],
    start: int,
    backbone: Backbone,
    batch_size: int,
    num_workers: int = 0,
    progress=None,
) -> dict[str, np.ndarray]:
    """Consecutive samples (the first at stream position ``start``, a multiple of
    ``batch_size``) -> arrays of embedded samples and of failures, in stream order. The
    encoder runs once per block of ``batch_size`` samples, on that block's usable ones."""
    blocks = _Blocks(samples, start, batch_size, backbone.image_transform(train=False))
    loader = DataLoader(blocks, batch_size=None, num_workers=num_workers, collate_fn=_unbatched)
    done: list[Prepared] = []
    failed: list[Prepared] = []
    image_features, text_features = [], []
    for block in loader:  # a map-style loader yields blocks in index order, workers or not
        good = [item for item in block if item.reason is None]
        failed += [item for item in block if item.reason is not None]
        if good:
            images = torch.stack([item.image for item in good]).to(backbone.device)
            image_features.append(backbone.encode_image(images).float().cpu())
            tokens = backbone.tokenize([item.caption for item in good]).to(backbone.device)
            text_features.append(backbone.encode_text(tokens).float().cpu())
            done += good
        if progress is not None:
            progress.update(len(block))
    empty = torch.zeros(0, backbone.embed_dim)
    return {
        "keys": np.array([item.key for item in done], dtype=str),
        "positions": np.array([item.position for item in done], dtype=np.int64),
        "captions": np.array([item.caption for item in done], dtype=str),
        "sha256": np.array([item.sha256 for item in done], dtype=str),
        "image": torch.cat(image_features or [empty]).numpy().astype(np.float32),
        "text": torch.cat(text_features or [empty]).numpy().astype(np.float32),
        "failed_keys": np.array([item.key for item in failed], dtype=str),
        "failed_positions": np.array([item.position for item in failed], dtype=np.int64),
        "failed_reasons": np.array([item.reason for item in failed], dtype=str),
        "failed_details": np.array([item.detail for item in failed], dtype=str),
    }


def _fingerprint(samples: list[ShardSample], start: int, block: int, backbone_id: str) -> str:
    """What a part's contents depend on: its samples' bytes, where they start, the blocks."""
    digest = hashlib.sha256(f"{PART_FORMAT}|{backbone_id}|{block}|{start}".encode())
    for sample in samples:
        digest.update(f"|{len(sample.key)}:{sample.key}".encode())
        for name, data in sorted(sample.members.items()):
            digest.update(f"|{name}:{len(data)}:".encode())
            digest.update(data)
    return digest.hexdigest()


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
    """Part results in stream order -> one result; later repeats of a key become failures.
    Embedded rows come out sorted by key, failures by (key, reason)."""
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
    checkpoint_every: int = CHECKPOINT_EVERY,
) -> dict:
    """Embed every shard under ``shards_dir`` into ``out_path`` (npz: keys, image, text,
    captions, sha256, failed_keys, failed_reasons, failed_details); returns the metrics.
    Progress is saved under ``parts_dir`` every ``checkpoint_every`` samples (rounded up to a
    multiple of ``batch_size``) and the folder removed once ``out_path`` is written."""
    parts_dir = Path(parts_dir)
    chunk_size = -(-checkpoint_every // batch_size) * batch_size
    samples = iter_samples(list_shards(shards_dir))
    parts = []
    with tqdm(total=total, desc="embed pairs", unit="pair") as progress:
        for number, chunk in enumerate(iter_chunks(samples, chunk_size)):
            start = number * chunk_size
            fingerprint = _fingerprint(chunk, start, batch_size, backbone_id)
            part_path = parts_dir / f"part-{number:06d}.npz"
            part = _load_part(part_path, fingerprint)
            if part is None:
                part = embed_chunk(chunk, start, backbone, batch_size, num_workers, progress)
                _save_part(part_path, part, fingerprint)
            else:
                progress.update(len(chunk))
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
