"""The whole DVC pipeline, ingest to tables, on a small slice of the embedded data.

Runs the real ``dvc.yaml`` and stage scripts in a scratch repository with a tiny random
open_clip backbone, then checks the outputs every later user looks at, and that a second
``dvc repro`` has nothing to do (every stage is deterministic and fully declared).
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EMBEDDED = REPO / "data" / "embedded"
DVC = [sys.executable, "-m", "dvc"]

# Captions repeated in the embedded pairs make clusters HDBSCAN finds even on 60 points.
CLUSTERED_CAPTIONS = {"gramastar": 20, "Lemon SVG theme": 20, "card": 20}


def _small_pairs(out: Path) -> None:
    (out / "images").mkdir(parents=True)
    with (EMBEDDED / "pairs" / "pairs.tsv").open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    wanted, kept = dict(CLUSTERED_CAPTIONS), []
    for row in rows:
        if wanted.get(row["caption"], 0) > 0:
            wanted[row["caption"]] -= 1
            kept.append(row)
            shutil.copy(EMBEDDED / "pairs" / row["image"], out / row["image"])
    with (out / "pairs.tsv").open("w", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=list(rows[0]), delimiter="\t", quoting=csv.QUOTE_NONE, lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(kept)


def _small_dataset(name: str, out: Path, per_class: dict[str, int]) -> None:
    source = EMBEDDED / "downstream" / name
    split = json.loads((source / f"split_{name}.json").read_text())
    small = {}
    for part, entries in split.items():
        seen: dict[int, int] = {}
        small[part] = []
        for path, label, classname in entries:
            if label < 4 and seen.get(label, 0) < per_class[part]:
                seen[label] = seen.get(label, 0) + 1
                small[part].append([path, label, classname])
                target = out / name / "images" / path
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source / "images" / path, target)
    (out / name).mkdir(parents=True, exist_ok=True)
    (out / name / f"split_{name}.json").write_text(json.dumps(small))


def _tiny_params() -> dict:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    vit_visual = {"n_tokens": 2, "depth": 1}
    params.update(
        shots=2,
        seeds=[1],
        datasets=["fashion_mnist", "digits"],
        methods=["zeroshot", "coop", "cocoop", "prograd", "vpt"],
        gram_methods=["coop_gram", "vpt_gram", "unigram"],
    )
    params["backbone"] = {
        "kind": "open_clip",
        "device": "cpu",  # passed explicitly to every stage that runs a model
        "precision": "fp32",
        "open_clip": {"model": "gram-tiny-vit", "pretrained": None},
    }
    params["domain_shift"] = {"source": "fashion_mnist", "targets": ["fashion_mnist_sketch"]}
    params["features"]["batch_size"] = 16
    params["ingest"]["image_size"] = 64
    params["filter"]["min_similarity"] = -1.0  # a random model's similarities mean nothing
    params["topics"]["hdbscan"]["min_cluster_size"] = 5
    params["topics"]["umap"]["n_neighbors"] = 5
    params["topics"]["min_topics"] = 2
    params["domains"].update(k=2, min_points_per_domain=2, montage_topics=2, montage_images=2)
    # a handful of topics: none to hold out for meta-validation
    params["tasks"].update(
        ways=2, num_tasks=4, support_shots=1, query_shots=2, val_topics=0, val_tasks=0
    )
    params["meta"]["train"].update(steps=2, tasks_per_batch=1, checkpoint_every=1, val_every=0)
    params["meta"]["variants"] = {
        "coop": {"learner": "coop", "options": {"n_ctx": 2, "init_words": None}},
        "vpt": {"learner": "vpt", "options": vit_visual},
        "unigram": {"learner": "joint", "options": {"n_ctx": 1, **vit_visual}},
    }
    methods = params["finetune"]["methods"]
    params["finetune"]["train"].update(epochs=1, batch_size=4)
    methods["cocoop"]["train"].update(epochs=1, batch_size=4)
    methods["vpt"] = {"learner": "vpt", "options": vit_visual, "train": {"epochs": 1, "lr": 0.01}}
    # the "+GRAM" rows take their learner options from the variants above (learner.json)
    methods["vpt_gram"] = {"from_meta": "vpt", "train": {"epochs": 1, "lr": 0.01}}
    methods["unigram"] = {"from_meta": "unigram", "train": {"epochs": 1}}
    params["evaluate"]["cross_dataset"] = {"source": "fashion_mnist", "targets": ["digits"]}
    params["evaluate"]["few_shot"] = {"shots": [1], "datasets": ["fashion_mnist"]}
    return params


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{output}"
    return result


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("repo")
    shutil.copy(REPO / "dvc.yaml", root)
    for code in ("stages", "pipeline"):
        shutil.copytree(REPO / code, root / code, ignore=shutil.ignore_patterns("__pycache__"))
    (root / "params.yaml").write_text(yaml.safe_dump(_tiny_params(), sort_keys=False))
    _small_pairs(root / "data" / "embedded" / "pairs")
    downstream = root / "data" / "embedded" / "downstream"
    for name in ("fashion_mnist", "digits"):
        _small_dataset(name, downstream, {"train": 3, "val": 2, "test": 3})
    _small_dataset("fashion_mnist_sketch", downstream, {"train": 0, "val": 0, "test": 3})
    for command in (
        ["git", "init", "-q"],
        DVC + ["init", "-q"],
        ["git", "add", "-A"],
        ["git", "commit", "-qm", "scratch"],
    ):
        _run(command, root)
    _run(DVC + ["repro"], root)
    return root


def test_pipeline_produces_metrics_and_tables(pipeline_run):
    root = pipeline_run
    downstream = json.loads((root / "metrics" / "downstream.json").read_text())
    assert {"base2new", "cross_dataset", "domain_generalization", "few_shot"} <= set(downstream)
    rows = set(downstream["base2new"])
    assert {
        "zeroshot",
        "coop",
        "cocoop",
        "prograd",
        "vpt",
        "coop_gram",
        "vpt_gram",
        "unigram",
    } <= rows
    for result in downstream["base2new"]["coop"].values():
        assert {"base", "new", "h"} <= set(result)
    assert set(downstream["base2new"]["linear_probe"]["fashion_mnist"]) == {"base"}
    headline = json.loads((root / "metrics" / "headline.json").read_text())
    assert {"zeroshot", "coop", "linear_probe"} <= set(headline)
    tables = (root / "results" / "tables.md").read_text()
    assert "CoOp" in tables or "coop" in tables
    assert "### Negative controls (not in the averages)" in tables  # digits, by default
    for name in ("table1", "few_shot", "finetune_loss", "finetune_accuracy"):
        assert (root / "plots" / "evaluate" / f"{name}.csv").read_text().count("\n") > 1, name
    for name in ("ingest", "filter", "topics", "domains", "tasks", "zeroshot"):
        assert json.loads((root / "metrics" / f"{name}.json").read_text())
    assert (root / "models" / "gram" / "unigram" / "phi.pt").exists()


def test_second_repro_has_nothing_to_do(pipeline_run):
    status = _run(DVC + ["status"], pipeline_run).stdout
    assert "changed" not in status and "modified" not in status, status


def test_changing_shots_invalidates_only_the_stages_that_read_it(pipeline_run):
    params_file = pipeline_run / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["shots"] = 1
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        status = json.loads(_run(DVC + ["status", "--json"], pipeline_run).stdout)
    finally:
        params_file.write_text(original)
    finetuned = {f"finetune@{m}" for m in ("zeroshot", "coop", "cocoop", "prograd", "vpt")}
    gram = {f"finetune_gram@{m}" for m in ("coop_gram", "vpt_gram", "unigram")}
    probe = {"linear_probe"}  # the probe's base-to-new and source draws read shots too
    assert set(status) == finetuned | gram | probe | {"evaluate"}  # not CHC/meta
