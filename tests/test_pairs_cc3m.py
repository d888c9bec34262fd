"""CC3M ingest for real, offline: a local HTTP server, a TSV in CC3M's format, img2dataset,
then the embed_pairs and filter stages on what it wrote."""

import io
import json
import os
import sys
import tarfile

import pandas as pd
import pytest
import webdataset as wds
import yaml
from PIL import Image

from pipeline.pairs import reasons
from pipeline.pairs.cc3m import (
    DownloadOptions,
    _normalise_tar,
    _start_or_resume,
    ingest_cc3m,
)
from pipeline.pairs.images import ImageOptions
from pipeline.pairs.tsv import TsvFormatError
from pipeline.params import ParamError
from tests.conftest import TINY_OPEN_CLIP
from tests.loopback_http import REFUSED_URL, Response, image, noise_jpeg, serve, write_cc3m_tsv

SLOW_SECONDS = 2.5  # longer than the 1 s download timeout below

ROUTES = {
    **{f"/good/{i}.jpg": image(i) for i in range(4)},
    "/copy-of-0.jpg": image(0),
    "/slow.jpg": Response(200, "image/jpeg", noise_jpeg(5), delay=SLOW_SECONDS),
    "/truncated.jpg": Response(200, "image/jpeg", noise_jpeg(6)[:300]),
    "/page.jpg": Response(200, "text/html", b"<html><body>Image not found</body></html>"),
}


@pytest.fixture(scope="module")
def server():
    with serve(ROUTES) as base_url:
        yield base_url


def cc3m_tsv(path, base):
    """13 rows in Train_GCC-training.tsv's format, with the expected status of each."""
    rows = [
        (b"a picture of noise", f"{base}/good/0.jpg", "success"),
        (b"more noise", f"{base}/good/1.jpg", "success"),
        (b"gone from the web", f"{base}/missing.jpg", reasons.HTTP_404),
        (b"a slow server", f"{base}/slow.jpg", reasons.TIMEOUT),
        (b"a truncated file", f"{base}/truncated.jpg", reasons.DECODE_ERROR),
        (b"an html page", f"{base}/page.jpg", reasons.DECODE_ERROR),
        (b'a "quoted" caption', f"{base}/good/2.jpg", "success"),
        (b"   ", f"{base}/good/3.jpg", reasons.EMPTY_CAPTION),
        (b"caf\xe9 au lait", f"{base}/good/3.jpg", reasons.CAPTION_NOT_UTF8),
        (b"no url column", None, reasons.MISSING_COLUMN),
        (b"not http", "ftp://127.0.0.1/good/3.jpg", reasons.BAD_URL),
        (b"the same image again", f"{base}/copy-of-0.jpg", "success"),
        (b"nobody listens there", REFUSED_URL, reasons.CONNECTION_ERROR),
    ]
    write_cc3m_tsv(path, [(caption, url) for caption, url, _ in rows])
    return [status for _, _, status in rows]


def params(tsv, work_dir):
    return {
        "backbone": TINY_OPEN_CLIP,
        "ingest": {
            "source": "cc3m",
            "input": str(tsv),
            "image_size": 40,
            "resize_mode": "keep_ratio",
            "encode_quality": 95,
            "min_image_size": 0,
            "resize_only_if_bigger": True,
            "shard_size": 5,
            "max_malformed_fraction": 0.5,
            "download": {
                "processes_count": 1,
                "thread_count": 4,
                "distributor": "multiprocessing",
                "retries": 0,
                "timeout": 1,
                "work_dir": str(work_dir),
            },
        },
        "embed_pairs": {"batch_size": 4, "num_workers": 0, "checkpoint_every": 1024},
        "filter": {"min_similarity": -1.0},
    }


