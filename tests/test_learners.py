"""Learners: CoOp reproduces zero-shot CLIP, EOT truncation changes nothing, CoCoOp's
per-image prompts, VPT tokens and pixel prompts, functional calls for GRAM."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from pipeline.backbones import Backbone, cosine_logits
from pipeline.config import check_learner
from pipeline.learners import (
    VPT,
    Batch,
    CoCoOp,
    CoOp,
    JointPrompt,
    ZeroShot,
    build_learner,
    template_words,
)
from pipeline.params import ParamError

NAMES = ["cat", "golden retriever", "sports_car", "bird"]


@pytest.fixture()
def batch(tiny_clip):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(3, 3, 32, 32, generator=generator)
    with torch.no_grad():
        features = tiny_clip.encode_image(images)
    return Batch(torch.tensor([0, 2, 3]), features=features, images=images)


@pytest.mark.parametrize("class_specific", [False, True])
def test_coop_with_the_templates_own_embeddings_gives_the_zero_shot_logits(
    tiny_clip, batch, class_specific
):
    zero_shot = ZeroShot(tiny_clip, NAMES, "a photo of a {}.")
    coop = CoOp(tiny_clip, NAMES, init_words="a photo of a", class_specific=class_specific)
    with torch.no_grad():
        torch.testing.assert_close(coop.logits(batch), zero_shot.logits(batch))
        # a random context does not (the test can fail)
        random = CoOp(tiny_clip, NAMES, init_words=None, n_ctx=4)
        assert not torch.allclose(random.logits(batch), zero_shot.logits(batch), atol=1e-3)


def test_eot_truncation_gives_the_same_logits_as_77_tokens(tiny_clip, batch):
    short = CoOp(tiny_clip, NAMES, init_words=None, n_ctx=4, seed=5)
    full = CoOp(tiny_clip, NAMES, init_words=None, n_ctx=4, seed=5, truncate=False)
    assert short.prompts.suffix.shape[1] < full.prompts.suffix.shape[1]
    assert full.prompts.prefix.shape[1] + 4 + full.prompts.suffix.shape[1] == 77
    with torch.no_grad():
        torch.testing.assert_close(short.logits(batch), full.logits(batch), atol=1e-5, rtol=1e-5)


def test_context_initialisations(tiny_clip):
    words = CoOp(tiny_clip, NAMES, n_ctx=16, init_words="a photo of a")
    assert words.text_ctx.shape == (4, tiny_clip.text_width)  # n_ctx overridden (CoOp)
    tokens = tiny_clip.tokenize(["a photo of a"])
    expected = tiny_clip.embed_tokens(tokens.ids)[0, 1:5]
    torch.testing.assert_close(words.text_ctx.detach(), expected)
    random = CoOp(tiny_clip, NAMES, n_ctx=16, init_words=None, seed=1)
    assert random.text_ctx.shape == (16, tiny_clip.text_width)
    assert 0.015 < float(random.text_ctx.detach().std()) < 0.025  # N(0, 0.02^2)
    again = CoOp(tiny_clip, NAMES, n_ctx=16, init_words=None, seed=1)
    assert torch.equal(random.text_ctx, again.text_ctx)
    csc = CoOp(tiny_clip, NAMES, n_ctx=3, init_words=None, class_specific=True)
    assert csc.text_ctx.shape == (len(NAMES), 3, tiny_clip.text_width)
    with pytest.raises(ValueError, match="class-specific"):
        csc.set_classes(["tree", "house"])


def test_prograd_template_words():
    assert template_words("a type of pet, a photo of a {}.") == "a type of pet, a photo of a"
    assert template_words("a photo of a {}.") == "a photo of a"
    assert template_words("{} texture.") is None


def test_cocoop_meta_net_and_per_image_prompts(tiny_clip, batch):
    learner = CoCoOp(tiny_clip, NAMES, init_words="a photo of a", seed=0)
    d = tiny_clip.embed_dim
    assert learner.meta_net.linear1.weight.shape == (d // 16, d)
    assert learner.meta_net.linear2.weight.shape == (tiny_clip.text_width, d // 16)
    with torch.no_grad():
        together = learner.logits(batch)
        one_by_one = torch.cat(
            [
                learner.logits(Batch(batch.labels[i : i + 1], features=batch.features[i : i + 1]))
                for i in range(len(batch))
            ]
        )
        torch.testing.assert_close(together, one_by_one, atol=1e-5, rtol=1e-5)
        # with pi(x) = 0 every image gets CoOp's prompt
        learner.meta_net.linear2.weight.zero_()
        learner.meta_net.linear2.bias.zero_()
        coop = CoOp(tiny_clip, NAMES, init_words="a photo of a")
        torch.testing.assert_close(learner.logits(batch), coop.logits(batch), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth", [1, 2])
def test_vpt_tokens_on_a_vit(tiny_clip, batch, depth):
    learner = VPT(tiny_clip, NAMES, n_tokens=3, depth=depth, seed=0)
    assert learner.visual_prompt.shape == (depth, 3, tiny_clip.vision_width)
    logits = learner.logits(batch)
    with torch.no_grad():
        direct = tiny_clip.encode_image(batch.images, learner.visual_prompt)
        text = ZeroShot(tiny_clip, NAMES, "a photo of a {}.").class_features()
    torch.testing.assert_close(logits, cosine_logits(direct, text, tiny_clip.logit_scale))
    step = learner.training_gradients(batch)
    assert step.grads["visual_prompt"].abs().sum() > 0


class TinyCNN(Backbone):
    """tiny_clip's text tower with a small CNN image tower: a stand-in for the embedded one."""

    vision_width = None
    vision_layers = 0
    image_size = 32

    def __init__(self, text_backbone):
        super().__init__()
        object.__setattr__(self, "text", text_backbone)
        self.name, self.embed_dim = "tiny-cnn", text_backbone.embed_dim
        self.text_width = text_backbone.text_width
        torch.manual_seed(0)
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(8, self.embed_dim),
        )
        self.requires_grad_(False)

    logit_scale = 10.0

    def image_transform(self, train=False):
        return self.text.image_transform(train)

    def encode_image(self, images, visual_prompt=None):
        return self.net(images if visual_prompt is None else images + visual_prompt)

    def tokenize(self, texts):
        return self.text.tokenize(texts)

    def embed_tokens(self, ids):
        return self.text.embed_tokens(ids)

    def encode_text_embeddings(self, embeddings, tokens, truncate=True):
        return self.text.encode_text_embeddings(embeddings, tokens, truncate)


