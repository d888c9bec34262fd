"""The embedded backbone on its real packaged weights (EfficientNet-Lite0 + all-MiniLM-L6-v2)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from pipeline.backbones import cosine_logits
from pipeline.backbones.embedded import EmbeddedBackbone, minilm_path
from pipeline.params import ParamError

# shared with the DVC stages, so the 1000 class prompts are embedded once per checkout
CACHE_DIR = Path(__file__).resolve().parents[1] / ".cache" / "embedded_backbone"
CLASSES = ["dog", "golden retriever", "car", "sea anemone", "T-shirt"]


@pytest.fixture(scope="module")
def backbone() -> EmbeddedBackbone:
    torch.manual_seed(0)
    return EmbeddedBackbone(cache_dir=str(CACHE_DIR))


@pytest.fixture(scope="module")
def sample_photos() -> dict[str, Image.Image]:
    from sklearn.datasets import load_sample_image

    return {name: Image.fromarray(load_sample_image(f"{name}.jpg")) for name in ("china", "flower")}


def normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


# -- text ------------------------------------------------------------------------------------
def test_text_features_equal_sentence_transformers(backbone):
    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    sentences = [
        "a photo of a dog.",
        "A CAT sitting on a red sofa, next to the window!",
        "x",
        "Gradient-regulated meta-prompt learning generalises to unseen domains and tasks.",
    ]
    reference = SentenceTransformer(str(minilm_path()), device="cpu").encode(
        sentences, convert_to_tensor=True
    )
    with torch.no_grad():
        ours = normalise(backbone.encode_text(backbone.tokenize(sentences)))
    torch.testing.assert_close(ours, reference.cpu(), atol=1e-5, rtol=0)


def test_tokenize_pads_with_pad_and_ends_at_sep(backbone):
    tokens = backbone.tokenize(["a photo of a dog.", "word " * 300])
    tokenizer = backbone.tokenizer
    assert tokens.ids.shape == (2, backbone.context_length)
    assert tokens.ids[:, 0].eq(tokenizer.cls_token_id).all()
    # "a photo of a dog." is [CLS] a photo of a dog . [SEP]
    assert tokens.eot.tolist() == [7, backbone.context_length - 1]
    assert tokens.ids[0, 7] == tokenizer.sep_token_id
    assert tokens.ids[0, 8:].eq(tokenizer.pad_token_id).all()
    # a text longer than the context keeps [SEP] as its last token
    assert tokens.ids[1, -1] == tokenizer.sep_token_id
    assert tokens.ids[1, -2] == tokenizer.convert_tokens_to_ids("word")


def test_truncation_gives_the_same_features(backbone):
    prompts = [f"a photo of a {name}." for name in CLASSES] + [
        "a blurry, low-resolution photograph of a very small golden retriever on a beach."
    ]
    tokens = backbone.tokenize(prompts)
    assert tokens.length < backbone.context_length  # otherwise nothing would be cut
    with torch.no_grad():
        short = backbone.encode_text(tokens, truncate=True)
        full = backbone.encode_text(tokens, truncate=False)
    torch.testing.assert_close(short, full, atol=1e-5, rtol=0)


def test_soft_prompt_path_equals_token_path(backbone):
    """CoOp's prompt learner: [CLS] + context vectors + class tokens; context initialised
    from "a photo of a" must reproduce the hand-written prompt exactly."""
    context_words = "a photo of a"
    n_ctx = len(backbone.tokenizer.tokenize(context_words))
    start = backbone.context_start
    with torch.no_grad():
        init = backbone.embed_tokens(backbone.tokenize([context_words]).ids)
        context = init[0, start : start + n_ctx]
        tokens = backbone.tokenize([f"{context_words} {name}." for name in CLASSES])
        table_rows = backbone.embed_tokens(tokens.ids)
        prefix, suffix = table_rows[:, :start], table_rows[:, start + n_ctx :]
        spliced = torch.cat([prefix, context.expand(len(CLASSES), -1, -1), suffix], dim=1)
        soft = backbone.encode_text_embeddings(spliced, tokens)
        hard = backbone.encode_text(tokens)
    torch.testing.assert_close(soft, hard, atol=1e-5, rtol=0)


def test_class_embedding_cache_holds_freshly_computed_rows(backbone):
    assert backbone.class_embeddings.shape == (1000, 384)
    assert (CACHE_DIR / f"class_embeddings-{backbone.cache_key()}.pt").exists()
    rows = [0, 281, 817, 999]  # tench, tabby cat, sports car, toilet tissue
    prompts = [backbone.class_prompts()[i] for i in rows]
    assert prompts[1].startswith("a photo of a tabby, tabby cat")
    with torch.no_grad():
        fresh = normalise(backbone.encode_text(backbone.tokenize(prompts)))
    torch.testing.assert_close(backbone.class_embeddings[rows], fresh, atol=1e-6, rtol=0)


def test_cache_hit_skips_computing_and_bad_file_is_rebuilt(backbone, tmp_path, monkeypatch):
    path = tmp_path / f"class_embeddings-{backbone.cache_key()}.pt"
    path.write_bytes(b"not a tensor")
    replacement = torch.randn(1000, 384)
    monkeypatch.setattr(backbone, "compute_class_embeddings", lambda: replacement)
    assert torch.equal(backbone._load_or_compute_class_embeddings(tmp_path), replacement)

    def must_not_run():
        raise AssertionError("cache miss")

    monkeypatch.setattr(backbone, "compute_class_embeddings", must_not_run)
    assert torch.equal(backbone._load_or_compute_class_embeddings(tmp_path), replacement)


# -- image -----------------------------------------------------------------------------------
def test_sample_photos_get_sensible_imagenet_predictions(backbone, sample_photos):
    transform = backbone.image_transform(train=False)
    images = torch.stack([transform(photo) for photo in sample_photos.values()])
    with torch.no_grad():
        top = backbone.imagenet_logits(images).topk(3).indices
    names = [[backbone.class_names[i].split(",")[0] for i in row] for row in top.tolist()]
    assert "palace" in names[0]  # china.jpg: a Chinese temple
    assert names[1][0] == "daisy"  # flower.jpg


def test_bridge_zero_shot_on_sample_photos(backbone, sample_photos):
    transform = backbone.image_transform(train=False)
    images = torch.stack([transform(photo) for photo in sample_photos.values()])
    with torch.no_grad():
        image_features = backbone.encode_image(images)
        texts = backbone.encode_text(
            backbone.tokenize(["a photo of a temple.", "a photo of a flower."])
        )
    assert image_features.shape == (2, backbone.embed_dim)
    logits = cosine_logits(image_features, texts, backbone.logit_scale)
    assert logits.argmax(dim=1).tolist() == [0, 1]


def test_image_features_are_the_probability_weighted_class_texts(backbone, sample_photos):
    images = backbone.image_transform()(sample_photos["china"])[None]
    with torch.no_grad():
        probabilities = backbone.imagenet_logits(images).softmax(dim=-1)
        features = backbone.encode_image(images)
        again = backbone.encode_image(images)
        zero_prompt = backbone.encode_image(images, torch.zeros(3, 224, 224))
    torch.testing.assert_close(probabilities.sum(), torch.tensor(1.0))
    torch.testing.assert_close(features, probabilities @ backbone.class_embeddings)
    assert torch.equal(features, again)
    assert torch.equal(features, zero_prompt)


def test_folded_channels_last_network_gives_the_reference_logits(backbone, sample_photos):
    from pipeline.backbones.embedded import load_efficientnet_lite0

    fast = backbone.image_model
    assert fast.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    reference = load_efficientnet_lite0().eval()  # norms kept, NCHW: timm's own network
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in reference.modules()) == 49
    images = torch.stack([backbone.image_transform()(p) for p in sample_photos.values()])
    prompt = torch.nn.Parameter(torch.zeros(3, 224, 224))
    with torch.no_grad():
        torch.testing.assert_close(
            backbone.imagenet_logits(images), reference(images), rtol=1e-4, atol=1e-4
        )
    # pixel-prompt gradients too (VPT on this backbone differentiates through the network)
    backbone.imagenet_logits(images, prompt)[:, 0].sum().backward()
    reference_prompt = torch.nn.Parameter(torch.zeros(3, 224, 224))
    reference(images + reference_prompt)[:, 0].sum().backward()
    # elementwise they differ where rounding moves a ReLU6 input across 0 or 6; as a whole
    # they agree to 0.2% (timm's fp32 network itself is 0.05% off its fp64 gradient)
    error = (prompt.grad - reference_prompt.grad).norm() / reference_prompt.grad.norm()
    assert error < 1e-2


def test_transforms_handle_grayscale_and_augment(backbone):
    gray = Image.new("L", (300, 200), color=128)
    test_image = backbone.image_transform(train=False)(gray)
    assert test_image.shape == (3, 224, 224)
    torch.testing.assert_close(test_image, torch.full_like(test_image, 128 / 255 * 2 - 1))
    gradient = Image.linear_gradient("L").resize((320, 240))
    torch.manual_seed(0)
    train_transform = backbone.image_transform(train=True)
    crops = [train_transform(gradient) for _ in range(2)]
    assert crops[0].shape == (3, 224, 224)
    assert not torch.equal(crops[0], crops[1])


def test_pixel_prompt_of_wrong_shape_is_rejected(backbone):
    with pytest.raises(ValueError, match="pixel prompt"):
        backbone.encode_image(torch.zeros(1, 3, 224, 224), torch.zeros(3, 32, 32))


# -- frozen, but differentiable with respect to prompts ----------------------------------------
def test_backbone_is_frozen_and_stays_in_eval_mode(backbone):
    assert not any(p.requires_grad for p in backbone.parameters())
    backbone.train()
    assert not any(module.training for module in backbone.modules())


def test_gradients_reach_soft_context_and_pixel_prompt(backbone):
    tokens = backbone.tokenize([f"X X X X {name}." for name in CLASSES[:2]])
    rows = backbone.embed_tokens(tokens.ids)
    context = torch.nn.Parameter(0.02 * torch.randn(4, backbone.text_width))
    start = backbone.context_start
    spliced = torch.cat([rows[:, :start], context.expand(2, -1, -1), rows[:, start + 4 :]], dim=1)
    text_features = backbone.encode_text_embeddings(spliced, tokens)

    pixel_prompt = torch.nn.Parameter(torch.zeros(3, 224, 224))
    image_features = backbone.encode_image(torch.zeros(1, 3, 224, 224), pixel_prompt)

    loss = cosine_logits(image_features, text_features, backbone.logit_scale).logsumexp(-1).sum()
    loss.backward()
    for prompt in (context, pixel_prompt):
        assert prompt.grad is not None and torch.isfinite(prompt.grad).all()
        assert prompt.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())


# -- configuration -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"logit_scale": 0}, "backbone.embedded.logit_scale"),
        ({"image_temperature": -1.0}, "backbone.embedded.image_temperature"),
        ({"context_length": 7.5}, "backbone.embedded.context_length"),
        ({"class_template": "a photo"}, "backbone.embedded.class_template"),
    ],
)
def test_bad_options_name_their_key(options, key):
    with pytest.raises(ParamError, match=key):
        EmbeddedBackbone(**options)


def test_name_changes_when_image_features_change(backbone):
    assert backbone.name == "embedded:efficientnet_lite0+all-MiniLM-L6-v2"
    hotter = EmbeddedBackbone(image_temperature=2.0, cache_dir=str(CACHE_DIR))
    assert hotter.name != backbone.name
    assert torch.equal(hotter.class_embeddings, backbone.class_embeddings)
