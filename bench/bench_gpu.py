"""GPU figures at paper shape: feature extraction, prompt-tuning steps, GRAM meta-steps, AMP.

ViT-B/16 (QuickGELU, random weights: no download) on synthetic images, through the code the
stages run: ``pipeline.features.image_features`` (DataLoader, decoding, preprocessing, the
SQLite cache) for feature extraction, the learners' ``training_gradients`` plus an SGD step
for CoOp / CoCoOp / ProGrad / VPT, and ``pipeline.meta.gram.task_meta_gradients`` for a GRAM
meta-step (first and second order). Every measurement is repeated per precision (fp32 and
the autocast ones, ``backbone.precision``), and the low-precision logits are compared with
fp32's on the same images and prompts. From the step times it estimates the GPU-hours of
GRAM's Table 1 (base-to-new, 11 datasets; see ``table1_hours``).

    python bench/bench_gpu.py --device cuda                       # the real measurement
    python bench/bench_gpu.py --model gram-tiny-vit --device cpu --steps 2 --images 8   # smoke

Prints one line per measurement as it goes, then Markdown tables.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# this checkout's pipeline, installed or not (e.g. a copy on a GPU machine)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.backbones import cosine_logits, create_backbone, full_precision  # noqa: E402
from pipeline.backbones.runtime import resolve_device  # noqa: E402
from pipeline.features import image_features  # noqa: E402
from pipeline.learners import Batch, build_learner  # noqa: E402
from pipeline.learners.base import hand_written_classifier  # noqa: E402
from pipeline.meta.adapters import ClassBatch, LearnerLoss  # noqa: E402
from pipeline.meta.gram import InnerLoop, Task, task_meta_gradients  # noqa: E402
from pipeline.meta.regulator import build_regulators  # noqa: E402

TEMPLATE = "a photo of a {}."
#: CoOp's 11 datasets: (classes, test images) of CoOp's splits (CoOp, IJCV 2022, Table 1)
DATASETS = {
    "imagenet": (1000, 50000),
    "caltech101": (100, 2465),
    "oxford_pets": (37, 3669),
    "stanford_cars": (196, 8041),
    "oxford_flowers": (102, 2463),
    "food101": (101, 30300),
    "fgvc_aircraft": (100, 3333),
    "sun397": (397, 19850),
    "dtd": (47, 1692),
    "eurosat": (10, 8100),
    "ucf101": (101, 3783),
}
CC3M_PAIRS = 3_100_000  # after filtering (GRAM 4.1)
#: Table 1 rows: learner, and whether it is meta-trained first (GRAM 4.1)
ROWS = {
    "CoOp": ("coop", False),
    "CoOp + GRAM": ("coop", True),
    "CoCoOp": ("cocoop", False),
    "ProGrad": ("prograd", False),
    "VPT": ("vpt", False),
    "VPT + GRAM": ("vpt", True),
    "UNIGRAM": ("joint", True),
}
OPTIONS = {
    "coop": {"n_ctx": 4, "init_words": "a photo of a"},
    "cocoop": {"n_ctx": 4, "init_words": "a photo of a"},
    "prograd": {"n_ctx": 4, "init_words": "a photo of a"},
    "vpt": {"n_tokens": 4, "depth": 1},
    "joint": {"n_ctx": 2, "n_tokens": 2, "depth": 1},
}


def classnames(count: int) -> list[str]:
    return [f"object category {i}" for i in range(count)]


def timed(fn, steps: int, device: torch.device) -> float:
    """Median seconds of ``fn()`` over ``steps`` calls, after one warm-up call."""

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    fn()
    times = []
    for _ in range(steps):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def write_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    """Seeded noise JPEGs, the size of a typical CoOp image, decoded by the real loader."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"{i}.jpg"
        pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


