"""Few-shot sampling and the base-to-new class split, with CoOp's semantics (method.md s. 6).

CoOp draws ``K`` images per class with ``random.sample`` from the full train split (then
``min(K, 4)`` per class from val) *before* splitting classes into base and new, and caches
the draw in ``<dataset>/split_fewshot/shot_K-seed_S.pkl``. We keep no such cache: the draw
is a pure function of (split, K, seed), recomputed in well under a second, so there is no
stale file to go out of sync with the split and nothing is written into the user's data
root. One ``random.Random(seed)`` serves train then val and classes are visited in order of
first appearance, which is the order in which Dassl's ``generate_fewshot_dataset`` consumes
its (globally seeded) ``random``; with the same split file the draws coincide.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Sequence
from dataclasses import replace

from pipeline.data.types import DatasetError, DatasetSplits, Datum

SUBSAMPLES = ("all", "base", "new")
MAX_VAL_SHOTS = 4


def sample_few_shot(
    items: Sequence[Datum],
    shots: int,
    seed: int | None = None,
    *,
    rng: random.Random | None = None,
    classnames: Sequence[str] | None = None,
    allow_fewer: bool = False,
    where: str = "dataset",
) -> list[Datum]:
    """``shots`` items per class drawn with ``random.sample``, classes in order of appearance.

    Pass either ``seed`` or a shared ``rng``. A class with fewer than ``shots`` items (or,
    when ``classnames`` is given, none at all) is an error naming ``where``, the class and
    the counts, unless ``allow_fewer``: then it keeps all its items, as CoOp does, with a
    warning.
    """
    if isinstance(shots, bool) or not isinstance(shots, int) or shots < 1:
        raise ValueError(f"{where}: shots must be a positive integer, got {shots!r}")
    if rng is None:
        if seed is None:
            raise ValueError("sample_few_shot needs a seed or an rng")
        rng = random.Random(seed)

    by_label: dict[int, list[Datum]] = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    names = {label: group[0].classname for label, group in by_label.items()}
    if classnames is not None:
        names = dict(enumerate(classnames))
    short = [
        f"label {label} {names.get(label, '?')!r} has {len(by_label.get(label, []))}"
        for label in (range(len(classnames)) if classnames is not None else by_label)
        if len(by_label.get(label, [])) < shots
    ]
    if short:
        message = (
            f"{where}: {len(short)} class(es) have fewer than {shots} images to draw "
            f"{shots} shots from: {'; '.join(short[:10])}{' ...' if len(short) > 10 else ''}"
        )
        if not allow_fewer:
            raise DatasetError(message + " (allow_fewer keeps them all, as CoOp does)")
        warnings.warn(message + "; keeping all of them", stacklevel=2)

    drawn: list[Datum] = []
    for group in by_label.values():
        drawn.extend(rng.sample(group, shots) if len(group) >= shots else group)
    return drawn


def split_base_new(classes: Sequence[str] | int) -> tuple[list[int], list[int]]:
    """Labels of the base (first ``ceil(n/2)``) and new (the rest) classes, sorted."""
    n = classes if isinstance(classes, int) else len(classes)
    m = math.ceil(n / 2)
    return list(range(m)), list(range(m, n))


def _check_subsample(which: str) -> None:
    if which not in SUBSAMPLES:
        raise ValueError(f"subsample must be one of {SUBSAMPLES}, got {which!r}")


def _selected(labels: Sequence[int], which: str) -> list[int]:
    _check_subsample(which)
    labels = sorted(labels)
    m = math.ceil(len(labels) / 2)
    return labels if which == "all" else labels[:m] if which == "base" else labels[m:]


def subsample_classes(
    items: Sequence[Datum], which: str = "all", *, num_classes: int | None = None
) -> list[Datum]:
    """Keep the base or new half of the classes, relabelled from 0 (CoOp's subsample_classes).

    The halves are taken over ``range(num_classes)``, or, like CoOp, over the labels present
    in ``items`` when it is not given. ``"all"`` returns the items unchanged.
    """
    _check_subsample(which)
    if which == "all":
        return list(items)
    labels = range(num_classes) if num_classes is not None else {it.label for it in items}
    relabel = {old: new for new, old in enumerate(_selected(labels, which))}
    return [replace(it, label=relabel[it.label]) for it in items if it.label in relabel]


def subsample_classnames(classnames: Sequence[str], which: str = "all") -> list[str]:
    """The class names of the base or new half, in their new label order."""
    return [classnames[label] for label in _selected(range(len(classnames)), which)]


def harmonic_mean(base: float, new: float) -> float:
    """H = 2 * base * new / (base + new); average base and new over datasets *first*."""
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


def few_shot_splits(
    dataset: DatasetSplits,
    shots: int | None,
    seed: int,
    subsample: str = "all",
    *,
    allow_fewer: bool = False,
) -> DatasetSplits:
    """The run's data: ``shots`` per class from train, ``min(shots, 4)`` from val, then the
    ``subsample`` half of the classes in every split (test included), relabelled from 0.

    Sampling happens before subsampling, so the base draw for a seed is the "all" draw
    restricted to the base classes, and no image of a new class can reach base training.
    ``shots=None`` keeps the full train and val splits. ImageNet (``val_is_test``) has no
    val split of its own: only train is sampled and val stays the test set.
    """
    _check_subsample(subsample)
    train, val = list(dataset.train), list(dataset.val)
    if shots is not None:
        if not train:
            raise DatasetError(
                f"{dataset.name}: no train split to draw {shots}-shot samples from "
                "(a test-only dataset such as the ImageNet variants cannot be trained on)"
            )
        rng = random.Random(seed)
        common = dict(rng=rng, classnames=dataset.classnames, allow_fewer=allow_fewer)
        train = sample_few_shot(train, shots, where=f"{dataset.name} train", **common)
        if val and not dataset.val_is_test:
            val_shots = min(shots, MAX_VAL_SHOTS)
            val = sample_few_shot(val, val_shots, where=f"{dataset.name} val", **common)

    n = dataset.num_classes
    train, val, test = (
        subsample_classes(split, subsample, num_classes=n) for split in (train, val, dataset.test)
    )
    return DatasetSplits(
        name=dataset.name,
        classnames=subsample_classnames(dataset.classnames, subsample),
        train=train,
        val=test if dataset.val_is_test else val,
        test=test,
        template=dataset.template,
        prograd_template=dataset.prograd_template,
        val_is_test=dataset.val_is_test,
    )
