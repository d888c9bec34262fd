"""DVC stage `evaluate`: gather every finetune run into metrics and GRAM-style tables.

Reads params: methods, seeds, shots, datasets, domain_shift, evaluate (``extra_methods``:
rows trained by other stages, e.g. the "+GRAM" ones).
Reads: results/downstream/runs/<method>/seed<seed>/{main,few_shot}.json of those methods
(older files of methods or seeds no longer in params are ignored).
Writes: metrics/downstream.json (means over seeds; ``std`` beside them in the same shape),
results/tables.md (GRAM Tables 1-3 layout, plus the few-shot curve).
"""

from __future__ import annotations

from pathlib import Path

from pipeline.errors import run_stage
from pipeline.evaluation import Protocols, aggregate, read_run_results, tables_markdown
from pipeline.io import write_json
from pipeline.params import get, load_params

RUNS = Path("results/downstream/runs")


def main() -> None:
    params = load_params()
    protocols = Protocols.from_params(params)
    extra = (params.get("evaluate") or {}).get("extra_methods") or []
    methods = list(dict.fromkeys([*get(params, "methods"), *extra]))
    seeds = list(get(params, "seeds"))
    results = read_run_results(RUNS, methods, seeds)
    missing = [m for m in methods if m not in results]
    if missing:
        raise SystemExit(f"{RUNS}: no results for method(s) {missing}; run their finetune stages")
    metrics = aggregate(results, protocols).as_json(seeds)
    write_json("metrics/downstream.json", metrics)
    note = f"Backbone: `{params['backbone']['kind']}`."
    tables = tables_markdown(metrics, protocols, note)
    Path("results").mkdir(exist_ok=True)
    Path("results/tables.md").write_text(tables)
    print(tables)


if __name__ == "__main__":
    run_stage(main)
