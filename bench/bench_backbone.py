"""Backbone throughput on this machine: image encoding and the text encoder with/without EOT cut.

    python bench/bench_backbone.py                      # the backbone in params.yaml
    python bench/bench_backbone.py --backbone open_clip --model ViT-B-16   # random weights

Prints images/s of ``encode_image`` (batch of preprocessed 224 px images, forward only) and
the time of one text-encoder pass over a 100-class prompt batch cut at the last EOT versus
the full context, as a ratio measured in the same run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pipeline.backbones import create_backbone
from pipeline.params import load_params


def median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backbone", choices=["params", "open_clip"], default="params")
    parser.add_argument("--model", default="ViT-B-16", help="open_clip architecture")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.backbone == "params":
        config = load_params()["backbone"]
    else:
        config = {"kind": "open_clip", "open_clip": {"model": args.model, "pretrained": None}}
    backbone = create_backbone(config)
    print(f"backbone: {backbone.name}  threads: {args.threads}")

    images = torch.randn(args.batch, 3, backbone.image_size, backbone.image_size)
    with torch.no_grad():
        seconds = median_seconds(lambda: backbone.encode_image(images), args.repeats)
    print(f"image encoding: {args.batch / seconds:8.1f} images/s (batch {args.batch})")

    prompts = [f"a photo of a class number {i}, a kind of thing." for i in range(args.classes)]
    tokens = backbone.tokenize(prompts)
    with torch.no_grad():
        cut = median_seconds(lambda: backbone.encode_text(tokens, truncate=True), args.repeats)
        full = median_seconds(lambda: backbone.encode_text(tokens, truncate=False), args.repeats)
    print(
        f"text encoder, {args.classes} prompts: {tokens.length} tokens {cut * 1e3:8.1f} ms | "
        f"{tokens.ids.shape[1]} tokens {full * 1e3:8.1f} ms | speed-up {full / cut:5.1f}x"
    )


if __name__ == "__main__":
    main()
