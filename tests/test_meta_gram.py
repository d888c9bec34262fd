"""Exact checks of R_phi and of the first/second-order meta-gradients on tiny problems."""

import math

import pytest
import torch

from pipeline.meta.gram import (
    InnerLoop,
    Task,
    adapt,
    gradient_alignment,
    meta_gradients,
    query_loss,
    support_gradients,
)
from pipeline.meta.regulator import (
    GradientRegulator,
    IdentityRegulator,
    Regulators,
    build_regulators,
)

M, D = 2, 3  # prompt tokens x width


def quadratic(params, batch):
    """0.5 th^T A th + b^T th on the flattened prompt (batch = (A, b))."""
    A, b = batch
    theta = params["p"].reshape(-1)
    return 0.5 * theta @ A @ theta + b @ theta


def distance(params, batch):
    """0.5 ||th - c||^2 (batch = c)."""
    return 0.5 * ((params["p"].reshape(-1) - batch) ** 2).sum()


def split_loss(params, batch):
    """Quadratic support loss, distance query loss, told apart by the batch type."""
    return quadratic(params, batch) if isinstance(batch, tuple) else distance(params, batch)


def softmax_loss(params, batch):
    """A tiny nonlinear loss: cross-entropy of x @ p^T over M classes."""
    x, y = batch
    return torch.nn.functional.cross_entropy(x @ params["p"].t(), y)


