"""Ingest of the embedded sample pairs (``pairs.tsv`` + ``images/``) into WebDataset shards."""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

import webdataset as wds
from tqdm import tqdm

from . import reasons
from .images import ImageOptions
from .shards import SHARD_PATTERN, clear_shards
from .tsv import read_sample_tsv

PAIR_LIST = "pairs.tsv"


def _record(row, status: str, shard: str = "", sha256: str = "", detail: str = "") -> dict:
    return {
        "key": row.key,
        "caption": row.caption,
        "status": status,
        "shard": shard,
        "line": row.line,
        "sha256": sha256,
        "detail": detail,
    }


def _read_image(root: Path, relative: str) -> bytes | None:
    """The image a row names, or None; paths may not leave the pair list's folder."""
    parts = PurePosixPath(relative).parts
    if not parts or parts[0] == "/" or ".." in parts:
        return None
    path = root.joinpath(*parts)
    return path.read_bytes() if path.is_file() else None


def ingest_sample(
    input_dir: str | Path,
    shards_dir: str | Path,
    images: ImageOptions,
    shard_size: int = 10000,
) -> list[dict]:
    """Write every usable pair of ``input_dir/pairs.tsv`` to shards; return one index record
    per TSV row (status "success" or the reason it was skipped)."""
    input_dir = Path(input_dir)
    rows = read_sample_tsv(input_dir / PAIR_LIST)
    pattern = str(clear_shards(shards_dir) / SHARD_PATTERN)
    records = []
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0, mtime=0) as writer:
        for row in tqdm(rows, desc="ingest sample pairs", unit="pair"):
            if row.reason is not None:
                records.append(_record(row, row.reason))
                continue
            data = _read_image(input_dir, row.target)
            if data is None:
                records.append(_record(row, reasons.MISSING_IMAGE, detail=row.target))
                continue
            sha256 = hashlib.sha256(data).hexdigest()
            jpeg, sizes, error = images.resize(data)
            if error is not None:
                records.append(_record(row, reasons.bucket_error(error), "", sha256, error))
                continue
            meta = {
                "key": row.key,
                "caption": row.caption,
                "source": row.source,
                "line": row.line,
                "status": reasons.SUCCESS,
                "sha256": sha256,
                **sizes,
            }
            writer.write({"__key__": row.key, "jpg": jpeg, "txt": row.caption, "json": meta})
            records.append(_record(row, reasons.SUCCESS, Path(writer.fname).name, sha256))
    return records
