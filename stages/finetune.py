"""DVC stage `finetune` (one per method x seed): train each prompt of a protocol, test it.

    python stages/finetune.py --method coop --seed 1 --part main       # base-to-new + source
    python stages/finetune.py --method coop --seed 1 --part few_shot   # the few-shot curve

Part ``main`` trains, per dataset of ``datasets``, a prompt on its base classes (``shots``
per class) and tests it on base and new; and one prompt on all classes of the source dataset,
tested on it and on every cross-dataset and domain-generalisation target. Part ``few_shot``
trains one prompt per (K in ``evaluate.few_shot.shots``, dataset) and tests it. The parts are
separate stages so that ``dvc exp run -S shots=4`` leaves the few-shot curve alone.

Each run is tested in the process that trained it: on 2 cores starting a process and loading
the backbone costs seconds, more than testing a textual prompt on cached features.

Reads params: shots, datasets, backbone, data, features, finetune.{train, augment,
allow_fewer, methods.<method>}, domain_shift, evaluate.{batch_size, cross_dataset, few_shot}.
Writes: models/downstream/<method>/seed<seed>/<part>/<run>.pt (the prompt),
results/downstream/runs/<method>/seed<seed>/<part>.json (accuracies),
dvclive/finetune/<method>/seed<seed>/<part>/<run>/ (per-epoch loss and accuracy).
Checkpoints: .cache/checkpoints/finetune/... (an interrupted stage resumes its run).
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import torch

from pipeline.backbones import load_backbone
from pipeline.data import load_dataset
from pipeline.errors import run_stage
from pipeline.evaluation import (
    PARTS,
    Protocols,
    evaluate,
    evaluation_split,
    run_training_split,
    set_nested,
)
from pipeline.io import write_json
from pipeline.learners import build_learner
from pipeline.learners.base import hand_written_classifier
from pipeline.params import check_range, data_root, dataset_spec, get, load_params
from pipeline.training import TrainConfig, cached_training_set, image_training_set, train

FEATURE_OPTIONS = ("batch_size", "num_workers", "cache_dir")
CHECKPOINTS = Path(".cache/checkpoints/finetune")


class Method:
    """One method's section of params.yaml: learner kind and options, training overrides,
    and the "+GRAM" hooks (``init_state``: theta* file, ``regulator``: R_phi file)."""

    def __init__(self, params: dict, name: str, seed: int):
        where = f"finetune.methods.{name}"
        section = dict(get(params, where) or {})
        self.name, self.where = name, where
        self.kind = section.pop("learner", name)
        train_keys = set(TrainConfig.__dataclass_fields__) - {"seed"}
        overrides = {k: section.pop(k) for k in list(section) if k in train_keys}
        self.init_state_path = section.pop("init_state", None)
        self.regulator_path = section.pop("regulator", None)
        self.options = section
        shared = dict(get(params, "finetune.train"))
        TrainConfig.from_params(shared, seed, "finetune.train")  # errors name the shared key
        self.config = TrainConfig.from_params({**shared, **overrides}, seed, where)

    def init_state(self) -> dict | None:
        if not self.init_state_path:
            return None
        return torch.load(self.init_state_path, map_location="cpu", weights_only=True)

    def gradient_transform(self, learner):
        """R_phi with phi frozen, built by the GRAM package from the saved regulator."""
        if not self.regulator_path:
            return None
        from pipeline.meta.regulator import build_regulators

        saved = torch.load(self.regulator_path, map_location="cpu", weights_only=True)
        regulators = build_regulators(learner.prompt_parameters(), **saved.get("config", {}))
        regulators.load_state_dict(saved["state_dict"])
        regulators.requires_grad_(False)

        def transform(grads):
            with torch.no_grad():
                return regulators(grads)

        return transform

    def run_key(self) -> str:
        """What else decides the result: the hook files' contents."""
        digest = hashlib.sha1(self.kind.encode())
        for path in (self.init_state_path, self.regulator_path):
            if path:
                digest.update(Path(path).read_bytes())
        return digest.hexdigest()


class Datasets:
    """Datasets read once per stage (several runs test on the same one); a dataset only
    tested on is read without its train split (ImageNet's train folders are 1.2M files)."""

    def __init__(self, params: dict):
        self.params, self.root, self.loaded = params, data_root(params), {}

    def get(self, name: str, test_only: bool = False):
        if (name, "all") in self.loaded:
            return self.loaded[(name, "all")]
        key = (name, "test" if test_only else "all")
        if key not in self.loaded:
            splits = ("test",) if test_only else ("train", "val", "test")
            self.loaded[key] = load_dataset(dataset_spec(self.params, name), self.root,
                                            splits=splits)  # fmt: skip
        return self.loaded[key]


