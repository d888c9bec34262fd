"""Throughput of the embed_pairs stage on this machine: pairs/s, decode + both encoders.

    python bench/bench_embed_pairs.py                    # backbone from params.yaml
    python bench/bench_embed_pairs.py --pairs 512 --batch 64 --threads 2 --workers 1

Ingests the first ``--pairs`` embedded sample pairs (data/embedded/pairs) into one shard in
a temporary folder, then times ``embed_chunk`` on its samples (JPEG decode, the backbone's
preprocessing, image and caption encoders). Backbone loading and a warm-up batch are excluded.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.backbones import create_backbone
from pipeline.pairs.embed import embed_chunk
from pipeline.pairs.images import ImageOptions
from pipeline.pairs.sample import PAIR_LIST, ingest_sample
from pipeline.pairs.shards import iter_shard, list_shards
from pipeline.params import load_params


def subset(source: Path, target: Path, pairs: int) -> None:
    """A pairs.tsv with the first ``pairs`` rows, pointing at the original images."""
    lines = (source / PAIR_LIST).read_text().splitlines()
    target.mkdir(parents=True)
    (target / "images").symlink_to((source / "images").resolve())
    (target / PAIR_LIST).write_text("\n".join(lines[: pairs + 1]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default="data/embedded/pairs")
    parser.add_argument("--pairs", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    backbone = create_backbone(load_params()["backbone"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subset(Path(args.input), tmp / "input", args.pairs)
        ingest_sample(tmp / "input", tmp / "shards", ImageOptions(), shard_size=args.pairs)
        samples = list(iter_shard(list_shards(tmp / "shards")[0]))
        embed_chunk(samples[: args.batch], 0, backbone, args.batch)  # warm-up (lazy init)
        start = time.perf_counter()
        part = embed_chunk(samples, 0, backbone, args.batch, args.workers)
        seconds = time.perf_counter() - start
    done = len(part["keys"]) + len(part["failed_keys"])
    if not len(part["keys"]):
        raise SystemExit(f"no pair was embedded from {args.input}; check the ingest output")
    print(
        f"backbone: {backbone.name}  threads: {args.threads}  workers: {args.workers}  "
        f"batch: {args.batch}"
    )
    print(f"embed_pairs: {done / seconds:8.1f} pairs/s ({done} pairs in {seconds:.1f} s)")


if __name__ == "__main__":
    main()
