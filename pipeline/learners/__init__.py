"""Prompt learners: zero-shot CLIP, CoOp, CoCoOp, ProGrad, VPT and the joint (UNIGRAM) learner.

``build_learner(kind, backbone, classnames, options)`` builds one from its checked options
(``pipeline.config.check_learner``); see ``base.py`` for the shared shape
(``prompt_parameters``, ``logits``, ``training_gradients``, functional use through
``torch.func.functional_call``) and what a learner declares it needs (``teacher``,
``regulator_channel_dims``).
"""

from __future__ import annotations

from typing import Any

from ..backbones import Backbone
from .base import DEFAULT_TEMPLATE, Batch, PromptLearner, StepOutput, ZeroShot
from .cocoop import CoCoOp
from .coop import CoOp
from .prograd import ProGrad, prograd_projection, soft_cross_entropy
from .visual import VPT, JointPrompt

__all__ = [
    "LEARNERS",
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

#: learner kind (params.yaml ``learner:``) -> class
LEARNERS: dict[str, type[PromptLearner]] = {
    "zeroshot": ZeroShot,
    "coop": CoOp,
    "cocoop": CoCoOp,
    "prograd": ProGrad,
    "vpt": VPT,
    "joint": JointPrompt,
}
#: option names that are not the constructor's (``lambda`` is a Python keyword)
ARGUMENT_NAMES = {"lambda": "lam"}
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
) -> PromptLearner:
    """A learner of ``kind`` for ``classnames`` with ``options`` (its constructor's keywords,
    ``lambda`` for ProGrad's ``lam``). ``init_words: template`` means the dataset's ProGrad
    template words (ProGrad's default). Bad options raise ``ValueError``."""
    if kind not in LEARNERS:
        raise ValueError(f"learner {kind!r} must be one of {list(LEARNERS)}")
    options = {ARGUMENT_NAMES.get(k, k): v for k, v in (options or {}).items()}
    if options.get("init_words") == TEMPLATE_WORDS:
        options["init_words"] = template_words(prograd_template or template)
    if kind == "zeroshot":
        return ZeroShot(backbone, classnames, template)
    if kind == "vpt":
        options["template"] = template
    return LEARNERS[kind](backbone, classnames, seed=seed, **options)
