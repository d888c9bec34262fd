"""DVC stage `finetune` / `finetune_gram` (one per method): train each prompt of the
protocols, for every seed, and test it.

    python -m stages.finetune --method coop                              # every seed and part
    python -m stages.finetune --method coop --seed 1 --part main         # base-to-new + source
    python -m stages.finetune --method coop --seed 1 --part few_shot     # the few-shot curve

Part ``main`` trains, per dataset of ``datasets``, a prompt on its base classes (``shots``
per class) and tests it on base and new; and one prompt on all classes of the source dataset,
tested on it and on every cross-dataset and domain-generalisation target. Part ``few_shot``
trains one prompt per (K in ``evaluate.few_shot.shots``, dataset) and tests it; a "+GRAM"
row (``from_meta``) has part ``main`` only. Every seed and part of a method runs in one
process: starting one and loading the backbone costs ~10 s on 2 cores, more than most runs
(README "Stages"). A rerun after a params change resumes every run whose checkpoint still
matches, so adding a seed trains only that seed's runs. The work itself is
``pipeline.downstream.run_part``.

Reads params: seeds, shots, datasets, backbone (``precision: fp16`` is refused for training:
use bf16), data, features, finetune.{train, augment (mode: cached | fresh), allow_fewer,
memory_cache_mb, methods.<method>}, domain_shift, evaluate.{batch_size, max_test_per_class,
cross_dataset, few_shot}; a ``from_meta`` row also reads meta.variants and
models/gram/<variant>/.
Writes: models/downstream/<method>/seed<seed>/<part>/<run>.pt (the prompt),
results/downstream/runs/<method>/seed<seed>/<part>.json (accuracies),
dvclive/finetune/<method>/seed<seed>/<part>/<run>/ (per-epoch loss and accuracy).
Checkpoints: .cache/checkpoints/finetune/... (an interrupted stage resumes its run).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import backbones
from pipeline.config import read_downstream, read_seeds
from pipeline.downstream import Datasets, Outputs, load_meta, run_part
from pipeline.errors import UserError, run_stage
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.protocol import PARTS

RESULTS = Path("results/downstream/runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, action="append", help="default: params' seeds")
    parser.add_argument("--part", choices=PARTS, action="append", help="default: every part")
    args = parser.parse_args()

    params = load_params()
    configs = []
    for seed in args.seed or read_seeds(params):
        main_part = read_downstream(params, args.method, seed, "main")
        every_part = ("main",) if main_part.method.meta_dir is not None else PARTS  # +GRAM: main
        configs += [
            main_part if part == "main" else read_downstream(params, args.method, seed, part)
            for part in args.part or every_part
        ]
    if not configs:
        raise UserError("params.yaml: seeds is empty: nothing to train")
    first = configs[0]
    trained_on = {run.dataset for c in configs for run in c.protocols.runs(c.part)}
    specs = {name: spec for c in configs for name, spec in c.dataset_specs.items()}
    # every input is read and checked before the backbone loads
    datasets = Datasets(specs, first.data_root, trained_on, first.memory_cache_mb)
    meta = load_meta(first)
    backbone = backbones.load_backbone(params["backbone"])
    for config in configs:
        tag = Path(args.method) / f"seed{config.seed}" / config.part
        payload = run_part(config, backbone, datasets, Outputs(tag), meta)
        write_json(RESULTS / tag.parent / f"{config.part}.json", payload)


if __name__ == "__main__":
    run_stage(main)
