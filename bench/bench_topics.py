"""Time and peak memory of the `topics` fit against BERTopic's default fit, at several sizes.

Corpus: WordNet glosses (~117k short English definitions; see bench/wordnet_glosses.py for
how to get Debian's wordnet-base without root), or with ``--corpus embedded`` the embedded
sample's ~2.3k kept captions and their pipeline embeddings (no download). Glosses are
embedded once with all-MiniLM-L6-v2 and cached (``--cache``). Sizes above the corpus
replicate it with a small Gaussian perturbation of each embedding (std ``--jitter`` per
dimension, then renormalised), so growth can be measured past the corpus size. Every
(method, size) runs in its own process; its peak memory is that whole process's ru_maxrss
(os.wait4), its time the fit alone (embeddings are given, as in the stage).

Runs, one process each, side by side in one invocation:
  bertopic_s<seed>  BERTopic's default fit (UMAP 15 nn, 5 d, min_dist 0, cosine, low_memory
                    False; HDBSCAN min_cluster_size 10, prediction_data; CountVectorizer;
                    c-TF-IDF), UMAP seeded with each of --bertopic-seeds seeds from --seed:
                    numba's on-disk cache emptied before the first seed, so the first is a
                    cold fit (the anchor of ours_cold) and the later ones warm (the anchor of
                    ours_warm_*); the pairs give how close BERTopic is to itself (ARI spread).
                    Needs `pip install bertopic` (a bench-only dependency); without it the
                    same pipeline is rebuilt from umap/hdbscan/sklearn.
  ours_cold         pipeline.chc TopicModel (params.yaml-like defaults, --ours-* options:
                    --ours-engine block, our UMAP, by default; umap-learn for BERTopic's) with
                    numba's cache (NUMBA_CACHE_DIR) and, with --umap-cache, UMAP's cache emptied
  ours_warm_*       (--ours-warm) the same again in this order, numba's cache kept, each run
                    finding in UMAP's cache (--umap-cache) what a rerun of `topics` after one
                    kind of change would find there:
    ours_warm_new      nothing: new captions or embeddings
    ours_warm_layout   the k-NN graph: a change to n_epochs, n_components or init
    ours_warm_min_dist the k-NN graph and the initial layout: a change to min_dist (or spread,
                       learning_rate, negative_sample_rate, repulsion_strength); the block
                       engine keeps no initial layout (its spectral init takes ~1 s)
    ours_warm_cluster  UMAP's output too: a change to topics.hdbscan or the topic-naming params
                       (HDBSCAN and c-TF-IDF only)
  ours_s<seed>      (--ours-seeds N) ours under the next N-1 UMAP seeds, each as new data (numba
                    warm, UMAP's cache empty): the spread of ours against BERTopic
Printed: a row per run (seconds of the fit alone, CPU seconds and peak MB of the whole
process, topics, noise fraction), the time/memory ratios against BERTopic, BERTopic's ARI
against itself over every seed pair, and ours against each seed (noise counted as one label).

Example (2 cores; bench/results/topics.txt was printed by this):
  python bench/bench_topics.py --wordnet wordnet/usr/share/wordnet --sizes 100000 \
      --umap-cache .cache/bench_topics/umap_ours --ours-warm
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


KEPT_PAIRS = HERE.parent / "data/pairs/kept.parquet"
CAPTION_EMBEDDINGS = HERE.parent / "data/chc/caption_embeddings.npy"


def corpus(
    cache: Path, wordnet: str | None, kind: str = "wordnet", limit: int | None = None
) -> tuple[list[str], Path]:
    """Captions and the path of their embeddings: WordNet glosses (embedded here on first
    use; ``limit``: only a seeded sample of that many, cheaper to embed), or ``embedded``:
    the pipeline's own kept captions (`dvc repro embed_captions`)."""
    if kind == "embedded":
        if not (KEPT_PAIRS.exists() and CAPTION_EMBEDDINGS.exists()):
            raise SystemExit(
                f"--corpus embedded reads {KEPT_PAIRS} and {CAPTION_EMBEDDINGS}: "
                "run `dvc repro embed_captions` first"
            )
        import pandas as pd

        return pd.read_parquet(KEPT_PAIRS, columns=["caption"])[
            "caption"
        ].tolist(), CAPTION_EMBEDDINGS
    from wordnet_glosses import read_glosses

    tag = "" if limit is None else f"_{limit}"
    captions_file, vectors = cache / f"glosses{tag}.json", cache / f"glosses_minilm{tag}.npy"
    if not captions_file.exists():
        if wordnet is None:
            raise SystemExit("--wordnet DIR is needed once to read the glosses")
        cache.mkdir(parents=True, exist_ok=True)
        glosses = read_glosses(wordnet)
        if limit is not None and limit < len(glosses):
            rows = np.sort(np.random.default_rng(0).choice(len(glosses), limit, replace=False))
            glosses = [glosses[i] for i in rows]
        captions_file.write_text(json.dumps(glosses))
    captions = json.loads(captions_file.read_text())
    if not vectors.exists():
        print(f"embedding {len(captions)} glosses once (slow on 2 cores) -> {vectors}")
        # in a child: Linux keeps a process's peak memory across fork and exec, so every fit
        # forked from this process would report the model's peak as its own
        command = [sys.executable, __file__, "--embed", str(captions_file), str(vectors)]
        subprocess.run(command, check=True)
    return captions, vectors


