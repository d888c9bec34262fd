"""The typed params layer: bounds beside the fields, one message shape naming the key."""

import pytest

from pipeline.config import (
    EvaluateConfig,
    read,
    read_downstream,
    read_evaluate,
    read_features,
    read_protocols,
    read_tasks,
)
from pipeline.config.downstream import read_memory_cache_mb
from pipeline.errors import UserError
from pipeline.params import Bound, ParamError, check, check_choice, check_range


@pytest.mark.parametrize(
    "bound, value, problem",
    [
        (Bound(0, 1), -1, "must be >= 0"),
        (Bound(0, 1), 2, "must be <= 1"),
        (Bound(1, integer=True), 1.5, "must be an integer"),
        (Bound(1, integer=True), True, "must be an integer"),
        (Bound(0.0), "a", "must be a number"),
        (Bound(0.0), None, "must be set"),
        (Bound(choices=("eom", "leaf")), "x", "must be one of ['eom', 'leaf']"),
        (Bound(choices=(True, False)), 1, "must be one of [True, False]"),
    ],
)
def test_a_refused_value_says_why_and_names_the_key(bound, value, problem):
    with pytest.raises(ParamError) as error:
        check("finetune.methods.coop.train.lr", value, bound)
    assert str(error.value) == f"params.yaml: finetune.methods.coop.train.lr = {value!r}: {problem}"
    assert isinstance(error.value, UserError)


def test_accepted_values_pass_through():
    assert check("k", None, Bound(1, nullable=True)) is None
    assert check("k", None, Bound(choices=("english", None))) is None
    assert check_range("k", 3, 1, 3, integer=True) == 3
    assert check_choice("k", "eom", ("eom", "leaf")) == "eom"


def test_read_checks_each_field_and_refuses_unknown_keys():
    assert read(EvaluateConfig, {"batch_size": 8}, "evaluate") == EvaluateConfig(8, None)
    with pytest.raises(ParamError, match=r"evaluate.batch_size = 0: must be >= 1"):
        read(EvaluateConfig, {"batch_size": 0}, "evaluate")
    with pytest.raises(ParamError, match=r"evaluate.max_test_per_class = 0: must be >= 1"):
        read_evaluate({"evaluate": {"max_test_per_class": 0}})
    with pytest.raises(ParamError, match="evaluate.batchsize is not one of"):
        read(EvaluateConfig, {"batchsize": 8}, "evaluate")
    with pytest.raises(ParamError, match="features.workers is not one of"):
        read_features({"features": {"workers": 2}})
    assert read_memory_cache_mb({}) == 0 and read_memory_cache_mb({"finetune": {}}) == 0
    with pytest.raises(ParamError, match=r"finetune.memory_cache_mb = -1: must be >= 0"):
        read_memory_cache_mb({"finetune": {"memory_cache_mb": -1}})
    with pytest.raises(ParamError, match=r"tasks.ways = 1: must be >= 2"):
        read_tasks({"tasks": {"ways": 1}})
    with pytest.raises(ParamError, match=r"evaluate.few_shot.shots\[1\] = 0: must be >= 1"):
        read_protocols({"shots": 2, "datasets": [], "evaluate": {"few_shot": {"shots": [1, 0]}}})


def test_a_finetune_stage_reads_every_key_before_any_work():
    params = {
        "shots": 2,
        "seeds": [1],
        "datasets": ["a"],
        "data": {"root": "data", "own": {"a": {}}},
        "finetune": {
            "train": {},
            "augment": {"views": 2, "seed": 0},
            "methods": {"coop": {"learner": "coop"}},
        },
        "evaluate": {"batch_size": 16},
    }
    config = read_downstream(params, "coop", 1, "main")
    assert config.method.learner == "coop" and config.augment.views == 2
    assert list(config.dataset_specs) == ["a"]
    with pytest.raises(ParamError, match=r"seeds\[\] = -1: must be >= 0"):
        read_downstream(params, "coop", -1, "main")
    params["finetune"]["augment"]["views"] = -1
    with pytest.raises(ParamError, match=r"finetune.augment.views = -1: must be >= 0"):
        read_downstream(params, "coop", 1, "main")


def test_few_shot_epochs_follow_shots_and_a_dataset_entry_wins():
    from pipeline.config import read_few_shot_epochs

    few = {
        "shots": [1, 2, 4, 8, 16],
        "epochs": [50, 100, 100, 200, 200],
        "epochs_by_dataset": {"ImageNet": 50},
    }
    epochs = read_few_shot_epochs({"evaluate": {"few_shot": few}})
    assert [epochs.epochs("DTD", k) for k in (1, 2, 4, 8, 16)] == [50, 100, 100, 200, 200]
    assert [epochs.epochs("ImageNet", k) for k in (1, 16)] == [50, 50]
    assert read_few_shot_epochs({"evaluate": {"few_shot": {"shots": [1]}}}).epochs("a", 1) is None
    few["epochs"] = [50, 100]
    with pytest.raises(ParamError, match=r"evaluate.few_shot.epochs = \[50, 100\]: must be a list"):
        read_few_shot_epochs({"evaluate": {"few_shot": few}})
    few["epochs"] = [50, 100, 100, 200, 0]
    with pytest.raises(ParamError, match=r"evaluate.few_shot.epochs\[4\] = 0: must be >= 1"):
        read_few_shot_epochs({"evaluate": {"few_shot": few}})


def test_a_few_shot_run_trains_for_its_epochs_and_other_parts_keep_the_rows():
    params = {
        "shots": 2,
        "seeds": [1],
        "datasets": ["a"],
        "data": {"root": "data", "own": {"a": {}}},
        "finetune": {
            "train": {"epochs": 3},
            "augment": {},
            "methods": {"coop": {"learner": "coop"}},
        },
        "evaluate": {"few_shot": {"shots": [1, 2], "datasets": ["a"], "epochs": [5, 7]}},
    }
    few_shot = read_downstream(params, "coop", 1, "few_shot")
    assert [few_shot.run_train(run).epochs for run in few_shot.protocols.runs("few_shot")] == [5, 7]
    main = read_downstream(params, "coop", 1, "main")
    assert {main.run_train(run).epochs for run in main.protocols.runs("main")} == {3}
