"""CoCoOp (Zhou et al. 2022b): CoOp's context shifted per image by a small meta-net.

pi(x) = Linear(d, d // 16) -> ReLU -> Linear(d // 16, W) of the L2-normalised image feature
(cocoop.py:70, 95) is added to every context vector, so each image gets its own prompts and
the text encoder runs on B x C prompts per batch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import Tensor, nn

from ..backbones import Backbone
from .base import DEFAULT_TEMPLATE, Batch, PromptLearner
from .text import ClassPrompts, class_prompt_rows, initial_context


class CoCoOp(PromptLearner):
    shared_classifier = False

    def __init__(
        self,
        backbone: Backbone,
        classnames: list[str],
        n_ctx: int | None = 4,
        init_words: str | None = "a photo of a",
        seed: int = 0,
        truncate: bool = True,
    ):
        super().__init__(backbone)
        generator = torch.Generator().manual_seed(seed)
        ctx = initial_context(backbone, n_ctx, init_words, pad=False, generator=generator)
        self.n_ctx = int(ctx.shape[0])
        self.truncate = truncate
        self.text_ctx = nn.Parameter(ctx.to(backbone.device))
        d = backbone.embed_dim
        hidden = max(d // 16, 1)
        # nn.Linear draws its init from the global generator: fork it so the seed decides.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.meta_net = nn.Sequential(
                OrderedDict(
                    [
                        ("linear1", nn.Linear(d, hidden)),
                        ("relu", nn.ReLU(inplace=True)),
                        ("linear2", nn.Linear(hidden, backbone.text_width)),
                    ]
                )
            ).to(backbone.device)
        self.set_classes(classnames)

    def set_classes(self, classnames: list[str], template: str = DEFAULT_TEMPLATE) -> None:
        self.classnames = list(classnames)
        self.prompts: ClassPrompts = class_prompt_rows(
            self.backbone, self.classnames, self.n_ctx, truncate=self.truncate
        )

    def logits(self, batch: Batch, class_features: Tensor | None = None) -> Tensor:
        image = self.image_features(batch)
        image = image / image.norm(dim=-1, keepdim=True)
        ctx = self.text_ctx.unsqueeze(0) + self.meta_net(image).unsqueeze(1)  # [B, n, W]
        prompts = self.prompts
        text = self.backbone.encode_prompts(  # [B, C, D]
            prompts.shared_prefix(ctx), prompts.suffix, prompts.tokens, truncate=self.truncate
        )
        text = text / text.norm(dim=-1, keepdim=True)
        return self.backbone.logit_scale * torch.einsum("bd,bcd->bc", image, text)