def embed(captions_file: Path, vectors: Path) -> None:
    import torch

    from pipeline.chc.embed import SentenceEmbedder

    torch.set_num_threads(2)
    captions = json.loads(Path(captions_file).read_text())
    np.save(vectors, SentenceEmbedder(batch_size=128).encode(captions))


def subset(captions: list[str], vectors: Path, size: int, jitter: float, seed: int = 0):
    """``size`` captions: a seeded sample of the corpus, or the corpus replicated + jittered."""
    base = np.load(vectors, mmap_mode="r")
    rng = np.random.default_rng(seed)
    if size <= len(captions):
        rows = np.sort(rng.choice(len(captions), size=size, replace=False))
        return [captions[i] for i in rows], np.ascontiguousarray(base[rows])
    rows = np.arange(size) % len(captions)
    out = np.empty((size, base.shape[1]), dtype=np.float32)
    for start in range(0, size, 100_000):
        chunk = rows[start : start + 100_000]
        replica = (np.arange(start, start + len(chunk)) >= len(captions))[:, None]
        block = base[chunk] + replica * jitter * rng.standard_normal(
            (len(chunk), base.shape[1]), dtype=np.float32
        )
        out[start : start + len(chunk)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return [captions[i] for i in rows], out


def fit_bertopic(docs, embeddings, seed):
    from umap import UMAP

    umap_model = UMAP(
        n_neighbors=15,
        n_components=5,
        min_dist=0.0,
        metric="cosine",
        low_memory=False,
        random_state=seed,
    )
    try:
        from bertopic import BERTopic
    except ImportError:
        return fit_bertopic_by_hand(docs, embeddings, umap_model)
    model = BERTopic(umap_model=umap_model)  # min_topic_size 10 -> HDBSCAN as BERTopic's
    topics, _ = model.fit_transform(docs, embeddings)
    return np.asarray(topics), "bertopic " + __import__("bertopic").__version__


def fit_bertopic_by_hand(docs, embeddings, umap_model):
    """BERTopic 0.17's default pipeline without BERTopic (when it is not installed)."""
    import pandas as pd
    from hdbscan import HDBSCAN
    from sklearn.feature_extraction.text import CountVectorizer

    reduced = umap_model.fit_transform(embeddings)
    labels = (
        HDBSCAN(
            min_cluster_size=10,
            metric="euclidean",
            cluster_selection_method="eom",
            prediction_data=True,
        )
        .fit(reduced)
        .labels_
    )
    joined = pd.DataFrame({"doc": docs, "topic": labels}).groupby("topic")["doc"].agg(" ".join)
    CountVectorizer().fit_transform(joined.tolist())
    return labels, "bertopic pipeline rebuilt (umap+hdbscan+CountVectorizer)"


def fit_ours(docs, embeddings, args):
    from pipeline.chc.backends import make_clusterer, make_reducer
    from pipeline.chc.topics import TopicModel

    model = TopicModel(
        embedder=None,
        reducer=make_reducer(
            args.ours_backend,
            n_epochs=args.ours_epochs,
            init=args.ours_init,
            random_state=args.seed,
            cache=args.umap_cache,
            engine=args.ours_engine,
            blocks=args.ours_blocks,
        ),
        clusterer=make_clusterer(args.ours_backend, min_cluster_size=10),
        fit_sample_size=args.ours_sample,
    )
    result = model.fit(docs, embeddings)
    reused = ""
    if args.umap_cache:
        reused = f", {getattr(model.reducer, 'reused', None) or 'nothing'} from cache"
    engine = args.ours_engine
    if engine == "block":
        engine += f" {args.ours_blocks} blocks"
    return result.labels, (
        f"ours ({args.ours_backend} {engine}, sample {args.ours_sample}, "
        f"epochs {args.ours_epochs}{reused})"
    )


def worker(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    captions, vectors = corpus(Path(args.cache), None, args.corpus, args.corpus_size)
    docs, embeddings = subset(captions, vectors, args.size, args.jitter)
    start = time.perf_counter()
    if args.worker.startswith("ours"):
        labels, what = fit_ours(docs, embeddings, args)
    else:
        labels, what = fit_bertopic(docs, embeddings, args.seed)
    seconds = time.perf_counter() - start
    np.save(Path(args.cache) / f"labels_{args.worker}_{args.size}.npy", labels)
    print(
        json.dumps(
            {
                "seconds": seconds,
                "topics": int(len(set(labels.tolist()) - {-1})),
                "noise": float(np.mean(labels == -1)),
                "what": what,
            }
        )
    )


#: the warm reruns in order, each with what it finds removed from UMAP's cache (file patterns)
WARM_RUNS = {
    "ours_warm_new": ("*",),
    "ours_warm_layout": ("umap_*.npy", "init_*.npz", "block_umap_*.npy"),
    "ours_warm_min_dist": ("umap_*.npy", "block_umap_*.npy"),  # block: no init kept
    "ours_warm_cluster": (),
}


def run_one(method: str, size: int, args, seed: int, extra_env: dict | None = None) -> dict:
    """One fit in a fresh process: its time, and its whole-process peak memory (ru_maxrss)."""
    command = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--size",
        str(size),
        "--cache",
        args.cache,
        "--jitter",
        str(args.jitter),
        "--seed",
        str(seed),
        "--ours-init",
        args.ours_init,
        "--corpus",
        args.corpus,
        "--ours-backend",
        args.ours_backend,
        "--ours-engine",
        args.ours_engine,
        "--ours-blocks",
        str(args.ours_blocks),
    ]
    for flag, value in (
        ("--ours-sample", args.ours_sample),
        ("--ours-epochs", args.ours_epochs),
        ("--corpus-size", args.corpus_size),
        ("--umap-cache", args.umap_cache),
    ):
        if value is not None:
            command += [flag, str(value)]
    threads = {
        name: str(args.threads)
        for name in (
            "OMP_NUM_THREADS",
            "NUMBA_NUM_THREADS",
            "MKL_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
        )
    }
    env = {**os.environ, **threads, "TOKENIZERS_PARALLELISM": "false", **(extra_env or {})}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{method} at {size} failed (status {status})")
    record = json.loads(output.strip().splitlines()[-1])
    record.update(
        method=method,
        size=size,
        peak_mb=usage.ru_maxrss / 1024,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )
    return record


def ari(cache: Path, a: str, b: str, size: int) -> float:
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(
        np.load(cache / f"labels_{a}_{size}.npy"), np.load(cache / f"labels_{b}_{size}.npy")
    )


def bench_size(size: int, args) -> None:
    """BERTopic under ``--bertopic-seeds`` UMAP seeds, ours cold (empty numba and UMAP caches)
    and, with ``--ours-warm``, ours again as after each kind of change (``WARM_RUNS``): times,
    memory, ARI."""
    cache = Path(args.cache)
    seeds = [args.seed + i for i in range(args.bertopic_seeds)]
    records = []
    # BERTopic gets numba's on-disk cache too, emptied first: its first seed compiles
    # (cold, like ours_cold), the later seeds find pynndescent's kernels cached (warm)
    bertopic_numba = cache / "numba_bertopic"
    shutil.rmtree(bertopic_numba, ignore_errors=True)
    for seed in seeds if "bertopic" in args.methods.split(",") else []:
        env = {"NUMBA_CACHE_DIR": str(bertopic_numba)}
        records.append(run_one(f"bertopic_s{seed}", size, args, seed, env))
        show(records[-1], size)
    if "ours" not in args.methods.split(","):
        return
    numba_dir = cache / "numba_ours"
    runs = ["ours_cold"] + (list(WARM_RUNS) if args.ours_warm else [])
    runs += [f"ours_s{args.seed + i}" for i in range(1, args.ours_seeds)]
    if args.umap_cache:
        shutil.rmtree(args.umap_cache, ignore_errors=True)
    shutil.rmtree(numba_dir, ignore_errors=True)
    for run in runs:
        for pattern in WARM_RUNS.get(run, ("*",)) if args.umap_cache else ():
            for kept in Path(args.umap_cache).glob(pattern):
                kept.unlink()
        seed = int(run[len("ours_s") :]) if run.startswith("ours_s") else args.seed
        record = run_one(run, size, args, seed, {"NUMBA_CACHE_DIR": str(numba_dir)})
        records.append(record)
        show(record, size)
    names = [f"bertopic_s{seed}" for seed in seeds]
    if not all((cache / f"labels_{name}_{size}.npy").exists() for name in names):
        return  # ours alone, without BERTopic's labels from an earlier run: no ARI
    if len(records) > len(runs):
        report_ratios(records[: len(seeds)], records[len(seeds) :], size)
    report_ari(cache, names, runs, size)


def report_ratios(bertopic: list[dict], ours: list[dict], size: int) -> None:
    """Like against like: ours_cold against BERTopic's first (cold) seed, the warm reruns
    against the mean of its later (warm) seeds."""
    cold = ("BERTopic cold", bertopic[:1])
    # one seed only: no warm BERTopic run, so the warm rerun is set against the cold one
    warm = ("BERTopic warm", bertopic[1:]) if len(bertopic) > 1 else cold
    anchors = {"ours_cold": cold, **{run: warm for run in WARM_RUNS}}
    print(f"\nratios at {size} (time, peak memory, noise against the same BERTopic runs):")
    for record in ours:
        label, runs = anchors.get(record["method"], warm)  # ours_s<seed>: new data, warm
        seconds = float(np.mean([r["seconds"] for r in runs]))
        peak = float(np.mean([r["peak_mb"] for r in runs]))
        noise = float(np.mean([r["noise"] for r in runs]))
        print(
            f"  {record['method']:<18} vs {label:<14} ({seconds:6.1f} s): "
            f"{seconds / record['seconds']:5.2f}x faster, "
            f"{record['peak_mb'] / peak:.2f}x memory, noise {record['noise'] - noise:+.3f}"
        )


def report_ari(cache: Path, names: list[str], runs: list[str], size: int) -> None:
    spread = [ari(cache, a, b, size) for i, a in enumerate(names) for b in names[i + 1 :]]
    print(
        f"ARI at {size}: BERTopic against itself (seed pairs) "
        + ", ".join(f"{x:.3f}" for x in spread)
        + f" -> spread [{min(spread):.3f}, {max(spread):.3f}]"
    )
    every = []
    for run in runs:
        ours = [ari(cache, run, name, size) for name in names]
        every += ours if run == "ours_cold" or run.startswith("ours_s") else []
        inside = min(spread) <= min(ours)
        print(
            f"  {run} against each BERTopic seed: "
            + ", ".join(f"{x:.3f}" for x in ours)
            + ("  (inside the spread)" if inside else "  (BELOW the spread)")
        )
    if len(every) > len(names):  # ours under several seeds: the two distributions side by side
        print(
            f"  mean ARI: BERTopic to itself {np.mean(spread):.3f} "
            f"(over {len(spread)} pairs), ours to BERTopic {np.mean(every):.3f} "
            f"(over {len(every)} pairs, range [{min(every):.3f}, {max(every):.3f}])"
        )


def show(record: dict, size: int) -> None:
    print(
        f"{size:>8} {record['method']:<18} {record['seconds']:>8.1f} {record['cpu_s']:>8.1f} "
        f"{record['peak_mb']:>8.0f} {record['topics']:>6} {record['noise']:>6.3f}  "
        f"{record['what']}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", help="folder with data.noun etc. (wordnet-base)")
    parser.add_argument(
        "--corpus",
        choices=["wordnet", "embedded"],
        default="wordnet",
        help="WordNet glosses (117k) or the embedded sample's kept captions",
    )
    parser.add_argument(
        "--corpus-size",
        type=int,
        default=None,
        help="embed only a seeded sample of this many glosses",
    )
    parser.add_argument("--cache", default=".cache/bench_topics")
    parser.add_argument("--sizes", default="100000")
    parser.add_argument("--bertopic-seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jitter", type=float, default=0.01)
    parser.add_argument("--ours-sample", type=int, default=None)
    parser.add_argument("--ours-epochs", type=int, default=None)
    parser.add_argument("--ours-init", default="spectral")
    parser.add_argument(
        "--ours-backend",
        default="cpu",
        choices=["cpu", "cuml"],
        help="topics.backend of ours (cuml: on a GPU with RAPIDS cuML)",
    )
    parser.add_argument(
        "--ours-engine",
        default="block",
        choices=["block", "umap-learn"],
        help="topics.umap.engine of ours (umap-learn: BERTopic's exact fit)",
    )
    parser.add_argument("--ours-blocks", type=int, default=4, help="topics.umap.blocks of ours")
    parser.add_argument(
        "--ours-seeds",
        type=int,
        default=1,
        help="ours also under this many UMAP seeds in all (ours_s<seed>: numba warm, UMAP's "
        "cache empty), for the spread of its ARI to BERTopic",
    )
    parser.add_argument(
        "--methods",
        default="bertopic,ours",
        help="bertopic, ours, or both (ours alone: ARI needs earlier labels)",
    )
    parser.add_argument(
        "--umap-cache",
        default=None,
        help="ours: topics.umap_cache, UMAP's output and k-NN graph (emptied before the cold run)",
    )
    parser.add_argument(
        "--ours-warm",
        action="store_true",
        help="rerun ours as after each kind of change (WARM_RUNS: data, layout, min_dist, HDBSCAN)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--embed", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.corpus == "embedded" and not args.worker:  # labels apart from the glosses' ones
        args.cache = str(Path(args.cache) / "embedded")
        Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)
    if args.embed:
        return embed(*args.embed)

    from machine_info import machine_line

    print(machine_line(args.threads))
    captions, _ = corpus(Path(args.cache), args.wordnet, args.corpus, args.corpus_size)
    what = "WordNet glosses" if args.corpus == "wordnet" else "embedded kept captions"
    print(f"corpus: {len(captions)} {what}; threads {args.threads}")
    print(
        f"{'size':>8} {'method':<18} {'seconds':>8} {'cpu_s':>8} {'peak_MB':>8} {'topics':>6} "
        f"{'noise':>6}  what"
    )
    for size in [int(s) for s in args.sizes.split(",")]:
        bench_size(size, args)


if __name__ == "__main__":
    main()
