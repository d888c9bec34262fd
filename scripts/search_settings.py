"""Choose each learner's lr and epochs on VALIDATION data only (README "Settings chosen on
validation").

For every grid point (learner, lr, epochs), seed and dataset: draw the base-to-new base
training set exactly as the ``finetune`` stage does (``shots`` per class of the base half,
seeded), train the learner with ``pipeline.training.train`` and score it on held-out images
of its training classes: the dataset's val split plus the train images the few-shot draw left
out. Test splits are never read. Zero-shot is scored on the same images, so a gain is
measured against the same sample. Prints a markdown table (mean +/- std over seeds) and, with
``--out``, writes it with the date, machine and grid.

    nice -n 10 .venv/bin/python scripts/search_settings.py --out results/search/settings.md
    .venv/bin/python scripts/search_settings.py --learners coop --seeds 1  # one quick look

Reads params.yaml for the backbone, datasets, shots, finetune.train / finetune.augment and
each row's options; the grid below overrides only lr and epochs (and ProGrad's lambda).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from pipeline import backbones  # noqa: E402
from pipeline.config.downstream import read_augment, read_features, read_method  # noqa: E402
from pipeline.data import DatasetSplits, few_shot_splits, load_dataset  # noqa: E402
from pipeline.data.fewshot import subsample_classes  # noqa: E402
from pipeline.evaluation import evaluate  # noqa: E402
from pipeline.learners import build_learner  # noqa: E402
from pipeline.meta.artifacts import load_meta_prompt  # noqa: E402
from pipeline.params import data_root, dataset_spec, load_params  # noqa: E402
from pipeline.training import cached_training_set, train  # noqa: E402
from pipeline.training_images import image_training_set  # noqa: E402


@dataclass(frozen=True)
class Point:
    """One grid point: a ``finetune.methods`` row (or a learner kind with ``options``) and
    the training settings that override the row's."""

    row: str
    train: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    learner: str | None = None  # None: the row's learner

    def label(self) -> str:
        parts = [f"{k}={v}" for k, v in {**self.train, **self.options}.items()]
        return " ".join([self.row, *parts])


TEXT_LRS = (0.002, 0.02, 0.2, 1.0)
# (pixel lr, epochs, batch size) of the visual prompt rows
VISUAL_GRID = ((10.0, 1, 32), (10.0, 1, 8), (10.0, 2, 8), (2.5, 2, 8), (2.5, 4, 8), (1.0, 4, 8))


def default_grid() -> list[Point]:
    """The settings that matter per learner (lr, epochs; ProGrad's lambda). Textual learners
    are cheap on cached features. The visual ones re-encode images every step, so a step
    costs its batch's images whatever its size: their grid trades batch size (steps per
    epoch at the same cost) against epochs. The "+GRAM" rows start from their theta* and
    step with R_phi (models/gram/<variant>, from `dvc repro meta_train`). The joint
    learner's pixel lr is lr x lr_scale (README "Learner options")."""
    grid = [Point("coop", {"lr": lr, "epochs": 10}) for lr in TEXT_LRS]
    grid += [Point("coop", {"lr": 0.2, "epochs": e}) for e in (5, 20)]
    grid += [Point("prograd", {"lr": lr, "epochs": 10}) for lr in TEXT_LRS[:3]]
    grid += [Point("prograd", {"lr": 0.2, "epochs": 10}, {"lambda": 0.5})]
    grid += [Point("cocoop", {"lr": lr, "epochs": 2}) for lr in (0.002, 0.02, 0.05, 0.2)]
    grid += [Point("cocoop", {"lr": 0.05, "epochs": 4})]
    for row in ("vpt", "vpt_gram"):
        grid += [
            Point(row, {"lr": lr, "epochs": epochs, "batch_size": batch})
            for lr, epochs, batch in VISUAL_GRID
        ]
    grid += [
        Point("unigram", {"epochs": epochs, "batch_size": batch, "lr_scale": {"visual_prompt": s}})
        for epochs, batch, s in (
            (1, 32, 50),
            (1, 8, 50),
            (2, 8, 50),
            (2, 8, 10),
            (4, 8, 12.5),
            (4, 8, 5),
        )
    ]
    return grid


def held_out(full: DatasetSplits, drawn: DatasetSplits, which: str) -> list:
    """Val split plus the train images the few-shot draw did not take, ``which`` classes."""
    taken = {d.path for d in drawn.train}
    rest = [d for d in full.train if d.path not in taken] + list(full.val)
    return subsample_classes(rest, which, num_classes=full.num_classes)