def feature_extraction(backbone, paths, args, device) -> dict[str, float]:
    """img/s of ``image_features`` (cold cache) against the bare forward pass."""
    n, size = len(paths), backbone.image_size
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        image_features(
            backbone,
            paths,
            cache_dir=Path(cache),
            batch_size=args.batch_size,
            num_workers=args.workers,
            desc="bench: image_features",
        )
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        pipeline_rate = n / (time.perf_counter() - start)
    images = torch.randn(args.batch_size, 3, size, size, device=device)
    with torch.no_grad():
        forward = timed(lambda: backbone.encode_image(images), args.steps, device)
    forward_rate = args.batch_size / forward
    return {
        "pipeline_img_s": pipeline_rate,
        "forward_img_s": forward_rate,
        "ratio": pipeline_rate / forward_rate,
    }


def sgd_step(learner, batch: Batch):
    params = learner.prompt_parameters()
    optimizer = torch.optim.SGD(params.values(), lr=0.002, momentum=0.9, weight_decay=5e-4)

    def step():
        out = learner.training_gradients(batch)
        for name, p in params.items():
            p.grad = out.grads[name]
        optimizer.step()

    return step


def step_seconds(backbone, kind: str, n_classes: int, batch_size: int, args, device) -> float:
    """One training step of ``kind`` on ``n_classes`` classes (images cached as features,
    except for visual prompts, which need the image encoder with gradients)."""
    names = classnames(n_classes)
    learner = build_learner(kind, backbone, names, OPTIONS[kind], template=TEMPLATE, seed=0)
    size = backbone.image_size
    labels = torch.arange(batch_size, device=device) % n_classes
    images = torch.randn(batch_size, 3, size, size, device=device)
    if learner.needs_images:
        batch = Batch(labels, images=images)
    else:
        with torch.no_grad():
            features = backbone.encode_image(images)
            teacher = None
            if kind == "prograd":
                text = hand_written_classifier(backbone, TEMPLATE, names)
                teacher = cosine_logits(features, text, backbone.logit_scale)
        batch = Batch(labels, features=features, teacher_logits=teacher)
    return timed(sgd_step(learner, batch), args.steps, device)


def meta_step_seconds(backbone, kind: str, second_order: bool, args, device) -> float:
    """One GRAM task (5 ways, 1 support + 3 query shots) as ``meta_train`` computes it."""
    ways, names = 5, tuple(classnames(5))
    learner = build_learner(kind, backbone, list(names), OPTIONS[kind], seed=0)
    theta = {n: p.detach() for n, p in learner.prompt_parameters().items()}
    regulators = build_regulators(theta).to(device)
    phi = {n: p.detach() for n, p in regulators.phi().items()}
    size = backbone.image_size

    def split(shots: int) -> ClassBatch:
        labels = torch.arange(ways, device=device).repeat_interleave(shots)
        images = torch.randn(len(labels), 3, size, size, device=device)
        if learner.needs_images:
            return ClassBatch(names, Batch(labels, images=images))
        with torch.no_grad():
            return ClassBatch(names, Batch(labels, features=backbone.encode_image(images)))

    task = Task(split(1), split(3))
    inner = InnerLoop(alpha=0.01, steps=1, second_order=second_order)
    loss = LearnerLoss(learner)
    return timed(
        lambda: task_meta_gradients(loss, regulators, theta, phi, task, inner), args.steps, device
    )


def meta_step_or_fp32(backbone, kind: str, second_order: bool, args, device):
    """(seconds, note): a meta-step that autocast cannot run is timed in fp32 and says so."""
    try:
        return meta_step_seconds(backbone, kind, second_order, args, device), ""
    except RuntimeError as error:
        if backbone.precision == "fp32":
            raise
        with full_precision(backbone):
            seconds = meta_step_seconds(backbone, kind, second_order, args, device)
        return seconds, f"autocast failed ({str(error).splitlines()[0][:80]}): ran in fp32"


@torch.no_grad()
def logits_of(backbone, images: torch.Tensor, names: list[str]) -> torch.Tensor:
    text = hand_written_classifier(backbone, TEMPLATE, names)
    return cosine_logits(backbone.encode_image(images), text, backbone.logit_scale)


