"""Reading ``params.yaml`` and rejecting values a field does not accept, with the key named
(``params.yaml: <key> = <value>: <what is wrong>``); ``pipeline.config`` builds on it."""

from __future__ import annotations

from dataclasses import dataclass
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
        raise UserError(f"{path}: no params file (run stages from the repository root)")
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


@dataclass(frozen=True)
class Bound:
    """What a field accepts: a number in [low, high], one of ``choices``, or None."""

    low: float | None = None
    high: float | None = None
    integer: bool = False
    choices: tuple | None = None
    nullable: bool = False

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is refused (None: accepted)."""
        if self.choices is not None and any(
            value is c or (type(value) is type(c) and value == c) for c in self.choices
        ):
            return None
        if value is None:
            return None if self.nullable else "must be set"
        if self.choices is not None:
            return f"must be one of {list(self.choices)}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return "must be an integer" if self.integer else "must be a number"
        if self.integer and not isinstance(value, int):
            return "must be an integer"
        if self.low is not None and value < self.low:
            return f"must be >= {self.low}"
        if self.high is not None and value > self.high:
            return f"must be <= {self.high}"
        return None


def check(where: str, value: Any, bound: Bound) -> Any:
    """``value`` if ``bound`` accepts it, else a ParamError naming ``where``."""
    problem = bound.problem(value)
    if problem:
        raise ParamError(f"params.yaml: {where} = {value!r}: {problem}")
    return value


def check_range(
    name: str, value: Any, low: float | None = None, high: float | None = None, integer=False
) -> Any:
    """Raise :class:`ParamError` unless ``low <= value <= high`` (bounds optional)."""
    return check(name, value, Bound(low, high, integer))


def check_choice(name: str, value: Any, choices: list | tuple) -> Any:
    return check(name, value, Bound(choices=tuple(choices)))


def dataset_spec(params: dict[str, Any], name: str):
    """The spec of dataset ``name``: one of the user's own (``data.own.<name>``) or built-in."""
    from pipeline.data import resolve_spec, spec_from_config

    own = (params.get("data") or {}).get("own") or {}
    if name in own:
        return spec_from_config(name, own[name] or {}, key=f"data.own.{name}")
    return resolve_spec(name)


def data_root(params: dict[str, Any]) -> Path:
    return Path(get(params, "data.root")).expanduser()
