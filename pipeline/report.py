"""``results/tables.md``: our numbers laid out like GRAM's Tables 1-3, plus the few-shot
curve."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .aggregation import nested_get
from .protocol import Protocols

#: GRAM's row order (Tables 1-3), then the methods GRAM does not list
ROW_ORDER = ("zeroshot", "cocoop", "coop", "coop_gram", "vpt", "vpt_gram", "unigram", "prograd")
ROW_LABELS = {
    "zeroshot": "CLIP",
    "cocoop": "CoCoOp",
    "coop": "CoOp",
    "coop_gram": "+ GRAM",
    "vpt": "VPT",
    "vpt_gram": "+ GRAM",
    "unigram": "UNIGRAM",
    "prograd": "ProGrad",
}


def _rows(methods) -> list[str]:
    known = [m for m in ROW_ORDER if m in methods]
    return known + sorted(m for m in methods if m not in ROW_ORDER)


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines + [""]


def tables_markdown(metrics: Mapping, protocols: Protocols, note: str = "") -> str:
    """``results/tables.md``: our numbers laid out like GRAM's Tables 1-3 (plus the few-shot
    curve), one row per method in GRAM's order; means over seeds, std in downstream.json."""
    seeds = metrics.get("seeds", [])
    lines = [
        "# Downstream results",
        "",
        f"Accuracy (%), mean over seeds {seeds}; {protocols.shots} shots per class "
        "unless stated. Standard deviations are in `metrics/downstream.json` (`std`).",
    ]
    if note:
        lines += ["", note]
    lines.append("")
    lines += _base_to_new_table(metrics.get("base2new", {}), protocols)
    lines += _generalisation_tables(metrics, protocols)
    lines += _few_shot_tables(metrics.get("few_shot", {}), protocols)
    return "\n".join(lines).rstrip() + "\n"


def _base_to_new_table(base2new: Mapping, protocols: Protocols) -> list[str]:
    """GRAM Table 1: (a) the average over datasets, then one sub-table per dataset."""
    if not base2new:
        return []
    lines = [
        "## Table 1: base-to-new generalisation",
        "",
        "Prompts learned on the base classes. H: harmonic mean of base and new (for the "
        "average, of the averaged base and new).",
        "",
    ]
    groups = [("average", f"Average over {len(protocols.datasets)} datasets")]
    groups += [(name, name) for name in protocols.datasets]
    for letter, (key, title) in zip("abcdefghijklmnopqrstuvwxyz", groups, strict=False):
        rows = [
            [ROW_LABELS.get(m, m)]
            + [_cell(nested_get(base2new[m], (key, part))) for part in ("base", "new", "h")]
            for m in _rows(base2new)
        ]
        lines += [f"({letter}) {title}", ""] + _table(["", "Base", "New", "H"], rows)
    return lines


def _generalisation_tables(metrics: Mapping, protocols: Protocols) -> list[str]:
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
        rows = [
            [ROW_LABELS.get(m, m)] + [_cell(nested_get(block[m], (c,))) for c in columns]
            for m in _rows(block)
        ]
        lines += [
            f"## Table {number}: {title}",
            "",
            f"Prompts learned on {source} (all classes); Average over the targets.",
            "",
        ]
        lines += _table(["", f"Source: {source}", *targets, "Average"], rows)
    return lines


def _few_shot_tables(few_shot: Mapping, protocols: Protocols) -> list[str]:
    """ProGrad's few-shot curve: one table per dataset (and their average), K per column."""
    if not few_shot:
        return []
    shots = [str(k) for k in protocols.few_shot_shots]
    column = "average" if len(protocols.few_shot_datasets) > 1 else None
    names = ([column] if column else []) + list(protocols.few_shot_datasets)
    lines = ["## Few-shot curve", "", "All classes; K shots per class.", ""]
    for name in names:
        rows = [
            [ROW_LABELS.get(m, m)] + [_cell(nested_get(few_shot[m], (k, name))) for k in shots]
            for m in _rows(few_shot)
        ]
        lines += [f"{name}", ""] + _table(["", *[f"{k} shots" for k in shots]], rows)
    return lines