def random_problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    n = M * D
    R = torch.randn(n, n, generator=g, dtype=torch.float64)
    A = R @ R.t() / n + torch.eye(n, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    c = torch.randn(n, generator=g, dtype=torch.float64)
    theta = {"p": torch.randn(M, D, generator=g, dtype=torch.float64)}
    return A, b, c, theta


def test_regulator_matches_equations_5_6_with_paper_layout():
    torch.manual_seed(0)
    reg = GradientRegulator((M, D), init="random", bias="token").double()
    g = torch.randn(M, D, dtype=torch.float64)
    # the paper's d x M layout: gamma = tanh(W g + b) with W d x d acting on columns
    g_paper = g.t()
    gamma = torch.tanh(reg.W_gamma @ g_paper + reg.b_gamma.t())
    beta = torch.tanh(reg.W_beta @ g_paper + reg.b_beta.t())
    expected = (gamma * g_paper + beta).t()
    torch.testing.assert_close(reg(g), expected, rtol=0, atol=1e-12)


def test_regulator_channel_dim_first_for_pixel_prompts():
    torch.manual_seed(0)
    reg = GradientRegulator((3, 4, 5), channel_dim=0, init="random").double()
    g = torch.randn(3, 4, 5, dtype=torch.float64)
    pixels = g.reshape(3, -1).t()  # one token per pixel, d = 3 channels
    gamma = torch.tanh(pixels @ reg.W_gamma.t() + reg.b_gamma)
    beta = torch.tanh(pixels @ reg.W_beta.t() + reg.b_beta)
    expected = (gamma * pixels + beta).t().reshape(3, 4, 5)
    torch.testing.assert_close(reg(g), expected, rtol=0, atol=1e-12)
    assert reg.W_gamma.shape == (3, 3)


def test_near_identity_init_makes_the_inner_step_plain_sgd():
    eps, alpha = 1e-4, 0.1
    A, b, _, theta = random_problem()
    regs = build_regulators(theta, init="identity", eps=eps).double()
    phi = regs.phi()
    assert torch.all(phi["regulators.p.W_gamma"] == 0)
    assert torch.all(phi["regulators.p.b_beta"] == 0)
    g = torch.func.grad(quadratic)(theta, (A, b))
    # gamma = 1 - eps and beta = 0 exactly (up to tanh(atanh(.)) rounding)
    torch.testing.assert_close(regs(g)["p"], (1 - eps) * g["p"], rtol=1e-6, atol=0)
    adapted = adapt(quadratic, regs, theta, phi, (A, b), InnerLoop(alpha=alpha))
    sgd = theta["p"] - alpha * g["p"]
    gap = (adapted["p"] - sgd).abs().max().item()
    assert gap <= 1.01 * alpha * eps * g["p"].abs().max().item()
    assert gap > 0  # tanh bounds gamma below 1: never exactly the identity


def test_identity_regulator_is_exactly_sgd():
    A, b, _, theta = random_problem(1)
    regs = build_regulators(theta, kind="identity")
    assert regs.phi() == {}
    g = torch.func.grad(quadratic)(theta, (A, b))
    adapted = adapt(quadratic, regs, theta, {}, (A, b), InnerLoop(alpha=0.3, steps=1))
    assert torch.equal(adapted["p"], theta["p"] - 0.3 * g["p"])


@pytest.mark.parametrize("regulator", ["identity", "near_identity"])
def test_second_order_differs_from_first_order_by_the_hessian_term(regulator):
    """L_s = 0.5 th'A th + b'th, L_q = 0.5|th - c|^2, one inner step:
    th' = th - a*k*(A th + b) with R(g) = k g (k = 1, or 1 - eps for the near-identity R);
    second order d/dth L_q(th') = (I - a k A)^T (th' - c), first order = th' - c."""
    alpha, eps = 0.05, 1e-3
    A, b, c, theta = random_problem(2)
    if regulator == "identity":
        regs, k = Regulators({"p": IdentityRegulator()}), 1.0
    else:
        regs = build_regulators(theta, init="identity", eps=eps).double()
        # gamma as stored (b_gamma is initialised in float32, so not exactly 1 - eps)
        k = float(torch.tanh(regs.phi()["regulators.p.b_gamma"][0].detach()))
        assert k == pytest.approx(1 - eps, rel=1e-6)
    phi = {n: t.detach() for n, t in regs.phi().items()}
    task = Task(support=(A, b), query=c)
    th = theta["p"].reshape(-1)
    adapted = th - alpha * k * (A @ th + b)
    first = meta_gradients(split_loss, regs, theta, phi, [task], InnerLoop(alpha, 1, False))
    second = meta_gradients(split_loss, regs, theta, phi, [task], InnerLoop(alpha, 1, True))
    eye = torch.eye(M * D, dtype=torch.float64)
    torch.testing.assert_close(
        first.grad_theta["p"].reshape(-1), adapted - c, rtol=1e-10, atol=1e-12
    )
    torch.testing.assert_close(
        second.grad_theta["p"].reshape(-1),
        (eye - alpha * k * A).t() @ (adapted - c),
        rtol=1e-10,
        atol=1e-12,
    )
    hessian_term = -alpha * k * A.t() @ (adapted - c)
    torch.testing.assert_close(
        (second.grad_theta["p"] - first.grad_theta["p"]).reshape(-1),
        hessian_term,
        rtol=1e-9,
        atol=1e-12,
    )
    assert first.query_loss == pytest.approx(0.5 * float(((adapted - c) ** 2).sum()), rel=1e-12)


def _objective_by_finite_differences(loss_fn, regs, theta, phi, task, inner, h=1e-6):
    names, grads = list(phi), {}
    for name in names:
        fd = torch.zeros_like(phi[name])
        for index in range(phi[name].numel()):
            values = []
            for sign in (1, -1):
                shifted = {n: t.clone() for n, t in phi.items()}
                shifted[name].view(-1)[index] += sign * h
                exact = InnerLoop(inner.alpha, inner.steps, True)  # the true objective
                values.append(float(query_loss(loss_fn, regs, theta, shifted, task, exact)))
            fd.view(-1)[index] = (values[0] - values[1]) / (2 * h)
        grads[name] = fd
    return grads


def _softmax_task(seed):
    g = torch.Generator().manual_seed(seed)
    xs, ys = torch.randn(5, D, generator=g, dtype=torch.float64), torch.tensor([0, 1, 1, 0, 1])
    xq = torch.randn(7, D, generator=g, dtype=torch.float64)
    yq = torch.tensor([1, 0, 0, 1, 1, 0, 1])
    theta = {"p": torch.randn(M, D, generator=g, dtype=torch.float64)}
    return theta, Task(support=(xs, ys), query=(xq, yq))


@pytest.mark.parametrize("bias", ["shared", "token"])
def test_phi_first_order_gradient_matches_finite_differences(bias):
    """With one inner step the support gradient does not depend on phi, so the first-order
    phi gradient is the exact derivative of the meta-objective."""
    torch.manual_seed(3)
    theta, task = _softmax_task(4)
    regs = build_regulators(theta, init="random", bias=bias).double()
    phi = {n: t.detach() for n, t in regs.phi().items()}
    inner = InnerLoop(alpha=0.5, steps=1, second_order=False)
    result = meta_gradients(softmax_loss, regs, theta, phi, [task], inner)
    fd = _objective_by_finite_differences(softmax_loss, regs, theta, phi, task, inner)
    for name in phi:
        torch.testing.assert_close(result.grad_phi[name], fd[name], rtol=1e-6, atol=1e-8)


def test_second_order_gradients_match_finite_differences_with_two_inner_steps():
    torch.manual_seed(5)
    theta, task = _softmax_task(6)
    regs = build_regulators(theta, init="random").double()
    phi = {n: t.detach() for n, t in regs.phi().items()}
    inner = InnerLoop(alpha=0.5, steps=2, second_order=True)
    result = meta_gradients(softmax_loss, regs, theta, phi, [task], inner)
    fd_phi = _objective_by_finite_differences(softmax_loss, regs, theta, phi, task, inner)
    for name in phi:
        torch.testing.assert_close(result.grad_phi[name], fd_phi[name], rtol=1e-6, atol=1e-8)
    h, fd_theta = 1e-6, torch.zeros_like(theta["p"])
    for index in range(theta["p"].numel()):
        values = []
        for sign in (1, -1):
            shifted = {"p": theta["p"].clone()}
            shifted["p"].view(-1)[index] += sign * h
            values.append(float(query_loss(softmax_loss, regs, shifted, phi, task, inner)))
        fd_theta.view(-1)[index] = (values[0] - values[1]) / (2 * h)
    torch.testing.assert_close(result.grad_theta["p"], fd_theta, rtol=1e-6, atol=1e-8)


def test_first_order_trajectory_equals_second_order_values():
    """Both orders adapt to the same theta' (only the derivative differs)."""
    torch.manual_seed(7)
    theta, task = _softmax_task(8)
    regs = build_regulators(theta, init="random").double()
    phi = {n: t.detach() for n, t in regs.phi().items()}
    fo, so = InnerLoop(0.3, 3, False), InnerLoop(0.3, 3, True)
    grads = support_gradients(softmax_loss, regs, theta, phi, task.support, fo)
    assert len(grads) == 3
    first = query_loss(softmax_loss, regs, theta, phi, task, fo, grads)
    second = query_loss(softmax_loss, regs, theta, phi, task, so)
    assert float(first) == pytest.approx(float(second), rel=1e-12)


def test_meta_gradients_sum_over_tasks():
    torch.manual_seed(9)
    theta, task_a = _softmax_task(10)
    _, task_b = _softmax_task(11)
    regs = build_regulators(theta, init="random").double()
    phi = {n: t.detach() for n, t in regs.phi().items()}
    inner = InnerLoop(0.2, 1, True)
    both = meta_gradients(softmax_loss, regs, theta, phi, [task_a, task_b], inner)
    a = meta_gradients(softmax_loss, regs, theta, phi, [task_a], inner)
    b = meta_gradients(softmax_loss, regs, theta, phi, [task_b], inner)
    torch.testing.assert_close(both.grad_theta["p"], a.grad_theta["p"] + b.grad_theta["p"])
    for name in phi:
        torch.testing.assert_close(both.grad_phi[name], a.grad_phi[name] + b.grad_phi[name])
    assert both.query_loss == pytest.approx((a.query_loss + b.query_loss) / 2)


def test_gradient_alignment_is_the_cosine_of_regulated_support_and_query_gradients():
    A, b, c, theta = random_problem(12)
    task = Task(support=(A, b), query=c)
    th = theta["p"].reshape(-1)
    g_s, g_q = A @ th + b, th - c
    cosine = float(g_s @ g_q / (g_s.norm() * g_q.norm()))
    plain = Regulators({"p": IdentityRegulator()})
    identity = gradient_alignment(split_loss, plain, theta, {}, task)
    assert identity.regulated == pytest.approx(cosine, rel=1e-12)
    assert identity.raw == pytest.approx(cosine, rel=1e-12)
    # a regulator with gamma = -1 (b_gamma -> -inf) and beta = 0 flips the direction
    regs = build_regulators(theta, init="identity").double()
    phi = {n: t.detach().clone() for n, t in regs.phi().items()}
    phi["regulators.p.b_gamma"].fill_(-math.atanh(1 - 1e-12))
    flipped = gradient_alignment(split_loss, regs, theta, phi, task)
    assert flipped.regulated == pytest.approx(-cosine, rel=1e-9)
    assert flipped.raw == pytest.approx(cosine, rel=1e-12)


@pytest.mark.parametrize("second_order", [False, True])
def test_tracked_alignment_equals_the_direct_measurement(second_order):
    torch.manual_seed(13)
    theta, task = _softmax_task(14)
    regs = build_regulators(theta, init="random").double()
    phi = {n: t.detach() for n, t in regs.phi().items()}
    inner = InnerLoop(0.3, 2, second_order)
    result = meta_gradients(softmax_loss, regs, theta, phi, [task, task], inner, True)
    direct = gradient_alignment(softmax_loss, regs, theta, phi, task)
    assert len(result.alignments) == 2
    assert result.alignments[0].regulated == pytest.approx(direct.regulated, rel=1e-12)
    assert result.alignments[0].raw == pytest.approx(direct.raw, rel=1e-12)
    assert direct.regulated != pytest.approx(direct.raw)  # the random R changes the direction
