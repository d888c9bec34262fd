"""The in-memory store of decoded images (``features.DecodedImages``): bounded, least
recently used first out, and invisible in the results (the same tensors, the same accuracy,
the same training batches as decoding every time)."""

import numpy as np
import torch

from pipeline.data import Datum
from pipeline.evaluation import evaluate
from pipeline.features import DecodedImages, ImageFiles
from pipeline.learners.visual import VPT
from pipeline.training_images import image_training_set
from tests.coop_fakes import write_noise_images


def tensor(megabytes: float) -> torch.Tensor:
    return torch.zeros(int(megabytes * 2**20 / 4), dtype=torch.float32)


def test_keeps_at_most_its_budget_and_drops_the_least_recently_used():
    memo = DecodedImages(max_mb=3)
    calls = []

    def decode(name):
        def make():
            calls.append(name)
            return tensor(1)

        return make

    for name in ("a", "b", "c"):
        memo.get(name, decode(name))
    memo.get("a", decode("a"))  # a hit: "a" is now the most recently used
    memo.get("d", decode("d"))  # over budget: "b", the least recently used, goes
    assert calls == ["a", "b", "c", "d"]
    assert list(memo.items) == ["c", "a", "d"] and memo.bytes == 3 * 2**20
    memo.get("b", decode("b"))
    assert calls[-1] == "b" and "c" not in memo.items


def test_zero_budget_keeps_nothing_and_a_hit_returns_the_same_tensor():
    nothing = DecodedImages(0)
    nothing.get("a", lambda: tensor(0.001))
    assert not nothing.items and nothing.bytes == 0
    memo = DecodedImages(1)
    first = memo.get("a", lambda: tensor(0.001))
    assert memo.get("a", lambda: tensor(0.001)) is first


def test_memo_gives_the_decoded_tensors_bit_for_bit(tiny_clip, tmp_path):
    paths = write_noise_images(tmp_path, 4, seed=3, shape=(30, 44))
    memo = DecodedImages(64)
    for view, train in ((None, False), (1, True)):
        transform = tiny_clip.image_transform(train=train)
        plain = ImageFiles(paths, transform, view, aug_seed=5)
        kept = ImageFiles(paths, transform, view, aug_seed=5, memo=memo)
        for _ in range(2):  # the second pass reads the memo
            for i in range(len(paths)):
                assert torch.equal(plain[i], kept[i])
    assert len(memo.items) == 2 * len(paths)


def test_evaluation_and_training_batches_are_the_same_with_the_memo(tiny_clip, tmp_path):
    paths = write_noise_images(tmp_path, 6, seed=4, shape=(32, 36))
    names = ["cat", "dog", "bird"]
    items = [Datum(path, i % 3, names[i % 3]) for i, path in enumerate(paths)]
    vpt = VPT(tiny_clip, names, n_tokens=2, init_std=1.0, seed=0)
    memo = DecodedImages(64)
    plain = evaluate(vpt, items, names, "a photo of a {}.", batch_size=4)
    for _ in range(2):
        kept = evaluate(vpt, items, names, "a photo of a {}.", batch_size=4, memo=memo)
        assert (kept.correct, kept.total) == (plain.correct, plain.total)
    assert len(memo.items) == len(paths)

    labels = [i % 3 for i in range(6)]
    indices, views = np.array([0, 3, 5]), np.array([1, 0, 1])
    reference = image_training_set(tiny_clip, paths, labels, views=2, aug_seed=7)
    with_memo = image_training_set(tiny_clip, paths, labels, 2, 7, memo=memo)
    for _ in range(2):
        assert torch.equal(
            reference.batch(indices, views).images, with_memo.batch(indices, views).images
        )
