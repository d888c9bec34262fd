"""DVC stage `finetune` (one per method x seed): train each prompt of a protocol, test it.

    python -m stages.finetune --method coop --seed 1 --part main       # base-to-new + source
    python -m stages.finetune --method coop --seed 1 --part few_shot   # the few-shot curve

Part ``main`` trains, per dataset of ``datasets``, a prompt on its base classes (``shots``
per class) and tests it on base and new; and one prompt on all classes of the source dataset,
tested on it and on every cross-dataset and domain-generalisation target. Part ``few_shot``
trains one prompt per (K in ``evaluate.few_shot.shots``, dataset) and tests it. The parts are
separate stages so that ``dvc exp run -S shots=4`` leaves the few-shot curve alone. The work
itself is ``pipeline.downstream.run_part``.

Reads params: shots, datasets, backbone (``precision: fp16`` is refused for training: use
bf16), data, features, finetune.{train, augment (mode: cached | fresh), allow_fewer,
methods.<method>}, domain_shift, evaluate.{batch_size, max_test_per_class,
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
from pipeline.config import read_downstream
from pipeline.downstream import Datasets, Outputs, load_meta, run_part
from pipeline.errors import run_stage
from pipeline.io import write_json
from pipeline.params import load_params
from pipeline.protocol import PARTS

RESULTS = Path("results/downstream/runs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--part", choices=PARTS, default="main")
    args = parser.parse_args()

    params = load_params()
    config = read_downstream(params, args.method, args.seed, args.part)
    trained_on = {run.dataset for run in config.protocols.runs(args.part)}
    # every input is read and checked before the backbone loads
    datasets = Datasets(config.dataset_specs, config.data_root, trained_on)
    meta = load_meta(config)
    backbone = backbones.load_backbone(params["backbone"])
    tag = Path(args.method) / f"seed{args.seed}" / args.part
    payload = run_part(config, backbone, datasets, Outputs(tag), meta)
    write_json(RESULTS / tag.parent / f"{args.part}.json", payload)


if __name__ == "__main__":
    run_stage(main)
