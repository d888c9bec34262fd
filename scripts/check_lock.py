"""CI check: the committed ``dvc.lock`` describes the committed code, params and commands.

Run from a repository root (CI runs it on a fresh clone): ``python scripts/check_lock.py``.
``dvc status`` there may report outputs "not in cache" or "deleted" (nothing is pulled), and a
stage's dependency on another stage's output "deleted" for the same reason. Anything else
means the committed metrics and tables were not produced by the committed tree: a dependency
"modified" or "new", a changed param, a changed command, a committed (``cache: false``) output
that differs from the lock, or a stage that has no lock entry at all. The check then prints
one line per stage naming what changed and exits 1; the fix is ``dvc repro`` and committing
the new ``dvc.lock`` with its outputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

# What a fresh clone reports for data that lives in the DVC cache rather than in git.
ABSENT = {"not in cache", "deleted"}


def lock_outputs(lock: dict) -> set[str]:
    """Every path some locked stage writes: a dependency on one of them may be absent."""
    return {
        out["path"] for stage in lock.get("stages", {}).values() for out in stage.get("outs", [])
    }


def stale_entries(status: dict, lock: dict) -> dict[str, list[str]]:
    """``dvc status --json`` output -> {stage: [what is stale]}; empty when the lock is fresh."""
    produced = lock_outputs(lock)
    locked = set(lock.get("stages", {}))
    stale: dict[str, list[str]] = {}
    for stage, changes in status.items():
        problems = [] if stage in locked else ["no entry in dvc.lock"]
        for change in changes:
            if change == "changed command":
                problems.append("command changed")
            elif isinstance(change, str):
                problems.append(change)
            else:
                problems += _changed_paths(change, produced)
        if problems:
            stale[stage] = problems
    return stale


def _is_produced(path: str, produced: set[str]) -> bool:
    """``path`` is a stage output, lies inside one, or is a folder of outputs (``evaluate``
    reads ``dvclive/finetune``, which only the finetune stages' outputs fill)."""
    inside = [(path, out) for out in produced] + [(out, path) for out in produced]
    return any(a == b or a.startswith(b.rstrip("/") + "/") for a, b in inside)


def _changed_paths(change: dict, produced: set[str]) -> list[str]:
    problems = []
    for kind, paths in change.items():
        for path, state in paths.items():
            if isinstance(state, dict):  # a params file: {key: "modified" | "new" | "deleted"}
                problems += [f"param {key} {how}" for key, how in sorted(state.items())]
            elif kind == "changed outs" and state in ABSENT:
                continue
            elif kind == "changed deps" and state == "deleted" and _is_produced(path, produced):
                continue
            else:
                problems.append(f"{kind.removeprefix('changed ')[:-1]} {path} {state}")
    return problems


def main(root: str | Path = ".") -> int:
    root = Path(root)
    lock_path = root / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.exists() else {}
    result = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        print(f"check_lock: dvc status failed:\n{result.stderr}", file=sys.stderr)
        return 1
    stale = stale_entries(json.loads(result.stdout or "{}"), lock or {})
    for stage, problems in sorted(stale.items()):
        print(f"dvc.lock: {stage}: {'; '.join(problems)}", file=sys.stderr)
    if stale:
        print(
            f"check_lock: {len(stale)} stage(s) stale; run `dvc repro` and commit dvc.lock "
            "with its outputs",
            file=sys.stderr,
        )
        return 1
    print("check_lock: dvc.lock matches the committed code, params and commands")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
