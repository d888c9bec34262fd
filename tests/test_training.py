"""The trainer: schedule, sampling, cached features = re-encoding, exact resume, GRAM hooks."""

import math

import numpy as np
import pytest
import torch

from pipeline.backbones import cosine_logits
from pipeline.config import read_train
from pipeline.learners import CoOp, ProGrad, ZeroShot
from pipeline.params import ParamError
from pipeline.training import (
    CachedTrainingSet,
    TrainConfig,
    epoch_batches,
    epoch_lr,
    load_init_state,
    train,
)
from pipeline.training_images import image_training_set
from tests.conftest import cached_views

NAMES = ["cat", "dog", "bird"]


def test_schedule_is_dassls_constant_warmup_then_cosine():
    config = TrainConfig(epochs=4, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    lrs = [epoch_lr(e, config) for e in range(4)]
    assert lrs[0] == 1e-5
    assert lrs[1] == pytest.approx(0.002)
    assert lrs[2] == pytest.approx(0.002 * (1 + math.cos(math.pi / 4)) / 2)
    assert lrs[3] == pytest.approx(0.002 * (1 + math.cos(math.pi * 2 / 4)) / 2)
    no_warmup = TrainConfig(epochs=2, lr=0.1, warmup_epochs=0)
    assert [epoch_lr(e, no_warmup) for e in range(2)] == pytest.approx([0.1, 0.05])


def test_epoch_batches_are_seeded_and_drop_the_last_partial_batch():
    batches = epoch_batches(10, 3, 4, seed=1, epoch=0)
    assert [len(b[0]) for b in batches] == [4, 4]  # 2 left over: dropped, as Dassl does
    assert len(set(np.concatenate([b[0] for b in batches]))) == 8
    assert all(v.max() < 3 for _, v in batches)
    again = epoch_batches(10, 3, 4, seed=1, epoch=0)
    assert all(
        np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        for a, b in zip(batches, again, strict=True)
    )
    other_epoch = epoch_batches(10, 3, 4, seed=1, epoch=1)
    assert not np.array_equal(batches[0][0], other_epoch[0][0])
    small = epoch_batches(3, 1, 4, seed=1, epoch=0)  # fewer samples than a batch: keep them
    assert sorted(small[0][0]) == [0, 1, 2]


def test_step_on_cached_features_equals_step_that_re_encodes_the_images(
    tiny_clip, noise_images, tmp_path
):
    paths, labels = noise_images
    cached = cached_views(tiny_clip, paths, labels, tmp_path / "cache", views=2, aug_seed=7)
    reference = image_training_set(tiny_clip, paths, labels, views=2, aug_seed=7)
    assert cached.features.shape == (2, 6, tiny_clip.embed_dim)
    config = TrainConfig(epochs=2, batch_size=3, lr=0.5, warmup_epochs=0, seed=1)
    on_cache = CoOp(tiny_clip, NAMES, init_words=None, n_ctx=4, seed=3)
    re_encoded = CoOp(tiny_clip, NAMES, init_words=None, n_ctx=4, seed=3)
    start = on_cache.text_ctx.detach().clone()
    history_cache = train(on_cache, cached, config).history
    history_reference = train(re_encoded, reference, config).history
    assert not torch.allclose(on_cache.text_ctx, start)  # it did train
    torch.testing.assert_close(on_cache.text_ctx, re_encoded.text_ctx, atol=1e-5, rtol=1e-4)
    for a, b in zip(history_cache, history_reference, strict=True):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)


def test_cached_teacher_logits_are_the_teachers_logits_of_each_view(
    tiny_clip, noise_images, tmp_path
):
    paths, labels = noise_images
    prograd = ProGrad(tiny_clip, NAMES, n_ctx=8, init_words="a photo of a")
    teacher = prograd.teacher("a type of pet, a photo of a {}.", NAMES)
    zero_shot = ZeroShot(tiny_clip, NAMES, "a type of pet, a photo of a {}.").class_features()
    torch.testing.assert_close(teacher, zero_shot)  # ProGrad's teacher is zero-shot CLIP
    cached = cached_views(
        tiny_clip,
        paths,
        labels,
        tmp_path / "cache",
        views=2,
        aug_seed=7,
        teacher_classifier=teacher,
    )
    images_of = image_training_set(tiny_clip, paths, labels, views=2, aug_seed=7)
    indices, views = np.array([0, 3, 5, 1]), np.array([1, 0, 1, 0])
    with torch.no_grad():
        encoded = tiny_clip.encode_image(images_of.batch(indices, views).images)
    expected = cosine_logits(encoded, teacher, tiny_clip.logit_scale)
    got = cached.batch(indices, views).teacher_logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    assert CoOp(tiny_clip, NAMES).teacher("a {}.", NAMES) is None  # only ProGrad has one


