"""What every prompt learner shares: the batch it reads, its parameters, its logits, its gradient.

A learner is an ``nn.Module`` whose parameters are ONLY its prompt parameters (and CoCoOp's
meta-net): the frozen backbone is held as a plain attribute, not a submodule, so
``state_dict()`` is the prompt, ``named_parameters()`` is theta, and
``torch.func.functional_call(learner, params, (batch,))`` computes logits for any params dict
(GRAM's inner and outer loops use exactly that). Parameter names are stable across learners
so that a prompt learned by one (GRAM's theta*) initialises another: ``text_ctx`` for the
textual context [n_ctx, W] (or [C, n_ctx, W] class-specific), ``visual_prompt`` for VPT
tokens [depth, n, vision_width] or the pixel prompt [3, H, W].

Learners differ in what they parameterise (``logits``) and in how their update direction is
formed (``training_gradients``: cross-entropy for all but ProGrad).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone, cosine_logits
from ..data.templates import DEFAULT_TEMPLATE
from ..zeroshot import hand_written_prompts, text_classifier


@dataclass
class Batch:
    """One batch of labelled samples, as frozen features or as preprocessed images.

    ``features`` [B, embed_dim]: frozen image-encoder outputs (textual learners);
    ``images`` [B, 3, H, W]: preprocessed images (learners with visual prompts, and the
    reference path that re-encodes every step); ``teacher_logits`` [B, C]: ProGrad's frozen
    zero-shot logits of the same samples.
    """

    labels: Tensor
    features: Tensor | None = None
    images: Tensor | None = None
    teacher_logits: Tensor | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclass
class StepOutput:
    loss: float
    correct: int
    count: int
    grads: dict[str, Tensor]


class PromptLearner(nn.Module):
    """Base class. Subclasses set ``needs_images`` and implement ``set_classes`` and
    ``class_features`` (or ``logits`` when the classifier depends on the image)."""

    #: logits need the images themselves (a visual prompt changes the image features)
    needs_images: bool = False
    #: one classifier [C, D] serves every image (False for CoCoOp's per-image prompts)
    shared_classifier: bool = True

    def __init__(self, backbone: Backbone):
        super().__init__()
        # Not a submodule: its weights are frozen and must stay out of state_dict/parameters.
        object.__setattr__(self, "backbone", backbone)
        self.classnames: list[str] = []

    # -- interface ---------------------------------------------------------------------------
    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        """Point the classifier at a class set (training classes, new classes, a target
        dataset). ``template`` is the dataset's hand-written prompt; only learners with a
        hand-written text side (zero-shot, VPT when so configured) use it."""
        raise NotImplementedError

    def class_features(self) -> Tensor:
        """[C, embed_dim] text features of the current classes (differentiable)."""
        raise NotImplementedError

    def prompt_parameters(self) -> dict[str, nn.Parameter]:
        """The trainable tensors by name (theta)."""
        return dict(self.named_parameters())

    def visual_prompt_input(self) -> Tensor | None:
        """What ``Backbone.encode_image`` takes as ``visual_prompt`` (None: no prompt)."""
        return None

    # -- what a learner needs besides its prompt ---------------------------------------------
    def teacher(self, template: str, classnames: list[str]) -> Tensor | None:
        """A frozen [C, D] classifier whose logits of each training sample the batches must
        carry as ``teacher_logits`` (ProGrad's zero-shot CLIP); None: no teacher."""
        return None

    def regulator_channel_dims(self) -> dict[str, int]:
        """GRAM's R_phi layout: prompt tensor name -> the axis that is the paper's d
        (default: the last; README "Gradient regulator")."""
        return {}

    # -- shared computation ------------------------------------------------------------------
    def image_features(self, batch: Batch) -> Tensor:
        prompt = self.visual_prompt_input()
        if prompt is None and batch.features is not None:
            return batch.features.to(self.backbone.device)
        if batch.images is None:
            raise ValueError(f"{type(self).__name__} needs images, the batch holds features only")
        return self.backbone.encode_image(batch.images.to(self.backbone.device), prompt)

    def logits(self, batch: Batch, class_features: Tensor | None = None) -> Tensor:
        """[B, C] logits; ``class_features`` lets evaluation reuse one frozen classifier."""
        text = self.class_features() if class_features is None else class_features
        return cosine_logits(self.image_features(batch), text, self.backbone.logit_scale)

    def forward(self, batch: Batch) -> Tensor:
        return self.logits(batch)

    def training_gradients(self, batch: Batch) -> StepOutput:
        """Cross-entropy and its gradient w.r.t. every prompt tensor (no optimiser step)."""
        params = self.prompt_parameters()
        logits = self.logits(batch)
        labels = batch.labels.to(logits.device)
        loss = F.cross_entropy(logits, labels)
        grads = _grads(loss, params)
        return StepOutput(float(loss.detach()), _correct(logits, labels), len(batch), grads)


def _grads(loss: Tensor, params: dict[str, Tensor], retain_graph: bool = False) -> dict:
    values = torch.autograd.grad(
        loss, list(params.values()), retain_graph=retain_graph, allow_unused=True
    )
    return {
        name: torch.zeros_like(p) if g is None else g
        for (name, p), g in zip(params.items(), values, strict=True)
    }


def _correct(logits: Tensor, labels: Tensor) -> int:
    return int((logits.argmax(dim=-1) == labels).sum())


def hand_written_classifier(backbone: Backbone, template: str, classnames: list[str]) -> Tensor:
    """[C, D] frozen text features of one hand-written prompt per class (zero-shot CLIP)."""
    return text_classifier(backbone, hand_written_prompts(template, classnames)).to(backbone.device)


class ZeroShot(PromptLearner):
    """Zero-shot CLIP: the dataset's hand-written template, nothing to train."""

    def __init__(self, backbone: Backbone, classnames: list[str], template: str):
        super().__init__(backbone)
        self.set_classes(classnames, template)

    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        self.classnames = list(classnames)
        self._classifier = hand_written_classifier(self.backbone, template, self.classnames)

    def class_features(self) -> Tensor:
        return self._classifier
