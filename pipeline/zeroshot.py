"""Zero-shot classification: hand-written template per dataset, cosine logits, accuracy."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .backbones import Backbone


@dataclass(frozen=True)
class Accuracy:
    correct: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.correct / self.total if self.total else float("nan")


def prompt_ready(classname: str) -> str:
    """A class name as prompts write it (CoOp's ``classname.replace("_", " ")``)."""
    return classname.replace("_", " ")


def hand_written_prompts(template: str, classnames: list[str]) -> list[str]:
    """One hand-written prompt per class: ``template`` filled with its readable name."""
    return [template.format(prompt_ready(name)) for name in classnames]


@torch.no_grad()
def text_classifier(backbone: Backbone, prompts: list[str], batch_size: int = 256) -> Tensor:
    """[num_classes, embed_dim] text features of one prompt per class."""
    chunks = []
    for start in range(0, len(prompts), batch_size):
        tokens = backbone.tokenize(prompts[start : start + batch_size]).to(backbone.device)
        chunks.append(backbone.encode_text(tokens).float().cpu())
    return torch.cat(chunks)


def accuracy(logits: Tensor, labels: Tensor) -> Accuracy:
    correct = int((logits.argmax(dim=-1) == labels).sum().item())
    return Accuracy(correct, int(labels.numel()))
