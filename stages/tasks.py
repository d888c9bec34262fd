"""DVC stage `tasks`: K_t-way meta-training tasks from the CHC topics and domains.

Reads params: tasks, data.root, data.own. Reads data/chc/domains.parquet, or with
``tasks.source: dataset`` the train split of ``tasks.dataset`` (GRAM Table 6, "- CHC =
supervised meta-learning"; see ``pipeline.meta.supervised``).
Writes data/tasks/tasks-%06d.tar (one `<task>.json` per task) and metrics/tasks.json.
"""

from __future__ import annotations

from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.meta.supervised import labelled_source, labelled_table
from pipeline.meta.tasks import (
    SUPPORT_SAMPLING,
    TaskSpec,
    read_domains,
    sample_tasks,
    write_task_shards,
)
from pipeline.params import check_choice, check_range, get, load_params

DOMAINS = "data/chc/domains.parquet"
OUT_DIR = "data/tasks"
METRICS = "metrics/tasks.json"


def task_spec(params: dict) -> TaskSpec:
    section = get(params, "tasks")
    key = "tasks."
    spec = TaskSpec(
        ways=check_range(key + "ways", get(params, "tasks.ways"), 2, 1000, integer=True),
        support_shots=check_range(
            key + "support_shots", get(params, "tasks.support_shots"), 1, 10000, integer=True
        ),
        query_shots=check_range(
            key + "query_shots", get(params, "tasks.query_shots"), 1, 10000, integer=True
        ),
        num_tasks=check_range(
            key + "num_tasks", get(params, "tasks.num_tasks"), 1, 10**7, integer=True
        ),
        seed=check_range(key + "seed", get(params, "tasks.seed"), 0, None, integer=True),
        support_sampling=check_choice(
            key + "support_sampling", get(params, "tasks.support_sampling"), SUPPORT_SAMPLING
        ),
    )
    check_range(key + "tasks_per_shard", section.get("tasks_per_shard", 1000), 1, None,
                integer=True)
    return spec


def main() -> None:
    params = load_params()
    spec = task_spec(params)
    labelled = labelled_source(params)  # None: tasks from CHC (the paper's method)
    if labelled is None:
        tasks, stats = sample_tasks(read_domains(DOMAINS), spec, source=DOMAINS)
    else:
        where = f"{labelled.name} (tasks.dataset, train split)"
        tasks, stats = sample_tasks(labelled_table(labelled), spec, source=where)
        stats.update(source="dataset", dataset=labelled.name)
    shards = write_task_shards(tasks, OUT_DIR, params["tasks"].get("tasks_per_shard", 1000))
    stats["shards"] = len(shards)
    write_json(METRICS, stats)
    print(
        f"tasks: {len(tasks)} {spec.ways}-way tasks ({spec.support_shots} support + "
        f"{spec.query_shots} query shots, {spec.support_sampling} support) from "
        f"{stats['topics_used']} topics ({stats['topics_excluded']} excluded) in {len(shards)} "
        "shard(s)"
    )


if __name__ == "__main__":
    run_stage(main)
