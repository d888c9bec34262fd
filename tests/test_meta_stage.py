"""The `tasks` and `meta_train` stages end to end on a tiny random CLIP and fake pairs."""

import io
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

from tests.conftest import TINY_OPEN_CLIP, meta_section

WORDS = ["cat", "dog", "car", "tree", "house", "boat"]


def params(**meta_overrides):
    return {
        "backbone": TINY_OPEN_CLIP,
        "tasks": {
            "ways": 3,
            "support_shots": 1,
            "query_shots": 3,
            "num_tasks": 8,
            "seed": 0,
            "support_sampling": "one_domain",
            "tasks_per_shard": 5,
        },
        "meta": meta_section(**meta_overrides),
    }


@pytest.fixture
def workdir(tmp_path, monkeypatch, tiny_clip):
    import webdataset as wds

    rng = np.random.default_rng(0)
    rows, keys = [], []
    for topic, word in enumerate(WORDS):
        for domain in range(3):
            for i in range(2):
                key = f"{topic:02d}{domain}{i}"
                rows.append((key, topic, word, domain))
                keys.append(key)
    (tmp_path / "data/chc").mkdir(parents=True)
    pd.DataFrame(rows, columns=["key", "topic_id", "topic_word", "domain"]).to_parquet(
        tmp_path / "data/chc/domains.parquet"
    )
    (tmp_path / "data/pairs/shards").mkdir(parents=True)
    image = rng.standard_normal((len(keys), tiny_clip.embed_dim)).astype(np.float32)
    np.savez(tmp_path / "data/pairs/embeddings.npz", keys=np.array(keys), image=image, text=image)
    with wds.TarWriter(str(tmp_path / "data/pairs/shards/pairs-000000.tar")) as sink:
        for key in keys:
            buffer = io.BytesIO()
            pixels = rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="JPEG")
            sink.write({"__key__": key, "jpg": buffer.getvalue(), "txt": key})
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_params(workdir, p):
    (workdir / "params.yaml").write_text(yaml.safe_dump(p))


def test_tasks_then_meta_train_textual_and_unigram(workdir):
    from pipeline.learners import build_learner
    from pipeline.meta.artifacts import load_meta_prompt
    from stages import meta_train, tasks

    write_params(workdir, params())
    tasks.main()
    stats = json.loads((workdir / "metrics/tasks.json").read_text())
    assert stats["shards"] == 2 and stats["topics_used"] == 6
    assert stats["classes_with_single_domain_support"] == 1.0
    assert stats["classes_with_query_covering_all_domains"] == 1.0

    meta_train.main("coop")
    metrics = json.loads((workdir / "metrics/meta_train/coop.json").read_text())
    assert metrics["steps"] == 3 and metrics["order"] == "first-order approximation"
    assert {"query_loss_start", "query_loss_end", "grad_cosine_start"} <= set(metrics)
    curve = (workdir / "plots/meta_train/coop/plots/metrics/grad_cosine.tsv").read_text()
    assert len(curve.strip().splitlines()) == 1 + 3
    meta = load_meta_prompt(workdir / "models/gram/coop")
    assert meta.learner == "coop" and set(meta.theta) == {"text_ctx"}
    from pipeline.backbones import load_backbone

    learner = build_learner(meta.learner, load_backbone(TINY_OPEN_CLIP), WORDS, meta.options)
    assert not torch.equal(learner.text_ctx.detach(), meta.theta["text_ctx"])  # it moved
    learner.load_state_dict(meta.theta)
    grads = {"text_ctx": torch.ones_like(meta.theta["text_ctx"])}
    regulated = meta.gradient_transform()(grads)["text_ctx"]
    assert regulated.shape == grads["text_ctx"].shape
    assert not torch.allclose(regulated, 0.99 * grads["text_ctx"])  # phi was meta-learned

    # rerun with the same config: resumes from the final checkpoint, identical theta
    first = meta.theta["text_ctx"].clone()
    meta_train.main("coop")
    assert torch.equal(load_meta_prompt(workdir / "models/gram/coop").theta["text_ctx"], first)

    meta_train.main("unigram")
    unigram = load_meta_prompt(workdir / "models/gram/unigram")
    assert set(unigram.theta) == {"text_ctx", "visual_prompt"}
    assert unigram.theta["text_ctx"].shape[0] == 1 and unigram.theta["visual_prompt"].shape[1] == 1
    assert len(list(unigram.regulators.parameters())) == 8  # one R per prompt group
    # the downstream way: rebuild R_phi around a learner built with the saved options
    from pipeline.meta.regulator import build_regulators

    saved = torch.load(workdir / "models/gram/unigram/phi.pt", weights_only=True)
    joint = build_learner(unigram.learner, load_backbone(TINY_OPEN_CLIP), WORDS, unigram.options)
    rebuilt = build_regulators(joint.prompt_parameters(), **saved["config"])
    rebuilt.load_state_dict(saved["state_dict"])
    grads = {name: torch.randn_like(t) for name, t in unigram.theta.items()}
    expected = unigram.gradient_transform()(grads)
    with torch.no_grad():
        for name, value in rebuilt(grads).items():
            torch.testing.assert_close(value, expected[name])


