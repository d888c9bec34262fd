"""The finetune and evaluate stages end to end on a tiny fake dataset root and tiny_clip."""

import json
import runpy
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from tests.coop_fakes import make_json_dataset

ROOT = Path(__file__).resolve().parents[1]
CLASSES = ["circle", "square", "triangle", "cross", "line"]


@pytest.fixture()
def workdir(tmp_path, monkeypatch, tiny_clip):
    from tests.conftest import TINY_OPEN_CLIP

    # the stages call load_backbone(params["backbone"]): make it this session's tiny_clip
    monkeypatch.setattr("pipeline.backbones.load_backbone", lambda config: tiny_clip)
    for name, counts in (("shapes", (6, 4, 3)), ("shapes2", (6, 4, 2)), ("sketch", (0, 0, 2))):
        make_json_dataset(tmp_path / "data", name, "images", f"split_{name}.json", CLASSES, counts)
    params = {
        "shots": 2,
        "seeds": [1],
        "methods": ["zeroshot", "prograd", "vpt"],
        "datasets": ["shapes", "shapes2"],
        "backbone": TINY_OPEN_CLIP,
        "data": {"root": "data", "own": {"shapes": {}, "shapes2": {}, "sketch": {}}},
        "domain_shift": {"source": "shapes", "targets": ["sketch"]},
        "features": {"batch_size": 8, "cache_dir": ".cache/features"},
        "finetune": {
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "warmup_epochs": 1},
            "augment": {"views": 2, "seed": 0},
            "methods": {
                "zeroshot": {"learner": "zeroshot"},
                "prograd": {
                    "learner": "prograd",
                    "options": {"n_ctx": 6, "init_words": "template"},
                },
                "vpt": {
                    "learner": "vpt",
                    "options": {"n_tokens": 2},
                    "train": {"epochs": 1, "warmup_epochs": 0},
                },
            },
        },
        "evaluate": {
            "batch_size": 16,
            "cross_dataset": {"source": "shapes", "targets": ["shapes2"]},
            "few_shot": {"shots": [1], "datasets": ["shapes2"]},
            "linear_probe": {"c_grid": [1.0, 10.0]},
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(script: str, *args: str, monkeypatch) -> None:
    """Run a stage as ``python -m stages.<script>`` does (errors go through run_stage)."""
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "stages" / script), run_name="__main__")


def test_finetune_and_evaluate_stages_write_the_issue_shape(workdir, monkeypatch, capsys):
    for method in ("zeroshot", "prograd", "vpt"):
        run_stage(
            "finetune.py",
            "--method",
            method,
            "--seed",
            "1",
            "--part",
            "main",
            monkeypatch=monkeypatch,
        )
    run_stage(
        "finetune.py",
        "--method",
        "prograd",
        "--seed",
        "1",
        "--part",
        "few_shot",
        monkeypatch=monkeypatch,
    )
    run = json.loads(Path("results/downstream/runs/prograd/seed1/main.json").read_text())
    assert set(run["runs"]) == {"base2new-shapes", "base2new-shapes2", "source-shapes"}
    assert run["runs"]["base2new-shapes"]["train_images"] == 2 * 3  # 2 shots x 3 base classes
    assert run["runs"]["base2new-shapes"]["epochs"] == 2
    assert Path("models/downstream/prograd/seed1/main/base2new-shapes.pt").exists()
    assert Path(
        "dvclive/finetune/prograd/seed1/main/base2new-shapes/plots/metrics/train/loss.tsv"
    ).exists()

    run_stage("linear_probe.py", "--seed", "1", monkeypatch=monkeypatch)
    run_stage("evaluate.py", monkeypatch=monkeypatch)
    metrics = json.loads(Path("metrics/downstream.json").read_text())
    assert set(metrics) == {
        "base2new",
        "cross_dataset",
        "domain_generalization",
        "few_shot",
        "std",
        "seeds",
    }
    assert set(metrics["base2new"]) == {"zeroshot", "prograd", "vpt", "linear_probe"}
    assert set(metrics["base2new"]["prograd"]) == {"shapes", "shapes2", "average"}
    assert set(metrics["base2new"]["prograd"]["shapes"]) == {"base", "new", "h"}
    assert set(metrics["cross_dataset"]["vpt"]) == {"shapes", "shapes2", "average"}
    assert set(metrics["domain_generalization"]["prograd"]) == {"shapes", "sketch", "average"}
    assert set(metrics["few_shot"]) == {"prograd", "linear_probe"}
    assert set(metrics["few_shot"]["prograd"]["1"]) == {"shapes2"}
    assert metrics["std"]["base2new"]["prograd"]["shapes"]["base"] == 0.0  # one seed
    tables = Path("results/tables.md").read_text()
    assert "## Table 1" in tables and "| ProGrad |" in tables and "| CLIP |" in tables

    # a method named in params but never trained is an error, not a silent gap
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["methods"].append("cocoop")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit) as exit_info:
        run_stage("evaluate.py", monkeypatch=monkeypatch)
    assert exit_info.value.code == 2
    assert "no results for method(s) ['cocoop']" in capsys.readouterr().err


def write_meta_variant(folder: Path, tiny_clip, n_ctx: int = 2):
    """models/gram/<variant>/ as meta_train writes it, for a CoOp context of n_ctx tokens."""
    import torch

    from pipeline.meta.artifacts import save_meta_prompt
    from pipeline.meta.regulator import build_regulators

    theta = {"text_ctx": torch.randn(n_ctx, tiny_clip.text_width)}
    regulators = build_regulators(theta, init="random")
    options = {"n_ctx": n_ctx, "init_words": None}
    save_meta_prompt(folder, theta, regulators, {"init": "random"}, "coop", options, {})
    return theta, regulators


