"""The downstream sections: ``finetune`` (shared training, augmentation, one row per
method), ``evaluate``, the protocols and ``features``; ``read_downstream`` reads all a
``finetune`` stage needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ..params import ParamError, get
from .fields import Bound, bounded, check, read
from .learners import check_learner

GRAM_MODELS = Path("models/gram")


@dataclass(frozen=True)
class TrainConfig:
    """``finetune.train`` (shared) and a row's ``train:`` overrides: Dassl's SGD, a constant
    warm-up then cosine schedule (README "Downstream training")."""

    epochs: int = bounded(10, 1, 100_000, integer=True)
    batch_size: int = bounded(32, 1, 1_000_000, integer=True)
    lr: float = bounded(0.002, 0.0, 1e4)
    momentum: float = bounded(0.9, 0.0, 1.0)
    weight_decay: float = bounded(5e-4, 0.0, 1.0)
    warmup_epochs: int = bounded(1, 0, 100_000, integer=True)
    warmup_lr: float = bounded(1e-5, 0.0, 1e4)
    # prompt tensor name -> multiplier of lr for it: a pixel prompt's gradients are ~1e-3 of
    # a text context's, so the joint (UNIGRAM) learner on a CNN needs one lr per group
    lr_scale: Mapping[str, float] = field(default_factory=dict)
    seed: int = 1


LR_SCALE = Bound(0.0, 1e6)


def read_train(section: Mapping | None, where: str, seed: int) -> TrainConfig:
    config = read(TrainConfig, section, where, seed=seed)
    if not isinstance(config.lr_scale, Mapping):
        raise ParamError(f"params.yaml: {where}.lr_scale must map prompt names to numbers")
    for name, scale in config.lr_scale.items():
        check(f"{where}.lr_scale.{name}", scale, LR_SCALE)
    return config


AUGMENT_MODES = ("cached", "fresh")


@dataclass(frozen=True)
class AugmentConfig:
    """``finetune.augment``: ``mode: cached`` = ``views`` fixed augmented views per training
    image, encoded once (ours, cheap on a CPU); ``fresh`` = a new random crop and flip per
    sample and step, the frozen image encoder run on every batch (Dassl, the references;
    ``views`` is then unused). ``seed`` seeds the crops of either."""

    mode: str = bounded("cached", choices=AUGMENT_MODES)
    views: int = bounded(2, 0, 1000, integer=True)
    seed: int = bounded(0, 0, 2**31 - 1, integer=True)


@dataclass(frozen=True)
class EvaluateConfig:
    """``evaluate.batch_size`` and ``evaluate.max_test_per_class`` (None: whole splits)."""

    batch_size: int = bounded(128, 1, 100_000, integer=True)
    max_test_per_class: int | None = bounded(None, 1, None, integer=True, nullable=True)


# ---------------------------------------------------------------------------- method rows


@dataclass(frozen=True)
class MethodConfig:
    """One row of ``finetune.methods``: ``{learner, options, train, from_meta}``.

    A "+GRAM" row names its meta-training variant (``from_meta``); its learner and options
    are then those theta* was learned with (``models/gram/<variant>/learner.json``).
    """

    name: str
    learner: str
    options: dict[str, Any]
    train: TrainConfig
    from_meta: str | None = None

    meta_root: Path = GRAM_MODELS

    @property
    def meta_dir(self) -> Path | None:
        return None if self.from_meta is None else Path(self.meta_root) / self.from_meta

    def error(self, what: str) -> ParamError:
        """A ParamError about this row: ``what`` starts with the key below the row."""
        return ParamError(f"params.yaml: finetune.methods.{self.name}.{what}")


ROW_KEYS = ("learner", "options", "train", "from_meta")


def read_method(
    params: Mapping, name: str, seed: int, gram_models: Path = GRAM_MODELS
) -> MethodConfig:
    """``finetune.methods.<name>`` merged over ``finetune.train``, every key checked."""
    where = f"finetune.methods.{name}"
    methods = get(params, "finetune.methods")
    if name not in (methods or {}):
        raise ParamError(
            f"params.yaml: finetune.methods has no row {name!r} (rows: {sorted(methods or {})})"
        )
    row = methods[name] or {}
    if not isinstance(row, Mapping):
        raise ParamError(f"params.yaml: {where} must be a mapping, got {row!r}")
    unknown = sorted(set(row) - set(ROW_KEYS))
    if unknown:
        raise ParamError(f"params.yaml: {where}.{unknown[0]} is not one of {list(ROW_KEYS)}")
    shared = get(params, "finetune.train")
    read_train(shared, "finetune.train", seed)  # errors in the shared section name it
    overrides = row.get("train") or {}
    if not isinstance(overrides, Mapping):
        raise ParamError(f"params.yaml: {where}.train must be a mapping, got {overrides!r}")
    train = read_train({**shared, **overrides}, f"{where}.train", seed)
    variant = row.get("from_meta")
    if variant is None:
        learner = row.get("learner", name)
        options = check_learner(learner, row.get("options"), where)
        return MethodConfig(name, learner, options, train)
    for key in ("learner", "options"):
        if key in row:
            raise ParamError(
                f"params.yaml: {where}.{key}: a from_meta row takes its learner "
                f"and options from {gram_models / str(variant)}/learner.json"
            )
    variants = (params.get("meta") or {}).get("variants")
    if variants is not None and variant not in variants:
        raise ParamError(
            f"params.yaml: {where}.from_meta = {variant!r}: must be one of meta.variants "
            f"{sorted(variants)}"
        )
    card_path = Path(gram_models) / str(variant) / "learner.json"
    if not card_path.exists():
        raise ParamError(
            f"params.yaml: {where}.from_meta = {variant!r}: {card_path} is missing "
            "(run the `meta_train` stage of that variant)"
        )
    card = json.loads(card_path.read_text())
    options = check_learner(card["learner"], card["options"], "", source=str(card_path))
    return MethodConfig(name, card["learner"], options, train, str(variant), Path(gram_models))


def read_seed(seed: Any) -> int:
    return check("seeds[]", seed, Bound(0, 2**31 - 1, integer=True))


def read_seeds(params: Mapping) -> list[int]:
    """``seeds``: the list every downstream stage runs, each entry checked."""
    return [read_seed(seed) for seed in get(params, "seeds") or []]


def read_evaluate(params: Mapping) -> EvaluateConfig:
    section = params.get("evaluate") or {}
    keys = ("batch_size", "max_test_per_class")
    return read(EvaluateConfig, {k: section[k] for k in keys if k in section}, "evaluate")


def read_negative_controls(params: Mapping) -> list[str]:
    """``evaluate.negative_controls``: dataset names (missing: none)."""
    controls = (params.get("evaluate") or {}).get("negative_controls") or []
    if not isinstance(controls, list) or not all(isinstance(c, str) for c in controls):
        raise ParamError(
            f"params.yaml: evaluate.negative_controls must be a list of dataset names, "
            f"got {controls!r}"
        )
    return controls


def read_c_grid(params: Mapping) -> list[float]:
    """``evaluate.linear_probe.c_grid``: the probe's inverse regularisations, each > 0."""
    grid = get(params, "evaluate.linear_probe.c_grid")
    if not isinstance(grid, list) or not grid:
        raise ParamError("params.yaml: evaluate.linear_probe.c_grid must be a non-empty list")
    for i, c in enumerate(grid):
        if isinstance(c, bool) or not isinstance(c, (int, float)) or c <= 0:
            raise ParamError(f"params.yaml: evaluate.linear_probe.c_grid[{i}] = {c!r} is not > 0")
    return [float(c) for c in grid]