def test_interrupted_training_resumes_to_the_identical_result(tiny_clip, tmp_path):
    torch.manual_seed(0)
    data = CachedTrainingSet(
        labels=torch.arange(10) % 3,
        view_ids=[0, 1, 2],
        features=torch.randn(3, 10, tiny_clip.embed_dim),
    )
    config = TrainConfig(epochs=4, batch_size=4, lr=0.3, warmup_epochs=1, seed=2)
    full = CoOp(tiny_clip, NAMES, init_words=None, seed=1)
    full_history = train(full, data, config, checkpoint=tmp_path / "full.pt").history

    interrupted = CoOp(tiny_clip, NAMES, init_words=None, seed=1)
    train(interrupted, data, config, checkpoint=tmp_path / "run.pt", stop_after=2)
    resumed = CoOp(tiny_clip, NAMES, init_words=None, seed=1)  # a fresh process
    seen = []
    result = train(
        resumed,
        data,
        config,
        checkpoint=tmp_path / "run.pt",
        on_epoch_end=lambda epoch, metrics: seen.append(epoch),
    )
    assert result.resumed_from == 2
    assert seen == [0, 1, 2, 3]  # resumed epochs replayed for the logger, each once
    assert torch.equal(resumed.text_ctx, full.text_ctx)
    assert result.history == full_history

    # a checkpoint of another configuration is not resumed
    other = CoOp(tiny_clip, NAMES, init_words=None, seed=1)
    changed = TrainConfig(epochs=4, batch_size=4, lr=0.1, warmup_epochs=1, seed=2)
    assert train(other, data, changed, checkpoint=tmp_path / "run.pt").resumed_from == 0


def test_init_state_and_gradient_transform_hooks(tiny_clip):
    torch.manual_seed(0)
    data = CachedTrainingSet(
        labels=torch.arange(6) % 3, view_ids=[None], features=torch.randn(1, 6, tiny_clip.embed_dim)
    )
    theta = {"text_ctx": torch.randn(4, tiny_clip.text_width)}
    config = TrainConfig(epochs=2, batch_size=3, lr=0.5, weight_decay=0.0, warmup_epochs=0)
    frozen = CoOp(tiny_clip, NAMES, init_words=None)
    seen = []

    def zero(grads):
        seen.append(sorted(grads))
        return {name: torch.zeros_like(g) for name, g in grads.items()}

    train(frozen, data, config, init_state=theta, gradient_transform=zero)
    assert torch.equal(frozen.text_ctx.detach(), theta["text_ctx"])  # started at theta*
    assert seen and all(names == ["text_ctx"] for names in seen)

    doubled = CoOp(tiny_clip, NAMES, init_words=None)
    plain = CoOp(tiny_clip, NAMES, init_words=None)
    one_step = TrainConfig(
        epochs=1, batch_size=6, lr=0.5, momentum=0.0, weight_decay=0.0, warmup_epochs=0
    )
    start = plain.text_ctx.detach().clone()
    train(doubled, data, one_step, gradient_transform=lambda g: {k: 2 * v for k, v in g.items()})
    train(plain, data, one_step)
    torch.testing.assert_close(doubled.text_ctx - start, 2 * (plain.text_ctx - start))

    with pytest.raises(KeyError, match="visual_prompt"):
        load_init_state(plain, {"visual_prompt": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        load_init_state(plain, {"text_ctx": torch.zeros(2, 2)})


def test_lr_scale_multiplies_the_lr_of_one_prompt_tensor(tiny_clip):
    torch.manual_seed(0)
    data = CachedTrainingSet(
        labels=torch.arange(6) % 3, view_ids=[None], features=torch.randn(1, 6, tiny_clip.embed_dim)
    )
    base = dict(epochs=2, batch_size=3, weight_decay=0.0, warmup_epochs=0)
    scaled = CoOp(tiny_clip, NAMES, init_words=None)
    plain = CoOp(tiny_clip, NAMES, init_words=None)
    train(scaled, data, TrainConfig(lr=0.1, lr_scale={"text_ctx": 4.0}, **base))
    train(plain, data, TrainConfig(lr=0.4, **base))
    assert torch.equal(scaled.text_ctx, plain.text_ctx)

    frozen = CoOp(tiny_clip, NAMES, init_words=None)
    start = frozen.text_ctx.detach().clone()
    train(frozen, data, TrainConfig(lr=0.1, lr_scale={"text_ctx": 0.0}, **base))
    assert torch.equal(frozen.text_ctx.detach(), start)

    with pytest.raises(ValueError, match="lr_scale.visual_prompt is not a prompt of CoOp"):
        train(plain, data, TrainConfig(lr=0.1, lr_scale={"visual_prompt": 2.0}, **base))
    with pytest.raises(ParamError, match="finetune.train.lr_scale.text_ctx = -1.0: must be >="):
        read_train({"lr_scale": {"text_ctx": -1.0}}, "finetune.train", seed=1)
