"""Evaluation protocols of CoOp/CoCoOp/GRAM: which prompt is trained on what, and where it
is tested (README "Downstream prompt tuning and evaluation").

A *run* trains one prompt on one training set and tests it on the sets its protocol names:

* ``base2new-<dataset>``: ``shots`` per class of the base half of the classes; tested on the
  base and the new half of the test split (records ``base2new/<dataset>/{base,new}``;
  CoCoOp Sec. 4.1, GRAM Table 1);
* ``source-<dataset>``: ``shots`` per class of every class of the source dataset; tested on
  the source and on each cross-dataset and domain-generalisation target, no further training
  (records ``cross_dataset/<dataset>`` and ``domain_generalization/<dataset>``; GRAM
  Tables 2-3);
* ``fewshot-<K>-<dataset>``: K per class of every class; tested on the test split
  (records ``few_shot/<K>/<dataset>``; ProGrad's few-shot curve).

The few-shot draw happens before the base/new split (``few_shot_splits``), so the base
training set of a seed holds no image of a new class.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .data import DatasetSplits, few_shot_splits

PARTS = ("main", "few_shot")


@dataclass(frozen=True)
class Evaluation:
    """Test ``dataset``'s ``subsample`` classes; store the accuracy at ``key``."""

    dataset: str
    subsample: str
    key: tuple[str, ...]


@dataclass(frozen=True)
class RunSpec:
    name: str
    dataset: str
    shots: int
    subsample: str
    evaluations: tuple[Evaluation, ...]


@dataclass(frozen=True)
class Protocols:
    """What params.yaml asks for: the datasets and shots of every setting."""

    datasets: tuple[str, ...]
    shots: int
    cross_source: str | None = None
    cross_targets: tuple[str, ...] = ()
    domain_source: str | None = None
    domain_targets: tuple[str, ...] = ()
    few_shot_shots: tuple[int, ...] = ()
    few_shot_datasets: tuple[str, ...] = ()

    def generalisation_settings(self) -> list[tuple[str, str | None, tuple[str, ...]]]:
        """(setting, source, targets) of the cross-dataset and domain-shift settings."""
        return [
            ("cross_dataset", self.cross_source, self.cross_targets),
            ("domain_generalization", self.domain_source, self.domain_targets),
        ]

    def test_datasets(self, part: str) -> list[str]:
        """Every dataset a part trains or tests on, each once."""
        names = [run.dataset for run in self.runs(part)]
        names += [e.dataset for run in self.runs(part) for e in run.evaluations]
        return list(dict.fromkeys(names))

    def runs(self, part: str) -> list[RunSpec]:
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        if part == "few_shot":
            return [
                RunSpec(
                    f"fewshot-{k}-{name}",
                    name,
                    k,
                    "all",
                    (Evaluation(name, "all", ("few_shot", str(k), name)),),
                )
                for k in self.few_shot_shots
                for name in self.few_shot_datasets
            ]
        runs = [
            RunSpec(
                f"base2new-{name}",
                name,
                self.shots,
                "base",
                (
                    Evaluation(name, "base", ("base2new", name, "base")),
                    Evaluation(name, "new", ("base2new", name, "new")),
                ),
            )
            for name in self.datasets
        ]
        sources: dict[str, list[Evaluation]] = {}
        for setting, source, targets in self.generalisation_settings():
            if source is None:
                continue
            evaluations = sources.setdefault(source, [])
            for name in (source, *targets):
                evaluations.append(Evaluation(name, "all", (setting, name)))
        runs += [
            RunSpec(f"source-{name}", name, self.shots, "all", tuple(evaluations))
            for name, evaluations in sources.items()
        ]
        return runs


def run_training_split(
    dataset: DatasetSplits, run: RunSpec, seed: int, allow_fewer: bool = False
) -> DatasetSplits:
    """The run's training data: ``shots`` per class drawn from the full train split with
    ``seed``, THEN restricted to the run's half of the classes (relabelled from 0)."""
    return few_shot_splits(dataset, run.shots, seed, run.subsample, allow_fewer=allow_fewer)


def evaluation_split(
    dataset: DatasetSplits, evaluation: Evaluation, max_per_class: int | None = None
) -> DatasetSplits:
    """The test split of ``evaluation``'s half of the classes, whole (the papers' protocol)
    or, with ``max_per_class``, its first images of each class in split-file order (a
    budget knob for the CPU default, applied to every method alike)."""
    split = few_shot_splits(dataset, None, 0, evaluation.subsample)
    if max_per_class is not None:
        seen: dict[int, int] = {}
        kept = []
        for item in split.test:
            seen[item.label] = seen.get(item.label, 0) + 1
            if seen[item.label] <= max_per_class:
                kept.append(item)
        split.test = kept
    return split


def set_nested(tree: dict, key: Sequence[str], value: Any) -> None:
    for part in key[:-1]:
        tree = tree.setdefault(part, {})
    tree[key[-1]] = value
