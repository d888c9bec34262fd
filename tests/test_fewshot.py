"""Few-shot sampling (CoOp semantics), the base/new split and its harmonic mean."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from pipeline.data import (
    DatasetError,
    DatasetSplits,
    Datum,
    few_shot_splits,
    harmonic_mean,
    load_dataset,
    sample_few_shot,
    spec_from_config,
    split_base_new,
    subsample_classes,
    subsample_classnames,
)
from tests.coop_fakes import make_json_dataset

CLASSES = ["c0", "c1", "c2", "c3", "c4"]


def items(split: str, per_class: int) -> list[Datum]:
    # Interleaved, so that the order of first appearance is not the label order.
    return [
        Datum(Path(f"/data/{CLASSES[c]}/{split}_{i}.png"), c, CLASSES[c])
        for i in range(per_class)
        for c in (2, 0, 4, 1, 3)
    ]


def dataset(per_class=(20, 10, 6), val_is_test=False) -> DatasetSplits:
    train, val, test = (
        items(s, n) for s, n in zip(("train", "val", "test"), per_class, strict=True)
    )
    return DatasetSplits(
        "Toy",
        list(CLASSES),
        train,
        test if val_is_test else val,
        test,
        "a photo of a {}.",
        "a photo of a {}.",
        val_is_test,
    )


def dataset_with(**splits) -> DatasetSplits:
    data = dataset()
    for name, value in splits.items():
        setattr(data, name, value)
    return data


def dassl_fewshot(data_source, num_shots):
    """Dassl's generate_fewshot_dataset, re-typed from its documented behaviour."""
    tracker = defaultdict(list)
    for item in data_source:
        tracker[item.label].append(item)
    out = []
    for group in tracker.values():
        out.extend(random.sample(group, num_shots) if len(group) >= num_shots else group)
    return out


def test_same_seed_same_draw_other_seed_other_draw():
    train = items("train", 20)
    assert sample_few_shot(train, 4, seed=1) == sample_few_shot(train, 4, seed=1)
    assert sample_few_shot(train, 4, seed=1) != sample_few_shot(train, 4, seed=2)


def test_draw_matches_coop_with_the_same_seed():
    data = dataset()
    ours = few_shot_splits(data, shots=8, seed=3)
    random.seed(3)
    coop_train = dassl_fewshot(data.train, 8)
    coop_val = dassl_fewshot(data.val, 4)
    assert ours.train == coop_train and ours.val == coop_val


def test_per_class_counts_without_repeats():
    drawn = sample_few_shot(items("train", 20), 16, seed=1)
    assert Counter(d.label for d in drawn) == {c: 16 for c in range(5)}
    assert len(set(drawn)) == len(drawn)
    assert all(d.classname == CLASSES[d.label] for d in drawn)


@pytest.mark.parametrize(("shots", "val_shots"), [(1, 1), (2, 2), (4, 4), (8, 4), (16, 4)])
def test_val_gets_min_of_shots_and_4(shots, val_shots):
    out = few_shot_splits(dataset(), shots=shots, seed=1)
    assert Counter(d.label for d in out.train) == {c: shots for c in range(5)}
    assert Counter(d.label for d in out.val) == {c: val_shots for c in range(5)}
    assert out.test == dataset().test


def test_imagenet_samples_train_only():
    data = dataset(val_is_test=True)
    out = few_shot_splits(data, shots=2, seed=1)
    assert len(out.train) == 10
    assert out.val is out.test and out.test == data.test


def test_too_few_shots_is_an_error_naming_dataset_class_and_counts():
    train = items("train", 20)[:-1]  # the last item is of class c3: it keeps 19
    with pytest.raises(DatasetError, match=r"Toy train: 1 class\(es\) .* label 3 'c3' has 19"):
        few_shot_splits(dataset_with(train=train), shots=20, seed=1)
    with pytest.warns(UserWarning, match="label 3 'c3' has 19; keeping all"):
        out = few_shot_splits(dataset_with(train=train), shots=20, seed=1, allow_fewer=True)
    assert Counter(d.label for d in out.train)[3] == 19


def test_a_class_absent_from_train_is_too_few():
    train = [d for d in items("train", 20) if d.label != 1]
    with pytest.raises(DatasetError, match=r"label 1 'c1' has 0"):
        few_shot_splits(dataset_with(train=train), shots=1, seed=1)


def test_bad_arguments():
    with pytest.raises(ValueError, match="shots must be a positive integer"):
        sample_few_shot(items("train", 2), 0, seed=1)
    with pytest.raises(ValueError, match="subsample must be one of"):
        few_shot_splits(dataset(), shots=1, seed=1, subsample="novel")
    with pytest.raises(DatasetError, match="no train split"):
        few_shot_splits(dataset_with(train=[]), shots=1, seed=1)


def test_split_base_new():
    assert split_base_new(CLASSES) == ([0, 1, 2], [3, 4])
    assert split_base_new(4) == ([0, 1], [2, 3])
    assert subsample_classnames(CLASSES, "new") == ["c3", "c4"]
    assert subsample_classnames(CLASSES, "all") == CLASSES


def test_subsample_relabels_new_classes_from_zero():
    test = items("test", 2)
    new = subsample_classes(test, "new", num_classes=5)
    assert {(d.label, d.classname) for d in new} == {(0, "c3"), (1, "c4")}
    assert [d.path for d in new] == [d.path for d in test if d.label >= 3]
    # Without num_classes, CoOp's rule: halves of the labels present, here {1, 3, 4}.
    present = [d for d in test if d.label in (1, 3, 4)]
    base = subsample_classes(present, "base")
    assert {(d.label, d.classname) for d in base} == {(0, "c1"), (1, "c3")}


def test_no_new_class_image_reaches_base_training():
    data = dataset()
    new_paths = {d.path for d in data.train + data.val + data.test if d.label >= 3}
    for seed in (1, 2, 3):
        base = few_shot_splits(data, shots=16, seed=seed, subsample="base")
        assert base.classnames == ["c0", "c1", "c2"]
        assert not {d.path for d in base.train + base.val} & new_paths
        assert {d.label for d in base.train + base.val + base.test} == {0, 1, 2}
        new = few_shot_splits(data, shots=16, seed=seed, subsample="new")
        assert new.classnames == ["c3", "c4"]
        assert {d.path for d in new.test} == {d.path for d in data.test if d.label >= 3}


def test_sampling_happens_before_the_base_new_split():
    data = dataset()
    everything = few_shot_splits(data, shots=4, seed=2)
    base = few_shot_splits(data, shots=4, seed=2, subsample="base")
    assert [d.path for d in base.train] == [d.path for d in everything.train if d.label < 3]


def test_harmonic_mean_on_the_papers_numbers():
    # GRAM Table 1a, CLIP's average: base 69.34, new 74.22 -> H 71.70.
    assert round(harmonic_mean(69.34, 74.22), 2) == 71.70
    assert harmonic_mean(50.0, 50.0) == 50.0
    assert harmonic_mean(0.0, 0.0) == 0.0


def test_end_to_end_from_disk(tmp_path):
    make_json_dataset(
        tmp_path, "toy", "images", "split_toy.json", ["a", "b", "c"], counts=(5, 4, 2)
    )
    data = load_dataset(spec_from_config("toy", {}), tmp_path)
    out = few_shot_splits(data, shots=2, seed=1, subsample="new")
    assert out.classnames == ["c"]
    assert len(out.train) == 2 and len(out.val) == 2 and len(out.test) == 2
    assert all(d.path.parent.name == "c" and d.label == 0 for d in out.train + out.test)
