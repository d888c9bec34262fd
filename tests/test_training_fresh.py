"""augment.mode: fresh (Dassl's per-step crops, the image encoder run every step) and the
DataLoader that decodes training images."""

import pytest
import torch

from pipeline.backbones import cosine_logits
from pipeline.config import read_augment
from pipeline.learners import VPT, CoOp, ProGrad
from pipeline.params import ParamError
from pipeline.training import TrainConfig, epoch_batches, train
from pipeline.training_images import FreshCrops, epoch_loader, fresh_training_set
from tests.conftest import cached_views

NAMES = ["cat", "dog", "bird"]
CONFIG = TrainConfig(epochs=3, batch_size=3, lr=0.5, warmup_epochs=0, seed=1)


def coop(backbone):
    return CoOp(backbone, NAMES, init_words=None, n_ctx=4, seed=3)


def test_fresh_crops_are_a_pure_function_of_seed_epoch_and_sample(tiny_clip, noise_images):
    paths, _ = noise_images
    transform = tiny_clip.image_transform(train=True)
    crops = FreshCrops(paths, transform, seed=5, epoch=2)
    assert torch.equal(crops[3], FreshCrops(paths, transform, seed=5, epoch=2)[3])
    assert not torch.equal(crops[3], FreshCrops(paths, transform, seed=5, epoch=1)[3])
    assert not torch.equal(crops[3], FreshCrops(paths, transform, seed=6, epoch=2)[3])
    state = torch.get_rng_state()
    crops[0]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's generator is untouched
    # the same crops whichever batch or decoding worker a sample lands in
    keys = [[3, 0], [5]]
    in_process = list(epoch_loader(crops, keys, torch.device("cpu"), num_workers=0))
    in_workers = list(epoch_loader(crops, keys, torch.device("cpu"), num_workers=2))
    for a, b in zip(in_process, in_workers, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(in_process[0][0], crops[3]) and torch.equal(in_process[1][0], crops[5])


def test_fresh_mode_trains_differs_from_cached_and_repeats_exactly(
    tiny_clip, noise_images, tmp_path
):
    paths, labels = noise_images
    fresh = fresh_training_set(tiny_clip, paths, labels, needs_images=False, aug_seed=7)
    cached = cached_views(tiny_clip, paths, labels, tmp_path / "cache", views=2, aug_seed=7)
    first, second, on_cache = coop(tiny_clip), coop(tiny_clip), coop(tiny_clip)
    start = first.text_ctx.detach().clone()
    history = train(first, fresh, CONFIG).history
    assert not torch.allclose(first.text_ctx, start)  # it trained
    assert train(second, fresh, CONFIG).history == history
    assert torch.equal(first.text_ctx, second.text_ctx)  # same params -> same result
    train(on_cache, cached, CONFIG)
    assert not torch.allclose(first.text_ctx, on_cache.text_ctx, atol=1e-4)
    assert fresh.fingerprint() != cached.fingerprint()


def test_fresh_batches_hold_the_frozen_features_of_each_steps_crops(tiny_clip, noise_images):
    paths, labels = noise_images
    prograd = ProGrad(tiny_clip, NAMES, init_words=None, n_ctx=4)
    classifier = prograd.teacher("a photo of a {}.", NAMES)
    fresh = fresh_training_set(tiny_clip, paths, labels, False, 7, classifier)
    batches = epoch_batches(len(fresh), 1, 3, seed=1, epoch=1)
    batch = next(fresh.epoch_batches(batches, epoch=1))
    indices = batches[0][0]
    crops = FreshCrops(paths, tiny_clip.image_transform(train=True), 7, epoch=1)
    with torch.no_grad():
        expected = tiny_clip.encode_image(torch.stack([crops[int(i)] for i in indices]))
    torch.testing.assert_close(batch.features, expected)
    torch.testing.assert_close(
        batch.teacher_logits, cosine_logits(expected, classifier, tiny_clip.logit_scale)
    )
    assert torch.equal(batch.labels, torch.as_tensor(labels)[torch.as_tensor(indices)])
    # another epoch: other crops of the same samples
    other = next(fresh.epoch_batches(batches, epoch=2))
    assert not torch.allclose(other.features, batch.features)
    # a learner with a teacher trains on them
    train(prograd, fresh, TrainConfig(epochs=1, batch_size=3, lr=0.5, warmup_epochs=0))


def test_a_visual_prompt_gets_the_fresh_images(tiny_clip, noise_images):
    paths, labels = noise_images
    fresh = fresh_training_set(tiny_clip, paths, labels, needs_images=True, aug_seed=7)
    batches = epoch_batches(len(fresh), 1, 3, seed=1, epoch=0)
    batch = next(fresh.epoch_batches(batches, epoch=0))
    crops = FreshCrops(paths, tiny_clip.image_transform(train=True), 7, epoch=0)
    assert batch.features is None
    assert torch.equal(batch.images, torch.stack([crops[int(i)] for i in batches[0][0]]))
    vpt = VPT(tiny_clip, NAMES, n_tokens=2, seed=0)
    start = {k: v.detach().clone() for k, v in vpt.prompt_parameters().items()}
    train(vpt, fresh, TrainConfig(epochs=1, batch_size=3, lr=1.0, warmup_epochs=0))
    assert any(not torch.equal(start[k], v) for k, v in vpt.prompt_parameters().items())


def test_fresh_training_resumes_to_the_identical_result(tiny_clip, noise_images, tmp_path):
    paths, labels = noise_images
    fresh = fresh_training_set(tiny_clip, paths, labels, needs_images=False, aug_seed=7)
    full = coop(tiny_clip)
    full_history = train(full, fresh, CONFIG, checkpoint=tmp_path / "full.pt").history
    train(coop(tiny_clip), fresh, CONFIG, checkpoint=tmp_path / "run.pt", stop_after=2)
    resumed = coop(tiny_clip)
    result = train(resumed, fresh, CONFIG, checkpoint=tmp_path / "run.pt")
    assert result.resumed_from == 2 and result.history == full_history
    assert torch.equal(resumed.text_ctx, full.text_ctx)
    # a cached run's checkpoint is not a fresh run's
    cached = cached_views(tiny_clip, paths, labels, tmp_path / "cache", views=2, aug_seed=7)
    assert train(coop(tiny_clip), cached, CONFIG, checkpoint=tmp_path / "run.pt").resumed_from == 0


def test_augment_mode_is_cached_or_fresh():
    assert read_augment({"finetune": {"augment": {}}}).mode == "cached"  # today's default
    assert read_augment({"finetune": {"augment": {"mode": "fresh"}}}).mode == "fresh"
    with pytest.raises(ParamError, match=r"finetune\.augment\.mode = 'random'"):
        read_augment({"finetune": {"augment": {"mode": "random"}}})


def test_the_downstream_training_set_follows_augment_mode(tiny_clip, noise_images, tmp_path):
    from types import SimpleNamespace

    from pipeline.config import AugmentConfig
    from pipeline.downstream import training_set
    from pipeline.training import CachedTrainingSet
    from pipeline.training_images import FreshTrainingSet, ImageTrainingSet

    paths, labels = noise_images
    dataset = SimpleNamespace(
        train=[SimpleNamespace(path=p, label=y) for p, y in zip(paths, labels, strict=True)],
        classnames=NAMES,
        prograd_template="a photo of a {}.",
    )
    features = {"cache_dir": tmp_path / "cache", "num_workers": 0}

    def built(learner, mode):
        config = SimpleNamespace(augment=AugmentConfig(mode=mode, seed=7), features=features)
        return training_set(learner, config, dataset, desc="t")

    prograd = ProGrad(tiny_clip, NAMES, init_words=None, n_ctx=4)
    vpt = VPT(tiny_clip, NAMES, n_tokens=2, seed=0)
    fresh = built(prograd, "fresh")
    assert isinstance(fresh, FreshTrainingSet) and fresh.teacher_classifier is not None
    assert isinstance(built(vpt, "fresh"), FreshTrainingSet) and built(vpt, "fresh").needs_images
    assert isinstance(built(prograd, "cached"), CachedTrainingSet)
    assert isinstance(built(vpt, "cached"), ImageTrainingSet)
