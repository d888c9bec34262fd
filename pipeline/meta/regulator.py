"""The gradient regulating function R_phi of GRAM (Eq. 5-6), one per prompt group.

Layout. The paper writes a gradient as g in R^{d x M} (M prompt tokens of width d) and
``W g`` with W in R^{d x d}: the SAME d x d map applied to each of the M token columns.
Prompt tensors here are stored token-major, ``[..., M, d]`` (CoOp context ``[M, d]``, VPT
prompts ``[depth, M, d]``), so the paper's ``W g`` is ``g @ W.T`` on our rows
(``F.linear``), applied along the ``channel_dim`` axis (default the last one). A pixel-space
prompt ``[3, H, W]`` has its 3 colour channels as d and each pixel as a token
(``channel_dim=0``): the only reading that keeps W small for a CNN prompt.

    gamma = tanh(W_gamma g + b_gamma),   beta = tanh(W_beta g + b_beta),
    g_hat = gamma * g + beta                                         (element-wise)

Bias: ``bias="shared"`` is one d-vector broadcast over tokens; ``bias="token"`` is one bias
per entry of g (the paper's d x M shapes); our default is ``shared``.

Initialisation (``init``):

* ``identity`` (our default, a documented deviation from Algorithm 1 line 1): W = 0,
  b_gamma = atanh(1 - eps), b_beta = 0, so R(g) = (1 - eps) g: meta-training starts from
  plain SGD in the inner loop. tanh bounds gamma to (-1, 1), so R can never be exactly the
  identity nor enlarge a gradient.
* ``random``: Algorithm 1's literal "randomly initialize phi": ``nn.Linear``'s default
  uniform(-1/sqrt(d), 1/sqrt(d)) for W and b. beta is then an absolute offset of size up
  to tanh(1/sqrt(d) + ...) that does not scale with |g| and can swamp small gradients.

``IdentityRegulator`` (no parameters, R(g) = g) is the "- gradient regulating" ablation.
``Regulators`` holds one regulator per prompt tensor, keyed by the tensor's name, and maps a
dict of gradients to a dict of regulated gradients, so that
``torch.func.functional_call(regulators, phi, (grads,))`` is R_phi with phi as a plain dict.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn

INITS = ("identity", "random")
BIASES = ("shared", "token")
KINDS = ("affine", "identity")


class GradientRegulator(nn.Module):
    """R_phi for one prompt tensor of shape ``shape`` whose axis ``channel_dim`` is d."""

    def __init__(
        self,
        shape: tuple[int, ...],
        channel_dim: int = -1,
        init: str = "identity",
        eps: float = 1e-3,
        bias: str = "shared",
    ):
        super().__init__()
        if init not in INITS:
            raise ValueError(f"regulator init {init!r} must be one of {list(INITS)}")
        if bias not in BIASES:
            raise ValueError(f"regulator bias {bias!r} must be one of {list(BIASES)}")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"regulator eps {eps!r} must lie in (0, 1)")
        self.shape = tuple(int(s) for s in shape)
        self.channel_dim = channel_dim % len(self.shape)
        width = self.shape[self.channel_dim]
        # bias shape in the channels-last layout used inside forward
        tokens = [s for i, s in enumerate(self.shape) if i != self.channel_dim]
        bias_shape = (width,) if bias == "shared" else (*tokens, width)
        self.W_gamma = nn.Parameter(torch.zeros(width, width))
        self.W_beta = nn.Parameter(torch.zeros(width, width))
        self.b_gamma = nn.Parameter(torch.zeros(bias_shape))
        self.b_beta = nn.Parameter(torch.zeros(bias_shape))
        with torch.no_grad():
            if init == "identity":
                self.b_gamma.fill_(math.atanh(1.0 - eps))
            else:
                bound = 1.0 / math.sqrt(width)
                for parameter in (self.W_gamma, self.W_beta, self.b_gamma, self.b_beta):
                    parameter.uniform_(-bound, bound)

    def forward(self, grad: Tensor) -> Tensor:
        if tuple(grad.shape) != self.shape:
            raise ValueError(
                f"regulator built for a gradient of shape {self.shape}, got {tuple(grad.shape)}"
            )
        g = grad.movedim(self.channel_dim, -1)
        gamma = torch.tanh(nn.functional.linear(g, self.W_gamma) + self.b_gamma)
        beta = torch.tanh(nn.functional.linear(g, self.W_beta) + self.b_beta)
        return (gamma * g + beta).movedim(-1, self.channel_dim)


class IdentityRegulator(nn.Module):
    """R(g) = g: the "- gradient regulating" ablation (GRAM Table 6, row 2)."""

    def forward(self, grad: Tensor) -> Tensor:
        return grad


class Regulators(nn.Module):
    """One regulator per prompt tensor; ``forward`` maps {name: g} to {name: R(g)}."""

    def __init__(self, regulators: Mapping[str, nn.Module]):
        super().__init__()
        # ModuleDict keys may not contain "."; prompt names such as "text.ctx" might.
        self.names = list(regulators)
        self.regulators = nn.ModuleDict(
            {_module_key(name): module for name, module in regulators.items()}
        )

    def forward(self, grads: Mapping[str, Tensor]) -> dict[str, Tensor]:
        missing = set(self.names) - set(grads)
        if missing:
            raise KeyError(f"no gradient for regulated prompt tensor(s) {sorted(missing)}")
        return {
            name: self.regulators[_module_key(name)](grad) if name in self.names else grad
            for name, grad in grads.items()
        }

    def phi(self) -> dict[str, Tensor]:
        """phi as a flat dict of parameters (empty for identity regulators)."""
        return dict(self.named_parameters())


def _module_key(name: str) -> str:
    return name.replace(".", "__")


def build_regulators(
    prompts: Mapping[str, Tensor],
    kind: str = "affine",
    init: str = "identity",
    eps: float = 1e-3,
    bias: str = "shared",
    channel_dims: Mapping[str, int] | None = None,
) -> Regulators:
    """A ``Regulators`` with one R per prompt tensor in ``prompts`` (one R per group).

    ``channel_dims`` names the axis holding d for tensors whose width is not last (a
    ``[3, H, W]`` pixel prompt: 0).
    """
    if kind not in KINDS:
        raise ValueError(f"regulator kind {kind!r} must be one of {list(KINDS)}")
    channel_dims = dict(channel_dims or {})
    modules: dict[str, nn.Module] = {}
    for name, tensor in prompts.items():
        if kind == "identity":
            modules[name] = IdentityRegulator()
        else:
            modules[name] = GradientRegulator(
                tuple(tensor.shape), channel_dims.get(name, -1), init, eps, bias
            )
    return Regulators(modules)