def _results(method: str) -> dict:
    """Every results file of ``method``, without the wall-clock seconds."""
    out = {}
    for path in sorted(Path("results/downstream/runs", method).rglob("*.json")):
        payload = json.loads(path.read_text())
        for run in payload["runs"].values():
            run.pop("seconds")
        out[str(path)] = payload
    return out


def test_one_process_for_every_seed_and_part_equals_one_per_seed_and_part(workdir, monkeypatch):
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["seeds"] = [1, 2]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    for seed in ("1", "2"):
        for part in ("main", "few_shot"):
            args = ("--method", "prograd", "--seed", seed, "--part", part)
            run_stage("finetune.py", *args, monkeypatch=monkeypatch)
    separate = _results("prograd")
    assert len(separate) == 4
    for folder in (Path("results/downstream/runs"), Path(".cache/checkpoints")):
        shutil.rmtree(folder)  # nothing may resume: every run trains again
    run_stage("finetune.py", "--method", "prograd", monkeypatch=monkeypatch)  # the DVC command
    assert _results("prograd") == separate


def test_a_from_meta_row_takes_learner_options_theta_and_a_frozen_regulator(tmp_path, tiny_clip):
    import torch

    from pipeline.config import read_method
    from pipeline.downstream import run_key
    from pipeline.meta.artifacts import load_meta_prompt

    theta, regulators = write_meta_variant(tmp_path / "gram" / "coop", tiny_clip)
    params = {
        "finetune": {
            "train": {"epochs": 1},
            "methods": {"coop_gram": {"from_meta": "coop", "train": {"lr": 0.1}}},
        }
    }
    method = read_method(params, "coop_gram", seed=1, gram_models=tmp_path / "gram")
    assert method.learner == "coop" and method.train.lr == 0.1 and method.train.epochs == 1
    assert method.options == {"n_ctx": 2, "init_words": None}  # from learner.json
    meta = load_meta_prompt(method.meta_dir)
    assert torch.equal(meta.theta["text_ctx"], theta["text_ctx"])
    grads = {"text_ctx": torch.randn(2, tiny_clip.text_width)}
    with torch.no_grad():
        expected = regulators(grads)["text_ctx"]
    torch.testing.assert_close(meta.gradient_transform()(grads)["text_ctx"], expected)
    assert run_key("coop", method.options, method.meta_dir) != run_key("coop", method.options, None)


def test_bad_rows_name_the_key_the_user_wrote(tmp_path, tiny_clip):
    from pipeline.config import read_method
    from pipeline.params import ParamError

    write_meta_variant(tmp_path / "gram" / "coop", tiny_clip)

    def read(row, shared=None):
        params = {"finetune": {"train": shared or {"epochs": 1}, "methods": {"m": row}}}
        return read_method(params, "m", seed=1, gram_models=tmp_path / "gram")

    with pytest.raises(ParamError, match="finetune.train.epoch is not one of"):
        read({"learner": "coop"}, shared={"epoch": 3})
    with pytest.raises(ParamError, match=r"finetune.methods.m.train.lr = -1: must be >= 0"):
        read({"learner": "coop", "train": {"lr": -1}})
    with pytest.raises(ParamError, match="finetune.methods.m.n_ctx is not one of"):
        read({"learner": "coop", "n_ctx": 4})  # options belong under options:
    with pytest.raises(ParamError, match="finetune.methods.m.options.lambda = 3"):
        read({"learner": "prograd", "options": {"lambda": 3}})
    with pytest.raises(ParamError, match="finetune.methods.m.options: a from_meta row"):
        read({"from_meta": "coop", "options": {"n_ctx": 4}})
    with pytest.raises(ParamError, match="from_meta = 'vpt'.*learner.json is missing"):
        read({"from_meta": "vpt"})
    params = {
        "meta": {"variants": {"coop": {}}},
        "finetune": {"train": {}, "methods": {"m": {"from_meta": "cop"}}},
    }
    with pytest.raises(ParamError, match=r"from_meta = 'cop': must be one of meta.variants"):
        read_method(params, "m", seed=1, gram_models=tmp_path / "gram")
    card = tmp_path / "gram" / "coop" / "learner.json"
    card.write_text(card.read_text().replace('"n_ctx"', '"n_tokens"'))
    with pytest.raises(ParamError, match=r"coop/learner.json: options.n_tokens is not an option"):
        read({"from_meta": "coop"})
    with pytest.raises(ParamError, match="finetune.methods has no row 'x'"):
        read_method({"finetune": {"train": {}, "methods": {}}}, "x", seed=1)


def test_bad_data_is_reported_before_the_backbone_loads(workdir, monkeypatch, capsys):
    def no_backbone(config):
        raise AssertionError("the backbone was loaded before the data were checked")

    monkeypatch.setattr("pipeline.backbones.load_backbone", no_backbone)
    Path("data/shapes2/split_shapes2.json").write_text("{not json")
    for script, args in (
        ("finetune.py", ("--method", "zeroshot", "--seed", "1")),
        ("zeroshot.py", ()),
    ):
        with pytest.raises(SystemExit) as exit_info:
            run_stage(script, *args, monkeypatch=monkeypatch)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "split_shapes2.json" in err, err
