"""Profiles (README "Profiles"): conf/ composed by DVC's Hydra integration.

``dvc exp run`` calls ``dvc.utils.hydra.compose_and_dump`` on ``conf/`` before every run; these
tests call the same function, so what they check is what DVC writes into params.yaml.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import tempfile
from pathlib import Path

import pytest
import yaml
from dvc.utils.hydra import compose_and_dump

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
PROFILES = sorted(path.stem for path in (CONF / "profile").glob("*.yaml"))
#: the paths a profile reads from the environment, set to their own names so that the
#: composed values read as the README writes them (`$DATA`)
ENV = {name: f"${name}" for name in ("DATA", "CC3M_TSV", "CLIP_CHECKPOINT")}
#: paper values that the CI-sized profile may change: sizes, and what a CPU needs
SMOKE_MAY_CHANGE = {
    "seeds",
    "backbone.open_clip.model",
    "backbone.open_clip.pretrained",
    "backbone.device",
    "backbone.precision",
    "features.num_workers",
    "embed_pairs.num_workers",
    "filter.min_similarity",
    "topics.backend",
    "tasks.num_tasks",
    "meta.train.steps",
    "meta.train.tasks_per_batch",
    "meta.train.checkpoint_every",
    "meta.train.alignment_every",
    "meta.train.val_every",  # a handful of topics: none to hold out
    "tasks.val_topics",
    "tasks.val_tasks",
    *(f"meta.variants.{v}.{k}" for v in ("vpt", "unigram") for k in ("steps", "tasks_per_batch")),
    "finetune.train.epochs",
    "finetune.train.batch_size",
    *(f"finetune.methods.{m}.train.epochs" for m in ("cocoop", "vpt", "vpt_gram", "unigram")),
    "evaluate.few_shot.epochs",
    "evaluate.few_shot.epochs_by_dataset.ImageNet",
    # sizes the paper does not set either
    "features.batch_size",
    "embed_pairs.batch_size",
    "evaluate.batch_size",
    "ingest.image_size",
    *(f"ingest.download.{k}" for k in ("processes_count", "thread_count", "retries", "timeout")),
    "topics.umap.n_neighbors",
    "topics.hdbscan.min_cluster_size",
    "topics.min_topics",
    *(f"domains.{k}" for k in ("k", "min_points_per_domain", "montage_topics", "montage_images")),
    *(f"tasks.{k}" for k in ("ways", "support_shots", "query_shots")),
}


#: keys the paper profile sets that the base (conf/config.yaml) need not have: options left at
#: their defaults there, and keys proposed with the profile (README "Profiles")
NOT_IN_BASE = {
    "finetune.methods.prograd.options.init_count",
    "evaluate.few_shot.epochs",
    "evaluate.few_shot.epochs_by_dataset.ImageNet",
}


def compose(tmp_path: Path, overrides: list[str]) -> dict:
    out = tmp_path / "params.yaml"
    compose_and_dump(out, str(CONF), None, "config", str(REPO), overrides)
    return yaml.safe_load(out.read_text())


@functools.cache
def composed(*overrides: str) -> dict[str, object]:
    """Leaves of conf/ composed with ``overrides`` under ``ENV`` (cached: one composition
    takes most of a second)."""
    with tempfile.TemporaryDirectory() as scratch, pytest.MonkeyPatch.context() as patch:
        for name, value in ENV.items():
            patch.setenv(name, value)
        return leaves(compose(Path(scratch), list(overrides)))


def leaves(tree: dict, prefix: str = "") -> dict[str, object]:
    """Dotted key -> value for every non-mapping value of ``tree`` (lists are values)."""
    flat: dict[str, object] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(leaves(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def profile_leaves(name: str) -> dict[str, object]:
    raw = yaml.safe_load((CONF / "profile" / f"{name}.yaml").read_text())
    raw.pop("defaults", None)
    return leaves(raw)


def readme_paper_table() -> dict[str, object]:
    """The README's table of paper values: dotted key -> value (the cells are YAML)."""
    text = (REPO / "README.md").read_text()
    start = text.index("### The paper profile, value by value")
    rows: dict[str, object] = {}
    for line in text[start:].splitlines()[1:]:
        if line.startswith("#"):
            break
        match = re.match(r"\| `([^`]+)` \| `([^`]*)` \|", line)
        if match:
            assert match[1] not in rows, f"README lists {match[1]} twice"
            rows[match[1]] = yaml.safe_load(match[2])
    return leaves(rows)  # a row may give a mapping: `a.b` `{c: 1}` is the value of a.b.c


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def test_committed_params_yaml_is_conf_composed_with_the_default_profile(tmp_path):
    compose_and_dump(tmp_path / "params.yaml", str(CONF), None, "config", str(REPO), [])
    assert (tmp_path / "params.yaml").read_bytes() == (REPO / "params.yaml").read_bytes(), (
        "params.yaml is stale: run python scripts/compose_params.py"
    )
    assert yaml.safe_load((REPO / "params.yaml").read_text())["profile"] == "embedded"


