"""WebDataset shards and the ingest index: the files every pair stage reads or writes.

Shards are read with webdataset's tar iterator, but members are grouped into samples here:
``webdataset.tariterators.group_by_keys`` raises on a repeated member name and, with a
"continue" handler, drops whatever it was holding, which would lose rows without a count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from webdataset.tariterators import base_plus_ext, tar_file_iterator

from . import reasons

SHARD_PATTERN = "pairs-%06d.tar"
INDEX_COLUMNS = ("key", "caption", "status", "shard", "line", "sha256", "detail")
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


@dataclass
class ShardSample:
    """The members of one sample: ``{"jpg": bytes, "txt": bytes, ...}`` under one key."""

    key: str
    shard: str
    position: int
    members: dict[str, bytes] = field(default_factory=dict)

    @property
    def image(self) -> bytes | None:
        return next((self.members[e] for e in IMAGE_EXTENSIONS if e in self.members), None)


def list_shards(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("*.tar"))


def iter_shard(path: str | Path) -> Iterator[ShardSample]:
    """Samples of one tar in file order. A member name seen twice starts a new sample, so a
    duplicated key comes out twice (and is counted downstream) instead of overwriting."""
    path = Path(path)
    current: ShardSample | None = None
    position = 0
    with path.open("rb") as stream:
        for member in tar_file_iterator(stream):
            prefix, suffix = base_plus_ext(member["fname"])
            if prefix is None:  # no extension: a sample with nothing usable, still reported
                prefix, suffix = member["fname"], ""
            suffix = suffix.lower()
            if current is None or current.key != prefix or suffix in current.members:
                if current is not None:
                    yield current
                current = ShardSample(prefix, path.name, position)
                position += 1
            current.members[suffix] = member["data"]
    if current is not None:
        yield current


def clear_shards(directory: str | Path) -> Path:
    """Create the shard folder, removing tars of an earlier run (fewer shards may follow)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for old in directory.glob("*.tar"):
        old.unlink()
    return directory


def index_frame(records: Iterable[dict] | pd.DataFrame) -> pd.DataFrame:
    """The index: one row per input row, ``status`` = "success" or a reason; input order."""
    if isinstance(records, pd.DataFrame):
        frame = records.loc[:, list(INDEX_COLUMNS)].copy()
    else:
        frame = pd.DataFrame.from_records(list(records), columns=list(INDEX_COLUMNS))
    for column in INDEX_COLUMNS:
        if column == "line":
            frame[column] = frame[column].astype("int64")
        else:
            frame[column] = frame[column].fillna("").astype(str)
    return frame.sort_values("line", kind="stable").reset_index(drop=True)


def write_index(frame: pd.DataFrame, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)


def ingest_metrics(frame: pd.DataFrame) -> dict:
    counts = Counter(frame["status"])
    written = counts.pop(reasons.SUCCESS, 0)
    return {"rows": len(frame), "written": written, "failed": dict(sorted(counts.items()))}
