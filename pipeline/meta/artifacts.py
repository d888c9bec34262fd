"""theta* and phi on disk: what ``meta_train`` writes and the downstream "+GRAM" rows load.

``models/gram/<variant>/``:

* ``theta.pt``: {prompt tensor name: tensor}, the names of ``pipeline.learners``
  (``text_ctx``, ``visual_prompt``), so ``learner.load_state_dict(theta)`` initialises it;
* ``phi.pt``: {"config": ``build_regulators`` keyword arguments (kind, init, eps, bias,
  channel_dims), "state_dict": the regulators' state, "shapes": the prompt shapes}, so
  ``build_regulators(learner.prompt_parameters(), **config).load_state_dict(state_dict)``
  rebuilds R_phi for a learner with the same options;
* ``learner.json``: the learner kind and options theta* was learned with (the downstream
  learner must use the same: token counts, depth, pad width), plus how it was trained.

Downstream (GRAM Eq. 7 at test time, phi frozen)::

    meta = load_meta_prompt("models/gram/coop")
    learner = build_learner(meta.learner, backbone, classnames, meta.options)
    learner.load_state_dict(meta.theta)            # or pass meta.theta as init_state
    trainer(..., gradient_transform=meta.gradient_transform())
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .regulator import Regulators, build_regulators


@dataclass
class MetaPrompt:
    theta: dict[str, Tensor]
    regulators: Regulators
    learner: str
    options: dict[str, Any]
    info: dict[str, Any]

    def gradient_transform(self) -> Callable[[Mapping[str, Tensor]], dict[str, Tensor]]:
        """named grads -> R_phi(grads) per prompt tensor (phi frozen; identity for tensors
        without a regulator and for the "- gradient regulating" ablation)."""
        regulators = self.regulators.eval().requires_grad_(False)

        def transform(grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
            with torch.no_grad():
                device = next(iter(grads.values())).device if grads else "cpu"
                return regulators.to(device)(dict(grads))

        return transform


def save_meta_prompt(
    directory: str | Path,
    theta: Mapping[str, Tensor],
    regulators: Regulators,
    regulator_config: Mapping[str, Any],
    learner: str,
    options: Mapping[str, Any],
    info: Mapping[str, Any],
) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    theta = {name: t.detach().cpu().clone() for name, t in theta.items()}
    torch.save(theta, directory / "theta.pt")
    shapes = {name: list(t.shape) for name, t in theta.items()}
    state = {k: v.detach().cpu().clone() for k, v in regulators.state_dict().items()}
    torch.save(
        {"config": dict(regulator_config), "state_dict": state, "shapes": shapes},
        directory / "phi.pt",
    )
    card = {"learner": learner, "options": dict(options), **dict(info)}
    (directory / "learner.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")


def load_meta_prompt(directory: str | Path) -> MetaPrompt:
    directory = Path(directory)
    for name in ("theta.pt", "phi.pt", "learner.json"):
        if not (directory / name).exists():
            raise UserError(f"{directory / name}: missing (run the `meta_train` stage)")
    theta = torch.load(directory / "theta.pt", map_location="cpu", weights_only=True)
    phi = torch.load(directory / "phi.pt", map_location="cpu", weights_only=True)
    prompts = {name: torch.zeros(shape) for name, shape in phi["shapes"].items()}
    regulators = build_regulators(prompts, **phi["config"])
    regulators.load_state_dict(phi["state_dict"])
    card = json.loads((directory / "learner.json").read_text())
    learner, options = card.pop("learner"), card.pop("options")
    return MetaPrompt(theta, regulators, learner, options, card)
