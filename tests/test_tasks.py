"""Meta-training tasks: one-domain support, query over all domains, exclusion, shards."""

import glob

import pandas as pd
import pytest

from pipeline.meta.tasks import (
    MetaTask,
    TaskError,
    TaskSpec,
    read_task_shards,
    sample_task_sets,
    sample_tasks,
    write_task_shards,
)


def domain_table(sizes):
    """sizes: {topic_id: [images per domain]} -> a domains.parquet-like table (shuffled)."""
    rows = []
    for topic, per_domain in sizes.items():
        for domain, count in enumerate(per_domain):
            for i in range(count):
                rows.append((f"t{topic}d{domain}i{i}", topic, f"word{topic}", domain))
    table = pd.DataFrame(rows, columns=["key", "topic_id", "topic_word", "domain"])
    return table.sample(frac=1.0, random_state=1).reset_index(drop=True)


SIZES = {0: [6, 5, 4], 1: [5, 5, 5], 2: [8, 4, 3], 3: [7, 6, 6], 4: [2, 1, 1], 5: [9, 3, 3]}


def test_support_from_one_domain_and_query_covering_all_domains():
    spec = TaskSpec(ways=3, support_shots=2, query_shots=6, num_tasks=40, seed=3)
    tasks, stats = sample_tasks(domain_table(SIZES), spec)
    assert len(tasks) == 40
    for task in tasks:
        assert len(set(task.classnames)) == 3
        assert task.classnames == [f"word{t}" for t in task.topic_ids]
        for label, topic in enumerate(task.topic_ids):
            support, query = task.support.of_class(label), task.query.of_class(label)
            assert len(support) == 2 and len(query) == 6
            assert {d for _, d in support} == {task.support_domain[label]}
            # keys encode their true topic and domain
            assert all(k.startswith(f"t{topic}d{d}i") for k, d in support + query)
            assert {d for _, d in query} == set(range(len(SIZES[topic])))  # all domains
            counts = pd.Series([d for _, d in query]).value_counts()
            for domain, count in counts.items():  # uniform over domains, unless one runs dry
                left = SIZES[topic][domain] - sum(d == domain for _, d in support)
                assert count >= counts.max() - 1 or count == left
            assert not {k for k, _ in support} & {k for k, _ in query}  # disjoint
    assert stats["classes_with_single_domain_support"] == 1.0
    assert stats["classes_with_query_covering_all_domains"] == 1.0
    assert stats["topics_excluded"] == 1  # topic 4 has 4 images < 2 + 6
    assert stats["topics_excluded_by_reason"] == {"fewer_images_than_support_plus_query": 1}
    assert all(4 not in task.topic_ids for task in tasks)
    # every topic's support domain varies across tasks (drawn per class)
    seen = {}
    for task in tasks:
        for topic, domain in zip(task.topic_ids, task.support_domain, strict=True):
            seen.setdefault(topic, set()).add(domain)
    assert all(len(domains) > 1 for domains in seen.values())


def test_uniform_support_ablation_spreads_support_over_domains():
    spec = TaskSpec(
        ways=2, support_shots=3, query_shots=3, num_tasks=20, seed=0, support_sampling="uniform"
    )
    tasks, stats = sample_tasks(domain_table(SIZES), spec)
    for task in tasks:
        assert task.support_domain == [None, None]
        for label in range(2):
            domains = [d for _, d in task.support.of_class(label)]
            assert len(set(domains)) == 3
    assert stats["classes_with_single_domain_support"] == 0.0


def test_domain_too_small_for_support_excludes_topic():
    sizes = {0: [3, 3], 1: [2, 2, 2], 2: [4, 1]}
    spec = TaskSpec(ways=2, support_shots=3, query_shots=2, num_tasks=5)
    tasks, stats = sample_tasks(domain_table(sizes), spec)
    assert stats["topics_excluded_by_reason"] == {"no_domain_with_support_shots": 1}
    assert all(1 not in t.topic_ids for t in tasks)
    # topic 2: only domain 0 can hold 3 support images
    for task in tasks:
        if 2 in task.topic_ids:
            assert task.support_domain[task.topic_ids.index(2)] == 0


def test_too_few_topics_is_a_clear_error():
    spec = TaskSpec(ways=6, support_shots=2, query_shots=6, num_tasks=1)
    with pytest.raises(TaskError) as error:
        sample_tasks(domain_table(SIZES), spec)
    assert str(error.value) == (
        "tasks.ways: 6: a 6-way task needs 6 topics with enough images for "
        "tasks.support_shots = 2 + tasks.query_shots = 6, but domains.parquet has 5 of 6 "
        "(excluded: {'fewer_images_than_support_plus_query': 1}); lower tasks.ways or the "
        "shots, or get more pairs or topics"
    )


TASK_PARAMS = {
    "tasks": {
        "ways": 5,
        "support_shots": 1,
        "query_shots": 3,
        "num_tasks": 4,
        "seed": 0,
        "support_sampling": "one_domain",
        "tasks_per_shard": 10,
    }
}


@pytest.mark.parametrize(
    "sizes, message",
    [
        (None, "error: data/chc/domains.parquet: no domain table (run the `domains` stage first)"),
        ({0: [4], 1: [4], 2: [4], 3: [4], 4: [3]}, "error: tasks.ways: 5: a 5-way task needs 5"),
        ({0: [3, 3], 1: [0, 1]}, "error: tasks.ways: 5: a 5-way task needs 5"),
    ],
)
def test_tasks_stage_reports_one_line_before_writing(tmp_path, monkeypatch, capsys, sizes, message):
    import yaml

    from pipeline.errors import run_stage
    from stages import tasks as stage

    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(TASK_PARAMS))
    if sizes is not None:
        (tmp_path / "data" / "chc").mkdir(parents=True)
        domain_table(sizes).to_parquet(tmp_path / "data" / "chc" / "domains.parquet")
    with pytest.raises(SystemExit) as exit_:
        run_stage(stage.main)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(message)
    assert not (tmp_path / "data" / "tasks").exists()


