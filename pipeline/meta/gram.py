"""GRAM's bi-level meta-training (Algorithm 1, Eq. 7-10) on a generic functional loss.

Everything is written against ``loss_fn(params, batch) -> scalar``, with ``params`` a dict
of prompt tensors (theta), so it works with any prompt learner (see ``adapters.py``), and
``regulators``, a :class:`~pipeline.meta.regulator.Regulators` called as
``functional_call(regulators, phi, (grads,))`` with phi a dict too. ``torch.func.grad`` does
the differentiation, so each function reads like its equation.

For one task t (Eq. 7, ``inner_steps`` = n steps):

    theta'_t = theta - alpha * R_phi(grad_theta L(theta, D_support_t))        (n times)

and the meta-objective of a batch of B tasks (Eq. 10, Algorithm 1 lines 9-10):

    F(theta, phi) = sum_t L(theta'_t, D_query_t),
    theta <- theta - lambda_1 dF/dtheta,   phi <- phi - lambda_2 dF/dphi
    (plain SGD as written in the paper; ``optimizer: adam`` uses Adam with those lrs).

``second_order=True``: dF/dtheta differentiates through the inner gradient (the Hessian
term (I - alpha dR/dg H_support) of MAML). ``second_order=False`` (OUR cheap default, to be
labelled in results): every inner gradient grad_theta L(., D_support) is a constant, so
d theta'_t / d theta = I, while phi still gets gradient through g_hat = R_phi(g) (exact
for one inner step; with several, the later raw gradients' dependence on phi through the
inner trajectory is dropped as well). The first-order inner gradients are computed
outside the outer transform: same values, no graph built only to be thrown away.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.func import functional_call, grad, grad_and_value
from torch.nn.attention import SDPBackend, sdpa_kernel

from .regulator import Regulators

LossFn = Callable[[dict[str, Tensor], Any], Tensor]
Params = dict[str, Tensor]


@dataclass(frozen=True)
class Task:
    """One meta-training task: the batches ``loss_fn`` takes for its support and query sets."""

    support: Any
    query: Any


@dataclass(frozen=True)
class InnerLoop:
    alpha: float = 0.01
    steps: int = 1
    second_order: bool = False


def regulate(regulators: Regulators, phi: Params, grads: Params) -> Params:
    """R_phi applied to each prompt tensor's gradient (Eq. 5-6)."""
    return functional_call(regulators, phi, (grads,))


def regulated_step(
    regulators: Regulators, phi: Params, theta: Params, g: Params, alpha: float
) -> Params:
    """One inner step of Eq. 7 from the raw gradient g: theta - alpha * R_phi(g)."""
    g_hat = regulate(regulators, phi, g)
    return {name: theta[name] - alpha * g_hat[name] for name in theta}


def adapt(
    loss_fn: LossFn, regulators: Regulators, theta: Params, phi: Params, support, inner: InnerLoop
) -> Params:
    """theta'_t of Eq. 7, differentiable in theta (through the inner gradient) and phi."""
    for _ in range(inner.steps):
        theta = regulated_step(regulators, phi, theta, grad(loss_fn)(theta, support), inner.alpha)
    return theta


def support_gradients(
    loss_fn: LossFn, regulators: Regulators, theta: Params, phi: Params, support, inner: InnerLoop
) -> list[Params]:
    """The raw inner gradients g_1..g_n along the inner trajectory, as constants (first order)."""
    theta = _detached(theta)
    phi = _detached(phi)
    grads = []
    for _ in range(inner.steps):
        g = _detached(grad(loss_fn)(theta, support))
        grads.append(g)
        theta = _detached(regulated_step(regulators, phi, theta, g, inner.alpha))
    return grads


def query_loss(
    loss_fn: LossFn,
    regulators: Regulators,
    theta: Params,
    phi: Params,
    task: Task,
    inner: InnerLoop,
    support_grads: Sequence[Params] | None = None,
) -> Tensor:
    """L(theta'_t, D_query_t): second order, or first order given ``support_grads``."""
    if inner.second_order:
        adapted = adapt(loss_fn, regulators, theta, phi, task.support, inner)
    else:
        if support_grads is None:
            raise ValueError("first-order query_loss needs the constant support gradients")
        adapted = dict(theta)
        for g in support_grads:
            adapted = regulated_step(regulators, phi, adapted, g, inner.alpha)
    return loss_fn(adapted, task.query)


@dataclass(frozen=True)
class Alignment:
    """Cosines between the support and query gradients, both at theta (before adaptation)."""

    regulated: float
    raw: float


