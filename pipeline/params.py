"""Reading ``params.yaml`` and rejecting values that are out of range, with the key named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

PARAMS_FILE = Path("params.yaml")


class ParamError(UserError):
    """A value in params.yaml that the pipeline cannot use."""


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no params file (run stages from the repository root)")
    with path.open() as f:
        params = yaml.safe_load(f) or {}
    if not isinstance(params, dict):
        raise ParamError(f"{path}: expected a mapping at the top level")
    return params


def get(params: dict[str, Any], dotted_key: str) -> Any:
    """``get(p, "filter.min_similarity")`` with an error naming the missing key."""
    node: Any = params
    for part in dotted_key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise ParamError(f"params.yaml: missing key '{dotted_key}'")
        node = node[part]
    return node


def check_range(
    name: str, value: Any, low: float | None = None, high: float | None = None, integer=False
) -> Any:
    """Raise :class:`ParamError` unless ``low <= value <= high`` (bounds optional)."""
    if integer and (isinstance(value, bool) or not isinstance(value, int)):
        raise ParamError(f"params.yaml: {name} = {value!r} must be an integer")
    if not integer and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise ParamError(f"params.yaml: {name} = {value!r} must be a number")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        raise ParamError(f"params.yaml: {name} = {value!r} is outside {bounds}")
    return value


def check_choice(name: str, value: Any, choices: list | tuple) -> Any:
    if value not in choices:
        raise ParamError(f"params.yaml: {name} = {value!r} must be one of {list(choices)}")
    return value


def dataset_spec(params: dict[str, Any], name: str):
    """The spec of dataset ``name``: one of the user's own (``data.own.<name>``) or built-in."""
    from pipeline.data import resolve_spec, spec_from_config

    own = (params.get("data") or {}).get("own") or {}
    if name in own:
        return spec_from_config(name, own[name] or {}, key=f"data.own.{name}")
    return resolve_spec(name)


def data_root(params: dict[str, Any]) -> Path:
    return Path(get(params, "data.root")).expanduser()
