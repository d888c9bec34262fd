"""Degenerate outcomes through the stages: one line on stderr, exit 2, nothing written."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.errors import run_stage
from tests.test_chc_stages import PARAMS as CHC_PARAMS


def run_failing(main) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_stage(main)
    assert exit_.value.code == 2


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def test_filter_that_keeps_nothing(tmp_path, monkeypatch, capsys):
    from stages import filter as stage

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump({"filter": {"min_similarity": 0.999}}))
    Path("data/pairs").mkdir(parents=True)
    keys = np.array(["a", "b"])
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    np.savez(
        "data/pairs/embeddings.npz",
        keys=keys,
        image=vectors,
        text=vectors[::-1],
        captions=np.array(["x", "y"]),
        sha256=np.array(["", ""]),
        failed_keys=np.array([], dtype=str),
        failed_reasons=np.array([], dtype=str),
        failed_details=np.array([], dtype=str),
    )
    pd.DataFrame({"key": keys, "status": "success"}).to_parquet("data/pairs/index.parquet")
    run_failing(stage.main)
    assert one_line(capsys).startswith(
        "error: filter.min_similarity: 0.999: keeps 0 of 2 pairs (dropped {'below_threshold': 2})"
    )
    assert not Path("data/pairs/kept.parquet").exists()


def test_topics_with_too_few_captions_fail_before_umap(tmp_path, monkeypatch, capsys):
    from stages import topics as stage

    monkeypatch.chdir(tmp_path)
    Path("params.yaml").write_text(yaml.safe_dump(CHC_PARAMS))  # 3 topics of >= 8 captions
    Path("data/pairs").mkdir(parents=True)
    Path("data/chc").mkdir(parents=True)
    count = 3 * 8 - 1
    kept = pd.DataFrame({"key": [f"k{i}" for i in range(count)], "caption": "a caption"})
    kept.to_parquet("data/pairs/kept.parquet")
    np.save("data/chc/caption_embeddings.npy", np.random.default_rng(0).normal(size=(count, 8)))

    def no_umap(*args, **kwargs):
        raise AssertionError("UMAP ran although the outcome was known before")

    monkeypatch.setattr("umap.UMAP.fit_transform", no_umap)
    run_failing(stage.main)
    assert one_line(capsys) == (
        "error: topics.hdbscan.min_cluster_size: 8: 23 captions to fit cannot form "
        "topics.min_topics = 3 topics of at least 8 captions each (that takes 24); lower "
        "topics.hdbscan.min_cluster_size or topics.min_topics, or keep more pairs "
        "(filter.min_similarity)"
    )
    assert not Path("data/chc/topics.parquet").exists()


def test_embed_pairs_without_shards_fails_before_the_backbone_loads(tmp_path, monkeypatch, capsys):
    from stages import embed_pairs as stage

    monkeypatch.chdir(tmp_path)
    params = {
        "backbone": {"kind": "embedded"},
        "embed_pairs": {"batch_size": 64, "num_workers": 0, "checkpoint_every": 1024},
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))
    Path("data/pairs/shards").mkdir(parents=True)

    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone loaded before the inputs were checked")

    monkeypatch.setattr(stage, "load_backbone", no_backbone)
    run_failing(stage.main)
    assert one_line(capsys) == (
        "error: data/pairs/shards: no shards to embed (run the ingest stage)"
    )
