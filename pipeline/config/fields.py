"""Fields that declare what they accept, and the one loader that names the bad key."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import field
from typing import Any

from ..params import Bound, ParamError, check


def bounded(default: Any, low=None, high=None, *, integer=False, choices=None, nullable=False):
    """A dataclass field whose accepted values are declared beside it."""
    bound = Bound(low, high, integer, None if choices is None else tuple(choices), nullable)
    return field(default=default, metadata={"bound": bound})


def read(cls: type, section: Mapping | None, where: str, **given: Any):
    """``cls`` from a params.yaml mapping at ``where``; ``given`` sets fields not in params.

    Unknown keys and values outside a field's bound are errors naming the key.
    """
    if section is not None and not isinstance(section, Mapping):
        raise ParamError(f"params.yaml: {where} must be a mapping, got {section!r}")
    section = dict(section or {})
    names = [f.name for f in dataclasses.fields(cls) if f.name not in given]
    unknown = sorted(set(section) - set(names))
    if unknown:
        raise ParamError(f"params.yaml: {where}.{unknown[0]} is not one of {names}")
    for f in dataclasses.fields(cls):
        if f.name in section and "bound" in f.metadata:
            check(f"{where}.{f.name}", section[f.name], f.metadata["bound"])
    return cls(**section, **given)


def read_bounds(section: Mapping, where: str, bounds: Mapping[str, Bound]) -> dict[str, Any]:
    """Every key of ``bounds`` from ``section`` (missing: None), checked; no others."""
    unknown = sorted(set(section) - set(bounds))
    if unknown:
        raise ParamError(f"params.yaml: {where}.{unknown[0]} is not one of {list(bounds)}")
    return {key: check(f"{where}.{key}", section.get(key), b) for key, b in bounds.items()}
