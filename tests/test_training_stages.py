"""The finetune and evaluate stages end to end on a tiny fake dataset root and tiny_clip."""

import json
import runpy
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
        make_json_dataset(tmp_path / "data", name, "images", f"split_{name}.json", CLASSES,
                          counts)  # fmt: skip
    params = {
        "shots": 2, "seeds": [1], "methods": ["zeroshot", "prograd", "vpt"],
        "datasets": ["shapes", "shapes2"], "backbone": TINY_OPEN_CLIP,
        "data": {"root": "data", "own": {"shapes": {}, "shapes2": {}, "sketch": {}}},
        "domain_shift": {"source": "shapes", "targets": ["sketch"]},
        "features": {"batch_size": 8, "cache_dir": ".cache/features"},
        "finetune": {
            "train": {"epochs": 2, "batch_size": 4, "lr": 0.01, "warmup_epochs": 1},
            "augment": {"views": 2, "seed": 0},
            "methods": {
                "zeroshot": {"learner": "zeroshot"},
                "prograd": {"learner": "prograd", "n_ctx": 6, "init_words": "template"},
                "vpt": {"learner": "vpt", "n_tokens": 2, "epochs": 1, "warmup_epochs": 0},
            },
        },
        "evaluate": {"batch_size": 16, "cross_dataset": {"source": "shapes",
                                                         "targets": ["shapes2"]},
                     "few_shot": {"shots": [1], "datasets": ["shapes2"]}},
    }  # fmt: skip
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_stage(script: str, *args: str, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", [script, *args])
    runpy.run_path(str(ROOT / "stages" / script), run_name="__main__")


def test_finetune_and_evaluate_stages_write_the_issue_shape(workdir, monkeypatch):
    for method in ("zeroshot", "prograd", "vpt"):
        run_stage("finetune.py", "--method", method, "--seed", "1", monkeypatch=monkeypatch)
    run_stage("finetune.py", "--method", "prograd", "--seed", "1", "--part", "few_shot",
              monkeypatch=monkeypatch)  # fmt: skip
    run = json.loads(Path("results/downstream/runs/prograd/seed1/main.json").read_text())
    assert set(run["runs"]) == {"base2new-shapes", "base2new-shapes2", "source-shapes"}
    assert run["runs"]["base2new-shapes"]["train_images"] == 2 * 3  # 2 shots x 3 base classes
    assert run["runs"]["base2new-shapes"]["epochs"] == 2
    assert Path("models/downstream/prograd/seed1/main/base2new-shapes.pt").exists()
    assert Path("dvclive/finetune/prograd/seed1/main/base2new-shapes/plots/metrics/train/loss.tsv"
                ).exists()  # fmt: skip

    run_stage("evaluate.py", monkeypatch=monkeypatch)
    metrics = json.loads(Path("metrics/downstream.json").read_text())
    assert set(metrics) == {"base2new", "cross_dataset", "domain_generalization", "few_shot",
                            "std", "seeds"}  # fmt: skip
    assert set(metrics["base2new"]) == {"zeroshot", "prograd", "vpt"}
    assert set(metrics["base2new"]["prograd"]) == {"shapes", "shapes2", "average"}
    assert set(metrics["base2new"]["prograd"]["shapes"]) == {"base", "new", "h"}
    assert set(metrics["cross_dataset"]["vpt"]) == {"shapes", "shapes2", "average"}
    assert set(metrics["domain_generalization"]["prograd"]) == {"shapes", "sketch", "average"}
    assert set(metrics["few_shot"]) == {"prograd"}
    assert set(metrics["few_shot"]["prograd"]["1"]) == {"shapes2"}
    assert metrics["std"]["base2new"]["prograd"]["shapes"]["base"] == 0.0  # one seed
    tables = Path("results/tables.md").read_text()
    assert "## Table 1" in tables and "| ProGrad |" in tables and "| CLIP |" in tables

    # a method named in params but never trained is an error, not a silent gap
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["methods"].append("cocoop")
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(SystemExit, match="cocoop"):
        run_stage("evaluate.py", monkeypatch=monkeypatch)


def test_gram_hooks_load_theta_and_a_frozen_regulator(tmp_path, tiny_clip):
    import torch

    from pipeline.learners import CoOp
    from pipeline.meta.regulator import build_regulators
    from pipeline.params import ParamError

    stage = runpy.run_path(str(ROOT / "stages" / "finetune.py"))
    learner = CoOp(tiny_clip, CLASSES, init_words=None, n_ctx=2)
    theta = {"text_ctx": torch.randn(2, tiny_clip.text_width)}
    regulators = build_regulators(theta, init="random")
    torch.save(theta, tmp_path / "theta.pt")
    torch.save({"config": {"init": "random"}, "state_dict": regulators.state_dict()},
               tmp_path / "phi.pt")  # fmt: skip
    params = {"finetune": {
        "train": {"epochs": 1},
        "methods": {"coop_gram": {"learner": "coop", "n_ctx": 2, "init_words": None,
                                  "init_state": str(tmp_path / "theta.pt"),
                                  "regulator": str(tmp_path / "phi.pt"), "lr": 0.1}},
    }}  # fmt: skip
    method = stage["Method"](params, "coop_gram", seed=1)
    assert method.kind == "coop" and method.config.lr == 0.1 and method.config.epochs == 1
    assert method.options == {"n_ctx": 2, "init_words": None}
    assert torch.equal(method.init_state()["text_ctx"], theta["text_ctx"])
    grads = {"text_ctx": torch.randn(2, tiny_clip.text_width)}
    with torch.no_grad():
        expected = regulators(grads)["text_ctx"]
    torch.testing.assert_close(method.gradient_transform(learner)(grads)["text_ctx"], expected)
    params["finetune"]["train"]["epoch"] = 3
    with pytest.raises(ParamError, match="finetune.train.epoch "):
        stage["Method"](params, "coop_gram", seed=1)
