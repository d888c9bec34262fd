"""The options each learner accepts (``finetune.methods.<row>.options``,
``meta.variants.<variant>.options``), with their bounds."""

from __future__ import annotations

from collections.abc import Mapping
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