def test_cc3m_end_to_end_through_the_stages(server, tmp_path, monkeypatch):
    from stages import embed_pairs, ingest
    from stages import filter as filter_stage

    expected = cc3m_tsv(tmp_path / "Train_GCC-training.tsv", server)
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(params(tmp_path / "Train_GCC-training.tsv", tmp_path / "work"))
    )
    monkeypatch.chdir(tmp_path)
    ingest.main()

    index = pd.read_parquet("data/pairs/index.parquet")
    assert index["line"].tolist() == list(range(1, 14))
    assert index["status"].tolist() == expected
    assert index["key"].is_unique
    metrics = json.loads(open("metrics/ingest.json").read())
    assert metrics == {
        "rows": 13,
        "written": 4,
        "failed": {
            reasons.BAD_URL: 1,
            reasons.CAPTION_NOT_UTF8: 1,
            reasons.CONNECTION_ERROR: 1,
            reasons.DECODE_ERROR: 2,
            reasons.EMPTY_CAPTION: 1,
            reasons.HTTP_404: 1,
            reasons.MISSING_COLUMN: 1,
            reasons.TIMEOUT: 1,
        },
    }
    # the same shard layout and members as the sample source
    shards = sorted(p.name for p in (tmp_path / "data/pairs/shards").glob("*.tar"))
    assert shards == ["pairs-000000.tar", "pairs-000001.tar", "pairs-000002.tar"]
    written = index[index["status"] == "success"].set_index("key")
    members = {}
    for sample in wds.WebDataset(
        [f"data/pairs/shards/{s}" for s in shards], shardshuffle=False, empty_check=False
    ):
        members[sample["__key__"]] = sample
        assert written.loc[sample["__key__"], "shard"] == sample["__url__"].rsplit("/", 1)[-1]
        assert sample["txt"].decode() == written.loc[sample["__key__"], "caption"]
        assert Image.open(io.BytesIO(sample["jpg"])).size == (53, 40)  # keep_ratio to 40
        assert json.loads(sample["json"])["sha256"] == written.loc[sample["__key__"], "sha256"]
    assert sorted(members) == sorted(written.index)
    assert written.loc[written["caption"] == 'a "quoted" caption'].shape[0] == 1
    failed = index[index["status"] != "success"]
    assert (failed["shard"] == "").all() and (failed["sha256"] == "").all()
    assert failed.set_index("status").loc[reasons.HTTP_404, "detail"].startswith("HTTP Error 404")

    embed_pairs.main()
    assert json.loads(open("metrics/embed_pairs.json").read()) == {
        "input": 4,
        "embedded": 4,
        "failed": {},
    }
    filter_stage.main()
    result = json.loads(open("metrics/filter.json").read())
    assert result == {
        "input": 4,
        "kept": 3,
        "dropped": {reasons.DUPLICATE_IMAGE: 1},
        "min_similarity": -1.0,
        "shuffled_pass_rate": 1.0,
    }
    kept = pd.read_parquet("data/pairs/kept.parquet")
    assert kept["key"].tolist() == sorted(kept["key"])
    assert set(kept["caption"]) >= {"more noise", 'a "quoted" caption'}
    table = pd.read_csv("plots/filter/similarity_histogram.csv")
    assert table["below_threshold"].sum() == 0 and table["at_or_above_threshold"].sum() == 4
    assert table["shuffled_pairs"].sum() == 4
    assert (tmp_path / "plots/filter/similarity_histogram.png").stat().st_size > 0


def test_a_tsv_that_is_not_cc3m_fails_before_any_download(tmp_path):
    tsv = tmp_path / "other.tsv"
    tsv.write_text("caption\turl\na dog\thttp://127.0.0.1:9/x.jpg\n")
    options = DownloadOptions(work_dir=str(tmp_path / "work"))
    with pytest.raises(TsvFormatError, match=r"other.tsv: line 1 looks like a header"):
        ingest_cc3m(tsv, tmp_path / "shards", ImageOptions(), options)
    assert not (tmp_path / "work").exists()


def test_download_resumes_only_the_same_job(tmp_path):
    output = tmp_path / "output"
    config = {"tsv_sha256": "abc", "shard_size": 5, "image_size": 40}
    assert not _start_or_resume(tmp_path, output, config)  # first run
    output.mkdir()
    (output / "00000_stats.json").write_text("{}")
    assert _start_or_resume(tmp_path, output, config)  # interrupted, same job: keep shards
    assert (output / "00000_stats.json").exists()
    assert not _start_or_resume(tmp_path, output, {**config, "image_size": 64})
    assert not output.exists()


@pytest.mark.parametrize("distributor", ["ray", "pyspark"])
def test_missing_distributor_package_is_a_param_error(tmp_path, monkeypatch, distributor):
    monkeypatch.setitem(sys.modules, "ray", None)  # None in sys.modules: import fails
    monkeypatch.setitem(sys.modules, "pyspark.sql", None)
    tsv = tmp_path / "cc3m.tsv"
    tsv.write_text("a dog\thttp://127.0.0.1:9/x.jpg\n")
    options = DownloadOptions(distributor=distributor, work_dir=str(tmp_path / "work"))
    with pytest.raises(ParamError, match=f"ingest.download.distributor = '{distributor}'"):
        ingest_cc3m(tsv, tmp_path / "shards", ImageOptions(), options)
    assert not (tmp_path / "work").exists()


def write_shard(path, keys, mtime):
    """A tar as img2dataset's webdataset writer makes one: samples in the order given."""
    with wds.TarWriter(str(path), mtime=mtime) as writer:
        for key in keys:
            writer.write({"__key__": key, "txt": f"caption {key}", "jpg": noise_jpeg(int(key))})


def test_shards_are_rewritten_in_key_order_without_timestamps(tmp_path):
    first, second = tmp_path / "first.tar", tmp_path / "second.tar"
    write_shard(first, ["000002", "000000", "000001"], mtime=1.7e9 + 0.25)
    write_shard(second, ["000001", "000002", "000000"], mtime=1.8e9)
    os.link(first, tmp_path / "cached.tar")  # what a DVC cache entry of the shard would be
    original = first.read_bytes()
    for path in (first, second):
        _normalise_tar(path)
    assert first.read_bytes() == second.read_bytes()
    assert (tmp_path / "cached.tar").read_bytes() == original  # the old inode is untouched
    with tarfile.open(first) as tar:
        members = tar.getmembers()
        assert [m.name for m in members] == [
            f"{key}.{ext}" for key in ("000000", "000001", "000002") for ext in ("jpg", "txt")
        ]
        assert {m.mtime for m in members} == {0} and not any(m.pax_headers for m in members)
        assert tar.extractfile("000002.jpg").read() == noise_jpeg(2)
    inode = first.stat().st_ino
    _normalise_tar(first)  # already in this form: left as it is
    assert first.stat().st_ino == inode and not (tmp_path / "first.tar.partial").exists()
