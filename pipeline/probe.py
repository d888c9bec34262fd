"""The linear-probe row: logistic regression on frozen, L2-normalised image features (CoOp,
Zhou et al. 2022, Sec. 4.1 "Linear probe CLIP"), the ceiling a prompt learner is measured
against (README "Linear probe").

It is trained on the same few-shot training split as the prompts (same seed, same shots, the
test preprocessing's cached features) and its inverse regularisation C is chosen on the
few-shot val split only. A probe only knows the classes it was fitted on, so it is reported
where the test classes are the training classes: the base classes of base-to-new, the source
of the cross-dataset / domain-shift settings and the few-shot curve; never new classes or
other datasets.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from .data import DatasetSplits
from .protocol import PARTS, Protocols, RunSpec, set_nested

#: maximum L-BFGS iterations (scikit-learn's default 100 stops short on 512-d features)
MAX_ITER = 1000

FeaturesOf = Callable[[Sequence], np.ndarray]


def l2_normalise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norms, 1e-12)


def _fit(features: np.ndarray, labels: np.ndarray, c: float) -> LogisticRegression:
    # L-BFGS is deterministic: the same features give the same weights, whatever the seed
    model = LogisticRegression(C=c, max_iter=MAX_ITER)
    return model.fit(features, labels)


def _accuracy(model: LogisticRegression, features: np.ndarray, labels: np.ndarray) -> float:
    return 100.0 * float(np.mean(model.predict(features) == labels))


@dataclass(frozen=True)
class Probe:
    """A fitted probe, the C it was fitted with and that C's val accuracy (%)."""

    model: LogisticRegression
    c: float
    val_percent: float

    def percent(self, features: np.ndarray, labels: Sequence[int]) -> float:
        """Accuracy (%) on ``features`` (L2-normalised here) labelled ``labels``."""
        return _accuracy(self.model, l2_normalise(features), np.asarray(labels))


def fit_probe(
    train: np.ndarray,
    train_labels: Sequence[int],
    val: np.ndarray,
    val_labels: Sequence[int],
    c_grid: Sequence[float],
) -> Probe:
    """Fit one probe per C of ``c_grid`` on ``train``; keep the best on ``val`` (ties: the
    first, so list the grid from strongest regularisation up)."""
    if not c_grid:
        raise ValueError("c_grid is empty")
    if len(set(train_labels)) < 2:
        raise ValueError("a linear probe needs at least two classes in its training split")
    train, val = l2_normalise(train), l2_normalise(val)
    train_labels, val_labels = np.asarray(train_labels), np.asarray(val_labels)
    best: Probe | None = None
    for c in c_grid:
        model = _fit(train, train_labels, float(c))
        score = _accuracy(model, val, val_labels) if len(val_labels) else 0.0
        if best is None or score > best.val_percent:
            best = Probe(model, float(c), score)
    return best


def probe_evaluations(run: RunSpec):
    """The run's evaluations a probe can answer: the classes it was trained on."""
    return [e for e in run.evaluations if e.dataset == run.dataset and e.subsample == run.subsample]


def probe_part(
    protocols: Protocols,
    part: str,
    train_split: Callable[[RunSpec], DatasetSplits],
    test_split: Callable[[RunSpec, object], DatasetSplits],
    features_of: FeaturesOf,
    c_grid: Sequence[float],
) -> tuple[dict, dict]:
    """Fit and test a probe for every run of ``part`` (``Protocols.runs``).

    ``train_split(run)``: the run's few-shot draw; ``test_split(run, evaluation)``: the test
    split; ``features_of(items)``: their frozen features. Returns the nested records (same
    keys as a finetune run's) and, per run, the chosen C and its val accuracy.
    """
    results: dict = {}
    runs: dict = {}
    for run in protocols.runs(part):
        evaluations = probe_evaluations(run)
        if not evaluations:
            continue
        split = train_split(run)
        probe = fit_probe(
            features_of(split.train),
            [d.label for d in split.train],
            features_of(split.val),
            [d.label for d in split.val],
            c_grid,
        )
        accuracy = {}
        for evaluation in evaluations:
            test = test_split(run, evaluation).test
            value = round(probe.percent(features_of(test), [d.label for d in test]), 2)
            set_nested(results, evaluation.key, value)
            accuracy["/".join(evaluation.key)] = value
        runs[run.name] = {"c": probe.c, "val": round(probe.val_percent, 2), "accuracy": accuracy}
    return results, runs


def probed_datasets(protocols: Protocols) -> set[str]:
    """The datasets some run of the protocols fits a probe on (their train split is read)."""
    return {run.dataset for part in PARTS for run in protocols.runs(part) if probe_evaluations(run)}


def probe_seed(
    protocols: Protocols,
    seed: int,
    train_split: Callable[[RunSpec], DatasetSplits],
    test_split: Callable[[RunSpec, object], DatasetSplits],
    features_of: FeaturesOf,
    c_grid: Sequence[float],
) -> dict:
    """The linear_probe stage's record of one seed: ``probe_part`` of every part, the nested
    records under ``results`` (a finetune run's layout) and each run's C under ``runs``."""
    payload = {"method": "linear_probe", "seed": seed, "results": {}, "runs": {}}
    for part in PARTS:
        results, runs = probe_part(protocols, part, train_split, test_split, features_of, c_grid)
        for key, value in results.items():
            payload["results"].setdefault(key, {}).update(value)
        payload["runs"].update(runs)
    return payload
