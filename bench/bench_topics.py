"""Time and peak memory of the `topics` fit against BERTopic's default fit, at several sizes.

Corpus: WordNet glosses (~117k short English definitions; see bench/wordnet_glosses.py for
how to get Debian's wordnet-base without root), or with ``--corpus embedded`` the embedded
sample's ~2.3k kept captions and their pipeline embeddings (no download). Glosses are
embedded once with all-MiniLM-L6-v2 and cached (``--cache``). Sizes above the corpus
replicate it with a small Gaussian perturbation of each embedding (std ``--jitter`` per
dimension, then renormalised), so growth can be measured past the corpus size. Every
(method, size) runs in its own process; its peak memory is that whole process's ru_maxrss
(os.wait4), its time the fit alone (embeddings are given, as in the stage).

Methods:
  bertopic        BERTopic's default fit (UMAP 15 nn, 5 d, min_dist 0, cosine, low_memory
                  False; HDBSCAN min_cluster_size 10, prediction_data; CountVectorizer;
                  c-TF-IDF), UMAP seeded with --seed. Needs `pip install bertopic` (a bench-only
                  dependency); without it the same pipeline is rebuilt from umap/hdbscan/sklearn.
  bertopic_seed2  the same with --seed + 1: how close BERTopic is to itself (ARI reference).
  ours            pipeline.chc TopicModel with params.yaml-like defaults (--ours-* options).
Table: size, method, seconds, peak MB, topics, noise fraction, ARI vs bertopic at that size
(all captions, noise counted as one more label).

Example (2 cores):
  python bench/bench_topics.py --wordnet /usr/share/wordnet --sizes 10000,30000,100000 \
      --methods bertopic,bertopic_seed2,ours --ours-sample 50000
"""

from __future__ import annotations

import argparse
import json
import os
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


