"""Accuracies of every run, aggregated over seeds and datasets as GRAM's tables report them:
``metrics/downstream.json`` (means over seeds, ``std`` beside them in the same shape)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data import harmonic_mean
from .errors import UserError
from .protocol import PARTS, Protocols, set_nested


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


def nested_get(tree: Mapping, key: Sequence[str]) -> float | None:
    for part in key:
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


SeedValues = Callable[[Sequence[str]], "list[float] | None"]


def aggregate(
    results: Mapping[str, Mapping[int, Mapping]],
    protocols: Protocols,
    controls: Sequence[str] = (),
) -> Aggregate:
    """``results[method][seed]`` (nested run records) -> means and std over seeds.

    ``controls``: negative-control datasets (at chance, README "Results"): aggregated per
    dataset like the others but left out of every "average".

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
            """The value at ``key`` of every seed (None unless all seeds have it)."""
            found = [nested_get(per_seed[s], key) for s in seeds]
            return None if any(v is None for v in found) else found

        _base_to_new(out, method, values, protocols, controls)
        _generalisation(out, method, values, protocols, controls)
        _few_shot(out, method, values, protocols, controls)
    return out


def _base_to_new(
    out: Aggregate, method: str, values: SeedValues, protocols: Protocols, controls
) -> None:
    """Base, new and H per dataset; a row with base only (the linear probe) gets base only."""
    averaged = [name for name in protocols.datasets if name not in controls]
    bases, news = {}, {}
    for name in protocols.datasets:
        base, new = values(("base2new", name, "base")), values(("base2new", name, "new"))
        if base is not None and new is not None:
            _put_base_new(out, ("base2new", method, name), base, new)
            news[name] = new
        elif base is not None:
            out.put(("base2new", method, name, "base"), base)
        if base is not None:
            bases[name] = base
    if not averaged or any(name not in bases for name in averaged):
        return
    base_avg = np.mean([bases[n] for n in averaged], axis=0)  # per seed, over datasets
    if all(name in news for name in averaged):
        new_avg = np.mean([news[n] for n in averaged], axis=0)
        _put_base_new(out, ("base2new", method, "average"), base_avg, new_avg)
    else:
        out.put(("base2new", method, "average", "base"), base_avg)


def _generalisation(
    out: Aggregate, method: str, values: SeedValues, protocols: Protocols, controls
) -> None:
    for setting, source, all_targets in protocols.generalisation_settings():
        targets = [t for t in all_targets if t not in controls]
        found = {}
        for name in ([source] if source else []) + list(all_targets):
            v = values((setting, name))
            if v is not None:
                out.put((setting, method, name), v)
                found[name] = v
        target_values = [found[t] for t in targets if t in found]
        if targets and len(target_values) == len(targets):
            out.put((setting, method, "average"), np.mean(target_values, axis=0))


def _few_shot(
    out: Aggregate, method: str, values: SeedValues, protocols: Protocols, controls
) -> None:
    averaged = [name for name in protocols.few_shot_datasets if name not in controls]
    for k in protocols.few_shot_shots:
        found = {}
        for name in protocols.few_shot_datasets:
            v = values(("few_shot", str(k), name))
            if v is not None:
                out.put(("few_shot", method, str(k), name), v)
                found[name] = v
        if len(averaged) > 1 and all(name in found for name in averaged):
            average = np.mean([found[n] for n in averaged], axis=0)
            out.put(("few_shot", method, str(k), "average"), average)


def headline(metrics: Mapping, methods: Sequence[str]) -> dict:
    """``metrics/headline.json``: each row's base / new / H of the base-to-new average
    (over datasets, then seeds; GRAM Table 1a), the figures a researcher compares first.
    Rows without them (a probe has base only) keep what they have."""
    out: dict = {}
    for method in methods:
        average = nested_get(metrics, ("base2new", method, "average"))
        if average:
            out[method] = {k: average[k] for k in ("base", "new", "h") if k in average}
    return out


def read_run_results(folder: Path, methods: Sequence[str], seeds: Sequence[int]) -> dict:
    """``results[method][seed]``: the nested records of every part a finetune stage wrote
    under ``folder/<method>/seed<seed>/<part>.json`` (methods or seeds not asked for are
    left out even when older files exist)."""
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


def read_probe_results(folder: Path, seeds: Sequence[int]) -> dict[int, dict]:
    """``results[seed]``: the linear probe's records (``folder/seed<seed>.json``, written by
    the linear_probe stage; seeds without a file are left out)."""
    found = {}
    for seed in seeds:
        path = folder / f"seed{seed}.json"
        if path.exists():
            found[seed] = json.loads(path.read_text())["results"]
    return found


def read_all_results(
    runs: Path, probes: Path, methods: Sequence[str], seeds: Sequence[int], probe_row: str
) -> dict:
    """``results[row][seed]`` of every method and, as row ``probe_row``, the linear probe;
    a method without results or a seed without a probe is an error naming its stage."""
    results = read_run_results(runs, methods, seeds)
    missing = [m for m in methods if m not in results]
    if missing:
        raise UserError(f"{runs}: no results for method(s) {missing}; run their finetune stages")
    probe = read_probe_results(probes, seeds)
    if sorted(probe) != sorted(seeds):
        absent = sorted(set(seeds) - set(probe))
        raise UserError(f"{probes}: no probe for seed(s) {absent}; run the linear_probe stage")
    results[probe_row] = probe
    return results


def _merge(into: dict, tree: Mapping) -> None:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            _merge(into.setdefault(key, {}), value)
        else:
            into[key] = value
