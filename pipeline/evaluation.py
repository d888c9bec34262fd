"""Evaluation protocols of CoOp/CoCoOp/GRAM (method.md section 6): which prompt is trained on
what, where it is tested, and how accuracies over seeds and datasets are aggregated.

A *run* trains one prompt on one training set and tests it on the sets its protocol names:

* ``base2new-<dataset>``: ``shots`` per class of the base half of the classes; tested on the
  base and the new half of the test split (records ``base2new/<dataset>/{base,new}``);
* ``source-<dataset>``: ``shots`` per class of every class of the source dataset; tested on
  the source and on each cross-dataset and domain-generalisation target, no further training
  (records ``cross_dataset/<dataset>`` and ``domain_generalization/<dataset>``);
* ``fewshot-<K>-<dataset>``: K per class of every class; tested on the test split
  (records ``few_shot/<K>/<dataset>``).

The few-shot draw happens before the base/new split (``few_shot_splits``), so the base
training set of a seed holds no image of a new class.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from .backbones import Backbone
from .data import DatasetSplits, Datum, few_shot_splits, harmonic_mean
from .features import ImageFiles, image_features
from .learners import Batch, PromptLearner
from .params import check_range, get
from .zeroshot import Accuracy, accuracy

PARTS = ("main", "few_shot")


@torch.no_grad()
def evaluate(
    learner: PromptLearner,
    items: Sequence[Datum],
    classnames: list[str],
    template: str,
    *,
    batch_size: int = 128,
    features_options: Mapping | None = None,
    desc: str = "test",
) -> Accuracy:
    """Accuracy of ``learner`` on ``items`` labelled over ``classnames``.

    Textual learners read cached test features (each image encoded once per backbone, for
    every method and run) and build the classifier once; learners with a visual prompt
    re-encode every image through the prompted encoder.
    """
    backbone: Backbone = learner.backbone
    learner.set_classes(classnames, template)
    labels = torch.tensor([item.label for item in items])
    paths = [item.path for item in items]
    classifier = learner.class_features() if learner.shared_classifier else None
    logits = []
    if learner.needs_images:
        files = ImageFiles(paths, backbone.image_transform(train=False), None, 0)
        done = 0
        for images in DataLoader(files, batch_size=batch_size):
            chunk = Batch(labels[done : done + len(images)], images=images.to(backbone.device))
            logits.append(learner.logits(chunk, classifier).cpu())
            done += len(images)
    else:
        features = image_features(backbone, paths, desc=desc, **dict(features_options or {}))
        for start in range(0, len(items), batch_size):
            chunk = features[start : start + batch_size].to(backbone.device)
            batch = Batch(labels[start : start + batch_size], features=chunk)
            logits.append(learner.logits(batch, classifier).cpu())
    return accuracy(torch.cat(logits), labels)


# ---------------------------------------------------------------------------------- runs


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

    @classmethod
    def from_params(cls, params: Mapping) -> Protocols:
        """``shots``, ``datasets``, ``domain_shift.{source,targets}``,
        ``evaluate.cross_dataset.{source,targets}``, ``evaluate.few_shot.{shots,datasets}``;
        a missing section switches its setting off."""
        shots = check_range("shots", get(params, "shots"), 1, 100_000, integer=True)
        domain = params.get("domain_shift") or {}
        evaluate_section = params.get("evaluate") or {}
        cross = evaluate_section.get("cross_dataset") or {}
        few = evaluate_section.get("few_shot") or {}
        for i, k in enumerate(few.get("shots") or []):
            check_range(f"evaluate.few_shot.shots[{i}]", k, 1, 100_000, integer=True)
        return cls(
            datasets=tuple(get(params, "datasets") or ()),
            shots=shots,
            cross_source=cross.get("source"),
            cross_targets=tuple(cross.get("targets") or ()),
            domain_source=domain.get("source"),
            domain_targets=tuple(domain.get("targets") or ()),
            few_shot_shots=tuple(few.get("shots") or ()),
            few_shot_datasets=tuple(few.get("datasets") or ()),
        )

    def runs(self, part: str) -> list[RunSpec]:
        if part not in PARTS:
            raise ValueError(f"part must be one of {PARTS}, got {part!r}")
        if part == "few_shot":
            return [
                RunSpec(f"fewshot-{k}-{name}", name, k, "all",
                        (Evaluation(name, "all", ("few_shot", str(k), name)),))
                for k in self.few_shot_shots
                for name in self.few_shot_datasets
            ]  # fmt: skip
        runs = [
            RunSpec(f"base2new-{name}", name, self.shots, "base", (
                Evaluation(name, "base", ("base2new", name, "base")),
                Evaluation(name, "new", ("base2new", name, "new")),
            ))
            for name in self.datasets
        ]  # fmt: skip
        sources: dict[str, list[Evaluation]] = {}
        for setting, source, targets in (
            ("cross_dataset", self.cross_source, self.cross_targets),
            ("domain_generalization", self.domain_source, self.domain_targets),
        ):
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


# ----------------------------------------------------------------------------- aggregation


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard deviation over seeds (CoOp's parse_test_res.py: np.std, ddof 0)."""
    array = np.asarray(values, dtype=float)
    return round(float(array.mean()), 2), round(float(array.std()), 2)


