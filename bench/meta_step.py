"""Time and FLOPs of one GRAM meta-training task at paper scale (open_clip ViT-B/16).

Random weights (pretrained=None: no download), fp32, the same learners and ``gram.py`` code
the `meta_train` stage runs. Prints, per variant: seconds per task (median over repeats,
after one warm-up), FLOPs per task counted by ``torch.utils.flop_counter`` (matmuls and
convolutions, the bulk of the work), and the FLOPs per support/query image, so the cost of
any task size and any number of meta-iterations can be extrapolated.

    python bench/meta_step.py --variants coop vpt unigram --ways 5 --support 1 --query 1

Textual variants (CoOp) read cached image features, exactly as the stage does; visual ones
(VPT, UNIGRAM) run the image encoder forward and backward on every support/query image.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

os.environ.setdefault("HF_HUB_OFFLINE", "1")

VARIANTS = {
    "coop": ("coop", {"n_ctx": 4, "init_words": None}),
    "vpt": ("vpt", {"n_tokens": 4, "depth": 1}),
    "unigram": ("joint", {"n_ctx": 2, "n_tokens": 2, "depth": 1}),
}
CLASSNAMES = [
    "golden retriever",
    "sports car",
    "oak tree",
    "lighthouse",
    "espresso",
    "sailboat",
    "red fox",
    "violin",
    "pizza",
    "mountain bike",
]


def make_task(backbone, learner, ways: int, support: int, query: int, generator):
    from pipeline.learners import Batch
    from pipeline.meta.adapters import ClassBatch
    from pipeline.meta.gram import Task

    names = tuple(CLASSNAMES[:ways])
    size = backbone.image_size

    def split(shots: int) -> ClassBatch:
        labels = torch.arange(ways).repeat_interleave(shots)
        images = torch.randn(len(labels), 3, size, size, generator=generator)
        if learner.needs_images:
            return ClassBatch(names, Batch(labels=labels, images=images))
        with torch.no_grad():  # the stage reads these from embeddings.npz
            features = backbone.encode_image(images)
        return ClassBatch(names, Batch(labels=labels, features=features))

    return Task(split(support), split(query))


def measure(variant: str, args) -> dict:
    from pipeline.backbones import create_backbone
    from pipeline.learners import build_learner
    from pipeline.meta.adapters import LearnerLoss
    from pipeline.meta.gram import InnerLoop, task_meta_gradients
    from pipeline.meta.regulator import build_regulators

    backbone = create_backbone(
        {"kind": "open_clip", "open_clip": {"model": args.model, "pretrained": None}}
    )
    kind, options = VARIANTS[variant]
    learner = build_learner(kind, backbone, CLASSNAMES[: args.ways], options)
    theta = {n: p.detach() for n, p in learner.prompt_parameters().items()}
    regulators = build_regulators(theta)
    phi = {n: p.detach() for n, p in regulators.phi().items()}
    task = make_task(
        backbone, learner, args.ways, args.support, args.query, torch.Generator().manual_seed(0)
    )
    loss = LearnerLoss(learner)
    inner = InnerLoop(alpha=0.01, steps=1, second_order=args.second_order)

    def one_task():
        return task_meta_gradients(
            loss, regulators, theta, phi, task, inner, track_alignment=args.alignment
        )

    one_task()  # warm-up (and points the learner at the class names)
    counter = FlopCounterMode(display=False)
    with counter:
        one_task()
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        one_task()
        times.append(time.perf_counter() - start)
    images = args.ways * (args.support + args.query)
    flops = counter.get_total_flops()
    return {
        "variant": variant,
        "model": args.model,
        "order": "second" if args.second_order else "first",
        "ways": args.ways,
        "support_shots": args.support,
        "query_shots": args.query,
        "alignment_tracked": args.alignment,
        "threads": torch.get_num_threads(),
        "seconds_per_task": round(statistics.median(times), 3),
        "gflops_per_task": round(flops / 1e9, 2),
        "gflops_per_image": round(flops / 1e9 / images, 2) if learner.needs_images else None,
        "achieved_gflops_per_s": round(flops / 1e9 / statistics.median(times), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--ways", type=int, default=5)
    parser.add_argument("--support", type=int, default=1)
    parser.add_argument("--query", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--second-order", action="store_true")
    parser.add_argument("--alignment", action="store_true", help="also track Fig. 3b's cosine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    for variant in args.variants:
        print(json.dumps(measure(variant, args)), flush=True)


if __name__ == "__main__":
    main()
