"""Backbone factory: ``create_backbone(params["backbone"])`` returns a frozen dual encoder.

Two families, described as data in ``params.yaml``::

    backbone:
      kind: embedded            # or open_clip
      device: auto              # auto | cpu | cuda | cuda:N (runtime.py)
      precision: fp32           # fp32 | bf16 | fp16 autocast (runtime.py)
      embedded: {...}           # keyword arguments of EmbeddedBackbone
      open_clip: {model: ViT-B-16, pretrained: openai}   # keyword arguments of OpenClipBackbone

Construction is lazy (the heavy imports happen here, not at package import) and
``load_backbone`` memoises per process, so a stage loads its model once.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from .base import Backbone, TokenizedText, cosine_logits, full_precision
from .runtime import check_precision, resolve_device

__all__ = [
    "Backbone",
    "TokenizedText",
    "cosine_logits",
    "create_backbone",
    "full_precision",
    "load_backbone",
]

KINDS = ("embedded", "open_clip")


def create_backbone(config: dict[str, Any]) -> Backbone:
    """The backbone ``config`` describes, frozen, on ``device`` under ``precision``."""
    device = resolve_device(config.get("device", "auto"))
    precision = check_precision(config.get("precision", "fp32"), device)
    kind = config.get("kind")
    options = dict(config.get(kind) or {}) if isinstance(kind, str) else {}
    if kind == "embedded":
        from .embedded import EmbeddedBackbone

        backbone: Backbone = EmbeddedBackbone(**options)
    elif kind == "open_clip":
        from .open_clip_backbone import OpenClipBackbone

        backbone = OpenClipBackbone(**options)
    else:
        raise ValueError(f"params.yaml: backbone.kind = {kind!r} must be one of {list(KINDS)}")
    return backbone.eval().requires_grad_(False).place(device, precision)


@lru_cache(maxsize=2)
def _load(config_json: str) -> Backbone:
    return create_backbone(json.loads(config_json))


def load_backbone(config: dict[str, Any]) -> Backbone:
    """``create_backbone`` memoised on the config, for stages that ask more than once."""
    return _load(json.dumps(config, sort_keys=True))