@dataclass
class Aggregate:
    """metrics/downstream.json: means over seeds, and ``std`` beside them in the same shape."""

    means: dict = field(default_factory=dict)
    std: dict = field(default_factory=dict)

    def put(self, key: Sequence[str], values: Sequence[float]) -> None:
        mean, std = _mean_std(values)
        set_nested(self.means, key, mean)
        set_nested(self.std, key, std)

    def as_json(self, seeds: Sequence[int]) -> dict:
        return {**self.means, "std": self.std, "seeds": list(seeds)}


def _put_base_new(
    out: Aggregate, key: tuple[str, ...], base: Sequence[float], new: Sequence[float]
) -> None:
    """Base and new over seeds; H of the mean base and mean new (std: of per-seed H)."""
    out.put((*key, "base"), base)
    out.put((*key, "new"), new)
    out.put((*key, "h"), [harmonic_mean(b, n) for b, n in zip(base, new, strict=True)])
    h = harmonic_mean(float(np.mean(base)), float(np.mean(new)))
    set_nested(out.means, (*key, "h"), round(h, 2))


def _get(tree: Mapping, key: Sequence[str]) -> float | None:
    for part in key:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def aggregate(results: Mapping[str, Mapping[int, Mapping]], protocols: Protocols) -> Aggregate:
    """``results[method][seed]`` (nested run records) -> means and std over seeds.

    Base-to-new: per dataset, H = harmonic mean of the seed-averaged base and new
    accuracies; the "average" entry averages base and new over datasets FIRST and takes H of
    those (GRAM Table 1a). Its std is over seeds of each seed's own average. Cross-dataset
    and domain generalisation: "average" over the targets (not the source), as GRAM
    Tables 2-3. Few-shot: "average" over the datasets of each shot count.
    """
    out = Aggregate()
    for method, per_seed in results.items():
        seeds = sorted(per_seed)

        def values(key: Sequence[str], seeds=seeds, per_seed=per_seed) -> list[float] | None:
            found = [_get(per_seed[s], key) for s in seeds]
            return None if any(v is None for v in found) else found

        done = []
        for name in protocols.datasets:
            base, new = values(("base2new", name, "base")), values(("base2new", name, "new"))
            if base is not None and new is not None:
                _put_base_new(out, ("base2new", method, name), base, new)
                done.append((base, new))
        if done and len(done) == len(protocols.datasets):
            base_avg = np.mean([d[0] for d in done], axis=0)  # per seed, over datasets
            new_avg = np.mean([d[1] for d in done], axis=0)
            _put_base_new(out, ("base2new", method, "average"), base_avg, new_avg)

        for setting, source, targets in (
            ("cross_dataset", protocols.cross_source, protocols.cross_targets),
            ("domain_generalization", protocols.domain_source, protocols.domain_targets),
        ):
            found = {}
            for name in ([source] if source else []) + list(targets):
                v = values((setting, name))
                if v is not None:
                    out.put((setting, method, name), v)
                    found[name] = v
            target_values = [found[t] for t in targets if t in found]
            if target_values and len(target_values) == len(targets):
                out.put((setting, method, "average"), np.mean(target_values, axis=0))

        for k in protocols.few_shot_shots:
            found = []
            for name in protocols.few_shot_datasets:
                v = values(("few_shot", str(k), name))
                if v is not None:
                    out.put(("few_shot", method, str(k), name), v)
                    found.append(v)
            if len(found) > 1 and len(found) == len(protocols.few_shot_datasets):
                out.put(("few_shot", method, str(k), "average"), np.mean(found, axis=0))
    return out


