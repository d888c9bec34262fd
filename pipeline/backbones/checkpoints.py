"""Reading CLIP weights right: which activation they need, and whether they fit the model.

OpenAI's CLIP was trained with QuickGELU (``x * sigmoid(1.702 x)``); open_clip's plain
architectures (``ViT-B-16``) use ``nn.GELU`` and its ``-quickgelu`` twins use QuickGELU.
The activation has no weights, so loading OpenAI weights into the plain architecture
succeeds silently and every feature is wrong by about 1% (the README's "Backbones"
section). So the activation is decided by the weights, not by the name:

* an open_clip tag carries ``quick_gelu`` in its pretrained config (``openai`` does);
* a local file is in OpenAI's format when it is a TorchScript archive (what OpenAI ships,
  e.g. ``ViT-B-16.pt``) or a state dict holding OpenAI's metadata entries
  (``input_resolution``, ``context_length``, ``vocab_size``: what
  ``torch.jit.load(...).state_dict()`` of OpenAI's file gives, and what CoOp's
  ``build_model`` reads). Any other state dict is taken as the named architecture.

Weights that need QuickGELU get it; a ``-quickgelu`` architecture with weights trained with
GELU, and weights whose tensors do not fit the architecture, are errors.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..params import ParamError

MODEL_KEY = "backbone.open_clip.model"
PRETRAINED_KEY = "backbone.open_clip.pretrained"
#: entries of OpenAI's state dict that are metadata, not weights
OPENAI_METADATA = ("input_resolution", "context_length", "vocab_size")
#: in a TorchScript archive's state dict but a non-persistent buffer in open_clip
NON_WEIGHTS = (*OPENAI_METADATA, "attn_mask")


@dataclass(frozen=True)
class LocalCheckpoint:
    """A checkpoint file read into a state dict, with what its format says about it."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    openai_format: bool
    metadata: dict[str, int]


def is_torchscript_archive(path: Path) -> bool:
    """TorchScript zips hold ``<name>/constants.pkl``; ``torch.save`` zips never do."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("/constants.pkl") for name in archive.namelist())


def read_local_checkpoint(path: Path) -> LocalCheckpoint:
    """Read a TorchScript archive or a ``torch.save``d state dict (open_clip or OpenAI keys)."""
    if is_torchscript_archive(path):
        state = torch.jit.load(str(path), map_location="cpu").state_dict()
        openai_format = True
    else:
        try:
            state = _load_state(path)
        except Exception as error:  # pickles of arbitrary objects, truncated files, ...
            raise ParamError(
                f"params.yaml: {PRETRAINED_KEY} = {str(path)!r}: cannot read it as a "
                f"checkpoint ({type(error).__name__}: {error})"
            ) from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]  # an open_clip training checkpoint
        if not isinstance(state, dict) or not state:
            raise ParamError(
                f"params.yaml: {PRETRAINED_KEY} = {str(path)!r}: not a state dict "
                f"(got {type(state).__name__})"
            )
        state = {key.removeprefix("module."): value for key, value in state.items()}
        openai_format = all(key in state for key in OPENAI_METADATA)
    metadata = {key: int(state[key]) for key in OPENAI_METADATA if key in state}
    weights = {key: value for key, value in state.items() if key not in NON_WEIGHTS}
    return LocalCheckpoint(Path(path), weights, openai_format, metadata)


def _load_state(path: Path):
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    try:  # memory-mapped: a 600 MB checkpoint is not copied before it is loaded
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # files in torch's legacy (pre-zip) format cannot be mapped
        return torch.load(path, map_location="cpu", weights_only=True)


def tag_needs_quick_gelu(model: str, tag: str) -> bool:
    """Whether open_clip's pretrained config for (model, tag) says QuickGELU; unknown tag: error."""
    import open_clip

    config = open_clip.get_pretrained_cfg(model, tag)
    if not config:
        known = open_clip.list_pretrained_tags_by_model(model)
        raise ParamError(
            f"params.yaml: {PRETRAINED_KEY} = {tag!r} is neither a checkpoint file nor an "
            f"open_clip tag of {MODEL_KEY} = {model!r} (its tags: {known or 'none'})"
        )
    return bool(config.get("quick_gelu", False))


def architecture_uses_quick_gelu(model: str) -> bool:
    import open_clip

    config = open_clip.get_model_config(model)
    if config is None:
        raise ParamError(
            f"params.yaml: {MODEL_KEY} = {model!r} is not an open_clip architecture "
            f"(see open_clip.list_models())"
        )
    return bool(config.get("quick_gelu", False))


def check_activation(model: str, pretrained: str, weights_quick_gelu: bool) -> bool:
    """The ``force_quick_gelu`` to build ``model`` with, for weights trained as stated."""
    model_quick_gelu = architecture_uses_quick_gelu(model)
    if model_quick_gelu and not weights_quick_gelu:
        raise ParamError(
            f"params.yaml: {PRETRAINED_KEY} = {pretrained!r} was trained with GELU but "
            f"{MODEL_KEY} = {model!r} uses QuickGELU: name the architecture without '-quickgelu'"
        )
    return weights_quick_gelu and not model_quick_gelu


def check_metadata(checkpoint: LocalCheckpoint, clip_model, model: str) -> None:
    """OpenAI's metadata entries must agree with the architecture built from ``model``."""
    image_size = clip_model.visual.image_size
    built = {
        "input_resolution": int(image_size[0] if isinstance(image_size, tuple) else image_size),
        "context_length": int(clip_model.context_length),
        "vocab_size": int(clip_model.vocab_size),
    }
    for key, value in checkpoint.metadata.items():
        if built[key] != value:
            raise ParamError(
                f"params.yaml: {PRETRAINED_KEY} = {str(checkpoint.path)!r} has {key} {value} "
                f"but {MODEL_KEY} = {model!r} has {built[key]}"
            )


def load_weights(clip_model: torch.nn.Module, checkpoint: LocalCheckpoint, model: str) -> None:
    """Strict load; any missing, unexpected or mis-shaped tensor is a :class:`ParamError`."""
    own = clip_model.state_dict()
    state = checkpoint.state_dict
    if "logit_scale" in state and own["logit_scale"].ndim != state["logit_scale"].ndim:
        state = {**state, "logit_scale": state["logit_scale"].reshape(own["logit_scale"].shape)}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    misshaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(own[key].shape)}"
        for key in sorted(set(own) & set(state))
        if state[key].shape != own[key].shape
    ]
    problems = [
        f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
        for label, items in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("shape (checkpoint vs model)", misshaped),
        )
        if items
    ]
    if problems:
        raise ParamError(
            f"params.yaml: {PRETRAINED_KEY} = {str(checkpoint.path)!r} does not fit "
            f"{MODEL_KEY} = {model!r}: {'; '.join(problems)}"
        )
    clip_model.load_state_dict(state, strict=True)