def read_augment(params: Mapping) -> AugmentConfig:
    return read(AugmentConfig, get(params, "finetune.augment"), "finetune.augment")


def read_allow_fewer(params: Mapping) -> bool:
    value = (params.get("finetune") or {}).get("allow_fewer", False)
    return check("finetune.allow_fewer", value, Bound(choices=(True, False)))


def read_memory_cache_mb(params: Mapping) -> int:
    """``finetune.memory_cache_mb``: decoded images a stage keeps in memory for visual
    prompts (``features.DecodedImages``); 0 decodes every time. Results do not depend on it."""
    value = (params.get("finetune") or {}).get("memory_cache_mb", 0)
    return check("finetune.memory_cache_mb", value, Bound(0, 10**7, integer=True))


def method_rows(params: Mapping) -> list[str]:
    """Every downstream row: ``methods`` then ``gram_methods`` (the evaluate stage's rows)."""
    rows = [*(get(params, "methods") or []), *(params.get("gram_methods") or [])]
    return list(dict.fromkeys(rows))


# ---------------------------------------------------------------------------- protocols

SHOTS = Bound(1, 100_000, integer=True)


def read_protocols(params: Mapping):
    """``shots``, ``datasets``, ``domain_shift.{source,targets}``,
    ``evaluate.cross_dataset.{source,targets}``, ``evaluate.few_shot.{shots,datasets}``;
    a missing section switches its setting off."""
    from ..protocol import Protocols

    shots = check("shots", get(params, "shots"), SHOTS)
    domain = params.get("domain_shift") or {}
    evaluate_section = params.get("evaluate") or {}
    cross = evaluate_section.get("cross_dataset") or {}
    few = evaluate_section.get("few_shot") or {}
    for i, k in enumerate(few.get("shots") or []):
        check(f"evaluate.few_shot.shots[{i}]", k, SHOTS)
    return Protocols(
        datasets=tuple(get(params, "datasets") or ()),
        shots=shots,
        cross_source=cross.get("source"),
        cross_targets=tuple(cross.get("targets") or ()),
        domain_source=domain.get("source"),
        domain_targets=tuple(domain.get("targets") or ()),
        few_shot_shots=tuple(few.get("shots") or ()),
        few_shot_datasets=tuple(few.get("datasets") or ()),
    )