def build(point: Point, params: dict, backbone, run: DatasetSplits, seed: int):
    """The learner, its training config and its "+GRAM" hooks (theta*, R_phi) for
    ``point`` (row settings, then the grid's)."""
    hooks = {}
    if point.learner is None:
        method = read_method(params, point.row, seed)
        kind, options, config = method.learner, dict(method.options), method.train
        if method.meta_dir is not None:
            meta = load_meta_prompt(method.meta_dir)
            hooks = {"init_state": meta.theta, "gradient_transform": meta.gradient_transform()}
    else:
        kind, options = point.learner, dict(point.options)
        config = read_method(params, "coop", seed).train  # finetune.train, no row overrides
    options.update({k: v for k, v in point.options.items() if point.learner is None})
    config = replace(config, **{k: v for k, v in point.train.items()})
    learner = build_learner(
        kind,
        backbone,
        run.classnames,
        options,
        template=run.template,
        prograd_template=run.prograd_template,
        seed=seed,
    )
    return learner, config, hooks


def score(learner, items, classnames, template, features) -> float:
    return evaluate(learner, items, classnames, template, features_options=features).percent


def run_point(point, params, backbone, datasets, seed, shots) -> dict[str, tuple[float, float]]:
    """dataset -> (val accuracy on the training classes, seconds of training)."""
    augment, features = read_augment(params), read_features(params)
    out = {}
    for name, full in datasets.items():
        run = few_shot_splits(full, shots, seed, "base")
        learner, config, hooks = build(point, params, backbone, run, seed)
        started = time.perf_counter()
        if learner.prompt_parameters():
            paths = [d.path for d in run.train]
            labels = [d.label for d in run.train]
            if learner.needs_images:
                data = image_training_set(backbone, paths, labels, augment.views, augment.seed)
            else:
                teacher = learner.teacher(run.prograd_template, run.classnames)
                data = cached_training_set(
                    backbone, paths, labels, augment.views, augment.seed, teacher, features
                )
            train(learner, data, config, desc=point.label(), **hooks)
        seconds = time.perf_counter() - started
        items = held_out(full, run, "base")
        out[name] = (score(learner, items, run.classnames, run.template, features), seconds)
    return out


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {std:.1f}"


def table(results: dict, names: list[str]) -> str:
    """Markdown: one row per grid point, val accuracy mean +/- std per dataset, the gain of
    the mean over zero-shot, and the mean training seconds per run."""
    zero = {n: statistics.mean(acc[n] for acc in results["zeroshot"][0]) for n in names}
    head = "| setting | " + " | ".join(f"{n} val | gain" for n in names) + " | s/run |"
    lines = [head, "|" + "---|" * (2 * len(names) + 2)]
    for label, (accs, secs) in results.items():
        cells = []
        for n in names:
            values = [acc[n] for acc in accs]
            gain = statistics.mean(values) - zero[n]
            cells.append(f"{mean_std(values)} | {gain:+.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {statistics.mean(secs):.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--learners", nargs="*", help="grid rows to run (default: all)")
    parser.add_argument("--seeds", nargs="*", type=int, default=[1, 2, 3])
    parser.add_argument("--datasets", nargs="*", default=["clipart", "fashion_mnist"])
    parser.add_argument("--only", nargs="*", help="grid points by label, in this order")
    parser.add_argument("--out", type=Path, help="write the table here (markdown)")
    args = parser.parse_args()

    params = load_params()
    shots = int(params["shots"])
    root = data_root(params)
    datasets = {n: load_dataset(dataset_spec(params, n), root) for n in args.datasets}
    backbone = backbones.load_backbone(params["backbone"])
    grid = [p for p in default_grid() if not args.learners or p.row in args.learners]
    if args.only:
        by_label = {p.label(): p for p in grid}
        grid = [by_label[label] for label in args.only]
    grid = [Point("zeroshot"), *grid]
    results: dict[str, tuple[list, list]] = {}
    for point in grid:
        accs, secs = [], []
        for seed in args.seeds:
            got = run_point(point, params, backbone, datasets, seed, shots)
            accs.append({n: a for n, (a, _) in got.items()})
            secs.append(sum(s for _, s in got.values()))
            print(f"{point.label()} seed {seed}: {accs[-1]}", flush=True)
        results[point.label()] = (accs, secs)
        # rewritten after every point, so an interrupted search keeps what it measured
        write_table(args, params, backbone, datasets, grid, results, shots)


def write_table(args, params, backbone, datasets, grid, results, shots) -> None:
    text = table(results, args.datasets)
    print(text, flush=True)
    if not args.out:
        return
    sizes = {
        n: len(held_out(d, few_shot_splits(d, shots, 1, "base"), "base"))
        for n, d in datasets.items()
    }
    header = [
        "# Settings searched on validation (scripts/search_settings.py)",
        "",
        f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC; machine: "
        f"{platform.machine()} {platform.processor() or ''}, {torch.get_num_threads()} threads "
        "(shared with other jobs: s/run is loaded wall time)",
        f"- backbone: {backbone.name}, logit scale {backbone.logit_scale:g}; shots {shots}; "
        f"seeds {args.seeds}",
        f"- scored on: base classes, val split + train images not drawn (seed 1: {sizes} "
        "images); test never read. gain: mean minus zero-shot's mean on the same images",
        "- grid (row: settings over params.yaml's): " + "; ".join(p.label() for p in grid),
        "",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header) + text + "\n")


if __name__ == "__main__":
    main()
