"""DVC stage `evaluate`: gather every finetune run and the linear probe into metrics, tables
and the data of the paper's plots.

Reads params: methods, gram_methods (the rows), seeds, shots, datasets, backbone.kind,
domain_shift, evaluate.{cross_dataset, few_shot, negative_controls}.
Reads: results/downstream/runs/<method>/seed<seed>/{main,few_shot}.json of those rows
(older files of methods or seeds no longer in params are ignored),
results/downstream/probe/seed<seed>.json (the linear_probe stage), and the per-epoch training
logs dvclive/finetune/<method>/seed<seed>/<part>/<run>/.
Writes: metrics/headline.json (each row's base / new / H average), metrics/downstream.json
(means over seeds; ``std`` beside them in the same shape), results/tables.md (GRAM Tables
1-3 layout, plus the few-shot curve; mean ± std), plots/evaluate/*.csv (README "Plots").
"""

from __future__ import annotations

from pathlib import Path

from pipeline.aggregation import aggregate, headline, read_probe_results, read_run_results
from pipeline.config import method_rows, read_protocols, read_seed
from pipeline.errors import UserError, run_stage
from pipeline.figures import few_shot_rows, finetune_curve_rows, table1_rows, write_csv
from pipeline.io import write_json
from pipeline.params import ParamError, get, load_params
from pipeline.report import PLOT_LABELS, PROBE, row_order, tables_markdown

RUNS = Path("results/downstream/runs")
PROBES = Path("results/downstream/probe")
LIVE = Path("dvclive/finetune")
PLOTS = Path("plots/evaluate")


def read_controls(params) -> list[str]:
    """``evaluate.negative_controls``: dataset names (missing: none)."""
    controls = (params.get("evaluate") or {}).get("negative_controls") or []
    if not isinstance(controls, list) or not all(isinstance(c, str) for c in controls):
        raise ParamError(
            f"params.yaml: evaluate.negative_controls must be a list of dataset names, "
            f"got {controls!r}"
        )
    return controls


def _label(method: str) -> str:
    return PLOT_LABELS.get(method, method)


def write_plot_data(metrics: dict, protocols, methods, seeds, controls) -> None:
    rows = row_order([*methods, PROBE])
    write_csv(
        PLOTS / "table1.csv",
        ["method", "part", "accuracy", "std"],
        table1_rows(metrics, rows, _label),
    )
    write_csv(
        PLOTS / "few_shot.csv",
        ["panel", "method", "kind", "shots", "accuracy", "std"],
        few_shot_rows(metrics, rows, protocols, _label, controls),
    )
    for metric in ("loss", "accuracy"):
        write_csv(
            PLOTS / f"finetune_{metric}.csv",
            ["panel", "method", "kind", "epoch", metric],
            finetune_curve_rows(LIVE, row_order(methods), seeds, metric, _label),
        )


def main() -> None:
    params = load_params()
    protocols = read_protocols(params)
    methods = method_rows(params)
    seeds = [read_seed(seed) for seed in get(params, "seeds")]
    controls = read_controls(params)
    results = read_run_results(RUNS, methods, seeds)
    missing = [m for m in methods if m not in results]
    if missing:
        raise UserError(f"{RUNS}: no results for method(s) {missing}; run their finetune stages")
    probe = read_probe_results(PROBES, seeds)
    if sorted(probe) != sorted(seeds):
        absent = sorted(set(seeds) - set(probe))
        raise UserError(f"{PROBES}: no probe for seed(s) {absent}; run the linear_probe stage")
    results[PROBE] = probe
    metrics = aggregate(results, protocols, controls).as_json(seeds)
    write_json("metrics/headline.json", headline(metrics, row_order([*methods, PROBE])))
    write_json("metrics/downstream.json", metrics)
    note = f"Backbone: `{params['backbone']['kind']}`."
    tables = tables_markdown(metrics, protocols, note, controls)
    Path("results").mkdir(exist_ok=True)
    Path("results/tables.md").write_text(tables)
    write_plot_data(metrics, protocols, methods, seeds, controls)
    print(tables)


if __name__ == "__main__":
    run_stage(main)