@pytest.mark.parametrize("mode", ["pretrain", "none"])
def test_ablation_modes_write_identity_regulators(workdir, mode):
    from pipeline.meta.artifacts import load_meta_prompt
    from stages import meta_train, tasks

    write_params(workdir, params(mode=mode, steps=2))
    tasks.main()
    meta_train.main("coop")
    meta = load_meta_prompt(workdir / "models/gram/coop")
    assert meta.info["regulator"]["kind"] == "identity"
    grads = {"text_ctx": torch.randn_like(meta.theta["text_ctx"])}
    assert torch.equal(meta.gradient_transform()(grads)["text_ctx"], grads["text_ctx"])
    metrics = json.loads((workdir / "metrics/meta_train/coop.json").read_text())
    assert metrics["steps"] == (2 if mode == "pretrain" else 0)
    if mode == "pretrain":
        assert "train_loss_start" in metrics


def test_second_order_switch(workdir):
    from stages import meta_train, tasks

    write_params(workdir, params(second_order=True, steps=2))
    tasks.main()
    meta_train.main("coop")
    metrics = json.loads((workdir / "metrics/meta_train/coop.json").read_text())
    assert metrics["order"] == "second-order (Eq. 10)" and metrics["steps"] == 2


def test_bad_params_name_the_key(workdir):
    from pipeline.params import ParamError
    from stages import meta_train

    write_params(workdir, params(optimizer="rmsprop"))
    with pytest.raises(ParamError, match="meta.train.optimizer"):
        meta_train.settings(params(optimizer="rmsprop"), "coop")
    with pytest.raises(ParamError, match="meta.variants has no variant 'vpt'"):
        meta_train.settings(params(), "vpt")
    # the key the user wrote: meta.train.steps, or the variant's own override
    with pytest.raises(ParamError, match=r"meta.train.steps = -5: must be >= 0"):
        meta_train.settings(params(steps=-5), "coop")
    overridden = params()
    overridden["meta"]["variants"]["unigram"]["steps"] = -2
    with pytest.raises(ParamError, match=r"meta.variants.unigram.steps = -2"):
        meta_train.settings(overridden, "unigram")
    assert meta_train.settings(params(steps=-5), "unigram")["steps"] == 1
    bad_option = params()
    bad_option["meta"]["variants"]["coop"]["options"]["n_tokens"] = 2
    with pytest.raises(ParamError, match="meta.variants.coop.options.n_tokens is not an option"):
        meta_train.settings(bad_option, "coop")


def test_meta_validation_on_held_out_topics(workdir):
    from pipeline.errors import UserError
    from stages import meta_train, tasks

    p = params(val_every=2)
    p["tasks"].update(val_topics=3, val_tasks=4)
    write_params(workdir, p)
    tasks.main()
    stats = json.loads((workdir / "metrics/tasks.json").read_text())
    assert stats["topics_train"] == 3 and len(stats["val_topic_words"]) == 3
    assert stats["val_shards"] == 1
    meta_train.main("coop")
    metrics = json.loads((workdir / "metrics/meta_train/coop.json").read_text())
    assert metrics["val_tasks"] == 4 and metrics["val_every"] == 2
    curve = (workdir / "plots/meta_train/coop/plots/metrics/val_query_loss.tsv").read_text()
    rows = [line.split("\t") for line in curve.splitlines()[1:]]
    assert [r[0] for r in rows] == ["0", "2", "3"]  # every 2 steps and the final theta*
    assert metrics["val_query_loss_start"] == round(float(rows[0][1]), 5)
    assert metrics["val_query_loss_end"] == round(float(rows[-1][1]), 5)
    assert metrics["val_query_loss_min"] == round(min(float(r[1]) for r in rows), 5)
    # the visual variant preloads the held-out images too; val_max_tasks caps the set
    p["meta"]["variants"]["unigram"].update(val_every=1, val_max_tasks=2)
    write_params(workdir, p)
    meta_train.main("unigram")
    metrics = json.loads((workdir / "metrics/meta_train/unigram.json").read_text())
    assert metrics["val_tasks"] == 2 and metrics["val_query_loss_min_step"] in (0, 1)
    # validation asked for, no held-out tasks: an error naming the keys
    p["tasks"].update(val_topics=0, val_tasks=0)
    write_params(workdir, p)
    tasks.main()
    assert not (workdir / "data/tasks/val").exists()
    with pytest.raises(UserError, match="meta.train.val_every: 2 .*tasks.val_topics"):
        meta_train.main("coop")
