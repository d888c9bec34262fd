"""One method's part of the downstream protocols: train each run's prompt, test it, return
the accuracies (README "Downstream prompt tuning and evaluation").

For every run of the part (``protocol.Protocols.runs``): draw the run's few-shot training
set, build the method's learner, train it (``training.train``, CoOp's ``TrainerX``) from
cached features or from the images, save the prompt, then test it on every set the run
names (``evaluation.evaluate``). A "+GRAM" row (``from_meta``) starts from theta* and
maps every gradient through the frozen R_phi (GRAM Eq. 7, phi fixed at test time).

Each run is tested in the process that trained it: on 2 cores starting a process and loading
the backbone costs seconds, more than testing a textual prompt on cached features.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .backbones import Backbone
from .config import DownstreamConfig, run_options
from .data import DatasetSplits, load_dataset
from .errors import UserError
from .evaluation import evaluate
from .features import DecodedImages
from .io import open_live
from .learners import PromptLearner, build_learner
from .meta.artifacts import MetaPrompt, load_meta_prompt
from .protocol import RunSpec, evaluation_split, run_training_split, set_nested
from .training import TrainingSet, cached_training_set, train
from .training_images import fresh_training_set, image_training_set


class Datasets:
    """Every dataset a part reads, loaded up front (a bad split file is reported before the
    backbone loads); a dataset only tested on is read without its train split (ImageNet's
    train folders are 1.2M files). ``decoded``: their images as a visual prompt reads them,
    kept in memory for the stage's later runs and seeds (up to ``memory_mb``)."""

    def __init__(self, specs: dict[str, Any], root: Path, trained_on: set[str], memory_mb: int = 0):
        self.decoded = DecodedImages(memory_mb)
        self.loaded: dict[str, DatasetSplits] = {}
        for name, spec in specs.items():
            splits = ("train", "val", "test") if name in trained_on else ("test",)
            self.loaded[name] = load_dataset(spec, root, splits=splits)

    def __getitem__(self, name: str) -> DatasetSplits:
        return self.loaded[name]


@dataclass(frozen=True)
class Outputs:
    """Where a part writes: prompts, dvclive curves, per-epoch checkpoints (``tag`` =
    ``<method>/seed<seed>/<part>``)."""

    tag: Path
    models: Path = Path("models/downstream")
    live: Path = Path("dvclive/finetune")
    checkpoints: Path = Path(".cache/checkpoints/finetune")


def run_key(learner: str, options: dict[str, Any], meta_dir: Path | None) -> str:
    """What decides a run's result besides its train config, initial prompt and data (the
    per-run checkpoint's key): the learner kind, every option it was built with (ProGrad's
    lambda and T are Python floats, not in the prompt's state) and theta*/phi's bytes."""
    digest = hashlib.sha1(json.dumps([learner, options], sort_keys=True, default=str).encode())
    if meta_dir is not None:
        for name in ("theta.pt", "phi.pt"):
            digest.update((meta_dir / name).read_bytes())
    return digest.hexdigest()


def training_set(
    learner: PromptLearner,
    config: DownstreamConfig,
    dataset: DatasetSplits,
    desc: str,
    memo: DecodedImages | None = None,
) -> TrainingSet:
    """``augment.mode: fresh``: new crops every step (images, or their frozen features and
    the teacher's logits of each). ``cached``: cached frozen features (and the teacher's
    logits of each view) for textual learners, the images for learners with a visual prompt.
    """
    paths = [d.path for d in dataset.train]
    labels = [d.label for d in dataset.train]
    backbone, augment = learner.backbone, config.augment
    workers = int(config.features.get("num_workers", 0))
    teacher = learner.teacher(dataset.prograd_template, dataset.classnames)
    if learner.needs_images and teacher is not None:
        raise ValueError(f"{type(learner).__name__}: a teacher needs cached features")
    if augment.mode == "fresh":
        return fresh_training_set(
            backbone, paths, labels, learner.needs_images, augment.seed, teacher, workers
        )
    if learner.needs_images:
        return image_training_set(
            backbone, paths, labels, augment.views, augment.seed, workers, memo
        )
    return cached_training_set(
        backbone,
        paths,
        labels,
        augment.views,
        augment.seed,
        teacher,
        config.features,
        desc=desc,
    )


