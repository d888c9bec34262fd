"""The shared-prefix text encoder gives the features and gradients of running every prompt."""

import copy

import pytest
import torch

from pipeline.backbones import Backbone
from pipeline.backbones.shared_prefix import encode_with_shared_prefix, supports_shared_prefix
from pipeline.learners import Batch, CoCoOp, CoOp
from pipeline.learners.text import class_prompt_rows

NAMES = ["cat", "golden retriever", "sports_car", "a very long class name of many words"]


def test_the_tiny_clip_text_tower_qualifies(tiny_clip):
    assert tiny_clip._shared_prefix and supports_shared_prefix(tiny_clip.model)


@pytest.mark.parametrize("groups", [1, 3])
def test_shared_prefix_equals_every_whole_prompt(tiny_clip, groups):
    n_ctx = 6
    prompts = class_prompt_rows(tiny_clip, NAMES, n_ctx)
    generator = torch.Generator().manual_seed(1)
    ctx = 0.02 * torch.randn(groups, n_ctx, tiny_clip.text_width, generator=generator)
    ctx_shared = ctx.clone().requires_grad_(True)
    ctx_whole = ctx.clone().requires_grad_(True)

    shared = tiny_clip.encode_prompts(
        prompts.shared_prefix(ctx_shared), prompts.suffix, prompts.tokens
    )
    # the base class runs the concatenated prompts through encode_text_embeddings
    whole = Backbone.encode_prompts(
        tiny_clip, prompts.shared_prefix(ctx_whole), prompts.suffix, prompts.tokens
    )
    assert shared.shape == (groups, len(NAMES), tiny_clip.embed_dim)
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=1e-5)

    weights = torch.randn(shared.shape, generator=generator)
    (shared * weights).sum().backward()
    (whole * weights).sum().backward()
    torch.testing.assert_close(ctx_shared.grad, ctx_whole.grad, atol=1e-5, rtol=1e-4)
    assert ctx_shared.grad.abs().sum() > 0


def test_learners_match_the_77_token_reference_path(tiny_clip):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 32, 32, generator=generator)
    with torch.no_grad():
        batch = Batch(torch.tensor([0, 3]), features=tiny_clip.encode_image(images), images=images)
        for make in (
            lambda truncate: CoOp(tiny_clip, NAMES, n_ctx=16, init_words=None, truncate=truncate),
            lambda truncate: CoCoOp(tiny_clip, NAMES, truncate=truncate),
        ):
            ours, reference = make(True), make(False)  # truncate=False: no shared prefix
            torch.testing.assert_close(
                ours.logits(batch), reference.logits(batch), atol=1e-4, rtol=1e-5
            )


def test_other_text_towers_take_the_whole_prompt_path(tiny_clip):
    bidirectional = copy.deepcopy(tiny_clip.model)
    bidirectional.attn_mask = torch.zeros_like(bidirectional.attn_mask)
    assert not supports_shared_prefix(bidirectional)
    with_dropout = copy.deepcopy(tiny_clip.model)
    with_dropout.transformer.resblocks[0].attn.dropout = 0.1
    assert not supports_shared_prefix(with_dropout)


def test_an_eot_inside_the_prefix_is_refused(tiny_clip):
    width = tiny_clip.text_width
    with pytest.raises(ValueError, match="after the shared prefix"):
        encode_with_shared_prefix(
            tiny_clip.model,
            torch.zeros(1, 5, width),
            torch.zeros(2, 3, width),
            torch.tensor([4, 6]),
        )
