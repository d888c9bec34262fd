"""CoOp's construction of soft text prompts: context vectors spliced into frozen token rows.

Each class prompt is tokenized ONCE as ``"X X ... X {classname}."`` (CoOp's placeholder
text; ``"a photo of a {classname}."`` when the context is initialised from words). The
token-embedding rows before the context (SOS / [CLS]) and after it (class name, ".", EOT,
padding) are frozen, so a training step only concatenates ``[prefix, ctx, suffix]`` and runs
the text encoder; with one context for all classes, ``[prefix, ctx]`` is the same for every
class and goes to ``Backbone.encode_prompts`` once, with the suffixes as per-class tails.
The rows are cut at the last EOT of the class set once, here, so every step feeds the
encoder only the positions that matter (``Backbone.encode_text_embeddings`` would cut them
again; cutting first saves the splice over 77 positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..backbones import Backbone, TokenizedText
from ..zeroshot import prompt_ready

PLACEHOLDER = "X"


def count_tokens(backbone: Backbone, text: str) -> int:
    """Number of tokens ``text`` occupies between the start token and EOT."""
    tokens = backbone.tokenize([text])
    return int(tokens.eot[0]) - backbone.context_start


@torch.no_grad()
def word_embeddings(backbone: Backbone, words: str) -> Tensor:
    """[k, text_width] token embeddings of ``words`` (the context initialisation)."""
    k = count_tokens(backbone, words)
    tokens = backbone.tokenize([words])
    start = backbone.context_start
    return backbone.embed_tokens(tokens.ids)[0, start : start + k].float().clone()


@dataclass(frozen=True)
class ClassPrompts:
    """Frozen token rows of one class set around a hole of ``n_ctx`` context positions.

    ``prefix``: [C, context_start, W]; ``suffix``: [C, L - context_start - n_ctx, W];
    ``tokens``: the class prompts' token ids and EOT positions, cut at the last EOT (L).
    """

    classnames: tuple[str, ...]
    prefix: Tensor
    suffix: Tensor
    tokens: TokenizedText
    n_ctx: int

    def __len__(self) -> int:
        return len(self.classnames)

    def assemble(self, ctx: Tensor) -> Tensor:
        """Whole prompt embeddings [C, L, W] for a class-specific context ``ctx`` [C, n, W]."""
        n_classes = len(self)
        if ctx.shape[:2] != (n_classes, self.n_ctx):
            raise ValueError(
                f"context of shape {tuple(ctx.shape)} does not fit {n_classes} classes x "
                f"{self.n_ctx} context tokens"
            )
        return torch.cat([self.prefix, ctx.to(self.prefix.dtype), self.suffix], dim=1)

    def shared_prefix(self, ctx: Tensor) -> Tensor:
        """The rows every class shares, for ``Backbone.encode_prompts``.

        ``ctx`` [n, W] (one context) or [G, n, W] (CoCoOp: one per image) -> [G, S, W], the
        start token and the context; ``suffix`` is the per-class tail.
        """
        if ctx.ndim == 2:
            ctx = ctx.unsqueeze(0)
        if ctx.ndim != 3 or ctx.shape[1] != self.n_ctx:
            raise ValueError(
                f"context of shape {tuple(ctx.shape)} does not fit {self.n_ctx} context tokens"
            )
        start = self.prefix[0].expand(ctx.shape[0], -1, -1)  # the same rows for every class
        return torch.cat([start, ctx.to(self.prefix.dtype)], dim=1)


@torch.no_grad()
def class_prompt_rows(
    backbone: Backbone,
    classnames: list[str],
    n_ctx: int,
    truncate: bool = True,
    frozen_words: str | None = None,
) -> ClassPrompts:
    """Tokenize ``"X X ... X {classname}."`` (``n_ctx`` placeholders) for every class.

    Only the frozen rows around the placeholders are kept; the placeholder rows are replaced
    by the learnable context, so which words initialised it does not matter here (words are
    split at spaces before sub-word tokenization, so the class-name rows are the same).
    ``frozen_words`` replaces the placeholders' text: its first ``n_ctx`` tokens are the
    learnable rows, any further ones stay frozen before the class name (ProGrad's
    word-counted initialisation). ``truncate=False`` keeps all context-length positions
    (the reference way, for benches).
    """
    context = frozen_words or " ".join([PLACEHOLDER] * n_ctx)
    found = count_tokens(backbone, context)
    if found < n_ctx or (frozen_words is None and found != n_ctx):
        raise ValueError(f"context text {context!r} does not tokenize to {n_ctx} tokens")
    texts = [f"{context} {prompt_ready(name)}." for name in classnames]
    tokens = backbone.tokenize(texts)
    if truncate:
        tokens = tokens.truncated()
    tokens = tokens.to(backbone.device)
    embeddings = backbone.embed_tokens(tokens.ids).float()
    start = backbone.context_start
    return ClassPrompts(
        classnames=tuple(classnames),
        prefix=embeddings[:, :start].clone(),
        suffix=embeddings[:, start + n_ctx :].clone(),
        tokens=tokens,
        n_ctx=n_ctx,
    )


def initial_context(
    backbone: Backbone,
    n_ctx: int | None,
    init_words: str | None,
    *,
    pad: bool,
    generator: torch.Generator,
    std: float = 0.02,
) -> Tensor:
    """The initial context vectors [n, W].

    * no ``init_words``: N(0, std^2) random vectors (CoOp's default, ``n_ctx`` of them);
    * ``init_words`` and ``pad=False`` (CoOp, CoCoOp): the words' embeddings, and n_ctx is
      overridden by their token count (CoOp's trainers/coop.py:75);
    * ``init_words`` and ``pad=True`` (ProGrad): ``n_ctx`` slots, zeros followed by the
      words' embeddings in the last slots (ProGrad's prograd.py lines 78-95).
    """
    width = backbone.text_width
    if not init_words:
        if not n_ctx or n_ctx < 1:
            raise ValueError("random context initialisation needs n_ctx >= 1")
        return torch.randn(n_ctx, width, generator=generator) * std
    vectors = word_embeddings(backbone, init_words).cpu()
    if not pad:
        return vectors
    if n_ctx is None or n_ctx < len(vectors):
        raise ValueError(
            f"init words {init_words!r} take {len(vectors)} tokens, more than n_ctx={n_ctx}"
        )
    ctx = torch.zeros(n_ctx, width)
    ctx[n_ctx - len(vectors) :] = vectors
    return ctx
