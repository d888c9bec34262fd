"""Tables with mean ± std, the negative controls kept out of averages, the linear-probe row,
metrics/headline.json and the CSV files the paper's plots read."""

import numpy as np
import pytest

from pipeline.aggregation import aggregate, headline
from pipeline.data import harmonic_mean
from pipeline.figures import few_shot_rows, finetune_curve_rows, table1_rows
from pipeline.protocol import Protocols
from pipeline.report import DIFFERENCE_RULE, ROW_LABELS, tables_markdown

PROTOCOLS = Protocols(
    datasets=("a", "b", "chance"),
    shots=16,
    cross_source="a",
    cross_targets=("b", "chance"),
    few_shot_shots=(1, 4),
    few_shot_datasets=("a", "b"),
)


def _run(base, new, few):
    return {
        "base2new": {
            "a": {"base": base, "new": new},
            "b": {"base": base + 10, "new": new + 10},
            "chance": {"base": 20.0, "new": 20.0},
        },
        "cross_dataset": {"a": base, "b": new, "chance": 10.0},
        "few_shot": {"1": {"a": few, "b": few}, "4": {"a": few + 5, "b": few + 5}},
    }


def _probe(base):
    return {
        "base2new": {"a": {"base": base}, "b": {"base": base}, "chance": {"base": 30.0}},
        "cross_dataset": {"a": base},
        "few_shot": {"1": {"a": base, "b": base}, "4": {"a": base, "b": base}},
    }


#: std over seeds of each seed's own H (seed 1: base 65, new 45; seed 2: 75, 55)
H_STD = round(float(np.std([harmonic_mean(65.0, 45.0), harmonic_mean(75.0, 55.0)])), 2)


@pytest.fixture()
def metrics():
    results = {
        "coop": {1: _run(60.0, 40.0, 50.0), 2: _run(70.0, 50.0, 60.0)},
        "zeroshot": {1: _run(50.0, 50.0, 45.0), 2: _run(50.0, 50.0, 45.0)},
        "linear_probe": {1: _probe(80.0), 2: _probe(90.0)},
    }
    return aggregate(results, PROTOCOLS, controls=["chance"]).as_json([1, 2])


def test_negative_controls_are_kept_out_of_every_average(metrics):
    coop = metrics["base2new"]["coop"]
    assert coop["average"]["base"] == 70.0  # (65 + 75) / 2, not counting "chance"
    assert coop["average"]["new"] == 50.0
    assert coop["average"]["h"] == round(harmonic_mean(70.0, 50.0), 2)
    assert coop["chance"]["base"] == 20.0  # still reported on its own
    assert metrics["cross_dataset"]["coop"]["average"] == 45.0  # target b only (new: 40, 50)
    assert metrics["std"]["base2new"]["coop"]["average"]["base"] == 5.0


def test_the_probe_has_base_only_and_its_average(metrics):
    probe = metrics["base2new"]["linear_probe"]
    assert probe["a"] == {"base": 85.0}
    assert probe["average"] == {"base": 85.0}
    assert metrics["cross_dataset"]["linear_probe"] == {"a": 85.0}
    assert metrics["few_shot"]["linear_probe"]["4"]["average"] == 85.0


def test_every_cell_is_mean_plus_minus_std_and_controls_get_their_own_section(metrics):
    text = tables_markdown(metrics, PROTOCOLS, controls=["chance"])
    assert DIFFERENCE_RULE in text
    assert "(a) Average over 2 datasets" in text
    assert "| CoOp | 70.00 ± 5.00 | 50.00 ± 5.00 | 58.33 ± 5.14 |" in text
    assert "| Linear probe | 85.00 ± 5.00 | n/a | n/a |" in text
    control = text.index("### Negative controls (not in the averages)")
    assert text.index("(d) chance") > control > text.index("(c) b")
    assert "| Source: a | b | chance (control) | Average |" in text
    assert "| Linear probe | 85.00 ± 5.00 | n/a | n/a | n/a |" in text
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    assert lines[-1].startswith("| Linear probe")  # the probe is the last row


def test_headline_holds_each_rows_base_to_new_average(metrics):
    rows = ["zeroshot", "coop", "linear_probe"]
    assert headline(metrics, rows) == {
        "zeroshot": {"base": 55.0, "new": 55.0, "h": 55.0},
        "coop": {"base": 70.0, "new": 50.0, "h": round(harmonic_mean(70.0, 50.0), 2)},
        "linear_probe": {"base": 85.0},
    }


def _label(method):
    return ROW_LABELS.get(method, method)


def test_plot_rows_carry_mean_and_std_per_series(metrics):
    bars = table1_rows(metrics, ["zeroshot", "coop", "linear_probe"], _label)
    assert bars[3:6] == [
        ["CoOp", "base", 70.0, 5.0],
        ["CoOp", "new", 50.0, 5.0],
        ["CoOp", "H", 58.33, H_STD],
    ]
    assert bars[6] == ["Linear probe", "base", 85.0, 5.0] and len(bars) == 7
    curve = few_shot_rows(metrics, ["coop", "linear_probe"], PROTOCOLS, _label, ["chance"])
    assert curve[0] == ["average", "CoOp", "prompt", 1, 55.0, 5.0]
    assert ["average", "Linear probe", "reference", 4, 85.0, 5.0] in curve
    assert {row[0] for row in curve} == {"average", "a", "b"}


def test_finetune_curves_average_the_seeds_that_all_logged_an_epoch(tmp_path):
    for seed, losses in ((1, [2.0, 1.0, 0.5]), (2, [4.0, 3.0])):
        folder = tmp_path / "coop" / f"seed{seed}" / "main" / "base2new-a" / "plots" / "metrics"
        (folder / "train").mkdir(parents=True)
        lines = ["step\tloss"] + [f"{i}\t{v}" for i, v in enumerate(losses)]
        (folder / "train" / "loss.tsv").write_text("\n".join(lines) + "\n")
    rows = finetune_curve_rows(tmp_path, ["coop", "zeroshot"], [1, 2], "loss", _label)
    assert rows == [
        ["base2new-a", "CoOp", "prompt", 1, 3.0],
        ["base2new-a", "CoOp", "prompt", 2, 2.0],
    ]
    assert finetune_curve_rows(tmp_path, ["coop"], [1, 2, 3], "loss", _label) == []
    assert np.isclose(rows[0][-1], np.mean([2.0, 4.0]))
