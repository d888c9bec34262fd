"""Protocols, aggregation over seeds and datasets (H as in the papers), tables, evaluate()."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.aggregation import aggregate
from pipeline.backbones import cosine_logits
from pipeline.data import DatasetSplits, Datum, harmonic_mean
from pipeline.evaluation import evaluate
from pipeline.learners import VPT, CoCoOp, CoOp
from pipeline.protocol import Protocols, evaluation_split, run_training_split
from pipeline.report import tables_markdown
from tests.coop_fakes import write_noise_images

# GRAM Table 1, zero-shot CLIP, (base, new) on the 11 datasets, and its average row
CLIP_TABLE_1 = {
    "ImageNet": (72.43, 68.14),
    "Caltech101": (96.84, 94.00),
    "OxfordPets": (91.17, 97.26),
    "StanfordCars": (63.37, 74.89),
    "Flowers102": (72.08, 77.80),
    "Food101": (90.10, 91.22),
    "FGVCAircraft": (27.19, 36.29),
    "SUN397": (69.36, 75.35),
    "DTD": (53.24, 59.90),
    "EuroSAT": (56.48, 64.05),
    "UCF101": (70.53, 77.50),
}


def test_h_is_the_harmonic_mean_of_the_averaged_base_and_new():
    assert harmonic_mean(69.34, 74.22) == pytest.approx(71.70, abs=0.005)
    protocols = Protocols(datasets=tuple(CLIP_TABLE_1), shots=16)
    runs = {"base2new": {n: {"base": b, "new": v} for n, (b, v) in CLIP_TABLE_1.items()}}
    metrics = aggregate({"zeroshot": {1: runs}}, protocols).means["base2new"]["zeroshot"]
    assert metrics["average"]["base"] == pytest.approx(69.34, abs=0.01)
    assert metrics["average"]["new"] == pytest.approx(74.22, abs=0.01)
    assert metrics["average"]["h"] == pytest.approx(71.70, abs=0.01)  # not 71.59
    mean_of_h = np.mean([harmonic_mean(b, v) for b, v in CLIP_TABLE_1.values()])
    assert mean_of_h == pytest.approx(71.59, abs=0.01)
    assert metrics["EuroSAT"]["h"] == pytest.approx(60.03, abs=0.01)  # as in Table 1k


def test_means_and_std_over_seeds_use_ddof_0():
    protocols = Protocols(datasets=("a",), shots=16, cross_source="a", cross_targets=("b", "c"))
    per_seed = {
        s: {
            "base2new": {"a": {"base": base, "new": 50.0}},
            "cross_dataset": {"a": 70.0, "b": b, "c": 30.0},
        }
        for s, base, b in ((1, 60.0, 10.0), (2, 70.0, 20.0), (3, 80.0, 30.0))
    }
    out = aggregate({"coop": per_seed}, protocols)
    assert out.means["base2new"]["coop"]["a"]["base"] == 70.0
    assert out.std["base2new"]["coop"]["a"]["base"] == round(float(np.std([60, 70, 80])), 2)
    assert out.means["base2new"]["coop"]["a"]["h"] == round(harmonic_mean(70.0, 50.0), 2)
    per_seed_h = [harmonic_mean(b, 50.0) for b in (60.0, 70.0, 80.0)]
    assert out.std["base2new"]["coop"]["a"]["h"] == round(float(np.std(per_seed_h)), 2)
    # cross-dataset average is over the targets only (GRAM Table 3)
    assert out.means["cross_dataset"]["coop"]["average"] == 25.0
    assert out.means["cross_dataset"]["coop"]["a"] == 70.0
    payload = out.as_json([1, 2, 3])
    assert set(payload) == {"base2new", "cross_dataset", "std", "seeds"}


def fake_dataset(n_classes=5, per_class=6) -> DatasetSplits:
    names = [f"class{i}" for i in range(n_classes)]

    def items(split):
        return [
            Datum(Path(f"/{split}/{c}/{i}.png"), label, c)
            for label, c in enumerate(names)
            for i in range(per_class)
        ]

    return DatasetSplits(
        "fake",
        names,
        items("train"),
        items("val"),
        items("test"),
        "a photo of a {}.",
        "a photo of a {}.",
    )


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_image_of_a_new_class_reaches_base_training(seed):
    dataset = fake_dataset()
    protocols = Protocols(datasets=("fake",), shots=4)
    (run,) = [r for r in protocols.runs("main") if r.name == "base2new-fake"]
    assert run.subsample == "base"
    train = run_training_split(dataset, run, seed)
    base_names = {"class0", "class1", "class2"}  # first ceil(5/2)
    assert {d.classname for d in train.train} == base_names
    assert all(d.path.parts[2] in base_names for d in train.train)
    assert len(train.train) == 4 * 3 and train.classnames == ["class0", "class1", "class2"]
    base_eval, new_eval = run.evaluations
    new_test = evaluation_split(dataset, new_eval)
    assert new_test.classnames == ["class3", "class4"]
    assert {d.label for d in new_test.test} == {0, 1}  # relabelled from 0
    assert {d.classname for d in new_test.test}.isdisjoint(base_names)
    assert len(evaluation_split(dataset, base_eval).test) == 3 * 6  # the full base test set


def test_protocol_runs():
    protocols = Protocols(
        datasets=("a", "b"),
        shots=16,
        cross_source="src",
        cross_targets=("a", "b"),
        domain_source="src",
        domain_targets=("src_sketch",),
        few_shot_shots=(1, 4),
        few_shot_datasets=("a",),
    )
    main = protocols.runs("main")
    assert [r.name for r in main] == ["base2new-a", "base2new-b", "source-src"]
    source = main[-1]
    assert source.subsample == "all" and source.shots == 16
    assert [e.key for e in source.evaluations] == [
        ("cross_dataset", "src"),
        ("cross_dataset", "a"),
        ("cross_dataset", "b"),
        ("domain_generalization", "src"),
        ("domain_generalization", "src_sketch"),
    ]
    few = protocols.runs("few_shot")
    assert [(r.name, r.shots) for r in few] == [("fewshot-1-a", 1), ("fewshot-4-a", 4)]


def test_tables_follow_grams_row_order_and_take_whatever_methods_exist():
    protocols = Protocols(datasets=("a",), shots=16, domain_source="a", domain_targets=("s",))
    results = {
        m: {
            1: {
                "base2new": {"a": {"base": 60.0 + i, "new": 50.0}},
                "domain_generalization": {"a": 40.0, "s": 30.0 + i},
            }
        }
        for i, m in enumerate(["prograd", "vpt", "coop_gram", "coop", "zeroshot", "mine"])
    }
    del results["mine"][1]["domain_generalization"]
    metrics = aggregate(results, protocols).as_json([1])
    text = tables_markdown(metrics, protocols)
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    first_table = rows[1:7]
    assert first_table == ["CLIP", "CoOp", "+ GRAM", "VPT", "ProGrad", "mine"]
    assert "## Table 2: domain generalisation" in text
    assert "| CoOp | 40.00 ± 0.00 | 33.00 ± 0.00 | 33.00 ± 0.00 |" in text
    assert "## Table 3" not in text  # no cross-dataset results: no table


@pytest.fixture()
def test_images(tmp_path):
    paths = write_noise_images(tmp_path, 5, seed=1, shape=(32, 36), prefix="t")
    return [Datum(path, i % 3, f"c{i % 3}") for i, path in enumerate(paths)]


def test_evaluate_on_cached_features_and_through_the_prompted_encoder(
    tiny_clip, test_images, tmp_path
):
    names = ["cat", "dog", "bird"]
    options = {"cache_dir": tmp_path / "cache"}
    transform = tiny_clip.image_transform(train=False)
    images = torch.stack([transform(Image.open(d.path)) for d in test_images])
    labels = torch.tensor([d.label for d in test_images])
    with torch.no_grad():
        features = tiny_clip.encode_image(images)
        for learner in (
            CoOp(tiny_clip, names, init_words=None, seed=4),
            CoCoOp(tiny_clip, names, seed=4),
        ):
            result = evaluate(
                learner,
                test_images,
                names,
                "a photo of a {}.",
                batch_size=2,
                features_options=options,
            )
            from pipeline.learners import Batch

            direct = learner.logits(Batch(labels, features=features)).argmax(-1)
            assert result.correct == int((direct == labels).sum()) and result.total == 5
        vpt = VPT(tiny_clip, names, n_tokens=2, init_std=1.0, seed=0)
        result = evaluate(vpt, test_images, names, "a photo of a {}.", batch_size=2)
        prompted = tiny_clip.encode_image(images, vpt.visual_prompt)
        logits = cosine_logits(prompted, vpt.class_features(), tiny_clip.logit_scale)
        assert result.correct == int((logits.argmax(-1) == labels).sum())


def test_test_cap_keeps_the_first_images_of_each_class():
    dataset = fake_dataset(n_classes=4, per_class=6)
    protocols = Protocols(datasets=("fake",), shots=2)
    base_eval, new_eval = protocols.runs("main")[0].evaluations
    capped = evaluation_split(dataset, new_eval, max_per_class=2)
    assert [(d.label, d.path.name) for d in capped.test] == [
        (0, "0.png"),
        (0, "1.png"),
        (1, "0.png"),
        (1, "1.png"),
    ]
    assert len(evaluation_split(dataset, new_eval).test) == 12
