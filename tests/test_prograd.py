"""ProGrad's gradient rule on hand-made gradients, and lambda = 0 being exactly CoOp."""

import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.learners import CoOp, ProGrad, prograd_projection, soft_cross_entropy
from pipeline.training import CachedTrainingSet, TrainConfig, train


def project(d, g, lam=1.0):
    return prograd_projection({"p": torch.tensor(d)}, {"p": torch.tensor(g)}, lam)["p"]


def test_conflicting_gradient_loses_its_component_along_the_general_direction():
    # g_d = (1, 0), g_g = (-1, 1): dot -1 < 0; g_hat = (-1, 1)/sqrt(2);
    # g_d - (g_d . g_hat) g_hat = (1, 0) - (-1/sqrt 2)(-1, 1)/sqrt 2 = (0.5, 0.5)
    out = project([1.0, 0.0], [-1.0, 1.0])
    torch.testing.assert_close(out, torch.tensor([0.5, 0.5]))
    assert float(out @ torch.tensor([-1.0, 1.0])) == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize(
    "lam, expected", [(0.0, [1.0, 0.0]), (0.5, [0.75, 0.25]), (1.0, [0.5, 0.5])]
)
def test_lambda_scales_the_removed_component(lam, expected):
    torch.testing.assert_close(project([1.0, 0.0], [-1.0, 1.0], lam), torch.tensor(expected))


@pytest.mark.parametrize("general", [[1.0, 1.0], [0.0, 3.0], [2.0, -1.0]])
def test_aligned_or_orthogonal_gradient_is_kept(general):
    # dot products 1 (aligned), 0 (orthogonal), 2 (aligned): never projected
    out = project([1.0, 0.0], general)
    assert torch.equal(out, torch.tensor([1.0, 0.0]))


def test_zero_general_gradient_leaves_the_domain_gradient():
    assert torch.equal(project([1.0, -2.0], [0.0, 0.0]), torch.tensor([1.0, -2.0]))


def test_projection_is_per_tensor_not_over_the_flattened_prompt():
    g_d = {"a": torch.tensor([1.0, 0.0]), "b": torch.tensor([0.0, 4.0])}
    g_g = {"a": torch.tensor([-1.0, 1.0]), "b": torch.tensor([0.0, 1.0])}
    out = prograd_projection(g_d, g_g, 1.0)
    torch.testing.assert_close(out["a"], torch.tensor([0.5, 0.5]))  # conflicting: projected
    assert torch.equal(out["b"], g_d["b"])  # aligned: kept
    # over the flattened vector the dot product is -1 + 4 > 0: nothing would change
    flat = project([1.0, 0.0, 0.0, 4.0], [-1.0, 1.0, 0.0, 1.0])
    assert torch.equal(flat, torch.tensor([1.0, 0.0, 0.0, 4.0]))


def test_soft_cross_entropy_is_kl_up_to_a_constant_with_t_squared():
    torch.manual_seed(0)
    logits = torch.randn(5, 7, requires_grad=True)
    teacher = torch.randn(5, 7)
    for t in (1.0, 2.0):
        ours = soft_cross_entropy(logits, teacher, t)
        p = F.softmax(teacher / t, dim=-1)
        kl = F.kl_div(F.log_softmax(logits / t, dim=-1), p, reduction="batchmean") * t * t
        entropy = -(p * p.log()).sum(-1).mean() * t * t
        torch.testing.assert_close(ours, kl + entropy)
        (g_ours,) = torch.autograd.grad(ours, logits)
        (g_kl,) = torch.autograd.grad(kl, logits)
        torch.testing.assert_close(g_ours, g_kl)


def test_prograd_step_is_the_projection_of_the_ce_gradient(tiny_clip):
    torch.manual_seed(1)
    names = ["cat", "dog", "bird"]
    learner = ProGrad(tiny_clip, names, n_ctx=6, init_words="a photo of a", lam=1.0)
    from pipeline.learners import Batch

    batch = Batch(
        torch.tensor([0, 1, 2, 1]),
        features=torch.randn(4, tiny_clip.embed_dim),
        teacher_logits=torch.randn(4, 3) * 5,
    )
    step = learner.training_gradients(batch)
    ctx = learner.text_ctx
    logits = learner.logits(batch)
    (g_d,) = torch.autograd.grad(F.cross_entropy(logits, batch.labels), ctx, retain_graph=True)
    (g_g,) = torch.autograd.grad(soft_cross_entropy(logits, batch.teacher_logits), ctx)
    dot = float((g_d * g_g).sum())
    expected = g_d - (g_d * g_g).sum() / g_g.norm() ** 2 * g_g if dot < 0 else g_d
    torch.testing.assert_close(step.grads["text_ctx"], expected)
    # ProGrad's context init: zeros, then the words in the last slots
    assert torch.equal(
        ProGrad(tiny_clip, names, n_ctx=6, init_words="a photo of a").text_ctx[:2],
        torch.zeros(2, tiny_clip.text_width),
    )


