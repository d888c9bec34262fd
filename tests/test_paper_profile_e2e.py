"""The whole DAG under the paper profile, in miniature (README "Profiles": `paper-cpu-smoke`).

A scratch copy of the repository gets every dataset of the paper's tables in its own on-disk
layout (tiny noise images), a CC3M-format TSV whose images a loopback HTTP server serves, and a
tiny random QuickGELU CLIP saved in OpenAI's state-dict format. ``params.yaml`` is composed with
``profile=paper-cpu-smoke`` by DVC's own Hydra code (scripts/compose_params.py), so every paper
value but the sizes is what runs; then ``dvc repro`` runs the stages. It proves that the paper
profile resolves and that every stage runs under it; it measures nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.loopback_http import captioned_image_tsv, image_routes, serve
from tests.paper_shape import write_paper_datasets
from tests.test_backbone_checkpoints import save_openai_state_dict

REPO = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]
PROFILE = "paper-cpu-smoke"
CORE = [
    "ImageNet",
    "Caltech101",
    "OxfordPets",
    "StanfordCars",
    "OxfordFlowers",
    "Food101",
    "FGVCAircraft",
    "SUN397",
    "DescribableTextures",
    "EuroSAT",
    "UCF101",
]
VARIANTS = ["ImageNetV2", "ImageNetSketch", "ImageNetA", "ImageNetR"]
META_VARIANTS = ["coop", "vpt", "unigram"]
UPSTREAM = ["zeroshot", *(f"meta_train@{v}" for v in META_VARIANTS)]
#: 70 captions = 7 subjects x 5 styles x 2 places: clusters for HDBSCAN at min_cluster_size 5
PAIRS = 70


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        **extra,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }


def _run(command: list[str], cwd: Path, check: bool = True, **env: str):
    result = subprocess.run(command, cwd=cwd, env=_env(**env), capture_output=True, text=True)
    if check:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return result


def _copy_repo(root: Path) -> None:
    """The code, DAG and conf/ of the repository; no data, no params.yaml (it is composed)."""
    for name in ("dvc.yaml", "pyproject.toml"):
        shutil.copy(REPO / name, root)
    for code in ("stages", "pipeline", "conf", "scripts"):
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    # the finetune stages declare the embedded downstream folder as a dependency; under the
    # paper profile the images come from $DATA, so any content will do
    placeholder = root / "data" / "embedded" / "downstream"
    placeholder.mkdir(parents=True)
    (placeholder / "README.md").write_text("unused under the paper profile\n")


@pytest.fixture(scope="module")
def paper_repo(tmp_path_factory):
    """The scratch repository with params.yaml composed under the profile; the loopback server
    keeps serving the TSV's images for as long as the module's tests run."""
    scratch = tmp_path_factory.mktemp("paper")
    root, data = scratch / "repo", scratch / "DATA"
    root.mkdir()
    _copy_repo(root)
    write_paper_datasets(data, images_per_class=2, n_classes=3, size=32)
    _, checkpoint = save_openai_state_dict(scratch)
    with serve(image_routes(PAIRS)) as base_url:
        tsv = captioned_image_tsv(scratch / "Train_GCC-training.tsv", base_url, PAIRS)
        env = {"DATA": str(data), "CC3M_TSV": str(tsv), "CLIP_CHECKPOINT": str(checkpoint)}
        _run([sys.executable, "scripts/compose_params.py", f"profile={PROFILE}"], root, **env)
        for command in (["git", "init", "-q"], DVC + ["init", "-q"]):
            _run(command, root)
        shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")  # hydra enabled
        _run(["git", "add", "-A"], root)
        _run(["git", "commit", "-qm", "scratch"], root)
        yield root


@pytest.fixture(scope="module")
def params(paper_repo) -> dict:
    return yaml.safe_load((paper_repo / "params.yaml").read_text())


@pytest.fixture(scope="module")
def upstream_run(paper_repo):
    """Ingest to meta-training, and zero-shot on all 15 datasets."""
    _run(DVC + ["repro", *UPSTREAM], paper_repo)
    return paper_repo


def _metrics(root: Path, name: str) -> dict:
    return json.loads((root / "metrics" / f"{name}.json").read_text())


def test_composed_params_are_the_papers_but_for_sizes(params):
    assert params["profile"] == PROFILE
    assert params["datasets"] == CORE
    assert params["domain_shift"] == {"source": "ImageNet", "targets": VARIANTS}
    assert params["shots"] == 16
    assert params["backbone"]["kind"] == "open_clip"
    assert params["ingest"]["source"] == "cc3m"
    assert params["meta"]["train"]["second_order"] is True
    assert params["meta"]["train"]["optimizer"] == "sgd"
    assert params["meta"]["regulator"]["init"] == "random"
    assert params["finetune"]["augment"]["mode"] == "fresh"
    assert params["finetune"]["allow_fewer"] is True
    assert params["evaluate"]["cross_dataset"] == {"source": "ImageNet", "targets": CORE[1:]}
    assert params["evaluate"]["few_shot"]["shots"] == [1, 2, 4, 8, 16]


def test_the_checkpoint_loads_with_quick_gelu(params):
    from pipeline.backbones import create_backbone

    backbone = create_backbone(params["backbone"])
    assert "+quickgelu" in backbone.name
    kinds = {type(m).__name__ for m in backbone.model.modules()}
    assert "QuickGELU" in kinds and "GELU" not in kinds


def test_ingest_downloads_every_pair_from_the_loopback_server(upstream_run):
    ingest = _metrics(upstream_run, "ingest")
    assert ingest["rows"] == PAIRS and ingest["written"] == PAIRS, ingest
    assert sorted((upstream_run / "data" / "pairs" / "shards").glob("*.tar"))
    assert _metrics(upstream_run, "embed_pairs")["embedded"] == PAIRS
    assert _metrics(upstream_run, "filter")["kept"] == PAIRS  # min_similarity -1 keeps all


def test_chc_and_tasks_ran(upstream_run):
    assert (upstream_run / "data" / "chc" / "caption_embeddings.npy").is_file()
    for name in ("topics", "domains", "tasks"):
        assert _metrics(upstream_run, name), name
    assert sorted((upstream_run / "data" / "tasks").glob("tasks-*.tar"))


@pytest.mark.parametrize("variant", META_VARIANTS)
def test_meta_training_is_second_order_on_the_quick_gelu_backbone(upstream_run, variant):
    meta = _metrics(upstream_run, f"meta_train/{variant}")
    assert "+quickgelu" in meta["backbone"]
    assert meta["order"].startswith("second-order"), meta["order"]
    assert meta["regulator"]["init"] == "random"
    for name in ("theta.pt", "phi.pt", "learner.json"):
        assert (upstream_run / "models" / "gram" / variant / name).is_file()


def test_zeroshot_covers_all_fifteen_datasets(upstream_run):
    zeroshot = _metrics(upstream_run, "zeroshot")
    assert sorted(zeroshot) == sorted(CORE + VARIANTS)
    assert zeroshot["ImageNetA"]["num_classes"] == 2  # A and R keep a subset of the classes
    assert zeroshot["ImageNet"]["num_classes"] == 3


@pytest.fixture(scope="module")
def full_run(upstream_run):
    """``dvc repro`` of the whole DAG (the upstream stages are already done)."""
    result = _run(DVC + ["repro"], upstream_run, check=False)
    return upstream_run, result


def _succeeded(full_run) -> Path:
    """The scratch repository, once ``dvc repro`` of the whole DAG has succeeded."""
    root, result = full_run
    if result.returncode != 0:
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
        pytest.fail(f"dvc repro failed:\n{output}")
    return root


def test_every_stage_ran_and_is_up_to_date(full_run):
    root = _succeeded(full_run)
    stages = _run(DVC + ["stage", "list", "--name-only"], root).stdout.split()
    locked = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(stages) == set(locked)
    assert {"finetune@coop", "finetune@vpt", "finetune_gram@unigram"} <= set(stages)
    assert json.loads(_run(DVC + ["status", "--json"], root).stdout) == {}


def test_every_method_wrote_its_runs(full_run, params):
    root = _succeeded(full_run)
    runs = root / "results" / "downstream" / "runs"
    for method in params["methods"]:
        assert (runs / method / "seed1" / "main.json").is_file(), method
        assert (runs / method / "seed1" / "few_shot.json").is_file(), method
    for method in params["gram_methods"]:
        assert (runs / method / "seed1" / "main.json").is_file(), method


def test_evaluate_has_a_row_per_method_and_a_column_per_dataset(full_run, params):
    root = _succeeded(full_run)
    downstream = _metrics(root, "downstream")
    rows = set(params["methods"] + params["gram_methods"])
    columns = {
        "base2new": set(CORE) | {"average"},
        "domain_generalization": {"ImageNet", *VARIANTS, "average"},
        "cross_dataset": {*CORE, "average"},
    }
    probe_columns = {
        "base2new": columns["base2new"],
        "domain_generalization": {"ImageNet"},
        "cross_dataset": {"ImageNet"},
    }  # only its training classes
    for table, wanted in columns.items():
        assert set(downstream[table]) == rows | {"linear_probe"}, table
        for method, cells in downstream[table].items():
            expected = probe_columns[table] if method == "linear_probe" else wanted
            assert set(cells) == expected, (table, method)
    assert set(downstream["few_shot"]) == set(params["methods"]) | {"linear_probe"}
    for method, curve in downstream["few_shot"].items():
        assert set(curve) == {"1", "2", "4", "8", "16"}, method
        assert all(set(cells) == {*CORE, "average"} for cells in curve.values()), method
    tables = (root / "results" / "tables.md").read_text()
    header = "|  | Source: ImageNet | " + " | ".join(VARIANTS) + " | Average |"
    assert header in tables
    assert "|  | Source: ImageNet | " + " | ".join(CORE[1:]) + " | Average |" in tables