def corpus(cache: Path, wordnet: str | None, kind: str = "wordnet") -> tuple[list[str], Path]:
    """Captions and the path of their embeddings: WordNet glosses (embedded here on first
    use), or ``embedded``: the pipeline's own kept captions (`dvc repro embed_captions`)."""
    if kind == "embedded":
        if not (KEPT_PAIRS.exists() and CAPTION_EMBEDDINGS.exists()):
            raise SystemExit(f"--corpus embedded reads {KEPT_PAIRS} and {CAPTION_EMBEDDINGS}: "
                             "run `dvc repro embed_captions` first")
        import pandas as pd

        return pd.read_parquet(KEPT_PAIRS, columns=["caption"])["caption"].tolist(), \
            CAPTION_EMBEDDINGS
    from wordnet_glosses import read_glosses

    captions_file, vectors = cache / "glosses.json", cache / "glosses_minilm.npy"
    if not captions_file.exists():
        if wordnet is None:
            raise SystemExit("--wordnet DIR is needed once to read the glosses")
        cache.mkdir(parents=True, exist_ok=True)
        captions_file.write_text(json.dumps(read_glosses(wordnet)))
    captions = json.loads(captions_file.read_text())
    if not vectors.exists():
        import torch

        from pipeline.chc.embed import SentenceEmbedder

        torch.set_num_threads(2)
        print(f"embedding {len(captions)} glosses once (slow on 2 cores) -> {vectors}")
        np.save(vectors, SentenceEmbedder(batch_size=128).encode(captions))
    return captions, vectors


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
            (len(chunk), base.shape[1]), dtype=np.float32)
        out[start : start + len(chunk)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return [captions[i] for i in rows], out


def fit_bertopic(docs, embeddings, seed):
    from umap import UMAP

    umap_model = UMAP(n_neighbors=15, n_components=5, min_dist=0.0, metric="cosine",
                      low_memory=False, random_state=seed)
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
    labels = HDBSCAN(min_cluster_size=10, metric="euclidean", cluster_selection_method="eom",
                     prediction_data=True).fit(reduced).labels_
    joined = pd.DataFrame({"doc": docs, "topic": labels}).groupby("topic")["doc"].agg(" ".join)
    CountVectorizer().fit_transform(joined.tolist())
    return labels, "bertopic pipeline rebuilt (umap+hdbscan+CountVectorizer)"


def fit_ours(docs, embeddings, args):
    from pipeline.chc.backends import make_clusterer, make_reducer
    from pipeline.chc.topics import TopicModel

    model = TopicModel(
        embedder=None,
        reducer=make_reducer(n_epochs=args.ours_epochs, init=args.ours_init,
                             random_state=args.seed),
        clusterer=make_clusterer(min_cluster_size=10),
        fit_sample_size=args.ours_sample,
    )
    result = model.fit(docs, embeddings)
    return result.labels, f"ours (sample {args.ours_sample}, epochs {args.ours_epochs})"


def worker(args) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    captions, vectors = corpus(Path(args.cache), None, args.corpus)
    docs, embeddings = subset(captions, vectors, args.size, args.jitter)
    start = time.perf_counter()
    if args.worker == "ours":
        labels, what = fit_ours(docs, embeddings, args)
    else:
        labels, what = fit_bertopic(docs, embeddings, args.seed + (args.worker != "bertopic"))
    seconds = time.perf_counter() - start
    np.save(Path(args.cache) / f"labels_{name(args.worker, args)}_{args.size}.npy", labels)
    print(json.dumps({"seconds": seconds, "topics": int(len(set(labels.tolist()) - {-1})),
                      "noise": float(np.mean(labels == -1)), "what": what}))


def name(method: str, args) -> str:
    return method + (args.label if method == "ours" else "")


def run_one(method: str, size: int, args) -> dict:
    command = [sys.executable, __file__, "--worker", method, "--size", str(size),
               "--cache", args.cache, "--jitter", str(args.jitter), "--seed", str(args.seed),
               "--ours-init", args.ours_init, "--label", args.label, "--corpus", args.corpus]
    if args.ours_sample:
        command += ["--ours-sample", str(args.ours_sample)]
    if args.ours_epochs:
        command += ["--ours-epochs", str(args.ours_epochs)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads),
           "NUMBA_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "OPENBLAS_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise SystemExit(f"{method} at {size} failed (status {status})")
    record = json.loads(output.strip().splitlines()[-1])
    record.update(method=method, size=size, peak_mb=usage.ru_maxrss / 1024,
                  cpu_s=usage.ru_utime + usage.ru_stime)
    return record


def ari_vs_anchor(cache: Path, method: str, size: int) -> float | None:
    from sklearn.metrics import adjusted_rand_score

    anchor = cache / f"labels_bertopic_{size}.npy"
    if method == "bertopic" or not anchor.exists():
        return None
    return adjusted_rand_score(np.load(anchor), np.load(cache / f"labels_{method}_{size}.npy"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--wordnet", help="folder with data.noun etc. (wordnet-base)")
    parser.add_argument("--corpus", choices=["wordnet", "embedded"], default="wordnet",
                        help="WordNet glosses (117k) or the embedded sample's kept captions")
    parser.add_argument("--cache", default=".cache/bench_topics")
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--methods", default="bertopic,bertopic_seed2,ours")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--jitter", type=float, default=0.01)
    parser.add_argument("--ours-sample", type=int, default=None)
    parser.add_argument("--ours-epochs", type=int, default=None)
    parser.add_argument("--ours-init", default="spectral")
    parser.add_argument("--label", default="", help="suffix naming this 'ours' variant")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.corpus == "embedded" and not args.worker:  # labels apart from the glosses' ones
        args.cache = str(Path(args.cache) / "embedded")
        Path(args.cache).mkdir(parents=True, exist_ok=True)
    if args.worker:
        return worker(args)

    captions, _ = corpus(Path(args.cache), args.wordnet, args.corpus)
    what = "WordNet glosses" if args.corpus == "wordnet" else "embedded kept captions"
    print(f"corpus: {len(captions)} {what}; threads {args.threads}")
    print(f"{'size':>8} {'method':<15} {'seconds':>8} {'cpu_s':>8} {'peak_MB':>8} {'topics':>6} "
          f"{'noise':>6} {'ARI':>6}  what")
    for size in [int(s) for s in args.sizes.split(",")]:
        for method in args.methods.split(","):
            r = run_one(method, size, args)
            ari = ari_vs_anchor(Path(args.cache), name(method, args), size)
            print(f"{size:>8} {name(method, args):<15} {r['seconds']:>8.1f} {r['cpu_s']:>8.1f} "
                  f"{r['peak_mb']:>8.0f} {r['topics']:>6} {r['noise']:>6.3f} "
                  f"{'-' if ari is None else f'{ari:.3f}':>6}  {r['what']}", flush=True)


if __name__ == "__main__":
    main()
