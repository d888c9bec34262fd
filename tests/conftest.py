"""Shared fixtures: a small randomly initialised open_clip ViT (no download)."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY_OPEN_CLIP = {
    "kind": "open_clip",
    "device": "cpu",  # tests run on the CPU even where CUDA is available
    "open_clip": {"model": "gram-tiny-vit", "pretrained": None},
}


@pytest.fixture(scope="session")
def tiny_clip():
    """A 2-layer ViT / 2-layer text transformer CLIP with random weights (seeded)."""
    from pipeline.backbones import create_backbone

    torch.manual_seed(0)
    return create_backbone(TINY_OPEN_CLIP)
