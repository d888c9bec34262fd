"""Seconds per prompt-tuning step: our way (cached features, EOT truncation) vs the reference way.

The reference trainers (CoOp, CoCoOp, ProGrad) run the frozen image encoder on every
augmented batch and the text encoder on all 77 tokens of every class prompt; ProGrad also
runs a second frozen zero-shot model on the batch for its teacher logits. Ours reads the
frozen features (and ProGrad's teacher logits) of each image and view from the cache and cuts
the text at the class set's last EOT. Both ways run the same learner code
(``pipeline.learners``): the reference way is ``truncate=False`` on images.

Each method is timed in two configurations, side by side in one run:

* ``official``: as its own trainer runs it. CoOp: 16 random context tokens, batch 32;
  ProGrad: 16 tokens initialised from its template (word-counted), batch 32; CoCoOp: 4 tokens
  from "a photo of a", batch 1; evaluation with CoOp's 16-token prompt.
* ``gram``: as the GRAM paper runs it (Sec. 4.1): 4 context tokens from "a photo of a",
  same batches.

``text share`` is the part of our step that is the text encoder's forward and backward on
the truncated prompts (ProGrad: two backward passes, CoCoOp: one prompt set per image), the
cost no caching removes: a share near 100% means our step is at the bound of the approach.
Ours runs the rows every class prompt shares (start token and context) once per step
(``pipeline/backbones/shared_prefix.py``); the reference way runs every prompt whole.

    python bench/bench_prompt_tuning.py | tee bench/results/prompt_tuning.txt
    python bench/bench_prompt_tuning.py --backbone embedded   # the offline default backbone
    python bench/bench_prompt_tuning.py --device cuda          # on a GPU (CUDA sync per step)
    python bench/bench_prompt_tuning.py --model gram-tiny-vit --batch-size 4 --eval-images 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from machine_info import machine_line  # noqa: E402

from pipeline.backbones import cosine_logits, create_backbone  # noqa: E402
from pipeline.learners import Batch, CoCoOp, CoOp, ProGrad  # noqa: E402
from pipeline.learners.base import hand_written_classifier  # noqa: E402

CLASSNAMES = [
    "annual crop land",
    "forest",
    "herbaceous vegetation land",
    "highway or road",
    "industrial buildings",
    "pasture land",
    "permanent crop land",
    "residential buildings",
    "river",
    "sea or lake",
    "airport",
    "bare soil",
    "glacier",
    "vineyard",
    "wetland",
]  # (EuroSAT's 10 classes and 5 more land covers: 15 classes)
TEMPLATE = "a centered satellite photo of {}."
TEMPLATE_WORDS = "a centered satellite photo of"  # ProGrad's init: the template minus " {}."

#: config -> (CoOp, ProGrad, CoCoOp) learner options; evaluation uses the CoOp prompt
CONFIGS = {
    "official": (
        dict(n_ctx=16, init_words=None),
        dict(n_ctx=16, init_words=TEMPLATE_WORDS, init_count="words"),
        dict(n_ctx=4, init_words="a photo of a"),
    ),
    "gram": (
        dict(n_ctx=4, init_words="a photo of a"),
        dict(n_ctx=4, init_words="a photo of a"),
        dict(n_ctx=4, init_words="a photo of a"),
    ),
}


def interleaved_seconds(fns, calls_per_round, rounds: int, device: torch.device) -> list[float]:
    """Seconds per call of each of ``fns``, timed in ``rounds`` rounds that run every function
    in turn (``calls_per_round`` calls each), so that a change in the machine's load during
    the run reaches the reference and our way alike. One untimed warm-up call each first."""
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    for fn in fns:
        fn()
    totals = [0.0] * len(fns)
    for _ in range(rounds):
        for i, (fn, calls) in enumerate(zip(fns, calls_per_round, strict=True)):
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            sync()
            totals[i] += time.perf_counter() - start
    return [t / (rounds * c) for t, c in zip(totals, calls_per_round, strict=True)]


def sgd_step(learner, make_batch):
    params = learner.prompt_parameters()
    optimizer = torch.optim.SGD(params.values(), lr=0.002, momentum=0.9, weight_decay=5e-4)

    def step():
        out = learner.training_gradients(make_batch())
        for name, p in params.items():
            p.grad = out.grads[name]
        optimizer.step()

    return step


def text_pass(learner, image_features, backwards: int):
    """The text encoder's forward on the truncated prompts and ``backwards`` backward passes
    to the context: what is left of a step once every frozen feature is cached."""
    params = list(learner.prompt_parameters().values())

    def run():
        if isinstance(learner, CoCoOp):
            out = learner.logits(Batch(torch.zeros(1, dtype=torch.long), features=image_features))
        else:
            out = learner.class_features()
        weight = torch.ones_like(out)
        for i in range(backwards):
            torch.autograd.grad((out * weight).sum(), params, retain_graph=i + 1 < backwards)

    return run


def build(args):
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.backbone == "embedded":
        backbone = create_backbone({"kind": "embedded", "embedded": {}})
    else:
        config = {"model": args.model, "pretrained": None}
        backbone = create_backbone({"kind": "open_clip", "open_clip": config})
    return backbone.place(torch.device(args.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["vit-b-16", "embedded"], default="vit-b-16")
    parser.add_argument(
        "--model",
        default="ViT-B-16",
        help="open_clip model (gram-tiny-vit: a smoke test in seconds)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3, help="our steps per round")
    parser.add_argument(
        "--reference-steps",
        type=int,
        default=1,
        help="rounds: each times one reference step and --steps of ours",
    )
    parser.add_argument("--batch-size", type=int, default=32, help="CoOp/ProGrad batch (32)")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--configs", default="official,gram")
    args = parser.parse_args()
    print(machine_line(args.threads))
    backbone = build(args)
    device = backbone.device
    size, b = backbone.image_size, args.batch_size
    images = torch.randn(b, 3, size, size, device=device)
    labels = torch.arange(b, device=device) % len(CLASSNAMES)
    with torch.no_grad():
        start = time.perf_counter()
        features = backbone.encode_image(images)
        encode_per_image = (time.perf_counter() - start) / b
    teacher_text = hand_written_classifier(backbone, TEMPLATE, CLASSNAMES)
    teacher_logits = cosine_logits(features, teacher_text, backbone.logit_scale)

    def reference_batch(with_teacher: bool = False, n: int = b):
        x = images[:n]
        with torch.no_grad():
            f = backbone.encode_image(x)  # CoOp's frozen image encoder, every step
            t = None
            if with_teacher:  # ProGrad's second, zero-shot model on the same batch
                t = cosine_logits(backbone.encode_image(x), teacher_text, backbone.logit_scale)
        return Batch(labels[:n], features=f, teacher_logits=t)

    def cached_batch(with_teacher: bool = False, n: int = b):
        teacher = teacher_logits[:n].clone() if with_teacher else None
        return Batch(labels[:n], features=features[:n].clone(), teacher_logits=teacher)

    rows = []

    def compare(config, name, make, with_teacher, n, backwards, steps):
        ours_learner = make(True)
        reference, ours, text = interleaved_seconds(
            [
                sgd_step(make(False), lambda: reference_batch(with_teacher, n)),
                sgd_step(ours_learner, lambda: cached_batch(with_teacher, n)),
                text_pass(ours_learner, features[:1], backwards),
            ],
            [1, steps, steps],
            args.reference_steps,
            device,
        )
        rows.append((config, name, reference, ours, text))
        print(
            f"{config:>8} {name:<24} reference {reference:8.3f} s  ours {ours:7.3f} s  "
            f"{reference / ours:6.1f}x  text share {text / ours:4.0%}",
            flush=True,
        )

    n_eval = args.eval_images
    test_images = torch.randn(n_eval, 3, size, size, device=device)
    with torch.no_grad():
        test_features = torch.cat([backbone.encode_image(x) for x in test_images.split(b)])

    @torch.no_grad()
    def evaluate(learner, re_encode: bool):
        text = learner.class_features()
        for x, f in zip(test_images.split(b), test_features.split(b), strict=True):
            f = backbone.encode_image(x) if re_encode else f
            cosine_logits(f, text, backbone.logit_scale).argmax(-1)

    for config in args.configs.split(","):
        coop, prograd, cocoop = CONFIGS[config]
        compare(
            config,
            f"CoOp step (batch {b})",
            lambda t, kw=coop: CoOp(backbone, CLASSNAMES, truncate=t, **kw),
            False,
            b,
            1,
            args.steps,
        )
        compare(
            config,
            f"ProGrad step (batch {b})",
            lambda t, kw=prograd: ProGrad(backbone, CLASSNAMES, truncate=t, **kw),
            True,
            b,
            2,
            args.steps,
        )
        compare(
            config,
            "CoCoOp step (batch 1)",
            lambda t, kw=cocoop: CoCoOp(backbone, CLASSNAMES, truncate=t, **kw),
            False,
            1,
            1,
            args.steps * 3,
        )
        full = CoOp(backbone, CLASSNAMES, truncate=False, **coop)
        short = CoOp(backbone, CLASSNAMES, truncate=True, **coop)
        reference, ours = interleaved_seconds(
            [lambda m=full: evaluate(m, True), lambda m=short: evaluate(m, False)],
            [1, args.steps],
            args.reference_steps,
            device,
        )
        rows.append((config, f"eval pass ({n_eval} images)", reference, ours, None))
        print(
            f"{config:>8} {'eval pass':<24} reference {reference:8.3f} s  ours {ours:7.3f} s  "
            f"{reference / ours:6.1f}x",
            flush=True,
        )

    print(
        f"\nbackbone {backbone.name} (random weights: timing only), {len(CLASSNAMES)} classes, "
        f"{args.threads} threads, {device}; filling the cache costs {encode_per_image:.3f} s "
        "per image and view, once (not per epoch)"
    )
    print("\n| config | step | reference (s) | ours (s) | speed-up | text enc. share of ours |")
    print("|---|---|---|---|---|---|")
    for config, name, reference, ours, text in rows:
        share = "-" if text is None else f"{text / ours:.0%}"
        print(
            f"| {config} | {name} | {reference:.3f} | {ours:.3f} | {reference / ours:.1f}x "
            f"| {share} |"
        )


if __name__ == "__main__":
    main()
