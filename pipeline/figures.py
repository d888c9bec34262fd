"""The data behind the paper's pictures, as the flat CSV files `dvc plots show` reads
(README "Plots"): GRAM Table 1 as grouped bars, the few-shot curve (ProGrad Fig. 2 / CoOp
Fig. 3), and the per-epoch fine-tuning curves. Fig. 3b (gradient cosine over meta-training)
is drawn straight from meta_train's dvclive logs.

Every file is long-form (one row per value, the series in a column) so one plot template
draws any number of methods.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .aggregation import nested_get
from .protocol import Protocols
from .report import PLOT_LABELS, PROBE, row_order

#: rows drawn as references (dashed) in the few-shot curve
REFERENCES = ("zeroshot", "linear_probe")


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """Rows in order, with ``\\n`` line ends, so equal data gives equal bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def table1_rows(metrics: Mapping, methods: Sequence[str], label) -> list[list]:
    """GRAM Table 1 (a), the average over datasets: (method, part, accuracy, std) for
    base, new and H of every row that has them."""
    rows = []
    for method in methods:
        for part in ("base", "new", "h"):
            key = ("base2new", method, "average", part)
            mean = nested_get(metrics, key)
            if mean is not None:
                std = nested_get(metrics.get("std", {}), key)
                rows.append([label(method), part.upper() if part == "h" else part, mean, std])
    return rows


def few_shot_rows(
    metrics: Mapping, methods: Sequence[str], protocols: Protocols, label, controls=()
) -> list[list]:
    """(panel, method, kind, shots, accuracy, std): the curve of every row on the average
    over datasets (when there are several) and on each dataset."""
    averaged = [n for n in protocols.few_shot_datasets if n not in controls]
    panels = (["average"] if len(averaged) > 1 else []) + list(protocols.few_shot_datasets)
    rows = []
    for panel in panels:
        for method in methods:
            kind = "reference" if method in REFERENCES else "prompt"
            for shots in protocols.few_shot_shots:
                key = ("few_shot", method, str(shots), panel)
                mean = nested_get(metrics, key)
                if mean is not None:
                    std = nested_get(metrics.get("std", {}), key)
                    rows.append([panel, label(method), kind, shots, mean, std])
    return rows


def read_live_curve(path: Path) -> dict[int, float]:
    """step -> value of one dvclive ``.tsv`` (columns: step, <metric>, optional timestamp)."""
    with path.open() as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        name = [f for f in reader.fieldnames or () if f not in ("step", "timestamp")][0]
        return {int(row["step"]): float(row[name]) for row in reader}


def finetune_curve_rows(
    live: Path, methods: Sequence[str], seeds: Sequence[int], metric: str, label
) -> list[list]:
    """(run, method, kind, epoch, <metric> mean over seeds) of every part's runs, from
    ``live/<method>/seed<seed>/<part>/<run>/plots/metrics/train/<metric>.tsv``; an epoch
    counts only when every seed logged it. Rows with nothing to train log nothing."""
    rows = []
    for method in methods:
        curves: dict[str, list[dict[int, float]]] = {}
        pattern = f"*/*/plots/metrics/train/{metric}.tsv"
        for seed in seeds:
            for path in sorted((live / method / f"seed{seed}").glob(pattern)):
                run = path.parents[3].name
                curves.setdefault(run, []).append(read_live_curve(path))
        for run, per_seed in sorted(curves.items()):
            if len(per_seed) != len(seeds):
                continue
            epochs = sorted(set.intersection(*(set(c) for c in per_seed)))
            for epoch in epochs:
                mean = float(np.mean([c[epoch] for c in per_seed]))
                rows.append([run, label(method), "prompt", epoch + 1, round(mean, 4)])
    return rows


def _plot_label(method: str) -> str:
    return PLOT_LABELS.get(method, method)


def write_plot_data(
    folder: Path,
    live: Path,
    metrics: Mapping,
    protocols: Protocols,
    methods: Sequence[str],
    seeds: Sequence[int],
    controls: Sequence[str],
) -> None:
    """Every CSV of the evaluate stage's plots under ``folder`` (README "Plots"): Table 1's
    bars and the few-shot curve with the linear probe, the fine-tuning curves (read from the
    dvclive logs under ``live``) without it (a probe has no epochs)."""
    rows = row_order([*methods, PROBE])
    write_csv(
        folder / "table1.csv",
        ["method", "part", "accuracy", "std"],
        table1_rows(metrics, rows, _plot_label),
    )
    write_csv(
        folder / "few_shot.csv",
        ["panel", "method", "kind", "shots", "accuracy", "std"],
        few_shot_rows(metrics, rows, protocols, _plot_label, controls),
    )
    for metric in ("loss", "accuracy"):
        write_csv(
            folder / f"finetune_{metric}.csv",
            ["panel", "method", "kind", "epoch", metric],
            finetune_curve_rows(live, row_order(methods), seeds, metric, _plot_label),
        )
