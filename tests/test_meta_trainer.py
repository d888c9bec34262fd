"""Outer loop: optimiser wiring, exact resume from checkpoints, dvclive curves."""

import json

import pytest
import torch

from pipeline.meta.gram import InnerLoop, Task, meta_gradients
from pipeline.meta.regulator import build_regulators
from pipeline.meta.trainer import MetaTrainer, run

M, D = 2, 3


def softmax_loss(params, batch):
    x, y = batch
    return torch.nn.functional.cross_entropy(x @ params["p"].t(), y)


def random_tasks(seed, count):
    """``count`` tasks of 4 support and 6 query points, drawn from their own generator."""
    g = torch.Generator().manual_seed(seed)
    return [
        Task(
            (torch.randn(4, D, generator=g), torch.randint(0, M, (4,), generator=g)),
            (torch.randn(6, D, generator=g), torch.randint(0, M, (6,), generator=g)),
        )
        for _ in range(count)
    ]


def batches(step):
    """Deterministic in the step alone, as run() requires."""
    return random_tasks(1000 + step, 2)


def held_out():
    """Fixed meta-validation tasks (their own generator: never the training batches')."""
    return random_tasks(77, 3)


def run_logged(trainer, live_dir, checkpoint, steps=6, **options):
    """``run`` with checkpoints every 2 steps and its curves in a dvclive folder."""
    from dvclive import Live

    with Live(str(live_dir), save_dvc_exp=False, dvcyaml=None) as live:
        run(
            trainer,
            batches,
            steps,
            checkpoint,
            "cfg",
            checkpoint_every=2,
            live=live,
            progress=False,
            **options,
        )


def make_trainer(optimizer="adam", mode="gram", second_order=False):
    torch.manual_seed(0)
    theta = {"p": 0.02 * torch.randn(M, D)}
    regs = build_regulators(theta, init="identity", eps=0.01)
    return MetaTrainer(
        softmax_loss,
        theta,
        regs,
        InnerLoop(alpha=0.5, steps=1, second_order=second_order),
        optimizer=optimizer,
        lr_theta=0.05,
        lr_phi=0.01,
        mode=mode,
    )


def test_sgd_outer_step_is_equations_8_and_9():
    trainer = make_trainer(optimizer="sgd")
    theta = {n: t.detach().clone() for n, t in trainer.theta.items()}
    phi = {n: t.detach().clone() for n, t in trainer.phi().items()}
    tasks = batches(0)
    expected = meta_gradients(softmax_loss, trainer.regulators, theta, phi, tasks, trainer.inner)
    trainer.train_step(tasks)
    torch.testing.assert_close(
        trainer.theta["p"].detach(), theta["p"] - 0.05 * expected.grad_theta["p"]
    )
    for name, value in trainer.phi().items():
        torch.testing.assert_close(value.detach(), phi[name] - 0.01 * expected.grad_phi[name])
    assert any(not torch.equal(trainer.phi()[n], phi[n]) for n in phi)  # phi did move


def test_pretrain_mode_leaves_phi_alone_and_fits_theta():
    trainer = make_trainer(mode="pretrain")
    phi = {n: t.detach().clone() for n, t in trainer.phi().items()}
    losses = [trainer.train_step(batches(0))["train_loss"] for _ in range(30)]
    assert losses[-1] < losses[0]
    for name, value in trainer.phi().items():
        assert torch.equal(value.detach(), phi[name])