def test_pixel_prompt_on_a_cnn_is_a_learnable_border(tiny_clip, batch):
    cnn = TinyCNN(tiny_clip)
    learner = VPT(cnn, NAMES, pad_width=4, pixel_init_std=1.0, seed=0)
    prompt = learner.visual_prompt_input()
    assert prompt.shape == (3, 32, 32)
    assert torch.equal(prompt[:, 4:28, 4:28], torch.zeros(3, 24, 24))
    assert prompt[:, :4].abs().min() > 0
    step = learner.training_gradients(batch)
    grad = step.grads["visual_prompt"]
    assert torch.equal(grad[:, 4:28, 4:28], torch.zeros(3, 24, 24))
    assert grad[:, :4].abs().sum() > 0
    zero = VPT(cnn, NAMES, pad_width=4, seed=0)  # default: a zero border = zero-shot
    images = Batch(batch.labels, images=batch.images)
    with torch.no_grad():
        torch.testing.assert_close(
            zero.logits(images), ZeroShot(cnn, NAMES, "a photo of a {}.").logits(images)
        )
        assert not torch.allclose(learner.logits(images), zero.logits(images))


@pytest.mark.parametrize("kind", ["coop", "cocoop", "prograd", "vpt", "joint"])
def test_functional_call_with_a_params_dict(tiny_clip, batch, kind):
    learner = build_learner(kind, tiny_clip, NAMES, {}, template="a photo of a {}.", seed=0)
    params = {k: v.detach().clone() for k, v in learner.prompt_parameters().items()}
    with torch.no_grad():
        torch.testing.assert_close(functional_call(learner, params, (batch,)), learner(batch))
    # random, not constant: LayerNorm makes a text token blind to a constant shift
    generator = torch.Generator().manual_seed(1)
    shifted = {k: v + 0.5 * torch.randn(v.shape, generator=generator) for k, v in params.items()}
    out = functional_call(learner, shifted, (batch,))
    with torch.no_grad():
        for name, value in learner.prompt_parameters().items():
            value.copy_(shifted[name])
        torch.testing.assert_close(out, learner(batch))
    assert not torch.allclose(out, functional_call(learner, params, (batch,)))
    # the backbone is not part of the learner's state
    assert set(learner.state_dict()) == set(params)


def test_joint_prompt_holds_both_groups(tiny_clip):
    joint = JointPrompt(tiny_clip, NAMES, n_ctx=2, n_tokens=2, seed=0)
    assert set(joint.prompt_parameters()) == {"text_ctx", "visual_prompt"}
    coop = CoOp(tiny_clip, NAMES, n_ctx=2, init_words=None, seed=0)
    assert torch.equal(joint.text_ctx, coop.text_ctx)


def test_bad_learner_options_name_the_key(tiny_clip):
    with pytest.raises(ParamError, match=r"finetune.methods.coop.options.n_tokens is not an"):
        check_learner("coop", {"n_tokens": 3}, "finetune.methods.coop")
    with pytest.raises(ParamError, match="finetune.methods.x.learner = 'nope'"):
        check_learner("nope", {}, "finetune.methods.x")
    with pytest.raises(ParamError, match=r"options.lambda = 2.0: must be <= 1.0"):
        check_learner("prograd", {"lambda": 2.0}, "finetune.methods.prograd")
    assert check_learner("prograd", {"lambda": 0.5}, "m") == {"lambda": 0.5}
    with pytest.raises(ValueError, match="more than n_ctx"):
        build_learner(
            "prograd",
            tiny_clip,
            NAMES,
            {"n_ctx": 2, "init_words": "template"},
            template="a photo of a {}.",
        )
    with pytest.raises(ValueError, match="learner 'nope'"):
        build_learner("nope", tiny_clip, NAMES)
    assert build_learner("prograd", tiny_clip, NAMES, {"lambda": 0.25}).lam == 0.25