def test_lambda_zero_gives_exactly_coops_update(tiny_clip):
    torch.manual_seed(2)
    names = ["cat", "dog", "bird", "fish"]
    n = 12
    data = CachedTrainingSet(
        labels=torch.arange(n) % 4,
        view_ids=[0, 1],
        features=torch.randn(2, n, tiny_clip.embed_dim),
        teacher_logits=torch.randn(2, n, 4) * 10,
    )
    config = TrainConfig(epochs=3, batch_size=4, lr=0.05, warmup_epochs=1, seed=3)
    coop = CoOp(tiny_clip, names, init_words="a photo of a")
    prograd = ProGrad(tiny_clip, names, init_words="a photo of a", pad_init=False, lam=0.0)
    assert torch.equal(coop.text_ctx, prograd.text_ctx)
    history_coop = train(coop, data, config).history
    history_prograd = train(prograd, data, config).history
    assert torch.equal(coop.text_ctx, prograd.text_ctx)
    assert history_coop == history_prograd
    # and lambda = 1 does change the update on the same data (the test can fail)
    prograd_full = ProGrad(tiny_clip, names, init_words="a photo of a", pad_init=False, lam=1.0)
    train(prograd_full, data, config)
    assert not torch.allclose(coop.text_ctx, prograd_full.text_ctx)
    assert math.isfinite(history_coop[-1]["loss"])


PET = "a type of pet, a photo of a"  # 8 words, 9 BPE tokens (the comma is one)


def test_word_counted_init_is_the_references_reading(tiny_clip):
    from pipeline.learners.text import count_tokens, word_embeddings

    names = ["cat", "dog"]
    assert count_tokens(tiny_clip, PET) == 9 and len(PET.split(" ")) == 8
    words = word_embeddings(tiny_clip, PET)
    # ours (tokens): all 9 tokens fill the last 9 of 16 slots
    ours = ProGrad(tiny_clip, names, n_ctx=16, init_words=PET)
    assert torch.equal(ours.text_ctx[:7], torch.zeros(7, tiny_clip.text_width))
    torch.testing.assert_close(ours.text_ctx[7:], words)
    # the reference (words): 8 words -> the first 8 tokens in the last 8 slots
    exact = ProGrad(tiny_clip, names, n_ctx=16, init_words=PET, init_count="words")
    assert exact.text_ctx.shape == (16, tiny_clip.text_width)
    assert torch.equal(exact.text_ctx[:8], torch.zeros(8, tiny_clip.text_width))
    torch.testing.assert_close(exact.text_ctx[8:], words[:8])
    # ... and the 9th token ("a") stays in the frozen suffix, before the class name
    start = tiny_clip.context_start
    prompt = f"{' '.join(['X'] * 8)} {PET} cat."
    embedded = tiny_clip.embed_tokens(tiny_clip.tokenize([prompt]).ids.to(tiny_clip.device))
    suffix = exact.prompts.suffix[0]
    torch.testing.assert_close(suffix[0], embedded[0, start + 16].float())  # the 9th "a"
    torch.testing.assert_close(suffix[1], embedded[0, start + 17].float())  # "cat"
    assert not torch.equal(exact.prompts.suffix[0, 0], ours.prompts.suffix[0, 0])
    # the prompt still reads: the context goes where the 16 placeholders + words were
    n_tokens = int(exact.prompts.tokens.eot[0])
    assert n_tokens == start + 16 + 1 + count_tokens(tiny_clip, "cat.")
    with torch.no_grad():
        assert exact.class_features().shape == (2, tiny_clip.embed_dim)
    with pytest.raises(ValueError, match="8 words, more than n_ctx=4"):
        ProGrad(tiny_clip, names, n_ctx=4, init_words=PET, init_count="words")
    with pytest.raises(ValueError, match="init_count"):
        ProGrad(tiny_clip, names, init_count="letters")


