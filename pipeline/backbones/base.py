"""The one interface every stage uses to talk to a vision-language dual encoder.

A backbone is a frozen image encoder and a frozen text encoder that map into one joint
space. Prompt learners only ever touch it through this class:

* ``image_transform(train)`` -> the backbone's own preprocessing (PIL image -> tensor);
* ``encode_image(images, visual_prompt)`` -> joint-space image features;
* ``tokenize(texts)`` -> :class:`TokenizedText` (ids plus where each sequence ends);
* ``embed_tokens(ids)`` -> rows of the token-embedding table, where soft prompts live;
* ``encode_text(tokens)`` / ``encode_text_embeddings(embeddings, tokens)`` -> text features;
* ``encode_prompts(prefix, tail, tokens)`` -> features of prompts that share their first rows;
* ``logit_scale`` -> the temperature that turns cosine similarities into logits.

Features are returned unnormalised, as CLIP's ``encode_image``/``encode_text`` do; callers
normalise (see :func:`cosine_logits`).

Text is always cut to the longest sequence of the batch before the transformer runs. For
CLIP's causal transformer the features are read at the EOT token and no position attends to
a later one, so dropping everything after the last EOT changes nothing; for a bidirectional
encoder (MiniLM) padding is masked out of attention and pooling, so dropping it changes
nothing either. ``truncate=False`` keeps the full context length so tests can prove this.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torch import Tensor, nn


@dataclass(frozen=True)
class TokenizedText:
    """Token ids of a batch of texts, padded to the encoder's context length.

    ``ids``: [N, L] int64. ``eot``: [N] int64, index of each sequence's last real token
    (CLIP's end-of-text token, BERT's [SEP]); everything after it is padding.
    """

    ids: Tensor
    eot: Tensor

    def __post_init__(self) -> None:
        if self.ids.ndim != 2 or self.eot.shape != self.ids.shape[:1]:
            raise ValueError(
                f"TokenizedText expects ids [N, L] and eot [N], got {tuple(self.ids.shape)} "
                f"and {tuple(self.eot.shape)}"
            )

    def __len__(self) -> int:
        return self.ids.shape[0]

    @property
    def length(self) -> int:
        """Number of positions that matter for this batch: last EOT + 1."""
        return int(self.eot.max().item()) + 1 if len(self) else 0

    def truncated(self) -> TokenizedText:
        return TokenizedText(self.ids[:, : self.length], self.eot)

    def to(self, device: torch.device | str) -> TokenizedText:
        return TokenizedText(self.ids.to(device), self.eot.to(device))

    def __getitem__(self, index) -> TokenizedText:
        return TokenizedText(self.ids[index], self.eot[index])


class Backbone(nn.Module, ABC):
    """A frozen dual encoder. Subclasses set the attributes below in ``__init__``."""

    #: identifier used in feature-cache keys and result files, e.g. "open_clip:ViT-B-16:openai"
    name: str
    #: joint embedding dimension of image and text features
    embed_dim: int
    #: dimension of token embeddings, i.e. of one soft-prompt context vector
    text_width: int
    #: width of the vision transformer's tokens (VPT prompt width); None for a CNN
    vision_width: int | None
    #: number of vision transformer layers (deep VPT depth); 0 for a CNN
    vision_layers: int
    #: input resolution of the image encoder
    image_size: int
    #: position in a tokenized prompt where soft context vectors start (after SOS / [CLS])
    context_start: int = 1
    #: autocast precision of the encoders (``runtime.PRECISIONS``); set by :meth:`place`
    precision: str = "fp32"

    @property
    @abstractmethod
    def logit_scale(self) -> float:
        """Multiplier applied to cosine similarities (CLIP: exp(learned) = 100)."""

    @abstractmethod
    def image_transform(self, train: bool = False) -> Callable[[Image.Image], Tensor]:
        """The preprocessing the image encoder expects; ``train`` adds augmentation."""

    @abstractmethod
    def encode_image(self, images: Tensor, visual_prompt: Tensor | None = None) -> Tensor:
        """[B, 3, H, W] preprocessed images -> [B, embed_dim] features.

        ``visual_prompt`` is backend-specific. Vision transformers take
        [depth, n_tokens, vision_width] prompt tokens (depth 1 = shallow VPT, depth > 1 =
        deep VPT, replacing the prompt outputs of the first ``depth`` layers). CNNs take an
        additive pixel-space prompt [3, H, W] (Bahng et al.'s padding prompt).
        """

    @abstractmethod
    def tokenize(self, texts: list[str]) -> TokenizedText:
        """Texts -> token ids padded to the context length, with end positions."""

    @abstractmethod
    def embed_tokens(self, ids: Tensor) -> Tensor:
        """[N, L] ids -> [N, L, text_width] rows of the token-embedding table."""

    @abstractmethod
    def encode_text_embeddings(
        self, embeddings: Tensor, tokens: TokenizedText, truncate: bool = True
    ) -> Tensor:
        """Run the text encoder on token embeddings (soft prompts already spliced in).

        ``tokens`` gives the end position of each sequence (the embedding rows after it are
        padding). Returns [N, embed_dim].
        """

    def encode_text(self, tokens: TokenizedText, truncate: bool = True) -> Tensor:
        if truncate:
            tokens = tokens.truncated()
        return self.encode_text_embeddings(self.embed_tokens(tokens.ids), tokens, truncate)

    def encode_prompts(
        self, prefix: Tensor, tail: Tensor, tokens: TokenizedText, truncate: bool = True
    ) -> Tensor:
        """Features of the G x C prompts ``[prefix[g], tail[c]]`` -> [G, C, embed_dim].

        ``prefix``: [G, S, W] rows shared by every class (start token and context);
        ``tail``: [C, R, W] each class's remaining rows; ``tokens``: the C whole prompts' ids
        and EOT positions. This runs every whole prompt; a causal encoder may override it
        to run the shared rows once (``OpenClipBackbone``, ``shared_prefix.py``).
        """
        groups, n_classes = prefix.shape[0], tail.shape[0]
        embeddings = torch.cat(
            [
                prefix.unsqueeze(1).expand(-1, n_classes, -1, -1),
                tail.to(prefix.dtype).unsqueeze(0).expand(groups, -1, -1, -1),
            ],
            dim=2,
        ).flatten(0, 1)
        repeated = TokenizedText(tokens.ids.repeat(groups, 1), tokens.eot.repeat(groups))
        features = self.encode_text_embeddings(embeddings, repeated, truncate)
        return features.view(groups, n_classes, -1)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def place(self, device: torch.device, precision: str = "fp32") -> Backbone:
        """Move to ``device`` and run the encoders under ``precision`` autocast.

        A low precision changes the features, and the feature cache is keyed by ``name``, so
        it is part of the name (fp32 keeps the plain name).
        """
        from .runtime import PRECISIONS

        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} must be one of {list(PRECISIONS)}")
        fp32_name = self.__dict__.setdefault("_fp32_name", self.name)
        self.precision = precision
        self.name = fp32_name if precision == "fp32" else f"{fp32_name}:{precision}"
        return self.to(device)

    def autocast(self) -> contextlib.AbstractContextManager:
        """The autocast context the encoders run in (none for fp32)."""
        if self.precision == "fp32" or self.__dict__.get("_fp32_override"):
            return contextlib.nullcontext()
        from .runtime import PRECISIONS

        return torch.autocast(self.device.type, dtype=PRECISIONS[self.precision])


@contextlib.contextmanager
def full_precision(backbone: Backbone):
    """Run ``backbone``'s encoders in fp32 inside the block, whatever ``precision`` says.

    For work autocast cannot do: second-order gradients through attention under bf16/fp16
    autocast fail in PyTorch 2.14 (``BmmBackward0``: "expected scalar type Float but found
    BFloat16"), so second-order GRAM meta-steps need this block.
    """
    before = backbone.__dict__.get("_fp32_override", False)
    backbone.__dict__["_fp32_override"] = True
    try:
        yield backbone
    finally:
        backbone.__dict__["_fp32_override"] = before


def cosine_logits(image_features: Tensor, text_features: Tensor, logit_scale: float) -> Tensor:
    """CLIP's classifier: scaled cosine similarity of every image with every class."""
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    return logit_scale * image_features @ text_features.t()