def table1_hours(figures: dict, args) -> dict[str, float]:
    """GPU-hours of Table 1 (base-to-new, 16 shots, 10 epochs, ``--seeds`` seeds; GRAM 4.1).

    Per dataset and row: epochs x ceil(16 x base classes / batch) steps, each a measured step
    (on the base half of the classes: the step time is interpolated linearly in the class
    count between the two measured counts) plus, for the text learners, with fresh
    augmentation per step as the references do, the batch through ``image_features``'s
    decode-and-encode path; then every test image through that path once (twice for the
    visual rows: the frozen cache and the prompted encoder). The +GRAM rows add
    ``--meta-tasks`` second-order meta-steps; the shared ``embed_pairs`` over CC3M's 3.1M pairs
    is its own row.
    """
    per_image = 1.0 / figures["pipeline_img_s"]
    low, high = args.classes
    hours = {}
    for row, (kind, meta) in ROWS.items():
        batch = 1 if kind == "cocoop" else args.train_batch  # CoCoOp's batch 1; CoOp's 32
        seconds = 0.0
        for n_classes, n_test in DATASETS.values():
            base = math.ceil(n_classes / 2)
            at_low, at_high = figures[f"step:{kind}:{low}"], figures[f"step:{kind}:{high}"]
            step = at_low + (at_high - at_low) * (base - low) / max(high - low, 1)
            step = max(step, min(at_low, at_high))  # timing noise must not extrapolate below
            visual = kind in ("vpt", "joint")
            steps = 10 * math.ceil(16 * base / batch)
            seconds += steps * (step + (0 if visual else batch * per_image))
            seconds += n_test * per_image * (2 if visual else 1)
        seconds *= args.seeds
        if meta:
            seconds += args.meta_tasks * figures[f"meta:{kind}:second"]
        hours[row] = seconds / 3600
    hours["embed_pairs, CC3M (shared)"] = CC3M_PAIRS * per_image / 3600
    return hours


def measure(precision: str, paths, args, device, reference_logits=None) -> dict:
    torch.manual_seed(0)
    options = {"model": args.model, "pretrained": None}
    backbone = create_backbone(
        {"kind": "open_clip", "device": str(device), "precision": precision, "open_clip": options}
    )
    figures: dict = {"precision": precision}
    figures |= feature_extraction(backbone, paths, args, device)
    print(
        f"[{precision}] features: {figures['pipeline_img_s']:.0f} img/s through "
        f"image_features, forward {figures['forward_img_s']:.0f} img/s, "
        f"ratio {figures['ratio']:.0%}",
        flush=True,
    )
    for kind in OPTIONS:
        batch = 1 if kind == "cocoop" else args.train_batch
        for n_classes in args.classes:
            seconds = step_seconds(backbone, kind, n_classes, batch, args, device)
            figures[f"step:{kind}:{n_classes}"] = seconds
            print(
                f"[{precision}] {kind} step, batch {batch}, {n_classes} classes: "
                f"{seconds * 1e3:.1f} ms",
                flush=True,
            )
    for kind in ("coop", "vpt", "joint"):
        for order in ("first", "second"):
            seconds, note = meta_step_or_fp32(backbone, kind, order == "second", args, device)
            figures[f"meta:{kind}:{order}"] = seconds
            if note:
                figures.setdefault("notes", []).append(f"{kind} {order} order: {note}")
            print(
                f"[{precision}] GRAM meta-step {kind} {order} order: {seconds * 1e3:.1f} ms {note}",
                flush=True,
            )
    images = torch.randn(
        64, 3, backbone.image_size, backbone.image_size, generator=torch.Generator().manual_seed(1)
    ).to(device)
    logits = logits_of(backbone, images, classnames(100)).float().cpu()
    if reference_logits is not None:
        difference = (logits - reference_logits).abs().max().item()
        figures["max_logit_error"] = difference / backbone.logit_scale  # as a cosine
        agree = (logits.argmax(1) == reference_logits.argmax(1)).float().mean().item()
        figures["top1_agreement"] = agree
        print(
            f"[{precision}] logits vs fp32: max |difference| {difference:.4f} "
            f"(cosine {figures['max_logit_error']:.2e}), top-1 agreement {agree:.1%}"
        )
    figures["logits"] = logits
    figures["table1_hours"] = table1_hours(figures, args)
    return figures


