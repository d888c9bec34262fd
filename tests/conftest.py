"""Shared fixtures and params: a small randomly initialised open_clip ViT (no download), the
meta-training params the stage tests run with, seeded noise images for the trainer tests."""

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


def meta_section(**train_overrides) -> dict:
    """params.yaml ``meta:`` for the stage tests: a few first-order GRAM steps of a textual
    (coop) and a joint (unigram, one step) variant; ``train_overrides`` go into meta.train."""
    train = {
        "mode": "gram",
        "steps": 3,
        "tasks_per_batch": 2,
        "inner_steps": 1,
        "alpha": 0.1,
        "second_order": False,
        "optimizer": "adam",
        "lr_theta": 0.01,
        "lr_phi": 0.01,
        "seed": 0,
        "checkpoint_every": 2,
        "alignment_every": 1,
        **train_overrides,
    }
    return {
        "train": train,
        "regulator": {"kind": "affine", "init": "identity", "eps": 0.01, "bias": "shared"},
        "variants": {
            "coop": {"learner": "coop", "options": {"n_ctx": 2, "init_words": None}},
            "unigram": {"learner": "joint", "options": {"n_ctx": 1, "n_tokens": 1}, "steps": 1},
        },
    }


@pytest.fixture(scope="session")
def tiny_clip():
    """A 2-layer ViT / 2-layer text transformer CLIP with random weights (seeded)."""
    from pipeline.backbones import create_backbone

    torch.manual_seed(0)
    return create_backbone(TINY_OPEN_CLIP)


@pytest.fixture()
def noise_images(tmp_path):
    """Six 40x48 noise images and their labels (three classes, twice)."""
    from tests.coop_fakes import write_noise_images

    return write_noise_images(tmp_path, 6, seed=0, shape=(40, 48)), [0, 1, 2, 0, 1, 2]


def cached_views(backbone, paths, labels, cache_dir, **options):
    """``cached_training_set`` of ``paths`` with its frozen features cached in ``cache_dir``."""
    from pipeline.training import cached_training_set

    return cached_training_set(
        backbone, paths, labels, features_options={"cache_dir": cache_dir}, **options
    )
