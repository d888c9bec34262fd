"""Real CLIP weights get the activation they were trained with, and must fit the architecture.

A tiny ViT in OpenAI's format (QuickGELU, OpenAI's metadata entries, fp16 linear weights as
OpenAI ships them, or a TorchScript archive) is loaded through the backbone under the plain
architecture name, and must give exactly the features of the QuickGELU model built directly.
"""

import logging
import warnings

import pytest
import torch
from torch import nn

from pipeline.backbones import create_backbone
from pipeline.backbones.checkpoints import check_activation, tag_needs_quick_gelu
from pipeline.backbones.open_clip_backbone import check_open_clip_version, import_open_clip
from pipeline.errors import UserError
from pipeline.params import ParamError

TINY = "gram-tiny-vit"
PROMPTS = ["a photo of a cat.", "a photo of a large dog sleeping on a red sofa."]


def quick_gelu_reference(fp16_weights: bool):
    """The tiny ViT built with QuickGELU; weights rounded through fp16 when OpenAI's are."""
    open_clip = import_open_clip()
    torch.manual_seed(0)
    model = open_clip.create_model(TINY, pretrained=None, force_quick_gelu=True).eval()
    if fp16_weights:
        open_clip.convert_weights_to_lp(model, dtype=torch.float16)  # OpenAI's convert_weights
        state = {key: value.clone() for key, value in model.state_dict().items()}
        model.float()
    else:
        state = {key: value.clone() for key, value in model.state_dict().items()}
    return model, state


def save_openai_state_dict(tmp_path):
    model, state = quick_gelu_reference(fp16_weights=True)
    # what torch.jit.load(OpenAI's ViT-B-16.pt).state_dict() holds besides the weights
    state |= {
        "input_resolution": torch.tensor(32),
        "context_length": torch.tensor(77),
        "vocab_size": torch.tensor(49408),
    }
    path = tmp_path / "openai-tiny.pt"
    torch.save(state, path)
    return model, path


def save_torchscript_archive(tmp_path):
    model, _ = quick_gelu_reference(fp16_weights=False)
    path = tmp_path / "openai-tiny-jit.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated, OpenAI's isn't
        torch.jit.save(torch.jit.script(model), str(path))
    return model, path


def load(model: str, pretrained: str):
    options = {"model": model, "pretrained": pretrained}
    return create_backbone({"kind": "open_clip", "device": "cpu", "open_clip": options})


def activations(module: nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules() if type(m).__name__ in ("GELU", "QuickGELU")}


def assert_same_features(backbone, reference):
    torch.manual_seed(1)
    images = torch.randn(3, 3, 32, 32)
    tokens = backbone.tokenize(PROMPTS)
    with torch.no_grad():
        torch.testing.assert_close(backbone.encode_image(images), reference.encode_image(images))
        torch.testing.assert_close(backbone.encode_text(tokens), reference.encode_text(tokens.ids))


@pytest.mark.parametrize("save", [save_openai_state_dict, save_torchscript_archive])
def test_openai_checkpoint_gets_quick_gelu_under_the_plain_name(tmp_path, save):
    reference, path = save(tmp_path)
    backbone = load(TINY, str(path))
    assert activations(backbone.model) == {"QuickGELU"}
    assert backbone.name == f"open_clip:{TINY}+quickgelu:{path}"
    assert_same_features(backbone, reference)
    # the bug this prevents: the same weights under GELU give other features
    open_clip = import_open_clip()
    gelu = open_clip.create_model(TINY, pretrained=None).eval()
    gelu.load_state_dict(reference.state_dict())
    with torch.no_grad():
        images = torch.randn(2, 3, 32, 32)
        assert not torch.allclose(gelu.encode_image(images), reference.encode_image(images))


def test_a_loaded_checkpoint_is_not_reported_as_a_random_model(tmp_path, caplog):
    _, path = save_openai_state_dict(tmp_path)

    def random_init_warnings():
        return [r for r in caplog.records if "initialized randomly" in r.getMessage()]

    caplog.clear()  # the reference model above was built without weights
    with caplog.at_level(logging.WARNING):
        load(TINY, str(path))
        assert not random_init_warnings()
        load(TINY, None)  # a random model (tests) still says so
    assert random_init_warnings()


def test_openai_checkpoint_under_the_quickgelu_name_is_the_same_model(tmp_path):
    reference, path = save_openai_state_dict(tmp_path)
    backbone = load(f"{TINY}-quickgelu", str(path))
    assert activations(backbone.model) == {"QuickGELU"}
    assert backbone.name == f"open_clip:{TINY}-quickgelu:{path}"
    assert_same_features(backbone, reference)