def print_tables(results: list[dict], args, device) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"\n{args.model}, random weights, {name}; batch {args.batch_size}, "
        f"{args.workers} DataLoader workers, {len(results[0]['logits'])} logit images\n"
    )
    precisions = [r["precision"] for r in results]
    print("| measurement | " + " | ".join(precisions) + " |")
    print("|---|" + "---|" * len(precisions))

    def row(label, key, fmt):
        print(
            f"| {label} | " + " | ".join(fmt(r[key]) if key in r else "-" for r in results) + " |"
        )

    row("image_features img/s", "pipeline_img_s", lambda v: f"{v:.0f}")
    row("bare forward img/s", "forward_img_s", lambda v: f"{v:.0f}")
    row("image_features / forward (target >= 70%)", "ratio", lambda v: f"{v:.0%}")
    for kind in OPTIONS:
        for n in args.classes:
            row(f"{kind} step, {n} classes (ms)", f"step:{kind}:{n}", lambda v: f"{v * 1e3:.1f}")
    for kind in ("coop", "vpt", "joint"):
        for order in ("first", "second"):
            row(
                f"GRAM {kind} meta-step, {order} order (ms)",
                f"meta:{kind}:{order}",
                lambda v: f"{v * 1e3:.1f}",
            )
    row("max logit error vs fp32 (cosine units)", "max_logit_error", lambda v: f"{v:.2e}")
    row("top-1 agreement with fp32", "top1_agreement", lambda v: f"{v:.1%}")
    print(
        f"\nTable 1 estimate, GPU-hours ({args.seeds} seeds, {args.meta_tasks} meta-tasks "
        "per +GRAM row, second order):\n"
    )
    print("| row | " + " | ".join(precisions) + " |\n|---|" + "---|" * len(precisions))
    for table_row in results[0]["table1_hours"]:
        print(
            f"| {table_row} | "
            + " | ".join(f"{r['table1_hours'][table_row]:.2f}" for r in results)
            + " |"
        )
    print(
        "| total | " + " | ".join(f"{sum(r['table1_hours'].values()):.2f}" for r in results) + " |"
    )
    for r in results:
        for note in r.get("notes", []):
            print(f"\n{r['precision']}: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16-quickgelu")
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=None,
        help="default: fp32 bf16 fp16 on CUDA, fp32 bf16 on the CPU",
    )
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--images", type=int, default=4096, help="images for image_features")
    parser.add_argument("--image-size", type=int, nargs=2, default=(500, 375))
    parser.add_argument("--batch-size", type=int, default=256, help="feature extraction")
    parser.add_argument("--train-batch", type=int, default=32, help="CoOp/ProGrad/VPT batch")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument(
        "--classes",
        type=int,
        nargs=2,
        default=(5, 500),
        help="class counts the steps are measured at (Table 1's base halves span 5-500)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--meta-tasks", type=int, default=20000)
    args = parser.parse_args()
    device = resolve_device(args.device)
    precisions = args.precisions or (
        ["fp32", "bf16", "fp16"] if device.type == "cuda" else ["fp32", "bf16"]
    )
    if precisions[0] != "fp32":
        precisions = ["fp32", *[p for p in precisions if p != "fp32"]]
    with tempfile.TemporaryDirectory() as folder:
        paths = write_images(Path(folder), args.images, *args.image_size)
        results = [measure("fp32", paths, args, device)]
        for precision in precisions[1:]:
            results.append(measure(precision, paths, args, device, results[0]["logits"]))
    print_tables(results, args, device)


if __name__ == "__main__":
    main()