EPOCHS = Bound(1, 100_000, integer=True)


@dataclass(frozen=True)
class FewShotEpochs:
    """``evaluate.few_shot.epochs`` (one per entry of ``shots``) and ``epochs_by_dataset``
    (winning for its dataset at every K): the epochs of each few-shot run, as CoOp's COOP.md
    gives them (50, 100, 100, 200, 200 at 1-16 shots; ImageNet 50). None: the row's epochs."""

    shots: tuple[int, ...] = ()
    by_shots: tuple[int, ...] | None = None
    by_dataset: Mapping[str, int] = field(default_factory=dict)

    def epochs(self, dataset: str, shots: int) -> int | None:
        if dataset in self.by_dataset:
            return self.by_dataset[dataset]
        if self.by_shots is None or shots not in self.shots:
            return None
        return self.by_shots[self.shots.index(shots)]


def read_few_shot_epochs(params: Mapping) -> FewShotEpochs:
    few = (params.get("evaluate") or {}).get("few_shot") or {}
    shots = tuple(few.get("shots") or ())
    by_shots = few.get("epochs")
    if by_shots is not None:
        if not isinstance(by_shots, list | tuple) or len(by_shots) != len(shots):
            raise ParamError(
                f"params.yaml: evaluate.few_shot.epochs = {by_shots!r}: must be a list of one "
                f"epoch count per entry of evaluate.few_shot.shots {list(shots)}"
            )
        for i, epochs in enumerate(by_shots):
            check(f"evaluate.few_shot.epochs[{i}]", epochs, EPOCHS)
        by_shots = tuple(by_shots)
    by_dataset = few.get("epochs_by_dataset") or {}
    if not isinstance(by_dataset, Mapping):
        raise ParamError(
            f"params.yaml: evaluate.few_shot.epochs_by_dataset = {by_dataset!r}: must map "
            "dataset names to epoch counts"
        )
    for name, epochs in by_dataset.items():
        check(f"evaluate.few_shot.epochs_by_dataset.{name}", epochs, EPOCHS)
    return FewShotEpochs(shots, by_shots, dict(by_dataset))


# ---------------------------------------------------------------------------- downstream part

FEATURE_OPTIONS = {
    "batch_size": Bound(1, 1_000_000, integer=True),
    "num_workers": Bound(0, 1024, integer=True),
    "cache_dir": None,
}


def read_features(params: Mapping) -> dict[str, Any]:
    """``features``: the options of ``features.image_features`` (batch size, workers, cache)."""
    section = params.get("features") or {}
    unknown = sorted(set(section) - set(FEATURE_OPTIONS))
    if unknown:
        raise ParamError(
            f"params.yaml: features.{unknown[0]} is not one of {list(FEATURE_OPTIONS)}"
        )
    for key, bound in FEATURE_OPTIONS.items():
        if bound is not None and key in section:
            check(f"features.{key}", section[key], bound)
    return dict(section)


@dataclass(frozen=True)
class DownstreamConfig:
    """Everything one ``finetune`` stage (a method x seed x part) reads, checked."""

    method: MethodConfig
    seed: int
    part: str
    protocols: Any  # protocol.Protocols
    augment: AugmentConfig
    allow_fewer: bool
    evaluate: EvaluateConfig
    features: dict[str, Any]
    data_root: Path
    dataset_specs: dict[str, Any]
    few_shot_epochs: FewShotEpochs = FewShotEpochs()
    memory_cache_mb: int = 0

    def run_train(self, run) -> TrainConfig:
        """The row's training config for ``run`` (a ``protocol.RunSpec``): a few-shot run
        takes its epochs from ``evaluate.few_shot`` when those are set."""
        epochs = None
        if self.part == "few_shot":
            epochs = self.few_shot_epochs.epochs(run.dataset, run.shots)
        train = self.method.train
        return train if epochs is None else replace(train, epochs=epochs)


def read_downstream(
    params: Mapping, method: str, seed: int, part: str, gram_models: Path = GRAM_MODELS
) -> DownstreamConfig:
    """Read and check every param a finetune stage uses, and the datasets' specs, before
    anything expensive happens."""
    from ..params import data_root, dataset_spec
    from ..training import check_training_precision

    check_training_precision((params.get("backbone") or {}).get("precision", "fp32"), "finetune")
    seed = read_seed(seed)
    protocols = read_protocols(params)
    names = protocols.test_datasets(part)
    features = read_features(params)
    return DownstreamConfig(
        method=read_method(params, method, seed, gram_models),
        seed=seed,
        part=part,
        protocols=protocols,
        augment=read_augment(params),
        allow_fewer=read_allow_fewer(params),
        evaluate=read_evaluate(params),
        features=features,
        data_root=data_root(params),
        dataset_specs={name: dataset_spec(params, name) for name in names},
        few_shot_epochs=read_few_shot_epochs(params),
        memory_cache_mb=read_memory_cache_mb(params),
    )
