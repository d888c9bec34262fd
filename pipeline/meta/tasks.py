"""K_t-way meta-training tasks from the CHC topics and visual domains (GRAM 3.3).

A task samples ``ways`` topics (class names = topic words). For each class:

* support (``support_sampling: one_domain``, the paper's): ``support_shots`` images from ONE
  visual domain of the topic, the domain drawn per class among those that can give that
  many images;
* support (``uniform``, the "- domain shift simulating" ablation of GRAM Table 6): drawn
  like the query, over all domains;
* query: ``query_shots`` images drawn uniformly over ALL domains of the topic: the shots are
  dealt round-robin over the topic's domains in a random order (each domain gets an equal
  share, +-1), then drawn without replacement inside each domain. So the query covers every
  domain that still has images once ``query_shots`` >= the number of domains.

Support and query are disjoint (our choice: the paper is silent).

Meta-validation (our addition; the paper reports no held-out meta-loss): ``val_topics``
usable topics, drawn with the seed, are HELD OUT: the ``num_tasks`` training tasks never
use them and the ``val_tasks`` meta-validation tasks use only them, sampled the same way.
Split by topic rather than by task, so a validation task's class names and images are
never seen in meta-training: its query loss measures adaptation to new topics, which is
what theta* and R_phi are for downstream. A topic that cannot give
a task its images (no domain with ``support_shots`` images, or fewer than ``support_shots +
query_shots`` images in all) is EXCLUDED from sampling and counted in the metrics; too few
usable topics for ``ways`` is an error naming ``tasks.ways`` and why the others were excluded.

Everything is a pure function of the ``seed`` and of the table's content (rows are sorted
by topic, domain and key first), so the shards are identical run to run.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import UserError

SUPPORT_SAMPLING = ("one_domain", "uniform")
COLUMNS = ("key", "topic_id", "topic_word", "domain")


class TaskError(UserError):
    """Tasks that cannot be formed from the domain table; names the file or the param."""


@dataclass(frozen=True)
class TaskSpec:
    ways: int = 5
    support_shots: int = 1
    query_shots: int = 4
    num_tasks: int = 100
    seed: int = 0
    support_sampling: str = "one_domain"
    #: topics held out for the meta-validation tasks (0: none)
    val_topics: int = 0
    val_tasks: int = 0


#: the random streams of the held-out split and of the validation tasks; the training tasks
#: keep ``default_rng(seed)``, so ``val_topics: 0`` samples the tasks it always did
SPLIT_STREAM, VAL_STREAM = 1, 2


@dataclass
class Split:
    keys: list[str] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    domains: list[int] = field(default_factory=list)

    def of_class(self, label: int) -> list[tuple[str, int]]:
        """(key, domain) of every image of class ``label``."""
        rows = zip(self.keys, self.domains, self.labels, strict=True)
        return [(key, domain) for key, domain, y in rows if y == label]


@dataclass
class MetaTask:
    """One task as stored in its shard (``<task>.json``)."""

    task: int
    classnames: list[str]
    topic_ids: list[int]
    #: the domain each class's support came from (None with uniform support sampling)
    support_domain: list[int | None]
    support: Split
    query: Split

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str | dict) -> MetaTask:
        raw = json.loads(data) if isinstance(data, (bytes, str)) else data
        return cls(
            task=int(raw["task"]),
            classnames=list(raw["classnames"]),
            topic_ids=[int(t) for t in raw["topic_ids"]],
            support_domain=list(raw["support_domain"]),
            support=Split(**raw["support"]),
            query=Split(**raw["query"]),
        )


@dataclass(frozen=True)
class Topic:
    topic_id: int
    word: str
    #: domain -> image keys, sorted
    domains: dict[int, list[str]]

    @property
    def size(self) -> int:
        return sum(len(keys) for keys in self.domains.values())


def read_domains(path: str | Path) -> pd.DataFrame:
    """``domains.parquet`` checked for its columns and for one word per topic."""
    path = Path(path)
    if not path.exists():
        raise TaskError(f"{path}: no domain table (run the `domains` stage first)")
    table = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise TaskError(f"{path}: missing column(s) {missing}; expected {list(COLUMNS)}")
    words = table.groupby("topic_id")["topic_word"].nunique()
    if (words > 1).any():
        topic = int(words[words > 1].index[0])
        raise TaskError(f"{path}: topic {topic}: has more than one topic_word")
    per_word = table.drop_duplicates("topic_id").groupby("topic_word")["topic_id"].nunique()
    if (per_word > 1).any():
        raise TaskError(
            f"{path}: topic word {per_word[per_word > 1].index[0]!r}: labels several topics; "
            "class names of a task must differ"
        )
    if table["key"].duplicated().any():
        raise TaskError(
            f"{path}: key {table['key'][table['key'].duplicated()].iloc[0]!r}: appears twice"
        )
    return table


def build_topics(table: pd.DataFrame) -> tuple[list[Topic], int]:
    """Topics in topic-id order (noise rows with topic_id or domain < 0 are dropped and
    counted)."""
    noise = (table["topic_id"] < 0) | (table["domain"] < 0)
    table = table[~noise].sort_values(["topic_id", "domain", "key"])
    topics = []
    for topic_id, rows in table.groupby("topic_id", sort=True):
        domains = {
            int(d): list(group["key"].astype(str)) for d, group in rows.groupby("domain", sort=True)
        }
        topics.append(Topic(int(topic_id), str(rows["topic_word"].iloc[0]), domains))
    return topics, int(noise.sum())


def exclusion_reason(topic: Topic, spec: TaskSpec) -> str | None:
    """Why ``topic`` cannot give a class its support + query images (None: it can)."""
    if topic.size < spec.support_shots + spec.query_shots:
        return "fewer_images_than_support_plus_query"
    if spec.support_sampling == "one_domain" and not _support_domains(topic, spec):
        return "no_domain_with_support_shots"
    return None


def _support_domains(topic: Topic, spec: TaskSpec) -> list[int]:
    return [d for d, keys in topic.domains.items() if len(keys) >= spec.support_shots]


def _spread(rng: np.random.Generator, pools: dict[int, list[str]], count: int) -> list[tuple]:
    """``count`` (domain, key) pairs uniformly over domains: round-robin over the domains in
    a random order, skipping exhausted ones, then a draw without replacement in each."""
    order = [d for d in rng.permutation(sorted(pools)) if pools[int(d)]]
    share = Counter()
    remaining = {int(d): len(pools[int(d)]) for d in order}
    while sum(share.values()) < count:
        progressed = False
        for d in order:
            d = int(d)
            if sum(share.values()) == count:
                break
            if share[d] < remaining[d]:
                share[d] += 1
                progressed = True
        if not progressed:
            raise ValueError(f"cannot draw {count} images from {sum(remaining.values())}")
    picked = []
    for d in sorted(share):
        for index in sorted(rng.choice(len(pools[d]), share[d], replace=False)):
            picked.append((d, pools[d][index]))
    return picked


def sample_task(index: int, topics: Sequence[Topic], spec: TaskSpec, rng) -> MetaTask:
    chosen = [topics[i] for i in rng.choice(len(topics), spec.ways, replace=False)]
    task = MetaTask(
        index, [t.word for t in chosen], [t.topic_id for t in chosen], [], Split(), Split()
    )
    for label, topic in enumerate(chosen):
        if spec.support_sampling == "one_domain":
            domain = int(rng.choice(_support_domains(topic, spec)))
            keys = topic.domains[domain]
            rows = sorted(rng.choice(len(keys), spec.support_shots, replace=False))
            support = [(domain, keys[i]) for i in rows]
            task.support_domain.append(domain)
        else:
            support = _spread(rng, topic.domains, spec.support_shots)
            task.support_domain.append(None)
        used = {key for _, key in support}
        rest = {d: [k for k in keys if k not in used] for d, keys in topic.domains.items()}
        query = _spread(rng, rest, spec.query_shots)
        for split, pairs in ((task.support, support), (task.query, query)):
            for domain, key in pairs:
                split.keys.append(key)
                split.labels.append(label)
                split.domains.append(domain)
    return task


@dataclass
class TaskSets:
    train: list[MetaTask]
    val: list[MetaTask]
    stats: dict


def sample_tasks(
    table: pd.DataFrame, spec: TaskSpec, source: str = "domains.parquet"
) -> tuple[list[MetaTask], dict]:
    """The training tasks and the statistics (see :func:`sample_task_sets`)."""
    sets = sample_task_sets(table, spec, source)
    return sets.train, sets.stats


def sample_task_sets(
    table: pd.DataFrame, spec: TaskSpec, source: str = "domains.parquet"
) -> TaskSets:
    """``spec.num_tasks`` training tasks, ``spec.val_tasks`` held-out ones on
    ``spec.val_topics`` other topics, and the statistics for ``metrics/tasks.json``."""
    if spec.support_sampling not in SUPPORT_SAMPLING:
        raise TaskError(
            f"tasks.support_sampling: {spec.support_sampling!r}: must be one of "
            f"{list(SUPPORT_SAMPLING)}"
        )
    topics, noise_rows = build_topics(table)
    reasons = {t.topic_id: exclusion_reason(t, spec) for t in topics}
    usable = [t for t in topics if reasons[t.topic_id] is None]
    if len(usable) < spec.ways:
        excluded = dict(sorted(Counter(r for r in reasons.values() if r is not None).items()))
        raise TaskError(
            f"tasks.ways: {spec.ways}: a {spec.ways}-way task needs {spec.ways} topics with "
            f"enough images for tasks.support_shots = {spec.support_shots} + "
            f"tasks.query_shots = {spec.query_shots}, but {source} has {len(usable)} of "
            f"{len(topics)} (excluded: {excluded}); lower tasks.ways or the shots, or get "
            "more pairs or topics"
        )
    train_topics, val_topics = split_topics(usable, spec)
    rng = np.random.default_rng(spec.seed)
    train = [sample_task(i, train_topics, spec, rng) for i in range(spec.num_tasks)]
    val_rng = np.random.default_rng([spec.seed, VAL_STREAM])
    val = [sample_task(i, val_topics, spec, val_rng) for i in range(spec.val_tasks)]
    stats = task_statistics(train, topics, reasons, noise_rows, spec)
    stats.update(
        topics_train=len(train_topics),
        val_topic_words=[t.word for t in val_topics],
        val_distinct_images=len({k for t in val for k in t.support.keys + t.query.keys}),
    )
    return TaskSets(train, val, stats)


def split_topics(usable: Sequence[Topic], spec: TaskSpec) -> tuple[list[Topic], list[Topic]]:
    """(training topics, held-out topics), both in topic-id order; each must hold a task."""
    if spec.val_tasks > 0 and spec.val_topics < spec.ways:
        raise TaskError(
            f"tasks.val_topics: {spec.val_topics}: {spec.val_tasks} meta-validation tasks "
            f"(tasks.val_tasks) of {spec.ways} ways need at least {spec.ways} held-out topics"
        )
    if spec.val_topics > 0 and spec.val_tasks == 0:
        raise TaskError(
            f"tasks.val_topics: {spec.val_topics}: topics held out for no task; "
            "set tasks.val_tasks too (or val_topics: 0)"
        )
    if len(usable) - spec.val_topics < spec.ways:
        raise TaskError(
            f"tasks.val_topics: {spec.val_topics}: of {len(usable)} usable topics, "
            f"{len(usable) - spec.val_topics} are left for training, fewer than tasks.ways = "
            f"{spec.ways}; hold out fewer topics"
        )
    rng = np.random.default_rng([spec.seed, SPLIT_STREAM])
    held = set(rng.choice(len(usable), spec.val_topics, replace=False).tolist())
    train = [t for i, t in enumerate(usable) if i not in held]
    return train, [t for i, t in enumerate(usable) if i in held]


def task_statistics(tasks, topics, reasons, noise_rows, spec) -> dict:
    by_topic = {t.topic_id: t for t in topics}
    covered, classes, support_pure = 0, 0, 0
    for task in tasks:
        for label, topic_id in enumerate(task.topic_ids):
            classes += 1
            query_domains = {d for _, d in task.query.of_class(label)}
            support_domains = {d for _, d in task.support.of_class(label)}
            covered += query_domains == set(by_topic[topic_id].domains)
            support_pure += len(support_domains) == 1
    excluded = Counter(r for r in reasons.values() if r is not None)
    return {
        **asdict(spec),
        "topics": len(topics),
        "topics_used": len(topics) - sum(excluded.values()),
        "topics_excluded": sum(excluded.values()),
        "topics_excluded_by_reason": dict(sorted(excluded.items())),
        "noise_rows_dropped": noise_rows,
        "distinct_support_images": len({k for t in tasks for k in t.support.keys}),
        "distinct_query_images": len({k for t in tasks for k in t.query.keys}),
        "classes_with_single_domain_support": round(support_pure / max(classes, 1), 4),
        "classes_with_query_covering_all_domains": round(covered / max(classes, 1), 4),
    }


def write_task_shards(
    tasks: Iterable[MetaTask], directory: str | Path, tasks_per_shard: int = 1000
) -> list[Path]:
    """``<directory>/tasks-%06d.tar``, one ``<task>.json`` sample per task (fixed mtime, so
    equal tasks give equal bytes)."""
    import webdataset as wds

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("tasks-*.tar"):
        stale.unlink()
    pattern = str(directory / "tasks-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=tasks_per_shard, verbose=0, mtime=0.0) as writer:
        for task in tasks:
            writer.write({"__key__": f"task{task.task:06d}", "json": task.to_json()})
    return sorted(directory.glob("tasks-*.tar"))


def read_task_shards(directory: str | Path) -> list[MetaTask]:
    """All tasks of ``<directory>/tasks-*.tar`` in task order."""
    import webdataset as wds

    shards = sorted(glob.glob(str(Path(directory) / "tasks-*.tar")))
    if not shards:
        raise FileNotFoundError(f"{directory}: no tasks-*.tar shards (run the `tasks` stage)")
    dataset = wds.WebDataset(shards, shardshuffle=False, empty_check=False)
    return sorted((MetaTask.from_json(s["json"]) for s in dataset), key=lambda t: t.task)
