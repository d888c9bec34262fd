"""CoOp (Zhou et al. 2022, Sec. 3.2): one learnable textual context.

Prompt of class i = [v_1..v_M, <class-name tokens>, "."], one shared context or one per
class (``class_specific``). CoOp's ``PromptLearner`` is this class, its ``TextEncoder`` is
``Backbone.encode_text_embeddings``; ProGrad (``prograd.py``) keeps the parameterisation.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..backbones import Backbone
from .base import DEFAULT_TEMPLATE, PromptLearner
from .text import ClassPrompts, class_prompt_rows, initial_context


class CoOp(PromptLearner):
    """``text_ctx``: [n_ctx, W] shared, or [C, n_ctx, W] with ``class_specific``.

    ``init_words``: initialise from these words (n_ctx becomes their token count, as in
    CoOp) or, with ``pad_init`` (ProGrad), put them in the last of ``n_ctx`` zero slots.
    Without words the context is N(0, 0.02^2) from ``seed``.
    """

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_ctx: int | None = 4,
        init_words: str | None = "a photo of a",
        class_specific: bool = False,
        pad_init: bool = False,
        seed: int = 0,
        truncate: bool = True,
    ):
        super().__init__(backbone)
        generator = torch.Generator().manual_seed(seed)
        ctx = self._initial_context(backbone, n_ctx, init_words, pad_init, generator)
        if class_specific:
            if init_words:
                ctx = ctx.unsqueeze(0).repeat(len(classnames), 1, 1)
            else:
                ctx = torch.randn(len(classnames), *ctx.shape, generator=generator) * 0.02
        self.class_specific = class_specific
        self.n_ctx = int(ctx.shape[-2])
        self.truncate = truncate
        self.text_ctx = nn.Parameter(ctx.to(backbone.device))
        self.set_classes(classnames)

    #: frozen words between the context and the class name (ProGrad's word-counted init)
    frozen_words: str | None = None

    def _initial_context(self, backbone, n_ctx, init_words, pad_init, generator) -> Tensor:
        return initial_context(backbone, n_ctx, init_words, pad=pad_init, generator=generator)

    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        if self.class_specific and self.classnames and list(classnames) != self.classnames:
            raise ValueError(
                "a class-specific context cannot be moved to other classes "
                f"({len(self.classnames)} trained, {len(classnames)} asked)"
            )
        self.classnames = list(classnames)
        self.prompts: ClassPrompts = class_prompt_rows(
            self.backbone,
            self.classnames,
            self.n_ctx,
            truncate=self.truncate,
            frozen_words=self.frozen_words,
        )

    def class_features(self) -> Tensor:
        prompts = self.prompts
        if self.class_specific:
            return self.backbone.encode_text_embeddings(
                prompts.assemble(self.text_ctx), prompts.tokens, truncate=self.truncate
            )
        prefix = prompts.shared_prefix(self.text_ctx)
        return self.backbone.encode_prompts(
            prefix, prompts.suffix, prompts.tokens, truncate=self.truncate
        )[0]
