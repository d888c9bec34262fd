"""The CI lock check (scripts/check_lock.py) on a throw-away DVC repository."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import check_lock  # noqa: E402

DVC_YAML = """\
stages:
  make:
    cmd: cp src.txt out.txt
    deps: [src.txt]
    params: [p]
    outs: [out.txt]
  copy:
    cmd: cp out.txt out2.txt
    deps: [out.txt]
    outs: [out2.txt]
"""


def sh(cwd, *args):
    subprocess.run(args, cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    """A repo whose lock is fresh, cloned so that the DVC outputs are absent, as in CI."""
    base = tmp_path_factory.mktemp("lock")
    repo = base / "repo"
    repo.mkdir()
    (repo / "src.txt").write_text("x\n")
    (repo / "params.yaml").write_text("p: 1\n")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    sh(repo, "git", "init", "-q")
    sh(repo, sys.executable, "-m", "dvc", "init", "-q")
    sh(repo, sys.executable, "-m", "dvc", "repro", "-q")
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    sh(base, "git", "clone", "-q", str(repo), "clone")
    return base / "clone"


@pytest.fixture
def fresh(clone):
    yield clone
    sh(clone, "git", "checkout", "-q", ".")


def test_fresh_lock_passes_although_outputs_are_not_in_cache(fresh, capsys):
    assert check_lock.main(fresh) == 0
    assert "matches" in capsys.readouterr().out


def test_edited_dependency_fails_naming_the_stage_and_file(fresh, capsys):
    (fresh / "src.txt").write_text("edited\n")
    assert check_lock.main(fresh) == 1
    assert capsys.readouterr().err.splitlines()[0] == "dvc.lock: make: dep src.txt modified"


def test_changed_param_command_and_unlocked_stage_each_fail(fresh, capsys):
    (fresh / "params.yaml").write_text("p: 2\n")
    text = DVC_YAML.replace("cp out.txt", "cat out.txt >")
    (fresh / "dvc.yaml").write_text(text + "  new:\n    cmd: echo hi > o3\n    outs: [o3]\n")
    assert check_lock.main(fresh) == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[:3] == [
        "dvc.lock: copy: command changed",
        "dvc.lock: make: param p modified",
        "dvc.lock: new: no entry in dvc.lock",
    ]


def test_a_missing_source_dependency_is_not_excused_as_an_absent_output():
    status = {"make": [{"changed deps": {"src.txt": "deleted", "out.txt": "deleted"}}]}
    lock = {"stages": {"make": {"outs": [{"path": "out.txt"}]}}}
    assert check_lock.stale_entries(status, lock) == {"make": ["dep src.txt deleted"]}


def test_a_folder_filled_only_by_stage_outputs_is_excused_when_absent():
    status = {"report": [{"changed deps": {"logs": "deleted", "notes": "deleted"}}]}
    lock = {"stages": {"report": {}, "run": {"outs": [{"path": "logs/a"}, {"path": "logs/b"}]}}}
    assert check_lock.stale_entries(status, lock) == {"report": ["dep notes deleted"]}
