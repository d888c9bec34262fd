"""Prompt learners: zero-shot CLIP, CoOp, CoCoOp, ProGrad, VPT and the joint (UNIGRAM) learner.

``build_learner(kind, backbone, classnames, ...)`` builds one from its ``params.yaml``
options; see ``base.py`` for the shared shape (``prompt_parameters``, ``logits``,
``training_gradients``, functional use through ``torch.func.functional_call``).
"""

from __future__ import annotations

from typing import Any

from ..backbones import Backbone
from ..params import ParamError, check_range
from .base import DEFAULT_TEMPLATE, Batch, PromptLearner, StepOutput, ZeroShot
from .cocoop import CoCoOp
from .coop import CoOp, ProGrad, prograd_projection, soft_cross_entropy
from .visual import VPT, JointPrompt

__all__ = [
    "KINDS",
    "VPT",
    "Batch",
    "CoCoOp",
    "CoOp",
    "JointPrompt",
    "ProGrad",
    "PromptLearner",
    "StepOutput",
    "ZeroShot",
    "build_learner",
    "prograd_projection",
    "soft_cross_entropy",
    "template_words",
]

#: learner kind -> (class, options it accepts)
KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "zeroshot": (ZeroShot, ()),
    "coop": (CoOp, ("n_ctx", "init_words", "class_specific")),
    "cocoop": (CoCoOp, ("n_ctx", "init_words")),
    "prograd": (ProGrad, ("n_ctx", "init_words", "class_specific", "lam", "temperature")),
    "vpt": (VPT, ("n_tokens", "depth", "pad_width", "init_std", "pixel_init_std",
                  "text_template")),
    "joint": (JointPrompt, ("n_ctx", "init_words", "n_tokens", "depth", "pad_width", "init_std",
                            "pixel_init_std")),
}  # fmt: skip

TEMPLATE_WORDS = "template"


def template_words(template: str) -> str | None:
    """ProGrad's context initialisation: the template with ``" {}."`` removed
    (``"a type of pet, a photo of a {}."`` -> ``"a type of pet, a photo of a"``).

    A template with its class name elsewhere keeps the words before ``{}`` (our choice; the
    reference would embed the literal ``{}``); None when there are none (random init).
    """
    if template.endswith(" {}."):
        return template[: -len(" {}.")]
    return template.split("{}")[0].strip(" ,.") or None


def build_learner(
    kind: str,
    backbone: Backbone,
    classnames: list[str],
    options: dict[str, Any] | None = None,
    *,
    template: str = DEFAULT_TEMPLATE,
    prograd_template: str | None = None,
    seed: int = 0,
    where: str = "finetune",
) -> PromptLearner:
    """A learner of ``kind`` for ``classnames``; ``options`` come from params.yaml at ``where``.

    ``init_words: template`` means the dataset's ProGrad template words (ProGrad's default).
    """
    if kind not in KINDS:
        raise ParamError(f"params.yaml: {where}.learner = {kind!r} must be one of {list(KINDS)}")
    cls, accepted = KINDS[kind]
    options = dict(options or {})
    if "lambda" in options:  # ProGrad's name for it; a Python keyword
        options["lam"] = options.pop("lambda")
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ParamError(
            f"params.yaml: {where}.{unknown[0]} is not an option of the {kind} learner "
            f"(options: {list(accepted)})"
        )
    for key in ("n_ctx", "n_tokens", "depth", "pad_width"):
        if options.get(key) is not None:
            check_range(f"{where}.{key}", options[key], 1, 4096, integer=True)
    if "lam" in options:
        check_range(f"{where}.lam", options["lam"], 0.0, 1.0)
    if "temperature" in options:
        check_range(f"{where}.temperature", options["temperature"], 1e-6, None)
    if options.get("init_words") == TEMPLATE_WORDS:
        options["init_words"] = template_words(prograd_template or template)
    if kind == "zeroshot":
        return ZeroShot(backbone, classnames, template)
    if kind == "vpt":
        options["template"] = template
    try:
        return cls(backbone, classnames, seed=seed, **options)
    except ValueError as error:
        raise ParamError(f"params.yaml: {where}: {error}") from error
