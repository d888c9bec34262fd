"""Seconds per prompt-tuning step: our way (cached features, EOT truncation) vs the reference way.

The reference trainers (CoOp, CoCoOp, ProGrad) run the frozen image encoder on every
augmented batch and the text encoder on all 77 tokens of every class prompt; ProGrad also
runs a second frozen zero-shot model on the batch for its teacher logits. Ours reads the
frozen features (and ProGrad's teacher logits) of each image and view from the cache and cuts
the text at the class set's last EOT. Both ways run the same learner code
(``pipeline.learners``): the reference way is ``truncate=False`` on images.

    python bench/bench_prompt_tuning.py                     # ViT-B/16, random weights
    python bench/bench_prompt_tuning.py --backbone embedded # the offline default backbone

Prints seconds per step for each and the ratio, from one run (noisy on a shared machine).
The one-off cost of filling the cache (each image encoded once per augmented view, instead of
once per epoch) is not in a step; it is reported separately as seconds per image.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

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
]  # fmt: skip  (EuroSAT's 10 classes)
TEMPLATE = "a centered satellite photo of {}."


def seconds_per_call(fn, steps: int) -> float:
    fn()  # warm-up: first-call allocations
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def sgd_step(learner, make_batch):
    params = learner.prompt_parameters()
    optimizer = torch.optim.SGD(params.values(), lr=0.002, momentum=0.9, weight_decay=5e-4)

    def step():
        out = learner.training_gradients(make_batch())
        for name, p in params.items():
            p.grad = out.grads[name]
        optimizer.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", choices=["vit-b-16", "embedded"], default="vit-b-16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement")
    parser.add_argument("--batch-size", type=int, default=32, help="CoOp/ProGrad batch (32)")
    parser.add_argument("--eval-images", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.backbone == "embedded":
        backbone = create_backbone({"kind": "embedded", "embedded": {}})
    else:
        config = {"model": "ViT-B-16", "pretrained": None}
        backbone = create_backbone({"kind": "open_clip", "open_clip": config})
    size, b = backbone.image_size, args.batch_size
    images = torch.randn(b, 3, size, size)
    labels = torch.arange(b) % len(CLASSNAMES)
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

    def report(name, reference, ours):
        rows.append((name, reference, ours))
        print(f"{name:>24}: reference {reference:8.4f} s  ours {ours:8.4f} s  "
              f"speed-up {reference / ours:7.1f}x", flush=True)  # fmt: skip

    def compare(name, make_learner, ref_batch, our_batch, steps):
        reference = seconds_per_call(sgd_step(make_learner(False), ref_batch), steps)
        ours = seconds_per_call(sgd_step(make_learner(True), our_batch), steps)
        report(name, reference, ours)

    ctx = {"init_words": "a photo of a"}
    compare(f"CoOp step (batch {b})",
            lambda t: CoOp(backbone, CLASSNAMES, truncate=t, **ctx),
            lambda: reference_batch(), lambda: cached_batch(), args.steps)  # fmt: skip
    compare(f"ProGrad step (batch {b})",
            lambda t: ProGrad(backbone, CLASSNAMES, n_ctx=16, init_words="a centered satellite "
                              "photo of", truncate=t),
            lambda: reference_batch(True), lambda: cached_batch(True), args.steps)  # fmt: skip
    compare("CoCoOp step (batch 1)",
            lambda t: CoCoOp(backbone, CLASSNAMES, truncate=t, **ctx),
            lambda: reference_batch(n=1), lambda: cached_batch(n=1), args.steps * 3)  # fmt: skip

    # one evaluation pass over a test split of --eval-images images, CoOp's prompt
    n = args.eval_images
    test_images = torch.randn(n, 3, size, size)
    with torch.no_grad():
        test_features = torch.cat([backbone.encode_image(x) for x in test_images.split(b)])

    @torch.no_grad()
    def evaluate(learner, re_encode: bool):
        text = learner.class_features()
        for x, f in zip(test_images.split(b), test_features.split(b), strict=True):
            f = backbone.encode_image(x) if re_encode else f
            cosine_logits(f, text, backbone.logit_scale).argmax(-1)

    full = CoOp(backbone, CLASSNAMES, truncate=False, **ctx)
    short = CoOp(backbone, CLASSNAMES, truncate=True, **ctx)
    reference = seconds_per_call(lambda: evaluate(full, True), 1)
    ours = seconds_per_call(lambda: evaluate(short, False), 3)
    report(f"eval pass ({n} images)", reference, ours)
    print(f"\nbackbone {backbone.name}, {args.threads} threads; filling the cache costs "
          f"{encode_per_image:.3f} s per image and view, once (not per epoch)")  # fmt: skip
    print("\n| step | reference (s) | ours (s) | speed-up |\n|---|---|---|---|")
    for name, reference, ours in rows:
        print(f"| {name} | {reference:.4f} | {ours:.4f} | {reference / ours:.1f}x |")


if __name__ == "__main__":
    main()
