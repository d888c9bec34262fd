import pytest
import torch

from pipeline.backbones import cosine_logits

PROMPTS = ["a photo of a cat.", "a photo of a large dog sleeping on a red sofa.", "x."]


def test_truncated_text_equals_full_context(tiny_clip):
    tokens = tiny_clip.tokenize(PROMPTS)
    assert tokens.length < tokens.ids.shape[1]
    reference = tiny_clip.model.encode_text(tokens.ids)  # open_clip's own 77-token path
    torch.testing.assert_close(tiny_clip.encode_text(tokens), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(tiny_clip.encode_text(tokens, truncate=False), reference)


def test_soft_prompt_path_equals_token_path(tiny_clip):
    """CoOp's construction with the template's own embeddings as context gives the template."""
    classnames = ["cat", "golden retriever", "sofa"]
    tokens = tiny_clip.tokenize([f"a photo of a {c}." for c in classnames])
    n_ctx = len(tiny_clip.tokenize(["a photo of a"]).ids[0, 1:].nonzero()) - 1  # minus EOT
    assert n_ctx == 4
    start = tiny_clip.context_start
    embeddings = tiny_clip.embed_tokens(tokens.ids)
    context = embeddings[0, start : start + n_ctx].clone().requires_grad_(True)
    spliced = torch.cat(
        [
            embeddings[:, :start],
            context.expand(len(classnames), -1, -1),
            embeddings[:, start + n_ctx :],
        ],
        dim=1,
    )
    soft = tiny_clip.encode_text_embeddings(spliced, tokens)
    torch.testing.assert_close(soft, tiny_clip.encode_text(tokens))
    soft.sum().backward()
    assert context.grad is not None and context.grad.abs().sum() > 0


def test_visual_prompt_of_no_tokens_changes_nothing(tiny_clip):
    images = torch.randn(2, 3, tiny_clip.image_size, tiny_clip.image_size)
    empty = torch.zeros(1, 0, tiny_clip.vision_width)
    with_empty_prompt = tiny_clip.encode_image(images, empty)
    torch.testing.assert_close(with_empty_prompt, tiny_clip.encode_image(images))


@pytest.mark.parametrize("depth", [1, 2])
def test_visual_prompts_shallow_and_deep(tiny_clip, depth):
    images = torch.randn(2, 3, tiny_clip.image_size, tiny_clip.image_size)
    prompts = (0.02 * torch.randn(depth, 3, tiny_clip.vision_width)).requires_grad_(True)
    features = tiny_clip.encode_image(images, prompts)
    assert features.shape == (2, tiny_clip.embed_dim)
    assert not torch.allclose(features, tiny_clip.encode_image(images))
    features.sum().backward()
    assert (prompts.grad.flatten(1).abs().sum(dim=1) > 0).all()  # every layer's tokens matter


def test_visual_prompt_shape_is_checked(tiny_clip):
    images = torch.randn(1, 3, tiny_clip.image_size, tiny_clip.image_size)
    with pytest.raises(ValueError, match="does not fit"):
        tiny_clip.encode_image(images, torch.zeros(1, 2, tiny_clip.vision_width + 1))


def test_cosine_logits_scale_and_shape():
    image = torch.tensor([[3.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 5.0]])
    logits = cosine_logits(image, text, 10.0)
    expected = 10.0 * torch.tensor([[1.0, 2**-0.5, 0.0], [0.0, 2**-0.5, 1.0]])
    torch.testing.assert_close(logits, expected)


def test_missing_checkpoint_is_a_clear_error():
    from pipeline.backbones import create_backbone
    from pipeline.params import ParamError

    with pytest.raises(ParamError, match="no such checkpoint"):
        create_backbone(
            {
                "kind": "open_clip",
                "open_clip": {"model": "gram-tiny-vit", "pretrained": "/nope/ckpt.pt"},
            }
        )
    with pytest.raises(ValueError, match="backbone.kind"):
        create_backbone({"kind": "resnet"})


def test_local_checkpoint_path_loads_the_same_weights(tiny_clip, tmp_path):
    from pipeline.backbones import create_backbone

    checkpoint = tmp_path / "tiny.pt"
    torch.save(tiny_clip.model.state_dict(), checkpoint)
    options = {"model": "gram-tiny-vit", "pretrained": str(checkpoint)}
    loaded = create_backbone({"kind": "open_clip", "open_clip": options})
    tokens = tiny_clip.tokenize(PROMPTS)
    torch.testing.assert_close(loaded.encode_text(tokens), tiny_clip.encode_text(tokens))
    assert loaded.logit_scale == pytest.approx(tiny_clip.logit_scale)
