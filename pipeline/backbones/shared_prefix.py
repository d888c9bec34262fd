"""CLIP's text encoder run once on the rows that every class prompt shares.

A CoOp prompt is ``[SOS, ctx_1..ctx_M, <class name>, ".", EOT]``: its first ``1 + M`` rows
are the same for every class. CLIP's text transformer is causal, so the hidden states of
those rows never see what follows them and are the same for every class too; only the rows
after them (the "tail") differ. The reference code runs all C prompts in full, so with
CoOp's 16 context tokens (17 shared rows of 23 for the 15 classes of
``bench/bench_prompt_tuning.py``) three quarters of the rows are computed C times over.
Here the shared rows run once per group (one group for CoOp, one per image for CoCoOp) and
each class's tail attends to the group's keys and values.

Written by hand because no library splits a causal encoder's batch at a shared prefix (KV
caches in generation libraries do the forward, but not for a prefix that is being trained).
``tests/test_shared_prefix.py`` proves the features equal the full path's to float precision.

Only open_clip's standard text tower qualifies (:func:`supports_shared_prefix`): causal
mask, EOT (argmax) pooling, plain ``ResidualAttentionBlock`` layers with PyTorch's
``MultiheadAttention`` and no attention dropout. Anything else takes the full path.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def supports_shared_prefix(model: nn.Module) -> bool:
    """Whether ``model`` (an ``open_clip.CLIP``) has the text tower this module assumes."""
    from open_clip.transformer import ResidualAttentionBlock

    mask = getattr(model, "attn_mask", None)
    if mask is None or getattr(model, "text_pool_type", "argmax") != "argmax":
        return False
    causal = torch.full_like(mask, float("-inf")).triu(1)
    if not torch.equal(mask, causal):
        return False
    blocks = list(model.transformer.resblocks)
    return all(
        type(block) is ResidualAttentionBlock
        and type(block.attn) is nn.MultiheadAttention
        and block.attn.dropout == 0
        and block.attn.in_proj_weight is not None
        and not hasattr(block, "ln_1_kv")
        for block in blocks
    )


def encode_with_shared_prefix(
    model: nn.Module, prefix: Tensor, tail: Tensor, eot: Tensor
) -> Tensor:
    """Final-norm EOT states of the G x C prompts ``[prefix[g], tail[c]]``, before projection.

    ``prefix``: [G, S, W] embeddings of the shared rows; ``tail``: [C, R, W] embeddings of
    each class's remaining rows, cut after the last EOT; ``eot``: [C] index of each class's
    EOT in the whole prompt (so ``eot >= S``). Returns [G, C, W], the same as running every
    whole prompt through the encoder.
    """
    groups, shared, _ = prefix.shape
    n_classes, rest, _ = tail.shape
    if not bool((eot >= shared).all()):
        raise ValueError("every EOT must lie after the shared prefix")
    positions = model.positional_embedding.to(prefix.dtype)
    x_prefix = prefix + positions[:shared]
    x_tail = (tail + positions[shared : shared + rest]).unsqueeze(0).expand(groups, -1, -1, -1)
    # Tail row r sees every prefix row and the tail rows up to itself (True = attend).
    tail_mask = torch.ones(rest, shared + rest, dtype=torch.bool, device=prefix.device)
    tail_mask = tail_mask.tril(shared)
    for block in model.transformer.resblocks:
        x_prefix, x_tail = _block(block, x_prefix, x_tail, tail_mask)
    x_tail = model.ln_final(x_tail)
    classes = torch.arange(n_classes, device=x_tail.device)
    return x_tail[:, classes, (eot - shared).to(x_tail.device)]


def _block(block: nn.Module, x_prefix: Tensor, x_tail: Tensor, tail_mask: Tensor):
    """One ``ResidualAttentionBlock`` on prefix [G, S, W] and tail [G, C, R, W] rows."""
    attn = block.attn
    q_prefix, k_prefix, v_prefix = _heads(block.ln_1(x_prefix), attn)  # [G, H, S, d]
    q_tail, k_tail, v_tail = _heads(block.ln_1(x_tail), attn)  # [G, C, H, R, d]
    prefix_out = F.scaled_dot_product_attention(q_prefix, k_prefix, v_prefix, is_causal=True)
    n_classes = x_tail.shape[1]

    def with_prefix(prefix_part: Tensor, tail_part: Tensor) -> Tensor:
        prefix_part = prefix_part.unsqueeze(1).expand(-1, n_classes, -1, -1, -1)
        return torch.cat([prefix_part, tail_part], dim=3)

    tail_out = F.scaled_dot_product_attention(  # flattened: fused kernels take 4-d inputs
        q_tail.flatten(0, 1),
        with_prefix(k_prefix, k_tail).flatten(0, 1),
        with_prefix(v_prefix, v_tail).flatten(0, 1),
        attn_mask=tail_mask,
    ).unflatten(0, q_tail.shape[:2])
    x_prefix = x_prefix + block.ls_1(_merge_heads(prefix_out, attn))
    x_tail = x_tail + block.ls_1(_merge_heads(tail_out, attn))
    x_prefix = x_prefix + block.ls_2(block.mlp(block.ln_2(x_prefix)))
    x_tail = x_tail + block.ls_2(block.mlp(block.ln_2(x_tail)))
    return x_prefix, x_tail


def _heads(x: Tensor, attn: nn.MultiheadAttention):
    """[..., T, W] -> q, k, v each [..., H, T, W // H] (MultiheadAttention's in-projection)."""
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    *batch, length, _ = qkv.shape
    qkv = qkv.view(*batch, length, 3, attn.num_heads, -1).movedim(-3, 0).transpose(-3, -2)
    return qkv[0], qkv[1], qkv[2]


def _merge_heads(x: Tensor, attn: nn.MultiheadAttention) -> Tensor:
    """[..., H, T, d] -> [..., T, H * d] through the output projection."""
    x = x.transpose(-3, -2).flatten(-2)
    return attn.out_proj(x)