def test_a_changed_lambda_or_temperature_does_not_resume_a_stale_checkpoint(tiny_clip, tmp_path):
    """lambda and T are plain floats, outside the prompt's state: the checkpoint key has them."""
    torch.manual_seed(4)
    names = ["cat", "dog", "bird"]
    data = CachedTrainingSet(
        labels=torch.arange(9) % 3,
        view_ids=[0],
        features=torch.randn(1, 9, tiny_clip.embed_dim),
        teacher_logits=torch.randn(1, 9, 3) * 10,
    )
    config = TrainConfig(epochs=2, batch_size=3, lr=0.05, warmup_epochs=0, seed=1)
    checkpoint = tmp_path / "run.pt"

    def learner(**options):
        return ProGrad(tiny_clip, names, init_words=None, seed=1, **options)

    train(learner(lam=1.0), data, config, checkpoint=checkpoint, stop_after=1)
    assert train(learner(lam=1.0), data, config, checkpoint=checkpoint).resumed_from == 1
    train(learner(lam=1.0), data, config, checkpoint=checkpoint, stop_after=1)
    assert train(learner(lam=0.8), data, config, checkpoint=checkpoint).resumed_from == 0
    train(learner(lam=1.0), data, config, checkpoint=checkpoint, stop_after=1)
    assert train(learner(temperature=2.0), data, config, checkpoint=checkpoint).resumed_from == 0


def test_the_downstream_run_key_names_every_learner_option(tmp_path):
    from pipeline.downstream import run_key

    base = {"n_ctx": 16, "lambda": 1.0, "temperature": 1.0}
    keys = {
        run_key("prograd", base, None),
        run_key("prograd", {**base, "lambda": 0.8}, None),
        run_key("prograd", {**base, "temperature": 2.0}, None),
        run_key("prograd", {**base, "n_ctx": 4}, None),
        run_key("coop", base, None),
    }
    assert len(keys) == 5
    reordered = dict(reversed(base.items()))
    assert run_key("prograd", base, None) == run_key("prograd", reordered, None)


RULES = [
    {"datasets": ["OxfordFlowers", "EuroSAT"], "shots": [8, 16], "lambda": 0.8},
    {"datasets": ["EuroSAT"], "shots": [1, 8], "lambda": 0.5},
]


@pytest.mark.parametrize(
    ("dataset", "shots", "lam"),
    [
        ("OxfordFlowers", 16, 0.8),
        ("EuroSAT", 8, 0.8),
        ("EuroSAT", 1, 0.5),
        ("EuroSAT", 4, 1.0),
        ("Caltech101", 16, 1.0),
    ],
)
def test_the_first_lambda_override_matching_dataset_and_shots_sets_lambda(dataset, shots, lam):
    from pipeline.config import run_options

    options = {"n_ctx": 16, "lambda": 1.0, "lambda_overrides": RULES}
    assert run_options(options, dataset, shots) == {"n_ctx": 16, "lambda": lam}
    assert run_options({"n_ctx": 16}, dataset, shots) == {"n_ctx": 16}  # absent: as before
    assert run_options({"lambda_overrides": []}, dataset, shots) == {}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ({"datasets": ["EuroSAT"]}, r"lambda_overrides = .*must be a list"),
        ([{"datasets": ["EuroSAT"], "shots": [8]}], r"lambda_overrides\[0\].*exactly the keys"),
        ([{"datasets": "EuroSAT", "shots": [8], "lambda": 0.8}], r"\S+\[0\]\.datasets"),
        ([{"datasets": ["EuroSAT"], "shots": [0], "lambda": 0.8}], r"\S+\[0\]\.shots\[0\] = 0"),
        ([{"datasets": ["EuroSAT"], "shots": [8], "lambda": 1.5}], r"\S+\[0\]\.lambda = 1\.5"),
    ],
)
def test_bad_lambda_overrides_name_the_key(rules, message):
    from pipeline.config import read_method
    from pipeline.params import ParamError

    params = {
        "finetune": {
            "train": {},
            "methods": {"prograd": {"learner": "prograd", "options": {"lambda_overrides": rules}}},
        }
    }
    with pytest.raises(ParamError, match=r"finetune\.methods\.prograd\.options\." + message):
        read_method(params, "prograd", seed=1)
