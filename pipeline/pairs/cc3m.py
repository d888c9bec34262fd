"""Ingest of CC3M: validate the user's TSV, download it with img2dataset, index the result.

img2dataset does the downloading, resizing, retries, WebDataset writing and distribution
(multiprocessing, pyspark, ray). Around it this module

* validates ``Train_GCC-training.tsv`` before anything is downloaded (:mod:`.tsv`);
* hands img2dataset a parquet copy of *every* row (caption, url, line). Parquet rather than
  a headed TSV: captions can hold quote characters that a CSV reader would re-interpret.
  Rows rejected up front get an empty URL, which img2dataset fails instantly without any
  network access, so row i of the TSV keeps img2dataset's key for row i and every row shows
  up in img2dataset's per-shard parquet files;
* keeps img2dataset's output folder under ``work_dir`` (not a DVC output), so an
  interrupted ingest resumes with img2dataset's ``incremental`` mode; a changed TSV or
  changed image options start over;
* links img2dataset's finished tars into ``shards_dir`` as ``pairs-%06d.tar`` (hard links,
  no second copy of CC3M), each first rewritten in key order without timestamps so the same
  job gives the same bytes on any distributor, and builds the index from img2dataset's
  parquet files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import signal
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..params import ParamError
from . import reasons
from .images import ImageOptions
from .shards import SHARD_PATTERN, clear_shards
from .tsv import InputRow, read_cc3m_tsv

DISTRIBUTORS = ("multiprocessing", "pyspark", "ray")
OOM_SHARD_COUNT = 5  # img2dataset's default: shard ids have 5 digits


@dataclass(frozen=True)
class DownloadOptions:
    """img2dataset's download arguments (same names, same meaning)."""

    processes_count: int = 16
    thread_count: int = 64
    distributor: str = "multiprocessing"
    retries: int = 2
    timeout: float = 10
    work_dir: str = "data/pairs/img2dataset"