@dataclass
class TaskResult:
    grad_theta: Params
    grad_phi: Params
    query_loss: float
    #: per task (one entry per task of the batch) when alignment was asked for
    alignments: list[Alignment] = field(default_factory=list)


def task_meta_gradients(
    loss_fn: LossFn,
    regulators: Regulators,
    theta: Params,
    phi: Params,
    task: Task,
    inner: InnerLoop,
    track_alignment: bool = False,
) -> TaskResult:
    """dL(theta'_t, D_query_t)/dtheta and /dphi for one task (and its Fig. 3b alignment)."""
    theta, phi = _detached(theta), _detached(phi)
    support_grads = None
    if not inner.second_order:
        support_grads = support_gradients(loss_fn, regulators, theta, phi, task.support, inner)
    alignments = []
    if track_alignment:
        first = support_grads[0] if support_grads else None
        alignments.append(gradient_alignment(loss_fn, regulators, theta, phi, task, first))

    def objective(theta_: Params, phi_: Params) -> Tensor:
        return query_loss(loss_fn, regulators, theta_, phi_, task, inner, support_grads)

    # The fused attention kernels (flash / memory-efficient) have no double backward: the
    # second-order term differentiates through attention's backward, so use the math kernel.
    kernels = sdpa_kernel(SDPBackend.MATH) if inner.second_order else contextlib.nullcontext()
    with kernels:
        (grad_theta, grad_phi), value = grad_and_value(objective, argnums=(0, 1))(theta, phi)
    return TaskResult(grad_theta, grad_phi, float(value), alignments)


def meta_gradients(
    loss_fn: LossFn,
    regulators: Regulators,
    theta: Params,
    phi: Params,
    tasks: Sequence[Task],
    inner: InnerLoop,
    track_alignment: bool = False,
) -> TaskResult:
    """Gradients of F = sum_t L(theta'_t, D_query_t) over a batch of tasks (Eq. 8-10).

    Summed one task at a time (the gradient of a sum is the sum of the gradients), so memory
    does not grow with B. ``query_loss`` of the result is the mean over tasks, for logging.
    """
    total_theta = {name: torch.zeros_like(t) for name, t in theta.items()}
    total_phi = {name: torch.zeros_like(t) for name, t in phi.items()}
    losses, alignments = [], []
    for task in tasks:
        result = task_meta_gradients(loss_fn, regulators, theta, phi, task, inner, track_alignment)
        for name, g in result.grad_theta.items():
            total_theta[name] += g
        for name, g in result.grad_phi.items():
            total_phi[name] += g
        losses.append(result.query_loss)
        alignments.extend(result.alignments)
    return TaskResult(total_theta, total_phi, sum(losses) / max(len(losses), 1), alignments)


def gradient_alignment(
    loss_fn: LossFn,
    regulators: Regulators,
    theta: Params,
    phi: Params,
    task: Task,
    support_grad: Params | None = None,
) -> Alignment:
    """The normalised gradient inner product of GRAM Fig. 3b, for one task.

    ``regulated`` = <R_phi(g_s), g_q> / (|R_phi(g_s)| |g_q|) with
    g_s = grad_theta L(theta, D_support), g_q = grad_theta L(theta, D_query), both taken at
    the current meta-parameters theta (before the update of this step) and flattened over
    all prompt tensors (text and visual together for UNIGRAM). This is the second term of
    Eq. 12 normalised to [-1, 1]: the quantity the paper argues meta-training increases.
    ``raw`` is the same cosine without the regulator, <g_s, g_q> / (|g_s| |g_q|).
    ``support_grad`` (g_s, when the caller has it) saves one gradient evaluation.
    """
    with torch.no_grad():
        theta, phi = _detached(theta), _detached(phi)
        g_support = support_grad if support_grad is not None else grad(loss_fn)(theta, task.support)
        g_query = grad(loss_fn)(theta, task.query)
        g_hat = regulate(regulators, phi, _detached(g_support))
    return Alignment(_cosine(g_hat, g_query), _cosine(g_support, g_query))


def _cosine(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> float:
    flat_a = torch.cat([a[name].reshape(-1) for name in sorted(a)])
    flat_b = torch.cat([b[name].reshape(-1) for name in sorted(a)])
    denominator = flat_a.norm() * flat_b.norm()
    return float((flat_a @ flat_b) / denominator) if denominator > 0 else 0.0


def _detached(params: Mapping[str, Tensor]) -> Params:
    return {name: t.detach() for name, t in params.items()}
