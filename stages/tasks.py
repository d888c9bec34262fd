"""DVC stage `tasks`: K_t-way meta-training tasks from the CHC topics and domains.

Reads params: tasks, data.root, data.own. Reads data/chc/domains.parquet, or with
``tasks.source: dataset`` the train split of ``tasks.dataset`` (GRAM Table 6, "- CHC =
supervised meta-learning"; see ``pipeline.meta.supervised``).
Writes data/tasks/tasks-%06d.tar (one `<task>.json` per task), the meta-validation tasks
on held-out topics (``tasks.val_topics``, ``tasks.val_tasks``) as data/tasks/val/tasks-%06d.tar,
and metrics/tasks.json.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict

from pipeline.config import read_tasks
from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.meta.supervised import labelled_source, labelled_table
from pipeline.meta.tasks import TaskSpec, read_domains, sample_task_sets, write_task_shards
from pipeline.params import load_params

DOMAINS = "data/chc/domains.parquet"
OUT_DIR = "data/tasks"
VAL_DIR = "data/tasks/val"
METRICS = "metrics/tasks.json"
NOT_SAMPLER = ("tasks_per_shard", "source", "dataset")


def task_spec(params: dict) -> TaskSpec:
    """The sampler's settings from ``tasks`` (every key checked)."""
    config = read_tasks(params)
    return TaskSpec(**{k: v for k, v in asdict(config).items() if k not in NOT_SAMPLER})


def main() -> None:
    params = load_params()
    spec = task_spec(params)
    labelled = labelled_source(params)  # None: tasks from CHC (the paper's method)
    if labelled is None:
        sets = sample_task_sets(read_domains(DOMAINS), spec, source=DOMAINS)
    else:
        where = f"{labelled.name} (tasks.dataset, train split)"
        sets = sample_task_sets(labelled_table(labelled), spec, source=where)
        sets.stats.update(source="dataset", dataset=labelled.name)
    per_shard = read_tasks(params).tasks_per_shard
    shards = write_task_shards(sets.train, OUT_DIR, per_shard)
    shutil.rmtree(VAL_DIR, ignore_errors=True)  # stale held-out tasks of other params
    val_shards = write_task_shards(sets.val, VAL_DIR, per_shard) if sets.val else []
    stats = {**sets.stats, "shards": len(shards), "val_shards": len(val_shards)}
    write_json(METRICS, stats)
    print(
        f"tasks: {len(sets.train)} {spec.ways}-way tasks ({spec.support_shots} support + "
        f"{spec.query_shots} query shots, {spec.support_sampling} support) from "
        f"{stats['topics_train']} topics ({stats['topics_excluded']} excluded) in "
        f"{len(shards)} shard(s); {len(sets.val)} meta-validation tasks from "
        f"{spec.val_topics} held-out topics"
    )


if __name__ == "__main__":
    run_stage(main)
