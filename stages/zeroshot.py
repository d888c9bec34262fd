"""DVC stage `zeroshot`: zero-shot accuracy of the backbone on each configured dataset.

Reads params: backbone, data, datasets, domain_shift.targets, features.
Writes metrics/zeroshot.json: {"<dataset>": {"accuracy", "chance", "num_classes", "num_test"}}.
"""

from __future__ import annotations

import torch

from pipeline.backbones import cosine_logits, load_backbone
from pipeline.config import read_features
from pipeline.data import load_dataset
from pipeline.errors import run_stage
from pipeline.features import image_features
from pipeline.io import write_json
from pipeline.params import data_root, dataset_spec, get, load_params
from pipeline.zeroshot import accuracy, hand_written_prompts, text_classifier


def main() -> None:
    params = load_params()
    names = list(dict.fromkeys(get(params, "datasets") + get(params, "domain_shift.targets")))
    features_options = read_features(params)
    # every dataset is read (and its split file checked) before the backbone loads
    datasets = {
        name: load_dataset(dataset_spec(params, name), data_root(params), splits=("test",))
        for name in names
    }
    backbone = load_backbone(params["backbone"])
    results = {}
    for name, dataset in datasets.items():
        features = image_features(
            backbone, [d.path for d in dataset.test], desc=f"{name} test", **features_options
        )
        prompts = hand_written_prompts(dataset.template, dataset.classnames)
        classifier = text_classifier(backbone, prompts)
        labels = torch.tensor([d.label for d in dataset.test])
        result = accuracy(cosine_logits(features, classifier, backbone.logit_scale), labels)
        n_classes = len(dataset.classnames)
        results[name] = {
            "accuracy": round(result.percent, 2),
            "chance": round(100.0 / n_classes, 2),
            "num_classes": n_classes,
            "num_test": result.total,
        }
        print(f"{name}: {result.percent:.2f}% zero-shot ({n_classes} classes, {result.total} test)")
    write_json("metrics/zeroshot.json", results)


if __name__ == "__main__":
    run_stage(main)