def _sha256_file(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _write_download_list(rows: list[InputRow], path: Path) -> None:
    table = pa.table(
        {
            "line": pa.array([row.line for row in rows], pa.int64()),
            "caption": pa.array([row.caption for row in rows], pa.string()),
            "url": pa.array([row.target if row.reason is None else "" for row in rows]),
        }
    )
    pq.write_table(table, path)


def _start_or_resume(work_dir: Path, output: Path, config: dict) -> bool:
    """Keep img2dataset's finished shards only for the same TSV and image options.

    Returns True when resuming. The output folder is cleared here rather than with
    img2dataset's ``overwrite`` mode, which also deletes the ``_tmp`` folder it has just made.
    """
    config_path = work_dir / "config.json"
    same = config_path.exists() and json.loads(config_path.read_text()) == config
    if not same:
        shutil.rmtree(output, ignore_errors=True)
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    return same


def _prepare_distributor(name: str) -> None:
    """Fail early where img2dataset would not: without ray installed its ray distributor
    silently downloads nothing. For pyspark, a session built here honours ``spark-submit
    --master`` / ``spark-defaults.conf``; img2dataset would otherwise start ``local[n]``.

    Spark's Python workers run ``$PYSPARK_PYTHON``, else whatever ``python3`` is first on the
    PATH, which need not have img2dataset; unless the user names one, they run this
    interpreter (right for a local master; on a cluster, set ``PYSPARK_PYTHON``)."""
    if name == "multiprocessing":
        return
    try:
        module = __import__("ray" if name == "ray" else "pyspark.sql", fromlist=["_"])
    except ModuleNotFoundError as error:
        raise ParamError(
            f"params.yaml: ingest.download.distributor = {name!r} needs the {name} package "
            f"(pip install {name}), not installed here"
        ) from error
    if name == "pyspark" and module.SparkSession.getActiveSession() is None:
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        module.SparkSession.builder.appName("gram-ingest").getOrCreate()


def download(
    tsv: str | Path,
    images: ImageOptions,
    options: DownloadOptions,
    shard_size: int = 10000,
    max_malformed_fraction: float = 0.01,
) -> tuple[list[InputRow], Path]:
    """Validate ``tsv`` and run img2dataset on it; returns the rows and its output folder."""
    from img2dataset import download as img2dataset_download

    tsv = Path(tsv)
    rows = read_cc3m_tsv(tsv, max_malformed_fraction)  # raises before any download
    _prepare_distributor(options.distributor)
    work_dir = Path(options.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    download_list = work_dir / "download_list.parquet"
    _write_download_list(rows, download_list)
    config = {
        "tsv_sha256": _sha256_file(tsv),
        "shard_size": shard_size,
        **images.img2dataset_kwargs(),
    }
    output = work_dir / "output"
    if _start_or_resume(work_dir, output, config):
        print(f"ingest: resuming the img2dataset download in {output}")
    sigint = signal.getsignal(signal.SIGINT)  # img2dataset installs its own handler
    try:
        img2dataset_download(
            url_list=str(download_list),
            output_folder=str(output),
            input_format="parquet",
            url_col="url",
            caption_col="caption",
            save_additional_columns=["line"],
            output_format="webdataset",
            number_sample_per_shard=shard_size,
            oom_shard_count=OOM_SHARD_COUNT,
            processes_count=options.processes_count,
            thread_count=options.thread_count,
            distributor=options.distributor,
            retries=options.retries,
            timeout=options.timeout,
            incremental_mode="incremental",
            extract_exif=False,
            compute_hash="sha256",
            enable_wandb=False,
            **images.img2dataset_kwargs(),
        )
    finally:
        signal.signal(signal.SIGINT, sigint)
    return rows, output


def _finished_shards(output: Path) -> list[int]:
    """Shard ids img2dataset completed: those with a ``_stats.json`` (its own resume test)."""
    return sorted(int(p.name.split("_")[0]) for p in output.glob("*_stats.json"))


def _normalise_tar(path: Path) -> None:
    """Make a finished tar's bytes depend on its samples only: members in name (key) order,
    every mtime 0. img2dataset's webdataset writer stamps each member with the time it was
    written and adds samples in the order their downloads finished, so without this two runs
    of the same job, on one distributor or two, give different shards (and DVC hashes).

    Rewritten through a temporary file and ``os.replace``: a new inode, so a hard link to the
    old one (a DVC cache entry) is never written into; a tar already in this form is kept."""
    with tarfile.open(path) as source:
        members = source.getmembers()
        names = [m.name for m in members]
        if names == sorted(names) and not any(m.mtime or m.pax_headers for m in members):
            return
        partial = path.with_name(path.name + ".partial")
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as target:
            for member in sorted(members, key=lambda m: m.name):
                plain = tarfile.TarInfo(member.name)
                for field in ("size", "mode", "uid", "gid", "uname", "gname", "type"):
                    setattr(plain, field, getattr(member, field))
                target.addfile(plain, source.extractfile(member))
    os.replace(partial, path)


def _link(source: Path, target: Path) -> None:
    """Hard-link a finished tar. Safe to share: img2dataset never writes into a finished
    shard again (incremental mode skips it, a changed job deletes the folder first)."""
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not supported
        shutil.copyfile(source, target)


def collect(
    rows: list[InputRow], output: Path, shards_dir: str | Path, shard_size: int
) -> pd.DataFrame:
    """Link img2dataset's tars into ``shards_dir`` and return one index row per TSV row."""
    from img2dataset.downloader import compute_key

    shards_dir = clear_shards(shards_dir)
    columns = ["line", "key", "status", "error_message", "sha256"]
    frames = [pd.DataFrame(columns=columns + ["shard"])]
    for shard_id in _finished_shards(output):
        name = f"{shard_id:0{OOM_SHARD_COUNT}d}"
        shard_name = SHARD_PATTERN % shard_id
        _normalise_tar(output / f"{name}.tar")
        _link(output / f"{name}.tar", shards_dir / shard_name)
        frame = pd.read_parquet(output / f"{name}.parquet", columns=columns)
        frames.append(frame.assign(shard=shard_name))
    downloaded = pd.concat(frames).rename(columns={"status": "outcome"})
    table = pd.DataFrame(
        {
            "line": [row.line for row in rows],
            "caption": [row.caption for row in rows],
            "reason": [row.reason for row in rows],
        }
    ).merge(downloaded.astype({"line": "int64"}), on="line", how="left", validate="1:1")

    # Rows of shards img2dataset never finished: give them the key it would have given.
    sample_digits = math.ceil(math.log10(shard_size))
    lost = table["key"].isna().to_numpy()
    table.loc[lost, "key"] = [
        compute_key(position % shard_size, position // shard_size, sample_digits, OOM_SHARD_COUNT)
        for position in table.index[lost]
    ]
    message = table["error_message"].fillna(table["outcome"]).fillna("")
    buckets = {text: reasons.bucket_error(text) for text in message.unique()}
    status = message.map(buckets)
    status[table["outcome"] == reasons.SUCCESS] = reasons.SUCCESS
    status[lost] = reasons.SHARD_FAILED
    rejected = table["reason"].notna()
    status[rejected] = table.loc[rejected, "reason"]
    written = status == reasons.SUCCESS
    return pd.DataFrame(
        {
            "key": table["key"],
            "caption": table["caption"],
            "status": status,
            "shard": table["shard"].where(written, ""),
            "line": table["line"],
            "sha256": table["sha256"].where(written, ""),
            "detail": message.where(~written & ~rejected, ""),
        }
    )


def ingest_cc3m(
    tsv: str | Path,
    shards_dir: str | Path,
    images: ImageOptions,
    options: DownloadOptions,
    shard_size: int = 10000,
    max_malformed_fraction: float = 0.01,
) -> pd.DataFrame:
    rows, output = download(tsv, images, options, shard_size, max_malformed_fraction)
    return collect(rows, output, shards_dir, shard_size)
