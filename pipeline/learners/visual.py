"""Visual prompts: VPT on a ViT image encoder, a pixel-space padding prompt on a CNN, and the
joint textual + visual learner that UNIGRAM fine-tunes.

VPT (Jia et al. 2022, as MaPLe's ``trainers/vpt.py`` runs it on CLIP): ``n_tokens`` learnable
tokens of the ViT width, N(0, 0.02^2), no positional embedding, appended to the token
sequence of the first layer (``depth`` = 1, shallow) or replaced at each of the first
``depth`` layers (deep). The text side is frozen: one hand-written prompt per class, MaPLe's
fixed ``"a photo of a {}."`` by default.

A CNN has no tokens: there the visual prompt is Bahng et al.'s padding prompt (GRAM ref [2]),
a learnable border ``pad_width`` pixels wide added to the preprocessed image. It is stored as
one [3, H, W] tensor whose interior is masked out, so every method has one ``visual_prompt``
tensor whatever the backbone (the interior's gradient is exactly zero, and with a zero start
weight decay keeps it at zero).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones import Backbone
from .base import DEFAULT_TEMPLATE, PromptLearner, hand_written_classifier
from .coop import CoOp


def border_mask(size: int, width: int) -> Tensor:
    """[1, size, size] mask: 1 on a ``width``-pixel border, 0 inside."""
    if not 0 < width <= size // 2:
        raise ValueError(f"pad_width {width} must lie in [1, {size // 2}] for {size}px images")
    mask = torch.ones(1, size, size)
    mask[:, width : size - width, width : size - width] = 0
    return mask


class VisualPromptMixin:
    """Creates ``visual_prompt`` for the backbone at hand (tokens on a ViT, pixels on a CNN)."""

    def _init_visual_prompt(
        self,
        backbone: Backbone,
        n_tokens: int,
        depth: int,
        pad_width: int,
        init_std: float,
        pixel_init_std: float,
        generator: torch.Generator,
    ) -> None:
        if backbone.vision_width:  # a ViT: VPT tokens
            if not 1 <= depth <= backbone.vision_layers:
                raise ValueError(f"VPT depth {depth} must lie in [1, {backbone.vision_layers}]")
            shape = (depth, n_tokens, backbone.vision_width)
            prompt = torch.randn(*shape, generator=generator) * init_std
            self.pixel_mask = None
        else:  # a CNN: Bahng et al.'s padding prompt
            mask = border_mask(backbone.image_size, pad_width)
            prompt = torch.randn(3, *mask.shape[1:], generator=generator) * pixel_init_std * mask
            self.pixel_mask = mask.to(backbone.device)
        self.visual_prompt = nn.Parameter(prompt.to(backbone.device))

    def visual_prompt_input(self) -> Tensor:
        if self.pixel_mask is None:
            return self.visual_prompt
        return self.visual_prompt * self.pixel_mask

    def regulator_channel_dims(self) -> dict[str, int]:
        # a pixel prompt [3, H, W]: its colour channels are d, each pixel a token
        return {} if self.pixel_mask is None else {"visual_prompt": 0}


class VPT(VisualPromptMixin, PromptLearner):
    """Visual prompt with a frozen hand-written text classifier.

    ``text_template``: the hand-written prompt (None: the dataset's own template).
    """

    needs_images = True

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_tokens: int = 4,
        depth: int = 1,
        pad_width: int = 16,
        init_std: float = 0.02,
        pixel_init_std: float = 0.0,
        text_template: str | None = DEFAULT_TEMPLATE,
        template: str = DEFAULT_TEMPLATE,
        seed: int = 0,
    ):
        super().__init__(backbone)
        generator = torch.Generator().manual_seed(seed)
        self._init_visual_prompt(
            backbone, n_tokens, depth, pad_width, init_std, pixel_init_std, generator
        )
        self.text_template = text_template
        self.set_classes(classnames, template)

    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        self.classnames = list(classnames)
        used = self.text_template or template
        self._classifier = hand_written_classifier(self.backbone, used, self.classnames)

    def class_features(self) -> Tensor:
        return self._classifier


class JointPrompt(VisualPromptMixin, CoOp):
    """UNIGRAM's parameterisation: CoOp's ``text_ctx`` and a ``visual_prompt`` together."""

    needs_images = True

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_ctx: int | None = 2,
        init_words: str | None = None,
        n_tokens: int = 2,
        depth: int = 1,
        pad_width: int = 16,
        init_std: float = 0.02,
        pixel_init_std: float = 0.0,
        seed: int = 0,
        truncate: bool = True,
    ):
        super().__init__(
            backbone, classnames, n_ctx=n_ctx, init_words=init_words, seed=seed, truncate=truncate
        )
        # a separate stream, so the text context is the same as CoOp's with the same seed
        generator = torch.Generator().manual_seed(seed + 1)
        self._init_visual_prompt(
            backbone, n_tokens, depth, pad_width, init_std, pixel_init_std, generator
        )
