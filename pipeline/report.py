"""``results/tables.md``: our numbers laid out like GRAM's Tables 1-3, plus the few-shot
curve; every cell is the mean ± std over seeds (README "Results")."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .aggregation import nested_get
from .protocol import Protocols

#: GRAM's row order (Tables 1-3), then the methods GRAM does not list, then the probe
ROW_ORDER = ("zeroshot", "cocoop", "coop", "coop_gram", "vpt", "vpt_gram", "unigram", "prograd")
PROBE = "linear_probe"
ROW_LABELS = {
    "zeroshot": "CLIP",
    "cocoop": "CoCoOp",
    "coop": "CoOp",
    "coop_gram": "+ GRAM",
    "vpt": "VPT",
    "vpt_gram": "+ GRAM",
    "unigram": "UNIGRAM",
    "prograd": "ProGrad",
    PROBE: "Linear probe",
}

#: In a table a "+ GRAM" row sits under its base method; a plot has no such layout, so its
#: legend names both (two rows of one label would be drawn as one).
PLOT_LABELS = {**ROW_LABELS, "coop_gram": "CoOp + GRAM", "vpt_gram": "VPT + GRAM"}

#: stated in every tables.md: when a difference between two rows counts
DIFFERENCE_RULE = (
    "A difference between two rows counts only when it is larger than both rows' std "
    "(the spread over seeds); smaller differences are noise."
)


def row_order(methods) -> list[str]:
    """Rows in GRAM's order, then the others by name, the linear probe last."""
    known = [m for m in ROW_ORDER if m in methods]
    rest = sorted(m for m in methods if m not in ROW_ORDER and m != PROBE)
    return known + rest + ([PROBE] if PROBE in methods else [])


def _label(method: str) -> str:
    return ROW_LABELS.get(method, method)


class Cells:
    """``mean ± std`` of one entry of metrics/downstream.json; "n/a" where the linear probe
    is not defined (classes it never saw), "-" where a result is missing."""

    def __init__(self, metrics: Mapping):
        self.metrics, self.std = metrics, metrics.get("std", {})

    def __call__(self, setting: str, method: str, *key: str) -> str:
        mean = nested_get(self.metrics, (setting, method, *key))
        if mean is None:
            return "n/a" if method == PROBE else "-"
        std = nested_get(self.std, (setting, method, *key))
        return f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def tables_markdown(
    metrics: Mapping, protocols: Protocols, note: str = "", controls: Sequence[str] = ()
) -> str:
    """``results/tables.md``: GRAM's Tables 1-3 (plus the few-shot curve), one row per method
    in GRAM's order and the linear probe last; ``controls`` (negative-control datasets) get
    their own section and are out of every average."""
    seeds = metrics.get("seeds", [])
    lines = [
        "# Downstream results",
        "",
        f"Accuracy (%), mean ± std over seeds {seeds} (std with ddof 0); "
        f"{protocols.shots} shots per class unless stated. {DIFFERENCE_RULE} "
        "Linear probe: logistic regression on the frozen image features of the same "
        "few-shot split, C chosen on val; n/a on classes it never saw.",
    ]
    if controls:
        lines += [
            "",
            f"Negative controls {list(controls)} (zero-shot at chance) are reported in their "
            "own section and marked (control) where they are a target; no average includes "
            "them.",
        ]
    if note:
        lines += ["", note]
    lines.append("")
    cells = Cells(metrics)
    lines += _base_to_new_tables(metrics.get("base2new", {}), protocols, cells, controls)
    lines += _generalisation_tables(metrics, protocols, cells, controls)
    lines += _few_shot_tables(metrics.get("few_shot", {}), protocols, cells, controls)
    return "\n".join(lines).rstrip() + "\n"


def _base_to_new_tables(
    base2new: Mapping, protocols: Protocols, cells: Cells, controls: Sequence[str]
) -> list[str]:
    """GRAM Table 1: (a) the average over datasets, then one sub-table per dataset; the
    negative controls after them, in their own section."""
    if not base2new:
        return []
    headline = [n for n in protocols.datasets if n not in controls]
    control = [n for n in protocols.datasets if n in controls]
    lines = [
        "## Table 1: base-to-new generalisation",
        "",
        "Prompts learned on the base classes. H: harmonic mean of base and new (for the "
        "average, of the averaged base and new).",
        "",
    ]
    groups = [("average", f"Average over {len(headline)} datasets")] if headline else []
    groups += [(name, name) for name in headline]
    letters = iter("abcdefghijklmnopqrstuvwxyz")
    for key, title in groups:
        lines += _base_to_new_table(base2new, cells, key, f"({next(letters)}) {title}")
    if control:
        lines += ["### Negative controls (not in the averages)", ""]
        for name in control:
            lines += _base_to_new_table(base2new, cells, name, f"({next(letters)}) {name}")
    return lines


def _base_to_new_table(base2new: Mapping, cells: Cells, key: str, title: str) -> list[str]:
    rows = [
        [_label(m)] + [cells("base2new", m, key, part) for part in ("base", "new", "h")]
        for m in row_order(base2new)
    ]
    return [title, ""] + _table(["", "Base", "New", "H"], rows)


def _generalisation_tables(
    metrics: Mapping, protocols: Protocols, cells: Cells, controls: Sequence[str]
) -> list[str]:
    """GRAM Table 2 (domain generalisation) and Table 3 (cross-dataset)."""
    lines: list[str] = []
    for number, setting, title, source, targets in (
        (
            2,
            "domain_generalization",
            "domain generalisation",
            protocols.domain_source,
            protocols.domain_targets,
        ),
        (
            3,
            "cross_dataset",
            "cross-dataset generalisation",
            protocols.cross_source,
            protocols.cross_targets,
        ),
    ):
        block = metrics.get(setting, {})
        if not block or source is None:
            continue
        columns = [source, *targets, "average"]
        rows = [[_label(m)] + [cells(setting, m, c) for c in columns] for m in row_order(block)]
        names = [f"{t} (control)" if t in controls else t for t in targets]
        lines += [
            f"## Table {number}: {title}",
            "",
            f"Prompts learned on {source} (all classes); Average over the targets.",
            "",
        ]
        lines += _table(["", f"Source: {source}", *names, "Average"], rows)
    return lines


def _few_shot_tables(
    few_shot: Mapping, protocols: Protocols, cells: Cells, controls: Sequence[str]
) -> list[str]:
    """ProGrad's few-shot curve: one table per dataset (and their average), K per column."""
    if not few_shot:
        return []
    shots = [str(k) for k in protocols.few_shot_shots]
    averaged = [n for n in protocols.few_shot_datasets if n not in controls]
    names = (["average"] if len(averaged) > 1 else []) + list(protocols.few_shot_datasets)
    lines = ["## Few-shot curve", "", "All classes; K shots per class.", ""]
    for name in names:
        rows = [
            [_label(m)] + [cells("few_shot", m, k, name) for k in shots]
            for m in row_order(few_shot)
        ]
        title = f"{name} (control)" if name in controls else name
        lines += [title, ""] + _table(["", *[f"{k} shots" for k in shots]], rows)
    return lines