def test_deterministic_and_independent_of_row_order():
    spec = TaskSpec(ways=3, support_shots=1, query_shots=4, num_tasks=10, seed=7)
    table = domain_table(SIZES)
    a, _ = sample_tasks(table, spec)
    b, _ = sample_tasks(table.iloc[::-1].reset_index(drop=True), spec)
    assert [t.to_json() for t in a] == [t.to_json() for t in b]
    c, _ = sample_tasks(table, TaskSpec(**{**spec.__dict__, "seed": 8}))
    assert [t.to_json() for t in a] != [t.to_json() for t in c]


def test_shards_round_trip_and_read_with_plain_webdataset(tmp_path):
    spec = TaskSpec(ways=3, support_shots=1, query_shots=3, num_tasks=7, seed=1)
    tasks, _ = sample_tasks(domain_table(SIZES), spec)
    shards = write_task_shards(tasks, tmp_path / "tasks", tasks_per_shard=3)
    assert [p.name for p in shards] == [f"tasks-{i:06d}.tar" for i in range(3)]
    first_bytes = [p.read_bytes() for p in shards]
    write_task_shards(tasks, tmp_path / "tasks", tasks_per_shard=3)
    assert [p.read_bytes() for p in shards] == first_bytes  # byte-identical rewrite
    assert [t.to_json() for t in read_task_shards(tmp_path / "tasks")] == [
        t.to_json() for t in tasks
    ]
    # the README snippet, verbatim apart from the folder
    import webdataset as wds

    shards = sorted(glob.glob(f"{tmp_path}/tasks/tasks-*.tar"))
    task = next(iter(wds.WebDataset(shards, shardshuffle=False).decode()))["json"]
    assert task["classnames"] == tasks[0].classnames
    assert MetaTask.from_json(task).query.keys == tasks[0].query.keys


def test_bad_table_errors_name_the_file(tmp_path):
    from pipeline.meta.tasks import read_domains

    path = tmp_path / "domains.parquet"
    domain_table(SIZES).drop(columns="domain").to_parquet(path)
    with pytest.raises(TaskError, match=r"domains.parquet: missing column\(s\) \['domain'\]"):
        read_domains(path)
    table = domain_table(SIZES)
    table.loc[table["topic_id"] == 1, "topic_word"] = "word0"
    table.to_parquet(path)
    with pytest.raises(TaskError, match="labels several topics"):
        read_domains(path)


BIG = {t: [4, 3, 3] for t in range(12)}


def test_held_out_tasks_use_only_their_own_topics_and_are_seeded():
    spec = TaskSpec(
        ways=3, support_shots=1, query_shots=3, num_tasks=30, seed=4, val_topics=4, val_tasks=10
    )
    sets = sample_task_sets(domain_table(BIG), spec)
    assert len(sets.train) == 30 and len(sets.val) == 10
    train_topics = {t for task in sets.train for t in task.topic_ids}
    val_topics = {t for task in sets.val for t in task.topic_ids}
    assert len(val_topics) == 4 and not train_topics & val_topics  # disjoint by topic
    assert len(train_topics) == 8  # every other topic still trains
    train_keys = {k for task in sets.train for k in task.support.keys + task.query.keys}
    val_keys = {k for task in sets.val for k in task.support.keys + task.query.keys}
    assert not train_keys & val_keys
    assert [t.task for t in sets.val] == list(range(10))
    assert sets.stats["topics_train"] == 8
    assert sets.stats["val_topic_words"] == [f"word{t}" for t in sorted(val_topics)]
    again = sample_task_sets(domain_table(BIG).iloc[::-1].reset_index(drop=True), spec)
    assert [t.to_json() for t in again.val] == [t.to_json() for t in sets.val]
    assert [t.to_json() for t in again.train] == [t.to_json() for t in sets.train]
    other = sample_task_sets(domain_table(BIG), TaskSpec(**{**spec.__dict__, "seed": 5}))
    assert {t for task in other.val for t in task.topic_ids} != val_topics


def test_no_held_out_topics_keeps_the_training_tasks():
    spec = TaskSpec(ways=3, support_shots=1, query_shots=3, num_tasks=12, seed=2)
    plain, _ = sample_tasks(domain_table(BIG), spec)
    sets = sample_task_sets(domain_table(BIG), spec)
    assert sets.val == [] and [t.to_json() for t in sets.train] == [t.to_json() for t in plain]


@pytest.mark.parametrize(
    "val_topics, val_tasks, message",
    [
        (2, 5, "tasks.val_topics: 2: 5 meta-validation tasks (tasks.val_tasks) of 3 ways need"),
        (4, 0, "tasks.val_topics: 4: topics held out for no task"),
        (10, 5, "tasks.val_topics: 10: of 12 usable topics, 2 are left for training"),
    ],
)
def test_bad_held_out_sizes_name_the_key(val_topics, val_tasks, message):
    spec = TaskSpec(
        ways=3,
        support_shots=1,
        query_shots=3,
        num_tasks=2,
        val_topics=val_topics,
        val_tasks=val_tasks,
    )
    with pytest.raises(TaskError, match=message.replace("(", r"\(").replace(")", r"\)")):
        sample_task_sets(domain_table(BIG), spec)
