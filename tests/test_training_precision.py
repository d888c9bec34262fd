"""backbone.precision in the training stages: fp16 refused, bf16 trains, second-order GRAM
meta-steps in fp32."""

import math

import pytest
import torch

from pipeline.backbones import create_backbone
from pipeline.config import read_downstream
from pipeline.learners import CoOp
from pipeline.meta.variant import precision_of_meta_steps
from pipeline.params import ParamError
from pipeline.training import CachedTrainingSet, TrainConfig, check_training_precision, train

CONFIG = {
    "kind": "open_clip",
    "device": "cpu",
    "open_clip": {"model": "gram-tiny-vit", "pretrained": None},
}
NAMES = ["cat", "dog", "bird"]


def tiny(**overrides):
    torch.manual_seed(0)
    return create_backbone({**CONFIG, **overrides})


def test_fp16_training_is_refused_with_bf16_named():
    for stage in ("finetune", "meta_train"):
        with pytest.raises(ParamError, match=rf"backbone\.precision = 'fp16'.*{stage}.*use bf16"):
            check_training_precision("fp16", stage)
    check_training_precision("bf16", "finetune")
    check_training_precision("fp32", "meta_train")


def test_finetune_refuses_fp16_before_anything_else_is_read():
    params = {"backbone": {"precision": "fp16"}}  # no other section: the precision fails first
    with pytest.raises(ParamError, match=r"fp16 training is not supported in finetune"):
        read_downstream(params, "coop", 1, "main")


def test_meta_train_refuses_an_fp16_backbone():
    from pipeline.meta.variant import meta_train_variant

    backbone = tiny()
    backbone.precision = "fp16"  # as place() would set it on a CUDA machine
    with pytest.raises(ParamError, match=r"fp16 training is not supported in meta_train"):
        meta_train_variant({}, backbone, [])


def test_bf16_autocast_trains_on_the_cpu_close_to_fp32():
    torch.manual_seed(1)
    data = CachedTrainingSet(
        labels=torch.arange(9) % 3, view_ids=[0], features=torch.randn(1, 9, 64)
    )
    config = TrainConfig(epochs=2, batch_size=3, lr=0.05, warmup_epochs=0, seed=1)
    results = {}
    for precision in ("fp32", "bf16"):
        backbone = tiny(precision=precision)
        data.features = data.features[..., : backbone.embed_dim]
        learner = CoOp(backbone, NAMES, init_words=None, seed=1)
        history = train(learner, data, config).history
        assert learner.text_ctx.dtype == torch.float32  # the prompt and SGD stay in fp32
        results[precision] = (learner.text_ctx.detach().clone(), history[-1]["loss"])
    (exact, loss32), (low, loss16) = results["fp32"], results["bf16"]
    assert math.isfinite(loss16) and not torch.equal(exact, low)  # bf16 really ran
    assert abs(loss16 - loss32) < 0.05 * max(1.0, abs(loss32))
    torch.testing.assert_close(low, exact, rtol=0, atol=0.05)


def test_second_order_meta_steps_run_in_fp32_first_order_ones_in_the_backbones_precision():
    bf16 = tiny(precision="bf16")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        low = bf16.encode_image(images)
        with precision_of_meta_steps(bf16, second_order=True):
            exact = bf16.encode_image(images)
        with precision_of_meta_steps(bf16, second_order=False):
            again = bf16.encode_image(images)
        fp32 = tiny().encode_image(images)
    torch.testing.assert_close(exact, fp32)
    assert torch.equal(again, low) and not torch.equal(low, fp32)