def epoch_logger(folder: Path):
    from dvclive import Live

    live = Live(str(folder), dvcyaml=None, save_dvc_exp=False, report=None)

    def log(epoch: int, metrics: dict) -> None:
        for key, value in metrics.items():
            live.log_metric(f"train/{key}", value)
        live.next_step()

    return live, log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--part", choices=PARTS, default="main")
    args = parser.parse_args()

    params = load_params()
    check_range("seeds[]", args.seed, 0, 2**31 - 1, integer=True)
    method = Method(params, args.method, args.seed)
    protocols = Protocols.from_params(params)
    augment = get(params, "finetune.augment")
    views = check_range("finetune.augment.views", augment["views"], 0, 1000, integer=True)
    aug_seed = augment.get("seed", 0)
    allow_fewer = bool(params["finetune"].get("allow_fewer", False))
    eval_batch = check_range("evaluate.batch_size", get(params, "evaluate.batch_size"), 1,
                             100_000, integer=True)  # fmt: skip
    max_test = get(params, "evaluate").get("max_test_per_class")
    if max_test is not None:
        check_range("evaluate.max_test_per_class", max_test, 1, None, integer=True)
    features = {k: v for k, v in (params.get("features") or {}).items() if k in FEATURE_OPTIONS}
    backbone = load_backbone(params["backbone"])
    datasets = Datasets(params)
    tag = Path(args.method) / f"seed{args.seed}" / args.part
    # A DVC output even for methods with nothing to train (zero-shot): it must exist.
    (Path("dvclive/finetune") / tag).mkdir(parents=True, exist_ok=True)

    results: dict = {}
    runs: dict = {}
    for run in protocols.runs(args.part):
        started = time.perf_counter()
        dataset = run_training_split(datasets.get(run.dataset), run, args.seed, allow_fewer)
        learner = build_learner(
            method.kind, backbone, dataset.classnames, method.options,
            template=dataset.template, prograd_template=dataset.prograd_template,
            seed=args.seed, where=method.where,
        )  # fmt: skip
        paths = [d.path for d in dataset.train]
        labels = [d.label for d in dataset.train]
        history = []
        if learner.prompt_parameters():
            if learner.needs_images:
                data = image_training_set(backbone, paths, labels, views, aug_seed)
            else:
                teacher = None
                if method.kind == "prograd":
                    teacher = hand_written_classifier(
                        backbone, dataset.prograd_template, dataset.classnames
                    )
                data = cached_training_set(
                    backbone, paths, labels, views, aug_seed, teacher, features,
                    desc=f"{run.name} train",
                )  # fmt: skip
            live, log = epoch_logger(Path("dvclive/finetune") / tag / run.name)
            history = train(
                learner, data, method.config,
                gradient_transform=method.gradient_transform(learner),
                init_state=method.init_state(),
                checkpoint=CHECKPOINTS / tag / f"{run.name}.pt",
                run_key=method.run_key(), on_epoch_end=log, desc=f"{args.method} {run.name}",
            ).history  # fmt: skip
            live.end()
        out = Path("models/downstream") / tag / f"{run.name}.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        torch.save(learner.state_dict(), out)

        accuracies = {}
        for evaluation in run.evaluations:
            split = evaluation_split(
                datasets.get(evaluation.dataset, test_only=True), evaluation, max_test
            )
            result = evaluate(
                learner, split.test, split.classnames, split.template,
                batch_size=eval_batch, features_options=features,
                desc=f"{evaluation.dataset} test",
            )  # fmt: skip
            set_nested(results, evaluation.key, round(result.percent, 2))
            accuracies["/".join(evaluation.key)] = round(result.percent, 2)
        runs[run.name] = {
            "train_images": len(paths),
            "epochs": len(history),
            "final": history[-1] if history else None,
            "accuracy": accuracies,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(f"{args.method} seed {args.seed} {run.name}: {accuracies} "
              f"({runs[run.name]['seconds']} s)")  # fmt: skip
    payload = {"method": args.method, "seed": args.seed, "part": args.part, "results": results,
               "runs": runs}  # fmt: skip
    write_json(Path("results/downstream/runs") / args.method / f"seed{args.seed}" /
               f"{args.part}.json", payload)  # fmt: skip


if __name__ == "__main__":
    run_stage(main)
