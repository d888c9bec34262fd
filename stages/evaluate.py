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

from pipeline.aggregation import aggregate, headline, read_all_results
from pipeline.config import method_rows, read_negative_controls, read_protocols, read_seeds
from pipeline.errors import run_stage
from pipeline.figures import write_plot_data
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.report import PROBE, row_order, tables_markdown

RUNS = Path("results/downstream/runs")
PROBES = Path("results/downstream/probe")
LIVE = Path("dvclive/finetune")
PLOTS = Path("plots/evaluate")


def main() -> None:
    params = load_params()
    protocols = read_protocols(params)
    methods = method_rows(params)
    seeds = read_seeds(params)
    controls = read_negative_controls(params)
    results = read_all_results(RUNS, PROBES, methods, seeds, probe_row=PROBE)
    metrics = aggregate(results, protocols, controls).as_json(seeds)
    write_json("metrics/headline.json", headline(metrics, row_order([*methods, PROBE])))
    write_json("metrics/downstream.json", metrics)
    note = f"Backbone: `{params['backbone']['kind']}`."
    tables = tables_markdown(metrics, protocols, note, controls)
    Path("results").mkdir(exist_ok=True)
    Path("results/tables.md").write_text(tables)
    write_plot_data(PLOTS, LIVE, metrics, protocols, methods, seeds, controls)
    print(tables)


if __name__ == "__main__":
    run_stage(main)
