"""open_clip models (the paper's ViT-B/16 "openai" and any other standard CLIP) as a Backbone.

Soft prompts enter at the token-embedding layer and are pooled at the EOT token, as CoOp's
TextEncoder does. Visual prompts (VPT) are appended after the patch tokens, after the
positional embedding and before ``ln_pre``, as MaPLe's VPT does; deep prompts replace the
prompt outputs of each later layer. Both need access to the tower internals, so only the
standard ``open_clip.CLIP`` text tower and ``VisionTransformer`` image tower are accepted.

Weights: ``pretrained`` is an open_clip tag (read from the hub cache; we never download:
HF_HUB_OFFLINE is set), a local checkpoint path, or None for a random initialisation (tests).
``model`` may also name one of the JSON architectures in ``configs/`` next to this file.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from .base import Backbone, TokenizedText
from .transforms import CLIP_MEAN, CLIP_STD, image_transform

CONFIG_DIR = Path(__file__).parent / "configs"


class OpenClipBackbone(Backbone):
    def __init__(
        self,
        model: str = "ViT-B-16",
        pretrained: str | None = "openai",
        cache_dir: str | None = None,
        precision: str = "fp32",
    ):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip

        open_clip.add_model_config(CONFIG_DIR)
        if pretrained and Path(pretrained).suffix and not Path(pretrained).exists():
            raise FileNotFoundError(
                f"params.yaml: backbone.open_clip.pretrained = {pretrained!r}: no such checkpoint"
            )
        try:
            clip_model = open_clip.create_model(
                model, pretrained=pretrained or None, precision=precision, cache_dir=cache_dir
            )
        except RuntimeError as error:
            raise RuntimeError(
                f"could not load open_clip model {model!r} with pretrained={pretrained!r}. "
                "There is no internet here: put the checkpoint in the hub cache or pass its "
                f"local path as backbone.open_clip.pretrained ({error})"
            ) from error
        if not isinstance(clip_model, open_clip.CLIP):
            raise ValueError(
                f"{model}: only open_clip.CLIP models (built-in text tower) are supported"
            )
        if not isinstance(clip_model.visual, open_clip.transformer.VisionTransformer):
            raise ValueError(f"{model}: only ViT image towers are supported (got a CNN tower)")
        self.model = clip_model
        self._tokenizer = open_clip.get_tokenizer(model)

        self.name = f"open_clip:{model}:{pretrained}"
        self.embed_dim = int(clip_model.text_projection.shape[-1])
        self.text_width = int(clip_model.token_embedding.weight.shape[1])
        self.vision_width = int(clip_model.visual.conv1.out_channels)
        self.vision_layers = len(clip_model.visual.transformer.resblocks)
        image_size = clip_model.visual.image_size
        self.image_size = int(image_size[0] if isinstance(image_size, tuple) else image_size)
        preprocess = getattr(clip_model.visual, "preprocess_cfg", {}) or {}
        self._mean = tuple(preprocess.get("mean", CLIP_MEAN))
        self._std = tuple(preprocess.get("std", CLIP_STD))

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.exp().item())

    def image_transform(self, train: bool = False):
        return image_transform(self.image_size, self._mean, self._std, train)

    # ---- text -------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> TokenizedText:
        ids = self._tokenizer(texts).long()
        # The EOT token has the largest id in CLIP's vocabulary: open_clip pools at argmax.
        return TokenizedText(ids, ids.argmax(dim=-1))

    def embed_tokens(self, ids: Tensor) -> Tensor:
        return self.model.token_embedding(ids.to(self.device))

    def encode_text_embeddings(
        self, embeddings: Tensor, tokens: TokenizedText, truncate: bool = True
    ) -> Tensor:
        model = self.model
        length = tokens.length if truncate else embeddings.shape[1]
        x = embeddings[:, :length] + model.positional_embedding[:length].to(embeddings.dtype)
        mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
        x = model.ln_final(model.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.eot.to(x.device)]
        projection = model.text_projection
        return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection

    # ---- image ------------------------------------------------------------------------
    def encode_image(self, images: Tensor, visual_prompt: Tensor | None = None) -> Tensor:
        if visual_prompt is None:
            return self.model.encode_image(images)
        return self._encode_image_with_prompts(images, visual_prompt)

    def _encode_image_with_prompts(self, images: Tensor, prompts: Tensor) -> Tensor:
        """VPT: [depth, n, width] prompts; layer i < depth sees prompts[i] as its n last tokens."""
        visual = self.model.visual
        depth, n_prompts, width = prompts.shape
        if width != self.vision_width or not 1 <= depth <= self.vision_layers:
            raise ValueError(
                f"visual prompt of shape {tuple(prompts.shape)} does not fit a ViT of width "
                f"{self.vision_width} and {self.vision_layers} layers"
            )
        batch = images.shape[0]
        x = visual.conv1(images).flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(batch, 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        n_image_tokens = x.shape[1]
        x = torch.cat([x, prompts[0].to(x.dtype).expand(batch, -1, -1)], dim=1)
        x = visual.ln_pre(x)
        transformer = visual.transformer
        for layer, block in enumerate(transformer.resblocks):
            if 0 < layer < depth:
                x = torch.cat([x[:, :n_image_tokens], prompts[layer].expand(batch, -1, -1)], 1)
            x = _run_block(block, x, transformer.batch_first)
        # Pool over the image tokens only: prompts carry no position and are not pooled.
        pooled, _ = visual._pool(x[:, :n_image_tokens])
        return pooled @ visual.proj if visual.proj is not None else pooled


def _run_block(block: torch.nn.Module, x: Tensor, batch_first: bool) -> Tensor:
    if batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)