@pytest.mark.parametrize("container", ["training checkpoint", "legacy pickle", "safetensors"])
def test_open_clip_state_dict_keeps_the_named_architecture(tmp_path, container):
    open_clip = import_open_clip()
    torch.manual_seed(0)
    reference = open_clip.create_model(TINY, pretrained=None).eval()
    state = {key: value.clone() for key, value in reference.state_dict().items()}
    if container == "training checkpoint":  # open_clip's own: DDP prefixes, epoch, optimizer
        path = tmp_path / "epoch_3.pt"
        torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    elif container == "legacy pickle":  # torch's pre-zip format cannot be memory-mapped
        path = tmp_path / "legacy.pt"
        torch.save(state, path, _use_new_zipfile_serialization=False)
    else:
        from safetensors.torch import save_file

        path = tmp_path / "open_clip_model.safetensors"
        save_file(state, str(path))
    backbone = load(TINY, str(path))
    assert activations(backbone.model) == {"GELU"}
    assert_same_features(backbone, reference)


def register_tag(monkeypatch, model: str, tag: str, path, quick_gelu: bool) -> None:
    """An open_clip pretrained tag whose weights file is ``path`` (open_clip's ``file`` entry)."""
    open_clip = import_open_clip()
    registry = open_clip.pretrained._PRETRAINED
    monkeypatch.setitem(registry, model, {tag: {"file": str(path), "quick_gelu": quick_gelu}})


def test_quick_gelu_tag_gets_quick_gelu_without_a_warning(tmp_path, monkeypatch):
    reference, state = quick_gelu_reference(fp16_weights=False)
    torch.save(state, tmp_path / "weights.pt")
    register_tag(monkeypatch, TINY, "openai", tmp_path / "weights.pt", quick_gelu=True)
    assert tag_needs_quick_gelu(TINY, "openai")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # open_clip's "QuickGELU mismatch" warning
        backbone = load(TINY, "openai")
    assert activations(backbone.model) == {"QuickGELU"}
    assert backbone.name == f"open_clip:{TINY}+quickgelu:openai"
    assert_same_features(backbone, reference)


def test_quickgelu_architecture_with_gelu_weights_is_an_error(tmp_path, monkeypatch):
    torch.save({}, tmp_path / "weights.pt")
    register_tag(monkeypatch, f"{TINY}-quickgelu", "laion", tmp_path / "weights.pt", False)
    with pytest.raises(
        ParamError,
        match=r"pretrained = 'laion' was trained with GELU but "
        r"backbone.open_clip.model = 'gram-tiny-vit-quickgelu' uses QuickGELU",
    ):
        load(f"{TINY}-quickgelu", "laion")
    assert check_activation("ViT-B-16", "openai", weights_quick_gelu=True) is True
    assert check_activation("ViT-B-16-quickgelu", "openai", weights_quick_gelu=True) is False
    assert check_activation("ViT-B-16", "laion2b", weights_quick_gelu=False) is False


def test_open_clip_registry_marks_openai_as_quick_gelu():
    assert tag_needs_quick_gelu("ViT-B-16", "openai")
    assert not tag_needs_quick_gelu("ViT-B-16", "laion2b_s34b_b88k")


def test_checkpoint_of_another_architecture_is_an_error(tmp_path):
    _, path = save_openai_state_dict(tmp_path)
    state = torch.load(path)
    state["input_resolution"] = torch.tensor(64)
    torch.save(state, tmp_path / "other-resolution.pt")
    with pytest.raises(ParamError, match="has input_resolution 64 but backbone.open_clip.model"):
        load(TINY, str(tmp_path / "other-resolution.pt"))
    state = {key: value for key, value in torch.load(path).items() if key != "ln_final.bias"}
    state["text_projection"] = torch.zeros(40, 64)
    torch.save(state, tmp_path / "other-shapes.pt")
    with pytest.raises(
        ParamError,
        match=r"does not fit backbone.open_clip.model = "
        r"'gram-tiny-vit': missing: ln_final.bias; shape \(checkpoint vs model\):"
        r" text_projection \(40, 64\) vs \(40, 32\)",
    ):
        load(TINY, str(tmp_path / "other-shapes.pt"))


def test_unknown_names_and_unreadable_files_are_param_errors(tmp_path):
    with pytest.raises(
        ParamError,
        match=r"pretrained = 'laion9' is neither a checkpoint file nor"
        r" an open_clip tag of backbone.open_clip.model = 'ViT-B-16' \(its tags",
    ):
        load("ViT-B-16", "laion9")
    with pytest.raises(ParamError, match="model = 'ViT-Q-99' is not an open_clip architecture"):
        load("ViT-Q-99", "openai")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ParamError, match="garbage.pt': cannot read it as a checkpoint"):
        load(TINY, str(tmp_path / "garbage.pt"))
    with pytest.raises(ParamError, match="no such checkpoint"):
        load(TINY, "/nope/ckpt.pt")


def test_open_clip_version_range_is_enforced():
    for supported in ("2.32.0", "3.0.1", "3.3.0"):
        check_open_clip_version(supported)
    for unsupported in ("2.31.0", "3.4.0", "4.2.0.dev0", "weird"):
        with pytest.raises(
            UserError,
            match=rf"open_clip_torch {unsupported} is installed; .*"
            r"open_clip_torch>=2.32,<3.4",
        ):
            check_open_clip_version(unsupported)