@pytest.mark.parametrize("name", PROFILES)
def test_every_profile_composes_and_records_its_name(tmp_path, name):
    params = compose(tmp_path, [f"profile={name}"])
    assert params["profile"] == name
    unset = [key for key, value in leaves(params).items() if value == "???"]
    assert not unset, f"profile {name} leaves {unset} unset"


def test_profiles_offered():
    assert {"embedded", "paper", "paper-cpu-smoke"} <= set(PROFILES)


def test_an_override_wins_over_the_profile_in_either_order(tmp_path):
    for overrides in (["profile=paper", "shots=4"], ["shots=4", "profile=paper"]):
        params = compose(tmp_path, overrides)
        chosen = (params["profile"], params["shots"], params["backbone"]["kind"])
        assert chosen == ("paper", 4, "open_clip")


#: the other reading of each ambiguous paper setting, one override away (README table)
OTHER_READINGS = [
    ("backbone.precision=fp32", {"backbone.precision": "fp32"}),
    ("finetune.train.batch_size=1", {"finetune.train.batch_size": 1}),
    ("finetune.augment.mode=cached", {"finetune.augment.mode": "cached"}),
    ("finetune.methods.prograd.options.n_ctx=4", {"finetune.methods.prograd.options.n_ctx": 4}),
    (
        "finetune.methods.prograd.options.init_count=tokens",
        {"finetune.methods.prograd.options.init_count": "tokens"},
    ),
    ("meta.train.second_order=false", {"meta.train.second_order": False}),
    ("meta.train.optimizer=adam", {"meta.train.optimizer": "adam"}),
    ("meta.regulator.init=identity", {"meta.regulator.init": "identity"}),
    ("topics.fit_sample_size=100000", {"topics.fit_sample_size": 100000}),
    ("shots=4", {"shots": 4}),
    (
        "meta.variants.vpt.options.depth=12",
        {
            "meta.variants.vpt.options.depth": 12,
            "meta.variants.unigram.options.depth": 12,
            "finetune.methods.vpt.options.depth": 12,
        },
    ),
]


@pytest.mark.parametrize(("override", "expected"), OTHER_READINGS)
def test_the_other_reading_is_one_override_away(override, expected):
    paper = composed("profile=paper")
    changed = composed("profile=paper", override)
    assert {key: changed[key] for key in expected} == expected
    assert {key for key in paper if changed[key] != paper[key]} == set(expected)


def test_paper_profile_reads_paths_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA", "/datasets/coop")
    params = compose(tmp_path, ["profile=paper"])
    assert params["data"]["root"] == "/datasets/coop"
    monkeypatch.delenv("DATA")
    with pytest.raises(Exception, match="DATA"):
        compose(tmp_path, ["profile=paper"])


def test_paper_profile_sets_only_keys_the_base_has():
    """A misspelt key would silently add a new one: every key set must exist in the base."""
    base = composed()
    unknown = sorted(set(profile_leaves("paper")) - set(base) - NOT_IN_BASE - {"profile"})
    assert not unknown, f"conf/profile/paper.yaml sets keys conf/config.yaml lacks: {unknown}"


def test_readme_table_lists_every_paper_value_as_composed():
    table = readme_paper_table()
    written = profile_leaves("paper")
    assert set(table) == set(written), (
        f"README table misses {sorted(set(written) - set(table))}; "
        f"lists keys the profile does not set: {sorted(set(table) - set(written))}"
    )
    paper = composed("profile=paper")
    wrong = {key: (value, paper[key]) for key, value in table.items() if paper[key] != value}
    assert not wrong, f"README value != composed paper profile (README, composed): {wrong}"


def test_cpu_smoke_profile_changes_only_sizes_of_the_paper():
    paper = composed("profile=paper")
    smoke = composed("profile=paper-cpu-smoke")
    assert set(smoke) == set(paper)
    changed = {key for key in paper if smoke[key] != paper[key]} - {"profile"}
    assert changed <= SMOKE_MAY_CHANGE, f"not a size: {sorted(changed - SMOKE_MAY_CHANGE)}"
    assert {"meta.train.second_order", "ingest.source", "datasets"}.isdisjoint(changed)


def test_compose_script_checks_and_rewrites_params(tmp_path, capsys):
    path = REPO / "scripts" / "compose_params.py"
    spec = importlib.util.spec_from_file_location("compose_params", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--check"]) == 0
    stale = tmp_path / "params.yaml"
    stale.write_text("shots: 16\n")
    assert script.main(["--check", "--output", str(stale)]) == 1
    assert "run python scripts/compose_params.py" in capsys.readouterr().err
    assert script.main(["profile=paper", "--output", str(stale)]) == 0
    assert yaml.safe_load(stale.read_text())["profile"] == "paper"
    assert script.main(["profile=nope", "--output", str(stale)]) == 2
    assert "Could not find 'profile/nope'" in capsys.readouterr().err
    assert yaml.safe_load(stale.read_text())["profile"] == "paper"  # left as it was
