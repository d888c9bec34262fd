"""The sample source end to end: pairs.tsv -> shards + index -> embeddings -> kept pairs."""

import io
import json
import tarfile

import numpy as np
import pandas as pd
import pytest
import torch
import webdataset as wds
from PIL import Image

from pipeline.io import write_json
from pipeline.pairs import reasons
from pipeline.pairs.cc3m import DownloadOptions
from pipeline.pairs.embed import embed_pairs, load_embeddings
from pipeline.pairs.filter import filter_pairs
from pipeline.pairs.images import ImageOptions
from pipeline.pairs.ingest import IngestConfig, run_ingest
from pipeline.pairs.shards import iter_shard, list_shards

IMAGES = ImageOptions(image_size=40, resize_mode="keep_ratio")


def jpeg(seed: int, size=(48, 64), fmt="JPEG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def make_sample_dir(root):
    """A pairs.tsv with 8 usable rows (one a PNG, one repeating another's image) and 8 bad."""
    (root / "images").mkdir(parents=True)
    lines = [b"key\tcaption\timage\tsource"]
    for i in range(6):
        (root / "images" / f"p{i}.jpg").write_bytes(jpeg(i))
        lines.append(f"p{i}\tphoto number {i}\timages/p{i}.jpg\ttest".encode())
    (root / "images" / "png.png").write_bytes(jpeg(10, fmt="PNG"))
    lines.append(b"png\ta png picture\timages/png.png\ttest")
    lines.append(b"copy\tsame picture as p0\timages/p0.jpg\ttest")  # duplicate image content
    (root / "images" / "html.jpg").write_bytes(b"<html><body>not found</body></html>")
    (root / "images" / "cut.jpg").write_bytes(jpeg(11)[:300])
    lines += [
        b"p1\tsame key again\timages/p2.jpg\ttest",  # duplicate_key
        b"gone\tno such file\timages/gone.jpg\ttest",  # missing_image
        b"html\tan html page\timages/html.jpg\ttest",  # decode_error
        b"cut\ta truncated jpeg\timages/cut.jpg\ttest",  # decode_error
        b"blank\t  \timages/p3.jpg\ttest",  # empty_caption
        b"latin\tcaf\xe9\timages/p4.jpg\ttest",  # caption_not_utf8
        b"short\tmissing the image column",  # missing_column
        b"escape\ta file outside the folder\t../outside.jpg\ttest",  # missing_image
    ]
    (root.parent / "outside.jpg").write_bytes(jpeg(12))
    (root / "pairs.tsv").write_bytes(b"\n".join(lines) + b"\n")
    return root


def ingest(tmp_path, shard_size=3):
    config = IngestConfig(
        source="sample",
        input=str(make_sample_dir(tmp_path / "embedded")),
        shard_size=shard_size,
        max_malformed_fraction=0.01,
        images=IMAGES,
        download=DownloadOptions(),
    )
    out = tmp_path / "pairs"
    index, metrics = run_ingest(
        config, out / "shards", out / "index.parquet", tmp_path / "metrics" / "ingest.json"
    )
    return out, index, metrics


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    return ingest(tmp_path_factory.mktemp("sample"))


def test_every_row_is_indexed_with_a_status(ingested):
    out, index, metrics = ingested
    assert metrics == {
        "rows": 16,
        "written": 8,
        "failed": {
            reasons.CAPTION_NOT_UTF8: 1,
            reasons.DECODE_ERROR: 2,
            reasons.DUPLICATE_KEY: 1,
            reasons.EMPTY_CAPTION: 1,
            reasons.MISSING_COLUMN: 1,
            reasons.MISSING_IMAGE: 2,
        },
    }
    assert index["line"].tolist() == list(range(2, 18))
    assert pd.read_parquet(out / "index.parquet").equals(index)
    by_key = index.drop_duplicates("key").set_index("key")
    assert by_key.loc["html", "status"] == reasons.DECODE_ERROR
    assert by_key.loc["html", "detail"] == "Image decoding error"
    assert index.loc[index["line"] == 10, "status"].item() == reasons.DUPLICATE_KEY
    assert (index["shard"] != "").sum() == 8
    written = index[index["status"] == reasons.SUCCESS]
    assert written["sha256"].str.len().eq(64).all()
    # the copy of p0 has p0's bytes, hence p0's hash
    assert by_key.loc["copy", "sha256"] == by_key.loc["p0", "sha256"]


def test_shards_hold_jpg_txt_json_for_each_written_pair(ingested):
    out, index, _ = ingested
    shards = list_shards(out / "shards")
    assert [s.name for s in shards] == ["pairs-000000.tar", "pairs-000001.tar", "pairs-000002.tar"]
    written = index[index["status"] == reasons.SUCCESS].set_index("key")
    seen = []
    for sample in wds.WebDataset([str(s) for s in shards], shardshuffle=False):
        key = sample["__key__"]
        seen.append(key)
        assert written.loc[key, "shard"] == sample["__url__"].rsplit("/", 1)[-1]
        assert sample["txt"].decode() == written.loc[key, "caption"]
        meta = json.loads(sample["json"])
        assert meta["key"] == key and meta["sha256"] == written.loc[key, "sha256"]
        image = Image.open(io.BytesIO(sample["jpg"]))
        assert image.format == "JPEG" and min(image.size) == IMAGES.image_size
        assert (meta["original_width"], meta["original_height"]) == (64, 48)
    assert sorted(seen) == sorted(written.index)


def test_ingest_is_deterministic(ingested, tmp_path):
    out, index, metrics = ingested
    again, index2, metrics2 = ingest(tmp_path)
    assert metrics2 == metrics and index2.equals(index)
    for a, b in zip(list_shards(out / "shards"), list_shards(again / "shards"), strict=True):
        assert [s.members for s in iter_shard(a)] == [s.members for s in iter_shard(b)]
        assert a.read_bytes() == b.read_bytes()  # byte-identical, so DVC's cache holds


def write_tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_bad_shard_members_are_counted_not_lost(tmp_path, tiny_clip):
    good = jpeg(1)
    (tmp_path / "shards").mkdir()
    write_tar(
        tmp_path / "shards" / "a.tar",
        [
            ("ok.jpg", good),
            ("ok.txt", b"fine"),
            ("html.jpg", b"<html></html>"),
            ("html.txt", b"an html page"),
            ("cut.jpg", good[:200]),
            ("cut.txt", b"a truncated jpeg"),
            ("blank.jpg", good),
            ("blank.txt", b"   "),
            ("latin.jpg", good),
            ("latin.txt", b"caf\xe9"),
            ("nocap.jpg", good),
            ("noimg.txt", b"no image"),
            ("noimg.json", b"{}"),
            ("twice.jpg", good),
            ("twice.txt", b"first"),
            ("twice.jpg", good),
            ("twice.txt", b"second, same shard"),
            ("README", b"no extension at all"),
        ],
    )
    write_tar(tmp_path / "shards" / "b.tar", [("ok.jpg", good), ("ok.txt", b"again, next shard")])
    metrics = embed_pairs(
        tmp_path / "shards", tiny_clip, "tiny", tmp_path / "emb.npz", tmp_path / "parts", 4
    )
    assert metrics == {
        "input": 11,
        "embedded": 2,
        "failed": {
            reasons.CAPTION_NOT_UTF8: 1,
            reasons.DECODE_ERROR: 2,
            reasons.DUPLICATE_KEY: 2,
            reasons.EMPTY_CAPTION: 3,  # blank, nocap (no .txt), README
            reasons.MISSING_IMAGE: 1,
        },
    }
    result = load_embeddings(tmp_path / "emb.npz")
    assert result["keys"].tolist() == ["ok", "twice"]
    assert result["captions"].tolist() == ["fine", "first"]
    failed = dict(zip(result["failed_keys"], result["failed_reasons"], strict=True))
    assert failed["html"] == failed["cut"] == reasons.DECODE_ERROR
    assert sorted(result["failed_keys"].tolist()) == sorted(
        ["html", "cut", "blank", "latin", "nocap", "noimg", "twice", "ok", "README"]
    )
    assert not (tmp_path / "parts").exists()


def test_embed_features_are_the_backbones(ingested, tmp_path, tiny_clip):
    out, index, _ = ingested
    metrics = embed_pairs(
        out / "shards", tiny_clip, "tiny", tmp_path / "emb.npz", tmp_path / "parts", 3
    )
    assert metrics == {"input": 8, "embedded": 8, "failed": {}}
    result = load_embeddings(tmp_path / "emb.npz")
    keys = result["keys"].tolist()
    assert keys == sorted(index.loc[index["status"] == reasons.SUCCESS, "key"])
    assert result["image"].shape == result["text"].shape == (8, tiny_clip.embed_dim)
    # one pair recomputed directly, batch of one
    sample = next(s for s in iter_shard(list_shards(out / "shards")[0]) if s.key == keys[2])
    image = tiny_clip.image_transform(train=False)(Image.open(io.BytesIO(sample.image)))
    with torch.no_grad():
        expected_image = tiny_clip.encode_image(image[None])[0]
        expected_text = tiny_clip.encode_text(tiny_clip.tokenize([sample.members["txt"].decode()]))
    np.testing.assert_allclose(result["image"][2], expected_image.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(result["text"][2], expected_text[0].numpy(), rtol=1e-4, atol=1e-5)


def test_filter_on_embedded_sample(ingested, tmp_path, tiny_clip):
    out, index, _ = ingested
    embed_pairs(out / "shards", tiny_clip, "tiny", tmp_path / "emb.npz", tmp_path / "parts", 4)
    data = load_embeddings(tmp_path / "emb.npz")
    kept_all, metrics_all, similarity, _ = filter_pairs(data, index, min_similarity=-1.0)
    assert metrics_all["dropped"] == {reasons.DUPLICATE_IMAGE: 1}  # "copy" or "p0"
    threshold = float(np.median(similarity))
    kept, metrics, _, _ = filter_pairs(data, index, threshold)
    assert (kept["similarity"] >= threshold).all() and len(kept) < len(kept_all)
    below = set(kept_all["key"]) - set(kept["key"])
    assert (kept_all.set_index("key").loc[sorted(below), "similarity"] < threshold).all()
    assert metrics["input"] == 8 == metrics["kept"] + sum(metrics["dropped"].values())
    write_json(tmp_path / "filter.json", metrics)
    assert json.loads((tmp_path / "filter.json").read_text())["kept"] == len(kept)
