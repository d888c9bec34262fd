"""DVC stage `linear_probe`: the linear-probe row of every table, for every seed.

    python -m stages.linear_probe            # every seed of params' seeds
    python -m stages.linear_probe --seed 1

For every run of the protocols (``pipeline.protocol``, both parts) whose test classes are its
training classes, fits logistic regression on the frozen, L2-normalised image features of the
run's few-shot training split (the prompts' draw: same seed, same shots), chooses C from
``evaluate.linear_probe.c_grid`` on the few-shot val split, and tests it (``pipeline.probe``;
CoOp Sec. 4.1). New classes and other datasets get no probe entry ("n/a" in the tables).

Reads params: seeds, shots, datasets, domain_shift, backbone, data, features, finetune.allow_fewer,
evaluate.{max_test_per_class, cross_dataset, few_shot, linear_probe}.
Writes: results/downstream/probe/seed<seed>.json (records in a finetune run's layout, and the
C chosen for each run with its val accuracy).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import backbones
from pipeline.config import read_c_grid, read_protocols, read_seed, read_seeds
from pipeline.config.downstream import read_allow_fewer, read_evaluate, read_features
from pipeline.downstream import Datasets
from pipeline.errors import run_stage
from pipeline.features import image_features
from pipeline.io import write_json
from pipeline.params import data_root, dataset_spec, load_params
from pipeline.probe import probe_seed, probed_datasets
from pipeline.protocol import evaluation_split, run_training_split

RESULTS = Path("results/downstream/probe")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, action="append", help="default: params' seeds")
    args = parser.parse_args()

    params = load_params()
    seeds = [read_seed(seed) for seed in args.seed] if args.seed else read_seeds(params)
    protocols = read_protocols(params)
    c_grid = read_c_grid(params)
    evaluate_config = read_evaluate(params)
    features = read_features(params)
    allow_fewer = read_allow_fewer(params)
    trained_on = probed_datasets(protocols)
    datasets = Datasets(
        {name: dataset_spec(params, name) for name in sorted(trained_on)},
        data_root(params),
        trained_on,
    )
    backbone = backbones.load_backbone(params["backbone"])

    def features_of(items):
        paths = [item.path for item in items]
        return image_features(backbone, paths, desc="probe features", **features).numpy()

    for seed in seeds:
        payload = probe_seed(
            protocols,
            seed,
            lambda run, s=seed: run_training_split(datasets[run.dataset], run, s, allow_fewer),
            lambda run, e: evaluation_split(
                datasets[e.dataset], e, evaluate_config.max_test_per_class
            ),
            features_of,
            c_grid,
        )
        write_json(RESULTS / f"seed{seed}.json", payload)
        print(seed, payload["runs"])


if __name__ == "__main__":
    run_stage(main)
