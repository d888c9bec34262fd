"""DVC stage `evaluate`: gather every finetune run into metrics and GRAM-style tables.

Reads params: methods, gram_methods (the rows), seeds, shots, datasets, backbone.kind,
domain_shift, evaluate.{cross_dataset, few_shot}.
Reads: results/downstream/runs/<method>/seed<seed>/{main,few_shot}.json of those rows
(older files of methods or seeds no longer in params are ignored).
Writes: metrics/downstream.json (means over seeds; ``std`` beside them in the same shape),
results/tables.md (GRAM Tables 1-3 layout, plus the few-shot curve).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.aggregation import aggregate, read_run_results
from pipeline.config import method_rows, read_protocols, read_seed
from pipeline.errors import UserError, run_stage
from pipeline.io import write_json
from pipeline.params import get, load_params
from pipeline.report import tables_markdown

RUNS = Path("results/downstream/runs")


def main() -> None:
    params = load_params()
    protocols = read_protocols(params)
    methods = method_rows(params)
    seeds = [read_seed(seed) for seed in get(params, "seeds")]
    results = read_run_results(RUNS, methods, seeds)
    missing = [m for m in methods if m not in results]
    if missing:
        raise UserError(f"{RUNS}: no results for method(s) {missing}; run their finetune stages")
    metrics = aggregate(results, protocols).as_json(seeds)
    write_json("metrics/downstream.json", metrics)
    note = f"Backbone: `{params['backbone']['kind']}`."
    tables = tables_markdown(metrics, protocols, note)
    Path("results").mkdir(exist_ok=True)
    Path("results/tables.md").write_text(tables)
    print(tables)


if __name__ == "__main__":
    run_stage(main)
