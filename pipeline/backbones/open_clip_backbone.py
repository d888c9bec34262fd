"""open_clip models (the paper's ViT-B/16 "openai" and any other standard CLIP) as a Backbone.

Soft prompts enter at the token-embedding layer and are pooled at the EOT token, as CoOp's
TextEncoder does. Visual prompts (VPT) are appended after the patch tokens, after the
positional embedding and before ``ln_pre``, as MaPLe's VPT does; deep prompts replace the
prompt outputs of each later layer. Both need access to the tower internals, so only the
standard ``open_clip.CLIP`` text tower and ``VisionTransformer`` image tower are accepted.

Weights: ``pretrained`` is an open_clip tag (read from the hub cache; we never download:
HF_HUB_OFFLINE is set), a local checkpoint file (open_clip or OpenAI format, TorchScript
archives included), or None for a random initialisation (tests). Weights trained with
QuickGELU (OpenAI's) always get QuickGELU, whatever the architecture's name says
(``checkpoints.py``). Prompts that share their first rows (CoOp's start token and context)
run those rows once (``shared_prefix.py``). ``model`` may also name one of the JSON
architectures in ``configs/``.

The VPT path reads open_clip internals (``visual._pool`` from 2.32, ``transformer.batch_first``
until 3.3), so the installed version must be in ``OPEN_CLIP_VERSIONS``.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from ..params import ParamError
from . import checkpoints
from .base import Backbone, TokenizedText
from .shared_prefix import encode_with_shared_prefix, supports_shared_prefix
from .transforms import CLIP_MEAN, CLIP_STD, image_transform

CONFIG_DIR = Path(__file__).parent / "configs"
#: [lowest, first unsupported) open_clip_torch versions; keep in step with pyproject.toml
OPEN_CLIP_VERSIONS = ((2, 32), (3, 4))


def check_open_clip_version(version: str) -> None:
    """Refuse an open_clip_torch whose internals the VPT path does not know."""
    try:
        major_minor = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        major_minor = ()
    low, high = OPEN_CLIP_VERSIONS
    if len(major_minor) != 2 or not low <= major_minor < high:
        supported = f">={low[0]}.{low[1]},<{high[0]}.{high[1]}"
        raise UserError(
            f"open_clip_torch {version} is installed; backbone.kind: open_clip needs "
            f"open_clip_torch{supported} (pip install 'open_clip_torch{supported}')"
        )


def import_open_clip():
    check_open_clip_version(metadata.version("open_clip_torch"))
    import open_clip

    open_clip.add_model_config(CONFIG_DIR)
    return open_clip


@contextmanager
def _without_random_init_warning():
    """Drop open_clip's "Model initialized randomly" warning: it is logged whenever
    ``create_model`` gets no tag, also when a local checkpoint is loaded strictly right
    after, where it would tell a user of OpenAI's weights that they run a random model."""

    def keep(record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()

    root = logging.getLogger()  # open_clip logs through logging.warning
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def build_clip(model: str, pretrained: str | None, cache_dir: str | None):
    """open_clip's CLIP for (model, pretrained), with the activation the weights need.

    Returns the model and whether QuickGELU was forced onto a plain-GELU architecture.
    """
    open_clip = import_open_clip()
    checkpoints.architecture_uses_quick_gelu(model)  # an unknown name is an error first
    if not pretrained:
        return open_clip.create_model(model, pretrained=None), False
    path = Path(pretrained)
    if path.is_file():
        checkpoint = checkpoints.read_local_checkpoint(path)
        force = checkpoint.openai_format and checkpoints.check_activation(
            model, pretrained, weights_quick_gelu=True
        )
        with _without_random_init_warning():
            clip_model = open_clip.create_model(model, pretrained=None, force_quick_gelu=force)
        checkpoints.check_metadata(checkpoint, clip_model, model)
        checkpoints.load_weights(clip_model, checkpoint, model)
        return clip_model, force
    if path.suffix or os.sep in pretrained:
        raise ParamError(
            f"params.yaml: {checkpoints.PRETRAINED_KEY} = {pretrained!r}: no such checkpoint"
        )
    weights_quick_gelu = checkpoints.tag_needs_quick_gelu(model, pretrained)
    force = checkpoints.check_activation(model, pretrained, weights_quick_gelu)
    try:
        clip_model = open_clip.create_model(
            model, pretrained=pretrained, cache_dir=cache_dir, force_quick_gelu=force
        )
    except RuntimeError as error:
        raise ParamError(
            f"params.yaml: {checkpoints.PRETRAINED_KEY} = {pretrained!r}: could not load the "
            f"weights of {model!r}. There is no internet here: put the checkpoint in the hub "
            f"cache or give its local path ({error})"
        ) from error
    return clip_model, force


class OpenClipBackbone(Backbone):
    def __init__(
        self,
        model: str = "ViT-B-16",
        pretrained: str | None = "openai",
        cache_dir: str | None = None,
    ):
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import open_clip

        clip_model, forced_quick_gelu = build_clip(model, pretrained, cache_dir)
        if not isinstance(clip_model, open_clip.CLIP):
            raise ParamError(
                f"params.yaml: {checkpoints.MODEL_KEY} = {model!r}: only open_clip.CLIP "
                "models (built-in text tower) are supported"
            )
        if not isinstance(clip_model.visual, open_clip.transformer.VisionTransformer):
            raise ParamError(
                f"params.yaml: {checkpoints.MODEL_KEY} = {model!r}: only ViT image towers "
                "are supported (got a CNN tower)"
            )
        self.model = clip_model
        self._shared_prefix = supports_shared_prefix(clip_model)
        self._tokenizer = open_clip.get_tokenizer(model)

        # the activation is part of the name: features of the two are not interchangeable
        architecture = f"{model}+quickgelu" if forced_quick_gelu else model
        self.name = f"open_clip:{architecture}:{pretrained}"
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
        with self.autocast():
            return self._encode_text_embeddings(embeddings, tokens, truncate).float()

    def encode_prompts(
        self, prefix: Tensor, tail: Tensor, tokens: TokenizedText, truncate: bool = True
    ) -> Tensor:
        if not (truncate and self._shared_prefix):
            return super().encode_prompts(prefix, tail, tokens, truncate)
        rest = tokens.length - prefix.shape[1]
        with self.autocast():
            pooled = encode_with_shared_prefix(
                self.model,
                prefix.to(self.device),
                tail[:, :rest].to(self.device, prefix.dtype),
                tokens.eot.to(self.device),
            )
            return self._project_text(pooled).float()

    def _encode_text_embeddings(self, embeddings: Tensor, tokens: TokenizedText, truncate: bool):
        model = self.model
        embeddings = embeddings.to(self.device)
        length = tokens.length if truncate else embeddings.shape[1]
        x = embeddings[:, :length] + model.positional_embedding[:length].to(embeddings.dtype)
        mask = None if model.attn_mask is None else model.attn_mask[:length, :length]
        x = model.ln_final(model.transformer(x, attn_mask=mask))
        x = x[torch.arange(x.shape[0], device=x.device), tokens.eot.to(x.device)]
        return self._project_text(x)

    def _project_text(self, pooled: Tensor) -> Tensor:
        projection = self.model.text_projection
        if isinstance(projection, torch.nn.Linear):
            return projection(pooled)
        return pooled @ projection

    # ---- image ------------------------------------------------------------------------
    def encode_image(self, images: Tensor, visual_prompt: Tensor | None = None) -> Tensor:
        images = images.to(self.device, non_blocking=True)
        with self.autocast():
            if visual_prompt is None:
                return self.model.encode_image(images).float()
            return self._encode_image_with_prompts(images, visual_prompt).float()

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
                layer_prompts = prompts[layer].to(x.dtype).expand(batch, -1, -1)
                x = torch.cat([x[:, :n_image_tokens], layer_prompts], dim=1)
            x = _run_block(block, x, transformer.batch_first)
        # Pool over the image tokens only: prompts carry no position and are not pooled.
        pooled, _ = visual._pool(x[:, :n_image_tokens])
        return pooled @ visual.proj if visual.proj is not None else pooled


def _run_block(block: torch.nn.Module, x: Tensor, batch_first: bool) -> Tensor:
    if batch_first:
        return block(x)
    return block(x.transpose(0, 1)).transpose(0, 1)
