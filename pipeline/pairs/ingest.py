"""The ``ingest`` stage's library entry: read ``params.yaml``'s ``ingest`` section, run the
chosen source, and produce the index and metrics that are the same for both sources."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..io import write_json
from ..params import check_choice, check_range, get
from .cc3m import DISTRIBUTORS, DownloadOptions, ingest_cc3m
from .images import RESIZE_MODES, ImageOptions
from .sample import ingest_sample
from .shards import index_frame, ingest_metrics, write_index

SOURCES = ("sample", "cc3m")


@dataclass(frozen=True)
class IngestConfig:
    source: str
    input: str
    shard_size: int
    max_malformed_fraction: float
    images: ImageOptions
    download: DownloadOptions


def _int(params: dict, key: str, low: int, high: int | None = None) -> int:
    return check_range(key, get(params, key), low, high, integer=True)


def ingest_config(params: dict) -> IngestConfig:
    """``params["ingest"]`` checked, with the offending key named on error."""
    images = ImageOptions(
        image_size=_int(params, "ingest.image_size", 16, 4096),
        resize_mode=check_choice(
            "ingest.resize_mode", get(params, "ingest.resize_mode"), RESIZE_MODES
        ),
        encode_quality=_int(params, "ingest.encode_quality", 1, 100),
        min_image_size=_int(params, "ingest.min_image_size", 0),
        resize_only_if_bigger=check_choice(
            "ingest.resize_only_if_bigger",
            get(params, "ingest.resize_only_if_bigger"),
            (True, False),
        ),
    )
    download = DownloadOptions(
        processes_count=_int(params, "ingest.download.processes_count", 1),
        thread_count=_int(params, "ingest.download.thread_count", 1),
        distributor=check_choice(
            "ingest.download.distributor", get(params, "ingest.download.distributor"), DISTRIBUTORS
        ),
        retries=_int(params, "ingest.download.retries", 0, 100),
        timeout=check_range(
            "ingest.download.timeout", get(params, "ingest.download.timeout"), 0.1, 3600
        ),
        work_dir=str(get(params, "ingest.download.work_dir")),
    )
    fraction = get(params, "ingest.max_malformed_fraction")
    return IngestConfig(
        source=check_choice("ingest.source", get(params, "ingest.source"), SOURCES),
        input=str(get(params, "ingest.input")),
        shard_size=_int(params, "ingest.shard_size", 1, 10**6),
        max_malformed_fraction=check_range("ingest.max_malformed_fraction", fraction, 0, 1),
        images=images,
        download=download,
    )


def run_ingest(
    config: IngestConfig, shards_dir: str | Path, index_path: str | Path, metrics_path: str | Path
) -> tuple[pd.DataFrame, dict]:
    """Shards under ``shards_dir``, the index at ``index_path``, counts at ``metrics_path``."""
    if config.source == "sample":
        records = ingest_sample(config.input, shards_dir, config.images, config.shard_size)
    else:
        records = ingest_cc3m(
            config.input,
            shards_dir,
            config.images,
            config.download,
            config.shard_size,
            config.max_malformed_fraction,
        )
    index = index_frame(records)
    metrics = ingest_metrics(index)
    write_index(index, index_path)
    write_json(metrics_path, metrics)
    return index, metrics
