"""The paper-shape dataset fixture read back through the pipeline's own readers: every
dataset of the paper's tables, each in its own layout, gives the classes, labels and splits
it was written with."""

import hashlib

import pytest

from pipeline.data import DATASETS, load_dataset, resolve_spec
from tests.paper_shape import write_paper_datasets


def as_found(dataset, root, split):
    return sorted((str(d.path.relative_to(root)), d.label) for d in dataset.split(split))


@pytest.fixture(scope="module")
def paper_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return root, write_paper_datasets(root, images_per_class=2, n_classes=3)


def test_every_paper_dataset_is_written(paper_root):
    _, expected = paper_root
    assert sorted(expected) == sorted(DATASETS)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_reader_finds_what_was_written(paper_root, name):
    root, expected = paper_root
    dataset = load_dataset(resolve_spec(name), root)
    want = expected[name]
    assert dataset.classnames == want.classnames
    for split in ("train", "val", "test"):
        assert as_found(dataset, root, split) == sorted(want.splits[split]), split
        for datum in dataset.split(split):
            assert datum.classname == dataset.classnames[datum.label]
    assert dataset.val_is_test == (name == "ImageNet")


def test_imagenet_a_and_r_keep_a_subset_relabelled_in_sorted_order(paper_root):
    root, _ = paper_root
    full = load_dataset("ImageNet", root, splits=("test",)).classnames
    adversarial = load_dataset("ImageNetA", root)
    rendition = load_dataset("ImageNetR", root)
    assert adversarial.classnames == [full[1], full[2]]
    assert rendition.classnames == [full[0], full[2]]
    assert sorted({d.label for d in rendition.test}) == [0, 1]
    assert (root / "imagenet-adversarial" / "classnames.txt").read_text().count("\n") == 3


def test_names_lose_underscores_and_splits_hold_every_class(paper_root):
    root, _ = paper_root
    ucf = load_dataset("UCF101", root)
    assert ucf.classnames == ["Playing Sport 0", "Playing Sport 1", "Playing Sport 2"]
    for split in ("train", "val", "test"):
        assert [d.label for d in ucf.split(split)].count(2) == 2
    assert load_dataset("EuroSAT", root).classnames[1] == "Land Use 1 Area"  # the json's name
    assert load_dataset("OxfordPets", root).classnames[1] == "pet breed 1"
    aircraft = load_dataset("FGVCAircraft", root)
    assert aircraft.classnames[0] == "Model 700-000"  # a variant keeps its spaces


def test_imagenetv2_labels_folders_by_number_not_by_name(tmp_path):
    expected = write_paper_datasets(tmp_path, images_per_class=1, n_classes=12)
    dataset = load_dataset("ImageNetV2", tmp_path)
    by_folder = {d.path.parent.name: d.label for d in dataset.test}
    assert by_folder == {str(i): i for i in range(12)}  # "10" sorts before "2" as text
    assert as_found(dataset, tmp_path, "test") == sorted(expected["ImageNetV2"].splits["test"])


def test_same_seed_same_bytes(tmp_path):
    def digest(root):
        return {
            str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*"))
            if p.is_file()
        }

    write_paper_datasets(tmp_path / "a")
    write_paper_datasets(tmp_path / "b")
    first, second = digest(tmp_path / "a"), digest(tmp_path / "b")
    assert first == second
    assert len(set(first.values())) > 0.9 * len(first)  # images differ from one another