@pytest.mark.parametrize("second_order", [False, True])
def test_resume_gives_identical_parameters_and_curves(tmp_path, second_order):
    straight = make_trainer(second_order=second_order)
    run_logged(straight, tmp_path / "live_a", tmp_path / "a.pt")

    first = make_trainer(second_order=second_order)
    run_logged(first, tmp_path / "live_b", tmp_path / "b.pt", stop_after=3)
    assert first.step == 3
    resumed = make_trainer(second_order=second_order)  # a fresh process, same config
    run_logged(resumed, tmp_path / "live_b", tmp_path / "b.pt")
    assert resumed.step == 6
    assert torch.equal(resumed.theta["p"], straight.theta["p"])
    for name, value in straight.phi().items():
        assert torch.equal(resumed.phi()[name], value)
    assert resumed.history == straight.history
    assert resumed.optimizer.state_dict()["state"][0]["step"] == 6
    curve_a = (tmp_path / "live_a/plots/metrics/query_loss.tsv").read_text()
    curve_b = (tmp_path / "live_b/plots/metrics/query_loss.tsv").read_text()
    strip = lambda text: [line.split("\t")[1:] for line in text.splitlines()]  # noqa: E731
    assert strip(curve_a) == strip(curve_b)  # columns after the wall-clock timestamp
    summary = json.loads((tmp_path / "live_b/metrics.json").read_text())
    assert summary["step"] == 5


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    trainer = make_trainer()
    run(trainer, batches, 2, tmp_path / "c.pt", "config-1", progress=False)
    other = make_trainer()
    run(other, batches, 1, tmp_path / "c.pt", "config-2", progress=False)
    assert other.step == 1


def test_validation_is_the_query_loss_after_the_regulated_step_and_changes_nothing():
    from pipeline.meta.gram import regulate

    trainer = make_trainer()
    trainer.train_step(batches(0))  # a non-trivial optimiser state and phi
    theta = {n: t.detach().clone() for n, t in trainer.theta.items()}
    phi = {n: t.detach().clone() for n, t in trainer.phi().items()}
    optimizer = trainer.optimizer.state_dict()["state"][0]["exp_avg"].clone()
    rng = torch.get_rng_state()
    value = trainer.validate(held_out())
    expected = []
    for task in held_out():
        p = theta["p"].clone().requires_grad_()
        (g,) = torch.autograd.grad(softmax_loss({"p": p}, task.support), p)
        g_hat = regulate(trainer.regulators, phi, {"p": g})["p"]
        expected.append(float(softmax_loss({"p": theta["p"] - 0.5 * g_hat}, task.query)))
    assert value == pytest.approx(sum(expected) / 3, rel=1e-6)
    assert trainer.validation == {1: value}
    assert torch.equal(trainer.theta["p"], theta["p"])
    assert all(torch.equal(trainer.phi()[n], phi[n]) for n in phi)
    assert torch.equal(trainer.optimizer.state_dict()["state"][0]["exp_avg"], optimizer)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(p.grad is None or not p.grad.isnan().any() for p in trainer.theta.values())


def test_validating_leaves_training_unchanged_and_is_deterministic(tmp_path):
    plain = make_trainer()
    run(plain, batches, 5, progress=False)
    runs = []
    for _ in range(2):
        trainer = make_trainer()
        run(trainer, batches, 5, val_tasks=held_out, val_every=2, progress=False)
        runs.append(trainer)
    assert torch.equal(runs[0].theta["p"], plain.theta["p"])
    assert runs[0].history == plain.history
    assert sorted(runs[0].validation) == [0, 2, 4, 5]  # every 2 steps, and the final theta*
    assert runs[0].validation == runs[1].validation
    assert runs[0].validation[5] != runs[0].validation[0]  # measured at the moving theta


def test_resume_keeps_the_validation_curve(tmp_path):
    straight = make_trainer()
    run_logged(straight, tmp_path / "a", tmp_path / "a.pt", val_tasks=held_out, val_every=2)
    for stop in (3, None):  # interrupted, then resumed by a fresh process
        resumed = make_trainer()
        run_logged(
            resumed,
            tmp_path / "b",
            tmp_path / "b.pt",
            val_tasks=held_out,
            val_every=2,
            stop_after=stop,
        )
    assert resumed.validation == straight.validation
    assert sorted(resumed.validation) == [0, 2, 4, 6]
    strip = lambda text: [line.split("\t")[1:] for line in text.splitlines()]  # noqa: E731
    for curve in ("val_query_loss", "query_loss"):
        a = (tmp_path / f"a/plots/metrics/{curve}.tsv").read_text()
        b = (tmp_path / f"b/plots/metrics/{curve}.tsv").read_text()
        assert strip(a) == strip(b)
    rows = (tmp_path / "a/plots/metrics/val_query_loss.tsv").read_text().splitlines()
    assert [row.split("\t")[0] for row in rows] == ["step", "0", "2", "4", "6"]