def read_run_results(folder: Path, methods: Sequence[str], seeds: Sequence[int]) -> dict:
    """``results[method][seed]``: the nested records of every part a finetune stage wrote
    under ``folder/<method>/seed<seed>/<part>.json`` (methods or seeds not asked for are
    left out even when older files exist)."""
    import json

    results: dict[str, dict[int, dict]] = {}
    for method in methods:
        for seed in seeds:
            merged: dict = {}
            for part in PARTS:
                path = folder / method / f"seed{seed}" / f"{part}.json"
                if path.exists():
                    _merge(merged, json.loads(path.read_text())["results"])
            if merged:
                results.setdefault(method, {})[seed] = merged
    return results


def _merge(into: dict, tree: Mapping) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value


# ---------------------------------------------------------------------------------- tables

#: GRAM's row order (Tables 1-3), then the methods GRAM does not list
ROW_ORDER = ("zeroshot", "cocoop", "coop", "coop_gram", "vpt", "vpt_gram", "unigram", "prograd")
ROW_LABELS = {
    "zeroshot": "CLIP", "cocoop": "CoCoOp", "coop": "CoOp", "coop_gram": "+ GRAM",
    "vpt": "VPT", "vpt_gram": "+ GRAM", "unigram": "UNIGRAM", "prograd": "ProGrad",
}  # fmt: skip


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
    base2new = metrics.get("base2new", {})
    if base2new:
        lines += [
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
                + [_cell(_get(base2new[m], (key, part))) for part in ("base", "new", "h")]
                for m in _rows(base2new)
            ]
            lines += [f"({letter}) {title}", ""] + _table(["", "Base", "New", "H"], rows)
    for number, setting, title, source, targets in (
        (2, "domain_generalization", "domain generalisation", protocols.domain_source,
         protocols.domain_targets),
        (3, "cross_dataset", "cross-dataset generalisation", protocols.cross_source,
         protocols.cross_targets),
    ):  # fmt: skip
        block = metrics.get(setting, {})
        if not block or source is None:
            continue
        columns = [source, *targets, "average"]
        rows = [
            [ROW_LABELS.get(m, m)] + [_cell(_get(block[m], (c,))) for c in columns]
            for m in _rows(block)
        ]
        lines += [
            f"## Table {number}: {title}",
            "",
            f"Prompts learned on {source} (all classes); Average over the targets.",
            "",
        ]
        lines += _table(["", f"Source: {source}", *targets, "Average"], rows)
    few_shot = metrics.get("few_shot", {})
    if few_shot:
        shots = [str(k) for k in protocols.few_shot_shots]
        column = "average" if len(protocols.few_shot_datasets) > 1 else None
        names = ([column] if column else []) + list(protocols.few_shot_datasets)
        lines += ["## Few-shot curve", "", "All classes; K shots per class.", ""]
        for name in names:
            rows = [
                [ROW_LABELS.get(m, m)] + [_cell(_get(few_shot[m], (k, name))) for k in shots]
                for m in _rows(few_shot)
            ]
            lines += [f"{name}", ""] + _table(["", *[f"{k} shots" for k in shots]], rows)
    return "\n".join(lines).rstrip() + "\n"
