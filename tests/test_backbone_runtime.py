"""backbone.device and backbone.precision: resolution, placement, and bf16 autocast accuracy."""

import warnings

import pytest
import torch

from pipeline.backbones import cosine_logits, create_backbone, full_precision
from pipeline.backbones.runtime import check_precision, resolve_device
from pipeline.features import image_features
from pipeline.params import ParamError
from tests.coop_fakes import write_noise_images

CONFIG = {
    "kind": "open_clip",
    "device": "cpu",
    "open_clip": {"model": "gram-tiny-vit", "pretrained": None},
}
CLASSES = ["cat", "dog", "car", "tree", "boat", "house", "bird", "fish"]
#: bf16 keeps 8 significant bits: a cosine may move by up to 1e-2, i.e. a logit by 1% of the scale
BF16_COSINE_TOLERANCE = 1e-2


def tiny(**overrides):
    torch.manual_seed(0)
    return create_backbone({**CONFIG, **overrides})


def test_auto_is_cuda_when_available_else_cpu(monkeypatch):
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")


def test_bad_device_and_precision_are_param_errors(monkeypatch):
    for value in ("gpu", "mps", 0, None):
        with pytest.raises(ParamError, match="backbone.device = .* must be auto, cpu, cuda"):
            resolve_device(value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParamError, match=r"backbone.device = 'cuda:1': this machine has 0 CUDA"):
        resolve_device("cuda:1")
    with pytest.raises(ParamError, match="backbone.precision = 'fp8' must be one of"):
        check_precision("fp8", torch.device("cpu"))
    with pytest.raises(ParamError, match="'fp16' needs a CUDA device; use bf16 on the CPU"):
        check_precision("fp16", torch.device("cpu"))
    assert check_precision("fp16", torch.device("cuda")) == "fp16"


def test_backbone_is_placed_and_named_by_precision():
    fp32, bf16 = tiny(), tiny(precision="bf16")
    assert {p.device for p in fp32.parameters()} == {torch.device("cpu")}
    assert fp32.precision == "fp32" and bf16.precision == "bf16"
    assert fp32.name == "open_clip:gram-tiny-vit:None"
    assert bf16.name == "open_clip:gram-tiny-vit:None:bf16"  # features differ: own cache
    assert bf16.place(torch.device("cpu"), "fp32").name == fp32.name
    assert {p.dtype for p in bf16.parameters()} == {torch.float32}  # weights stay fp32


def test_bf16_autocast_logits_agree_with_fp32():
    fp32, bf16 = tiny(), tiny(precision="bf16")
    images = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    tokens = fp32.tokenize([f"a photo of a {name}." for name in CLASSES])
    with torch.no_grad():
        features = [(b.encode_image(images), b.encode_text(tokens)) for b in (fp32, bf16)]
    assert all(f.dtype == torch.float32 for pair in features for f in pair)
    exact, low = (cosine_logits(i, t, fp32.logit_scale) for i, t in features)
    assert not torch.equal(exact, low)  # autocast really ran in bf16
    torch.testing.assert_close(low, exact, rtol=0, atol=BF16_COSINE_TOLERANCE * fp32.logit_scale)
    assert torch.equal(low.argmax(dim=1), exact.argmax(dim=1))


def test_bf16_visual_prompts_get_fp32_gradients():
    bf16 = tiny(precision="bf16")
    prompts = (0.02 * torch.randn(2, 3, bf16.vision_width)).requires_grad_(True)
    features = bf16.encode_image(torch.randn(2, 3, 32, 32), prompts)
    assert features.dtype == torch.float32
    features.sum().backward()
    assert prompts.grad.dtype == torch.float32 and prompts.grad.abs().sum() > 0


def test_feature_cache_runs_on_the_backbone_device_and_returns_cpu(tmp_path):
    (tmp_path / "images").mkdir()
    paths = write_noise_images(tmp_path / "images", 5, seed=0, shape=(40, 36))
    backbone = tiny()
    features = image_features(backbone, paths, cache_dir=tmp_path / "cache", batch_size=2)
    assert features.device == torch.device("cpu") and features.shape == (5, backbone.embed_dim)


def test_full_precision_block_runs_a_bf16_backbone_in_fp32():
    fp32, bf16 = tiny(), tiny(precision="bf16")
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    tokens = fp32.tokenize(CLASSES[:3])
    with torch.no_grad(), full_precision(bf16):
        torch.testing.assert_close(bf16.encode_image(images), fp32.encode_image(images))
        torch.testing.assert_close(bf16.encode_text(tokens), fp32.encode_text(tokens))
    with torch.no_grad():  # and back to bf16 after the block
        assert not torch.equal(bf16.encode_image(images), fp32.encode_image(images))


def test_bf16_on_a_cpu_without_native_bf16_warns_and_names_fp32(monkeypatch):
    from pipeline.backbones import runtime

    cpu = torch.device("cpu")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
    with pytest.warns(UserWarning, match="backbone.precision=fp32"):
        assert check_precision("bf16", cpu) == "bf16"
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_precision("bf16", cpu) == "bf16"
        assert check_precision("fp32", cpu) == "fp32"
