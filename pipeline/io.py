"""Small helpers for stage outputs: stable JSON, atomic writes, dvclive loggers, seeding."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def write_json(path: str | Path, payload: Any) -> None:
    """Write JSON with sorted keys and a trailing newline, so equal results give equal bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def save_atomic(payload: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file, then rename it: a kill or a reader running in
    parallel never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save(payload, partial)
    os.replace(partial, path)


def open_live(directory: str | Path):
    """A dvclive logger that writes no dvc.yaml and saves no experiment itself (the stage's
    outputs are DVC's business)."""
    from dvclive import Live
    from scmrepo.exceptions import SCMError

    try:
        return Live(str(directory), save_dvc_exp=False, dvcyaml=None, report=None)
    except SCMError as error:  # dvclive 3.49 reads HEAD before checking for commits
        raise RuntimeError(
            f"dvclive cannot log to {directory}: {error}. Commit once (`git commit`) first"
        ) from error
