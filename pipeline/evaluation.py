"""Testing a prompt: the accuracy of a learner on a labelled test split (CoOp's
``TrainerX.test``).

The protocols (what is trained on what, tested where) live in ``protocol.py``, the
aggregation over seeds in ``aggregation.py`` and GRAM's tables in ``report.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch.utils.data import DataLoader

from .backbones import Backbone
from .data import Datum
from .features import DecodedImages, ImageFiles, image_features
from .learners import Batch, PromptLearner
from .zeroshot import Accuracy, accuracy


@torch.no_grad()
def evaluate(
    learner: PromptLearner,
    items: Sequence[Datum],
    classnames: list[str],
    template: str,
    *,
    batch_size: int = 128,
    features_options: Mapping | None = None,
    memo: DecodedImages | None = None,
    desc: str = "test",
) -> Accuracy:
    """Accuracy of ``learner`` on ``items`` labelled over ``classnames``.

    Textual learners read cached test features (each image encoded once per backbone, for
    every method and run) and build the classifier once; learners with a visual prompt
    re-encode every image through the prompted encoder (``memo``: the decoded test images
    kept for the next run and seed).
    """
    backbone: Backbone = learner.backbone
    learner.set_classes(classnames, template)
    labels = torch.tensor([item.label for item in items])
    paths = [item.path for item in items]
    classifier = learner.class_features() if learner.shared_classifier else None
    logits = []
    if learner.needs_images:
        files = ImageFiles(paths, backbone.image_transform(train=False), None, 0, memo)
        done = 0
        for images in DataLoader(files, batch_size=batch_size):
            chunk = Batch(labels[done : done + len(images)], images=images.to(backbone.device))
            logits.append(learner.logits(chunk, classifier).cpu())
            done += len(images)
    else:
        features = image_features(backbone, paths, desc=desc, **dict(features_options or {}))
        for start in range(0, len(items), batch_size):
            chunk = features[start : start + batch_size].to(backbone.device)
            batch = Batch(labels[start : start + batch_size], features=chunk)
            logits.append(learner.logits(batch, classifier).cpu())
    return accuracy(torch.cat(logits), labels)
