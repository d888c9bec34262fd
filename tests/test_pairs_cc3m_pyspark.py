"""The cluster path for real: img2dataset's pyspark distributor on a local Spark (``local[2]``,
the JVM from Debian's JRE) ingests a CC3M-format TSV served from 127.0.0.1, and gets byte for
byte the index, the metrics and the shards that the multiprocessing distributor gets.

The shards match because the ingest rewrites img2dataset's tars in key order without
timestamps (its webdataset writer stamps each member with the time of writing, so before
that rewrite every run differed, on either distributor)."""

import filecmp
import os
import shutil
import sys
import tarfile

import pytest

from pipeline.pairs import reasons
from pipeline.pairs.ingest import ingest_config, run_ingest
from tests.loopback_http import (
    REFUSED_URL,
    Response,
    image_routes,
    noise_jpeg,
    serve,
    write_cc3m_tsv,
)

SHARD_SIZE = 4  # 8 rows: two shards, one per Spark core


@pytest.fixture(scope="module")
def server():
    routes = {**image_routes(4), "/truncated.jpg": Response(200, "image/jpeg", noise_jpeg(9)[:300])}
    with serve(routes) as base_url:
        yield base_url


def write_tsv(path, base):
    """8 rows with the status each must get."""
    rows = [
        ("a photo of noise 0", f"{base}/images/0.jpg", reasons.SUCCESS),
        ("gone from the web", f"{base}/missing.jpg", reasons.HTTP_404),
        ('a "quoted" caption', f"{base}/images/1.jpg", reasons.SUCCESS),
        ("a truncated file", f"{base}/truncated.jpg", reasons.DECODE_ERROR),
        ("   ", f"{base}/images/2.jpg", reasons.EMPTY_CAPTION),
        ("a photo of noise 2", f"{base}/images/2.jpg", reasons.SUCCESS),
        ("nobody listens there", REFUSED_URL, reasons.CONNECTION_ERROR),
        ("a photo of noise 3", f"{base}/images/3.jpg", reasons.SUCCESS),
    ]
    write_cc3m_tsv(path, [(caption, url) for caption, url, _ in rows])
    return [status for _, _, status in rows]


def ingest_params(tsv, work_dir, distributor):
    return {
        "ingest": {
            "source": "cc3m",
            "input": str(tsv),
            "image_size": 32,
            "resize_mode": "keep_ratio",
            "encode_quality": 95,
            "min_image_size": 0,
            "resize_only_if_bigger": True,
            "shard_size": SHARD_SIZE,
            "max_malformed_fraction": 0.5,
            "download": {
                "processes_count": 1,
                "thread_count": 2,
                "distributor": distributor,
                "retries": 0,
                "timeout": 5,
                "work_dir": str(work_dir),
            },
        }
    }


def ingest_with(distributor, tsv, root):
    out = root / distributor
    config = ingest_config(ingest_params(tsv, out / "work", distributor))
    index, _ = run_ingest(config, out / "shards", out / "index.parquet", out / "ingest.json")
    return out, index


@pytest.fixture
def local_spark(monkeypatch):
    """Spark on this machine only: ``local[2]``, driver on the loopback, no web UI. The
    stage builds the session itself from ``PYSPARK_SUBMIT_ARGS``, as a cluster user would."""
    assert shutil.which("java"), "pyspark needs a JRE: .ci/run installs default-jre-headless"
    monkeypatch.setenv(
        "PYSPARK_SUBMIT_ARGS", "--master local[2] --conf spark.ui.enabled=false pyspark-shell"
    )
    monkeypatch.setenv("SPARK_LOCAL_IP", "127.0.0.1")
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)  # the stage must pick its interpreter
    from pyspark.sql import SparkSession

    assert SparkSession.getActiveSession() is None
    yield
    session = SparkSession.getActiveSession()
    if session is not None:
        session.stop()


def test_pyspark_ingest_matches_multiprocessing(server, tmp_path, local_spark):
    from pyspark.sql import SparkSession

    tsv = tmp_path / "Train_GCC-training.tsv"
    expected = write_tsv(tsv, server)
    local, local_index = ingest_with("multiprocessing", tsv, tmp_path)
    assert SparkSession.getActiveSession() is None
    spark, spark_index = ingest_with("pyspark", tsv, tmp_path)

    context = SparkSession.getActiveSession().sparkContext
    assert context.master == "local[2]"
    # without it, workers run the first python3 on the PATH, which may lack img2dataset
    assert os.environ["PYSPARK_PYTHON"] == sys.executable
    assert context.statusTracker().getJobIdsForGroup(), "img2dataset ran no Spark job"
    assert spark_index["status"].tolist() == expected
    assert local_index["status"].tolist() == expected

    assert filecmp.cmp(local / "index.parquet", spark / "index.parquet", shallow=False)
    assert (local / "ingest.json").read_text() == (spark / "ingest.json").read_text()
    shards = sorted(p.name for p in (local / "shards").iterdir())
    assert shards == ["pairs-000000.tar", "pairs-000001.tar"]
    assert sorted(p.name for p in (spark / "shards").iterdir()) == shards
    for shard in shards:
        with tarfile.open(local / "shards" / shard) as tar:
            assert len(tar.getmembers()) == 3 * 2  # jpg, json, txt of each shard's 2 images
        assert filecmp.cmp(local / "shards" / shard, spark / "shards" / shard, shallow=False)
