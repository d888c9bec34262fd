"""The options each learner accepts (``finetune.methods.<row>.options``,
``meta.variants.<variant>.options``), with their bounds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..params import ParamError
from .fields import Bound

INT_OPTION = Bound(1, 4096, integer=True)
#: learner kind -> {option: bound (None: not range-checked)}; what each learner accepts
LEARNER_OPTIONS: dict[str, dict[str, Bound | None]] = {
    "zeroshot": {},
    "coop": {"n_ctx": INT_OPTION, "init_words": None, "class_specific": None},
    "cocoop": {"n_ctx": INT_OPTION, "init_words": None},
    "prograd": {
        "n_ctx": INT_OPTION,
        "init_words": None,
        "init_count": Bound(choices=("tokens", "words")),
        "class_specific": None,
        "lambda": Bound(0.0, 1.0),
        "temperature": Bound(1e-6, None),
        # checked by read_lambda_overrides; consumed by run_options (never the constructor's)
        "lambda_overrides": None,
    },
    "vpt": {
        "n_tokens": INT_OPTION,
        "depth": INT_OPTION,
        "pad_width": INT_OPTION,
        "init_std": Bound(0.0, None),
        "pixel_init_std": Bound(0.0, None),
        "text_template": None,
    },
    "joint": {
        "n_ctx": INT_OPTION,
        "init_words": None,
        "n_tokens": INT_OPTION,
        "depth": INT_OPTION,
        "pad_width": INT_OPTION,
        "init_std": Bound(0.0, None),
        "pixel_init_std": Bound(0.0, None),
    },
}


def check_learner(
    kind: Any, options: Mapping | None, where: str, source: str = "params.yaml"
) -> dict[str, Any]:
    """The options of a ``kind`` learner written at ``where`` in ``source``, checked."""
    prefix = f"{source}: {where}." if where else f"{source}: "
    if kind not in LEARNER_OPTIONS:
        raise ParamError(f"{prefix}learner = {kind!r}: must be one of {list(LEARNER_OPTIONS)}")
    if options is not None and not isinstance(options, Mapping):
        raise ParamError(f"{prefix}options must be a mapping, got {options!r}")
    accepted = LEARNER_OPTIONS[kind]
    options = dict(options or {})
    if options.get("lambda_overrides") is not None and "lambda_overrides" in accepted:
        read_lambda_overrides(options["lambda_overrides"], f"{prefix}options.lambda_overrides")
    for key, value in options.items():
        if key not in accepted:
            raise ParamError(
                f"{prefix}options.{key} is not an option of the "
                f"{kind} learner (options: {list(accepted)})"
            )
        problem = None if value is None or accepted[key] is None else accepted[key].problem(value)
        if problem:
            raise ParamError(f"{prefix}options.{key} = {value!r}: {problem}")
    return options


LAMBDA = Bound(0.0, 1.0)
SHOTS = Bound(1, 100_000, integer=True)


@dataclass(frozen=True)
class LambdaOverride:
    """One rule of ProGrad's ``lambda_overrides``: ``lam`` for runs on one of ``datasets``
    with one of ``shots`` (ProGrad's README: lambda 0.8 for Flowers, DTD, EuroSAT at 8, 16)."""

    datasets: tuple[str, ...]
    shots: tuple[int, ...]
    lam: float

    def matches(self, dataset: str, shots: int) -> bool:
        return dataset in self.datasets and shots in self.shots


def read_lambda_overrides(rules: Any, where: str) -> list[LambdaOverride]:
    """``lambda_overrides``: a list of ``{datasets: [...], shots: [...], lambda: x}``."""
    if rules is None:
        return []
    if isinstance(rules, str | Mapping) or not isinstance(rules, Sequence):
        raise ParamError(f"{where} = {rules!r}: must be a list of {{datasets, shots, lambda}}")
    parsed = []
    for i, rule in enumerate(rules):
        at = f"{where}[{i}]"
        if not isinstance(rule, Mapping) or set(rule) != {"datasets", "shots", "lambda"}:
            raise ParamError(f"{at} = {rule!r}: must have exactly the keys datasets, shots, lambda")
        datasets, shots = rule["datasets"], rule["shots"]
        if (
            isinstance(datasets, str)
            or not isinstance(datasets, Sequence)
            or not all(isinstance(d, str) for d in datasets)
        ):
            raise ParamError(f"{at}.datasets = {datasets!r}: must be a list of dataset names")
        if isinstance(shots, str) or not isinstance(shots, Sequence):
            raise ParamError(f"{at}.shots = {shots!r}: must be a list of shot counts")
        for j, k in enumerate(shots):
            problem = SHOTS.problem(k)
            if problem:
                raise ParamError(f"{at}.shots[{j}] = {k!r}: {problem}")
        problem = LAMBDA.problem(rule["lambda"])
        if problem:
            raise ParamError(f"{at}.lambda = {rule['lambda']!r}: {problem}")
        parsed.append(LambdaOverride(tuple(datasets), tuple(shots), float(rule["lambda"])))
    return parsed


def run_options(options: Mapping[str, Any], dataset: str, shots: int) -> dict[str, Any]:
    """A row's learner options for one run: the first ``lambda_overrides`` rule matching the
    run's dataset and shots sets ``lambda``; the rules themselves are not a learner option."""
    options = dict(options)
    rules = read_lambda_overrides(options.pop("lambda_overrides", None), "lambda_overrides")
    for rule in rules:
        if rule.matches(dataset, shots):
            options["lambda"] = rule.lam
            break
    return options
