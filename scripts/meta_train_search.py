"""Size meta-training on the held-out tasks: run ``meta_train`` settings, tabulate the
meta-validation loss and the seconds (README "Meta-training").

Needs the outputs of ``dvc repro tasks`` (data/tasks, data/pairs). Each run starts from
scratch (its own checkpoint folder) with params.yaml's settings and the overrides given::

    python scripts/meta_train_search.py coop steps=200 lr_theta=0.01 \\
        --table results/search/meta_train.md

appends one row per run to the table: variant, overrides, the held-out query loss at the
first / last / best validation, the training query loss (first and last tenth) and seconds.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
import yaml

from pipeline.backbones import load_backbone
from pipeline.config import read_meta
from pipeline.config.meta import META_OVERRIDABLE
from pipeline.meta.tasks import read_task_shards
from pipeline.meta.variant import VariantPaths, meta_train_variant, summary, validation_summary
from pipeline.params import load_params

HEADER = (
    "| variant | setting | val loss start | val loss end | val loss min (step) | "
    "train query loss start / end | seconds |\n|---|---|---:|---:|---:|---:|---:|\n"
)


def one_run(params: dict, variant: str, overrides: dict) -> dict:
    params["meta"]["variants"][variant] = {**params["meta"]["variants"][variant], **overrides}
    cfg = read_meta(params, variant)
    paths = VariantPaths()
    tasks = read_task_shards(paths.tasks)
    val = read_task_shards(paths.tasks / "val")
    torch.manual_seed(cfg["seed"])
    backbone = load_backbone(params["backbone"])
    with tempfile.TemporaryDirectory() as scratch:
        scratch_paths = VariantPaths(live=Path(scratch), checkpoints=Path(scratch))
        result = meta_train_variant(cfg, backbone, tasks, scratch_paths, val_tasks=val)
    used = len(val[: cfg["val_max_tasks"]])
    return {
        **validation_summary(result.validation, used),
        **summary(result.history, "query_loss"),
        "seconds": round(result.seconds, 1),
        "curve": " ".join(f"{result.validation[s]:.3f}@{s}" for s in sorted(result.validation)),
    }


def row(variant: str, overrides: dict, out: dict) -> str:
    setting = ", ".join(f"{k}={v}" for k, v in overrides.items()) or "params.yaml"
    return (
        f"| {variant} | {setting} | {out['val_query_loss_start']:.4f} | "
        f"{out['val_query_loss_end']:.4f} | {out['val_query_loss_min']:.4f} "
        f"({out['val_query_loss_min_step']}) | {out['query_loss_start']:.3f} / "
        f"{out['query_loss_end']:.3f} | {out['seconds']} |\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variant")
    parser.add_argument("overrides", nargs="*", help="key=value of meta.train / the variant")
    parser.add_argument("--table", type=Path, default=Path("results/search/meta_train.md"))
    args = parser.parse_args()
    overrides = dict(o.split("=", 1) for o in args.overrides)
    overrides = {k: yaml.safe_load(v) for k, v in overrides.items()}
    params = load_params()
    variant_keys = {k: v for k, v in overrides.items() if k in META_OVERRIDABLE}
    train_keys = {k: v for k, v in overrides.items() if k not in variant_keys}
    params["meta"]["train"].update(train_keys)
    out = one_run(params, args.variant, variant_keys)
    line = row(args.variant, overrides, out)
    args.table.parent.mkdir(parents=True, exist_ok=True)
    if not args.table.exists():
        args.table.write_text(HEADER)
    with args.table.open("a") as table:
        table.write(line)
    print(line, end="")
    print("meta-validation loss @ step:", out["curve"])


if __name__ == "__main__":
    main()
