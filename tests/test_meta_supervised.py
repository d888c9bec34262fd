"""GRAM Table 6 "- CHC = supervised meta-learning": tasks and meta-training from a labelled
dataset in CoOp's layout (``tasks.source: dataset``)."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from pipeline.data import DatasetError, load_dataset
from pipeline.meta.supervised import (
    DatasetFeatures,
    DatasetImages,
    labelled_source,
    labelled_table,
)
from pipeline.meta.tasks import TaskSpec, read_domains, sample_tasks, write_task_shards
from pipeline.params import ParamError
from tests.conftest import TINY_OPEN_CLIP, meta_section
from tests.coop_fakes import make_json_dataset

CLASSES = ["cat", "dog", "car", "tree", "house"]
PER_CLASS = (5, 1, 2)  # train, val, test images per class


def write_noise(image_dir: Path, entries: list[list], seed: int) -> None:
    """Distinct seeded noise per image, so features differ between images."""
    rng = np.random.default_rng(seed)
    for rel, _, _ in entries:
        pixels = rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / rel)


@pytest.fixture
def labelled_root(tmp_path):
    """``<tmp>/data_root/pets`` (json split, our own) with 5 classes."""
    root = tmp_path / "data_root"
    split = make_json_dataset(root, "pets", "images", "split_pets.json", CLASSES, PER_CLASS)
    for name, entries in split.items():
        write_noise(root / "pets/images", entries, seed=len(name))
    return root


def params_for(root: Path, **tasks) -> dict:
    return {
        "data": {"root": str(root), "own": {"pets": {"template": "a photo of a {}."}}},
        "tasks": {
            "ways": 3,
            "support_shots": 1,
            "query_shots": 3,
            "num_tasks": 6,
            "seed": 0,
            "support_sampling": "one_domain",
            "tasks_per_shard": 4,
            "source": "dataset",
            "dataset": "pets",
            **tasks,
        },
    }


def test_table_has_one_topic_per_class_and_every_key_resolves_to_its_image(labelled_root):
    source = labelled_source(params_for(labelled_root))
    table = labelled_table(source)
    train = load_dataset(source.spec, labelled_root, splits=("train",)).train
    assert len(table) == len(train) == len(CLASSES) * PER_CLASS[0]
    assert list(table.columns) == ["key", "topic_id", "topic_word", "domain"]
    topics = table.drop_duplicates("topic_id").set_index("topic_id")["topic_word"].to_dict()
    assert topics == dict(enumerate(CLASSES))
    assert set(table["domain"]) == {0}  # a labelled dataset has no visual domains
    by_path = {d.path: d for d in train}
    for key, topic in zip(table["key"], table["topic_id"], strict=True):
        assert key.startswith("pets:images/")
        path = source.path(key)
        assert path.is_file() and by_path[path].label == topic


def test_sampled_tasks_hold_only_the_dataset_train_classes(labelled_root):
    source = labelled_source(params_for(labelled_root))
    table = labelled_table(source)
    spec = TaskSpec(ways=3, support_shots=2, query_shots=3, num_tasks=20, seed=1)
    tasks, stats = sample_tasks(table, spec)
    train = {d.path: d.classname for d in load_dataset(source.spec, labelled_root).train}
    assert stats["topics"] == stats["topics_used"] == len(CLASSES)
    for task in tasks:
        assert set(task.classnames) <= set(CLASSES) and len(set(task.classnames)) == 3
        assert task.topic_ids == [CLASSES.index(name) for name in task.classnames]
        assert task.support_domain == [0, 0, 0]
        for split in (task.support, task.query):
            for key, label in zip(split.keys, split.labels, strict=True):
                assert train[source.path(key)] == task.classnames[label]  # train split only
        assert not set(task.support.keys) & set(task.query.keys)


def test_bad_source_or_dataset_is_a_param_error_naming_the_key(labelled_root):
    with pytest.raises(ParamError, match=r"tasks\.dataset = 'nope' is neither a data\.own"):
        labelled_source(params_for(labelled_root, dataset="nope"))
    with pytest.raises(ParamError, match=r"tasks\.dataset = None must name a dataset"):
        labelled_source(params_for(labelled_root, dataset=None))
    with pytest.raises(ParamError, match=r"tasks\.source = 'webvision': must be one of"):
        labelled_source(params_for(labelled_root, source="webvision"))
    assert labelled_source(params_for(labelled_root, source="chc", dataset="nope")) is None
    built_in = labelled_source(params_for(labelled_root, dataset="dtd"))
    assert built_in.name == "DescribableTextures"
    with pytest.raises(DatasetError, match="folder .* not found"):  # not under the root
        labelled_table(built_in)


def test_bad_dataset_name_stops_the_stage_with_one_line(
    labelled_root, tmp_path, monkeypatch, capsys
):
    from pipeline.errors import run_stage
    from stages import tasks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params_for(labelled_root, dataset="nope")))
    with pytest.raises(SystemExit) as exit_info:
        run_stage(tasks.main)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "tasks.dataset = 'nope'" in error


def test_stale_key_of_another_source_is_an_error(labelled_root):
    source = labelled_source(params_for(labelled_root))
    with pytest.raises(DatasetError, match="rerun the `tasks` stage"):
        source.path("000000001")
    with pytest.raises(DatasetError, match="names no image"):
        source.path("pets:images/cat/missing.png")


def test_dataset_features_are_the_cached_image_features_by_key(labelled_root, tiny_clip, tmp_path):
    from pipeline.features import image_features

    source = labelled_source(params_for(labelled_root))
    keys = sorted(labelled_table(source)["key"])[:7]
    features = DatasetFeatures(source, tiny_clip, keys, cache_dir=tmp_path / "cache")
    asked = [keys[3], keys[0], keys[3]]
    direct = image_features(
        tiny_clip, [source.path(k) for k in asked], cache_dir=tmp_path / "other"
    )
    torch.testing.assert_close(features(asked), direct)
    assert list((tmp_path / "cache").glob("*.sqlite"))  # the shared on-disk cache
    with pytest.raises(KeyError, match="no features for task key"):
        features([sorted(labelled_table(source)["key"])[-1]])

    transform = tiny_clip.image_transform(train=False)
    images = DatasetImages(source, keys, transform)
    batch = images(asked)
    assert batch.shape == (3, *transform(Image.new("RGB", (24, 24))).shape)
    torch.testing.assert_close(batch[0], batch[2])
    assert not torch.equal(batch[0], batch[1])


# ---- the stages ----------------------------------------------------------------------------


def meta_params(root: Path, tasks: dict) -> dict:
    return {
        **params_for(root, **tasks),
        "backbone": TINY_OPEN_CLIP,
        "meta": meta_section(steps=2),
        "features": {"batch_size": 8, "num_workers": 0, "cache_dir": ".cache/features"},
    }


def test_tasks_then_meta_train_on_dataset_tasks(labelled_root, tmp_path, monkeypatch, tiny_clip):
    """No pairs, no CHC outputs: the labelled dataset alone feeds both stages."""
    from pipeline.meta.artifacts import load_meta_prompt
    from pipeline.meta.tasks import read_task_shards
    from stages import meta_train, tasks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(meta_params(labelled_root, {})))
    tasks.main()
    stats = json.loads(Path("metrics/tasks.json").read_text())
    assert stats["source"] == "dataset" and stats["dataset"] == "pets"
    assert stats["topics_used"] == len(CLASSES) and stats["shards"] == 2
    shard_bytes = [p.read_bytes() for p in sorted(Path("data/tasks").glob("*.tar"))]
    tasks.main()  # same params -> same bytes
    assert [p.read_bytes() for p in sorted(Path("data/tasks").glob("*.tar"))] == shard_bytes
    assert all(
        k.startswith("pets:")
        for t in read_task_shards("data/tasks")
        for k in t.support.keys + t.query.keys
    )

    meta_train.main("coop")
    metrics = json.loads(Path("metrics/meta_train/coop.json").read_text())
    assert metrics["steps"] == 2 and "query_loss_end" in metrics
    assert list(Path(".cache/features").glob("*.sqlite"))
    theta = load_meta_prompt(tmp_path / "models/gram/coop").theta["text_ctx"]
    from pipeline.learners import build_learner

    fresh = build_learner("coop", tiny_clip, CLASSES[:3], {"n_ctx": 2, "init_words": None}, seed=0)
    assert not torch.equal(fresh.text_ctx.detach(), theta)  # meta-training moved it

    meta_train.main("unigram")  # a visual prompt: the images through the encoder
    unigram = load_meta_prompt(tmp_path / "models/gram/unigram")
    assert set(unigram.theta) == {"text_ctx", "visual_prompt"}
    assert json.loads(Path("metrics/meta_train/unigram.json").read_text())["steps"] == 1


def test_meta_train_rejects_tasks_of_another_source(labelled_root, tmp_path, monkeypatch):
    from stages import meta_train, tasks

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(meta_params(labelled_root, {})))
    tasks.main()
    other = meta_params(labelled_root, {})
    other["data"]["own"]["pets2"] = {"folder": "pets", "split": "split_pets.json"}
    other["tasks"]["dataset"] = "pets2"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(other))
    with pytest.raises(DatasetError, match="not an image of dataset pets2"):
        meta_train.main("coop")


def chc_table() -> pd.DataFrame:
    rows = [
        (f"{t:02d}{d}{i}", t, w, d)
        for t, w in enumerate(CLASSES)
        for d in range(3)
        for i in range(2)
    ]
    return pd.DataFrame(rows, columns=["key", "topic_id", "topic_word", "domain"])


@pytest.mark.parametrize(
    "extra", [{}, {"source": "chc", "dataset": None}, {"source": "chc", "dataset": "pets"}]
)
def test_chc_source_writes_the_same_shards_as_the_sampler_alone(tmp_path, monkeypatch, extra):
    """The default path is the CHC sampler, byte for byte (whatever tasks.dataset says)."""
    from stages import tasks

    monkeypatch.chdir(tmp_path)
    Path("data/chc").mkdir(parents=True)
    chc_table().to_parquet("data/chc/domains.parquet")
    section = {
        "ways": 3,
        "support_shots": 1,
        "query_shots": 3,
        "num_tasks": 7,
        "seed": 2,
        "support_sampling": "one_domain",
        "tasks_per_shard": 3,
        **extra,
    }
    Path("params.yaml").write_text(yaml.safe_dump({"tasks": section}))
    tasks.main()
    spec = TaskSpec(3, 1, 3, 7, 2, "one_domain")
    expected, _ = sample_tasks(read_domains("data/chc/domains.parquet"), spec)
    want = write_task_shards(expected, tmp_path / "expected", 3)
    got = sorted(Path("data/tasks").glob("tasks-*.tar"))
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in got]
    assert digest == [hashlib.sha256(p.read_bytes()).hexdigest() for p in want]
    assert "source" not in json.loads(Path("metrics/tasks.json").read_text())