def build_run_learner(
    config: DownstreamConfig, backbone: Backbone, dataset: DatasetSplits, run: RunSpec
) -> PromptLearner:
    """The row's learner for the run's classes, with the run's options (``run_options``:
    ProGrad's ``lambda_overrides``); options it cannot use are the user's error, named where
    they were written (the row, or the variant's ``learner.json``)."""
    method = config.method
    try:
        learner = build_learner(
            method.learner,
            backbone,
            dataset.classnames,
            run_options(method.options, run.dataset, run.shots),
            template=dataset.template,
            prograd_template=dataset.prograd_template,
            seed=config.seed,
        )
    except ValueError as error:
        if method.meta_dir is not None:
            raise UserError(f"{method.meta_dir / 'learner.json'}: options: {error}") from error
        raise method.error(f"options: {error}") from error
    unknown = sorted(set(method.train.lr_scale) - set(learner.prompt_parameters()))
    if unknown and learner.prompt_parameters():
        raise method.error(
            f"train.lr_scale.{unknown[0]} is not a prompt of the "
            f"{method.learner} learner ({sorted(learner.prompt_parameters())})"
        )
    return learner


def train_run(
    config: DownstreamConfig,
    learner: PromptLearner,
    dataset: DatasetSplits,
    meta: MetaPrompt | None,
    run: RunSpec,
    out: Outputs,
    memo: DecodedImages | None = None,
) -> list[dict[str, float]]:
    """Train ``learner`` on the run's training set; its per-epoch history."""
    if not learner.prompt_parameters():  # zero-shot: nothing to train
        return []
    data = training_set(learner, config, dataset, f"{run.name} train", memo)
    live = open_live(out.live / out.tag / run.name)

    def log(epoch: int, metrics: dict[str, float]) -> None:
        for key, value in metrics.items():
            live.log_metric(f"train/{key}", value)
        live.next_step()

    history = train(
        learner,
        data,
        config.run_train(run),
        gradient_transform=None if meta is None else meta.gradient_transform(),
        init_state=None if meta is None else meta.theta,
        checkpoint=out.checkpoints / out.tag / f"{run.name}.pt",
        run_key=run_key(
            config.method.learner,
            run_options(config.method.options, run.dataset, run.shots),
            config.method.meta_dir,
        ),
        on_epoch_end=log,
        desc=f"{config.method.name} {run.name}",
    ).history
    live.end()
    return history


def test_run(
    config: DownstreamConfig, learner: PromptLearner, datasets: Datasets, run: RunSpec
) -> dict[tuple[str, ...], float]:
    """Accuracy (%) of the trained prompt on every set the run names, by record key. A set
    named twice (the source dataset is both a cross-dataset and a domain-generalisation
    entry) is tested once: a visual prompt re-encodes every test image."""
    accuracies, tested = {}, {}
    for evaluation in run.evaluations:
        same = (evaluation.dataset, evaluation.subsample)
        if same in tested:
            accuracies[evaluation.key] = tested[same]
            continue
        split = evaluation_split(
            datasets[evaluation.dataset], evaluation, config.evaluate.max_test_per_class
        )
        result = evaluate(
            learner,
            split.test,
            split.classnames,
            split.template,
            batch_size=config.evaluate.batch_size,
            features_options=config.features,
            memo=datasets.decoded,
            desc=f"{evaluation.dataset} test",
        )
        accuracies[evaluation.key] = tested[same] = round(result.percent, 2)
    return accuracies


def load_meta(config: DownstreamConfig) -> MetaPrompt | None:
    """theta* and R_phi of a "+GRAM" row (None for the others)."""
    return None if config.method.meta_dir is None else load_meta_prompt(config.method.meta_dir)


def run_part(
    config: DownstreamConfig,
    backbone: Backbone,
    datasets: Datasets,
    out: Outputs,
    meta: MetaPrompt | None = None,
) -> dict[str, Any]:
    """Train and test every run of ``config.part``; the payload of its results file.
    ``meta``: the row's theta* and R_phi (``load_meta``)."""
    # a DVC output even for methods with nothing to train (zero-shot): it must exist
    (out.live / out.tag).mkdir(parents=True, exist_ok=True)
    results: dict = {}
    runs: dict = {}
    for run in config.protocols.runs(config.part):
        started = time.perf_counter()
        dataset = run_training_split(datasets[run.dataset], run, config.seed, config.allow_fewer)
        learner = build_run_learner(config, backbone, dataset, run)
        history = train_run(config, learner, dataset, meta, run, out, datasets.decoded)
        model = out.models / out.tag / f"{run.name}.pt"
        model.parent.mkdir(parents=True, exist_ok=True)
        torch.save(learner.state_dict(), model)
        accuracies = {}
        for key, value in test_run(config, learner, datasets, run).items():
            set_nested(results, key, value)
            accuracies["/".join(key)] = value
        runs[run.name] = {
            "train_images": len(dataset.train),
            "epochs": len(history),
            "final": history[-1] if history else None,
            "accuracy": accuracies,
            "seconds": round(time.perf_counter() - started, 1),
        }
        print(
            f"{config.method.name} seed {config.seed} {run.name}: {accuracies} "
            f"({runs[run.name]['seconds']} s)"
        )
    return {
        "method": config.method.name,
        "seed": config.seed,
        "part": config.part,
        "results": results,
        "runs": runs,
    }
