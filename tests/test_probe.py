"""The linear-probe row (CoOp Sec. 4.1): exact on separable data, C chosen on val only,
deterministic, and reported only where the test classes are the training classes."""

import zlib

import numpy as np
import pytest

from pipeline.probe import fit_probe, l2_normalise, probe_part
from pipeline.protocol import Protocols, evaluation_split, run_training_split
from tests.test_evaluation import fake_dataset


def _clusters(rng, centres, per_class, spread):
    x = np.concatenate([c + spread * rng.standard_normal((per_class, len(c))) for c in centres])
    return x, np.repeat(np.arange(len(centres)), per_class)


def test_a_separable_problem_is_solved_exactly_and_predictions_follow_the_classes():
    rng = np.random.default_rng(0)
    centres = 3.0 * np.eye(4)
    train, train_y = _clusters(rng, centres, 5, 0.1)
    val, val_y = _clusters(rng, centres, 2, 0.1)
    test, test_y = _clusters(rng, centres, 7, 0.1)
    probe = fit_probe(train, train_y, val, val_y, [0.1, 1.0, 10.0])
    assert probe.val_percent == 100.0
    assert probe.c == 0.1  # ties go to the first (strongest regularisation)
    assert probe.percent(test, test_y) == 100.0
    # the centres themselves, at any scale (features are L2-normalised first)
    assert list(probe.model.predict(l2_normalise(centres * 7.0))) == [0, 1, 2, 3]
    assert probe.percent(test, (test_y + 1) % 4) == 0.0


def test_c_is_chosen_on_val_and_refitting_gives_identical_weights():
    rng = np.random.default_rng(1)
    centres = np.eye(3) + 0.3
    train, train_y = _clusters(rng, centres, 8, 0.5)
    val, val_y = _clusters(rng, centres, 30, 0.5)
    grid = [1e-4, 1.0, 100.0]
    probe = fit_probe(train, train_y, val, val_y, grid)
    scores = {}
    for c in grid:
        single = fit_probe(train, train_y, val, val_y, [c])
        scores[c] = single.val_percent
    assert probe.val_percent == max(scores.values())
    assert probe.c == next(c for c in grid if scores[c] == max(scores.values()))
    again = fit_probe(train, train_y, val, val_y, grid)
    assert np.array_equal(again.model.coef_, probe.model.coef_)
    assert np.array_equal(again.model.intercept_, probe.model.intercept_)


def test_bad_inputs_are_refused():
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="c_grid is empty"):
        fit_probe(x, [0, 1], x, [0, 1], [])
    with pytest.raises(ValueError, match="two classes"):
        fit_probe(x, [0, 0], x, [0, 0], [1.0])


def _features_of(items):
    """A separable feature per image: its original class (by name) plus a fixed jitter."""
    rows = []
    for item in items:
        label = int(item.classname.removeprefix("class"))
        jitter = np.random.default_rng(zlib.crc32(str(item.path).encode())).standard_normal(6)
        rows.append(4.0 * np.eye(6)[label] + 0.2 * jitter)
    return np.stack(rows)


def _probe(seed):
    datasets = {"fake": fake_dataset(n_classes=6, per_class=6), "other": fake_dataset(3, 4)}
    protocols = Protocols(
        datasets=("fake",),
        shots=2,
        cross_source="fake",
        cross_targets=("other",),
        few_shot_shots=(1, 2),
        few_shot_datasets=("fake",),
    )
    out = {}
    for part in ("main", "few_shot"):
        out[part] = probe_part(
            protocols,
            part,
            lambda run: run_training_split(datasets[run.dataset], run, seed),
            lambda run, e: evaluation_split(datasets[e.dataset], e),
            _features_of,
            [0.1, 10.0],
        )
    return out


def test_the_probe_is_reported_only_on_its_training_classes_and_is_deterministic():
    out = _probe(seed=1)
    results, runs = out["main"]
    assert results == {"base2new": {"fake": {"base": 100.0}}, "cross_dataset": {"fake": 100.0}}
    assert set(runs) == {"base2new-fake", "source-fake"}  # no new classes, no other dataset
    assert runs["base2new-fake"]["c"] in (0.1, 10.0)
    few, _ = out["few_shot"]
    assert few == {"few_shot": {"1": {"fake": 100.0}, "2": {"fake": 100.0}}}
    assert _probe(seed=1) == out


@pytest.mark.parametrize(
    ("grid", "message"),
    [([], "non-empty list"), ([1, 0], r"c_grid\[1\] = 0 is not > 0"), (["x"], r"c_grid\[0\]")],
)
def test_a_bad_c_grid_is_named_in_the_error(grid, message):
    from pipeline.config import read_c_grid
    from pipeline.params import ParamError

    with pytest.raises(ParamError, match=message):
        read_c_grid({"evaluate": {"linear_probe": {"c_grid": grid}}})
    assert read_c_grid({"evaluate": {"linear_probe": {"c_grid": [1, 10]}}}) == [1.0, 10.0]


def test_negative_controls_must_be_dataset_names():
    from pipeline.config import read_negative_controls
    from pipeline.params import ParamError

    assert read_negative_controls({"evaluate": {"negative_controls": ["digits"]}}) == ["digits"]
    assert read_negative_controls({"evaluate": {}}) == []
    with pytest.raises(ParamError, match="evaluate.negative_controls"):
        read_negative_controls({"evaluate": {"negative_controls": "digits"}})
