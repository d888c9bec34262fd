"""Readers of CoOp's dataset layouts: every layout kind on a tiny fake tree, every bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from pipeline.data import (
    COOP_TEMPLATES,
    DATASETS,
    PROGRAD_TEMPLATES,
    DatasetError,
    get_spec,
    load_dataset,
    resolve_spec,
    spec_from_config,
)
from pipeline.params import ParamError
from tests.coop_fakes import make_json_dataset, make_wnid_folders, write_classnames, write_image

PETS = ["abyssinian", "american_bulldog", "beagle"]
WNIDS = {
    "n01440764": "tench",
    "n01443537": "goldfish",
    "n01484850": "great white shark",
    "n01491361": "tiger_shark",
    "n01494475": "hammerhead shark",
}


def make_pets(root, **kwargs):
    return make_json_dataset(
        root, "oxford_pets", "images", "split_zhou_OxfordPets.json", PETS, **kwargs
    )


def pets_split_file(root):
    return root / "oxford_pets" / "split_zhou_OxfordPets.json"


def rewrite_split(root, edit):
    path = pets_split_file(root)
    split = json.loads(path.read_text())
    edit(split)
    path.write_text(json.dumps(split))
    return path


# --- every layout kind -------------------------------------------------------------------


def test_json_layout_labels_classnames_templates(tmp_path):
    make_pets(tmp_path)
    data = load_dataset("OxfordPets", tmp_path)
    assert data.classnames == ["abyssinian", "american bulldog", "beagle"]
    assert [len(data.train), len(data.val), len(data.test)] == [9, 6, 6]
    assert data.template == "a photo of a {}, a type of pet."
    assert data.prograd_template == "a type of pet, a photo of a {}."
    assert not data.val_is_test
    first = data.train[3]
    assert (first.label, first.classname) == (1, "american bulldog")
    assert first.path == tmp_path / "oxford_pets" / "images" / "american_bulldog" / "train_0.png"
    assert all(d.path.is_absolute() and d.path.is_file() for d in data.train + data.test)


@pytest.mark.parametrize("name", sorted(n for n, s in DATASETS.items() if s.layout == "json"))
def test_every_json_dataset_reads_from_its_coop_folder(tmp_path, name):
    spec = DATASETS[name]
    make_json_dataset(tmp_path, spec.folder, spec.images, spec.split_file, ["a_b", "c"])
    data = load_dataset(name, tmp_path)
    assert data.classnames == ["a b", "c"]
    assert data.template == COOP_TEMPLATES[name]
    image_dir = tmp_path / spec.folder / spec.images if spec.images else tmp_path / spec.folder
    assert data.test[0].path == image_dir / "a_b" / "test_0.png"


def test_fgvc_aircraft_layout(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "F-16A/B", "Cessna 172"]
    base.mkdir()
    (base / "variants.txt").write_text("\n".join(variants) + "\n")
    for split, ids in (("train", ["100", "101", "102"]), ("val", ["200"]), ("test", ["300"])):
        lines = [f"{image_id} {variants[i % 3]}" for i, image_id in enumerate(ids)]
        (base / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for image_id in ids:
            write_image(base / "images" / f"{image_id}.jpg")
    data = load_dataset("fgvc_aircraft", tmp_path)
    assert data.classnames == variants
    assert [(d.path.name, d.label, d.classname) for d in data.train] == [
        ("100.jpg", 0, "707-320"),
        ("101.jpg", 1, "F-16A/B"),
        ("102.jpg", 2, "Cessna 172"),
    ]
    assert data.template == "a photo of a {}, a type of aircraft."
    assert data.prograd_template == "a type of aircraft, a photo of a {}."


def make_imagenet(root, train_wnids=None):
    base = root / "imagenet"
    # classnames.txt deliberately out of wnid order: labels follow the sorted folders.
    write_classnames(base / "classnames.txt", dict(reversed(list(WNIDS.items()))))
    make_wnid_folders(base / "images" / "val", list(WNIDS), per_class=2)
    make_wnid_folders(base / "images" / "train", train_wnids or list(WNIDS), per_class=3)


def test_imagenet_layout_val_is_test(tmp_path):
    make_imagenet(tmp_path)
    data = load_dataset("ImageNet", tmp_path)
    assert data.classnames == [
        "tench",
        "goldfish",
        "great white shark",
        "tiger shark",
        "hammerhead shark",
    ]
    assert data.val_is_test and data.val is data.test
    assert len(data.train) == 15 and len(data.test) == 10
    assert {(d.label, d.path.parent.name) for d in data.test} == {
        (i, w) for i, w in enumerate(sorted(WNIDS))
    }
    assert all(d.path.parts[-3] == "train" for d in data.train)


def test_imagenet_test_only_read_skips_train(tmp_path):
    make_imagenet(tmp_path, train_wnids=list(WNIDS)[:2])  # broken train: never listed
    data = load_dataset("ImageNet", tmp_path, splits=("test",))
    assert data.train == [] and len(data.test) == 10
    with pytest.raises(DatasetError, match="same class folders"):
        load_dataset("ImageNet", tmp_path)


def test_imagenetv2_folder_i_is_label_i(tmp_path):
    base = tmp_path / "imagenetv2"
    write_classnames(base / "classnames.txt", WNIDS)
    image_dir = base / "imagenetv2-matched-frequency-format-val"
    for label in range(5):
        write_image(image_dir / str(label) / "a.png")
    data = load_dataset("ImageNetV2", tmp_path)
    assert data.classnames[3] == "tiger shark"
    assert [(d.label, d.path.parent.name) for d in data.test] == [(i, str(i)) for i in range(5)]
    assert data.train == [] and data.val == []


def test_imagenet_sketch_sorted_folder_index(tmp_path):
    base = tmp_path / "imagenet-sketch"
    write_classnames(base / "classnames.txt", WNIDS)
    make_wnid_folders(base / "images", list(reversed(WNIDS)), per_class=1)
    data = load_dataset("ImageNetSketch", tmp_path)
    assert [d.path.parent.name for d in data.test] == sorted(WNIDS)
    assert [d.label for d in data.test] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("name", "folder", "images"),
    [
        ("ImageNetA", "imagenet-adversarial", "imagenet-a"),
        ("ImageNetR", "imagenet-rendition", "imagenet-r"),
    ],
)
def test_imagenet_a_r_use_the_folders_present(tmp_path, name, folder, images):
    base = tmp_path / folder
    write_classnames(base / "classnames.txt", WNIDS)  # the full list; only 3 folders present
    present = ["n01494475", "n01443537", "n01491361"]
    make_wnid_folders(base / images, present, per_class=2)
    (base / images / "README.txt").write_text("ignored")
    data = load_dataset(name, tmp_path)
    assert data.classnames == ["goldfish", "tiger shark", "hammerhead shark"]
    assert sorted({d.label for d in data.test}) == [0, 1, 2]
    assert data.template == "a photo of a {}."


def test_users_own_dataset_from_config(tmp_path):
    make_json_dataset(tmp_path, "my_data", "pics", "split_mine.json", ["red_car", "blue"])
    spec = spec_from_config(
        "mine", {"folder": "my_data", "images": "pics", "split": "split_mine.json"}
    )
    assert spec.template == "a photo of a {}." and spec.prograd_template == spec.template
    data = load_dataset(spec, tmp_path)
    assert data.name == "mine" and data.classnames == ["red car", "blue"]
    custom = resolve_spec(
        "mine",
        {
            "folder": "my_data",
            "images": "pics",
            "split": "split_mine.json",
            "template": "{}, a sketch.",
        },
    )
    assert (custom.template, custom.prograd_template) == ("{}, a sketch.", "{}, a sketch.")
    assert load_dataset(custom, tmp_path).template == "{}, a sketch."


def test_config_errors_name_the_key():
    with pytest.raises(ParamError, match=r"datasets\.mine\.splitfile"):
        spec_from_config("mine", {"splitfile": "x.json"})
    with pytest.raises(ParamError, match=r"datasets\.mine\.template"):
        spec_from_config("mine", {"template": "a photo"})
    with pytest.raises(ParamError, match=r"datasets\.mine\.folder"):
        spec_from_config("mine", {"folder": 3})


def test_names_and_aliases():
    assert get_spec("oxford_pets") is get_spec("OxfordPets") is get_spec("oxfordpets")
    assert get_spec("dtd").name == "DescribableTextures"
    assert get_spec("imagenet-a").name == "ImageNetA"
    assert get_spec("imagenet-sketch").name == "ImageNetSketch"
    assert get_spec("food-101").name == "Food101"
    assert len(DATASETS) == 15
    with pytest.raises(DatasetError, match="unknown dataset 'cifar10'.*OxfordPets"):
        get_spec("cifar10")


def test_template_tables_differ_only_for_five_datasets():
    differing = {n for n in COOP_TEMPLATES if COOP_TEMPLATES[n] != PROGRAD_TEMPLATES[n]}
    assert differing == {
        "OxfordPets",
        "OxfordFlowers",
        "FGVCAircraft",
        "DescribableTextures",
        "Food101",
    }
    assert COOP_TEMPLATES["EuroSAT"] == "a centered satellite photo of {}."
    assert COOP_TEMPLATES["UCF101"] == "a photo of a person doing {}."
    assert PROGRAD_TEMPLATES["Food101"] == "a type of food, a photo of {}."
    assert {s.template for s in DATASETS.values()} <= set(COOP_TEMPLATES.values())


# --- bad input: each error names the file and the entry ----------------------------------


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match=r"oxford_pets not found"):
        load_dataset("OxfordPets", tmp_path)


def test_missing_split_file(tmp_path):
    make_pets(tmp_path)
    pets_split_file(tmp_path).unlink()
    with pytest.raises(DatasetError, match=r"split file .*split_zhou_OxfordPets\.json not found"):
        load_dataset("OxfordPets", tmp_path)


def test_malformed_json(tmp_path):
    make_pets(tmp_path)
    pets_split_file(tmp_path).write_text('{"train": [["a.png", 0, "a"],')
    with pytest.raises(DatasetError, match=r"split_zhou_OxfordPets\.json: not valid JSON"):
        load_dataset("OxfordPets", tmp_path)


def test_missing_split_key(tmp_path):
    make_pets(tmp_path)
    rewrite_split(tmp_path, lambda s: s.pop("val"))
    with pytest.raises(
        DatasetError, match=r"split_zhou_OxfordPets\.json: missing key\(s\) \['val'\]"
    ):
        load_dataset("OxfordPets", tmp_path)


def test_bad_entries_all_reported(tmp_path):
    make_pets(tmp_path)

    def corrupt(split):
        split["train"][1] = ["abyssinian/train_1.png", "0", "abyssinian"]
        split["train"][4] = ["american_bulldog/train_1.png", 1]
        split["test"][0] = ["abyssinian/test_0.png", -1, "abyssinian"]

    rewrite_split(tmp_path, corrupt)
    with pytest.raises(DatasetError) as err:
        load_dataset("OxfordPets", tmp_path)
    message = str(err.value)
    assert "3 malformed entries in" in message and "split_zhou_OxfordPets.json" in message
    assert "train[1] ['abyssinian/train_1.png', '0', 'abyssinian']" in message
    assert "train[4] ['american_bulldog/train_1.png', 1]" in message
    assert "test[0] ['abyssinian/test_0.png', -1, 'abyssinian']" in message


def test_missing_images_reported_up_to_a_cap(tmp_path):
    make_json_dataset(
        tmp_path,
        "oxford_pets",
        "images",
        "split_zhou_OxfordPets.json",
        PETS,
        counts=(4, 1, 1),
        write_images=False,
    )
    shutil.rmtree(tmp_path / "oxford_pets" / "images", ignore_errors=True)
    for split in ("val", "test"):  # only the 12 train images are missing
        for name in PETS:
            write_image(tmp_path / "oxford_pets" / "images" / name / f"{split}_0.png")
    with pytest.raises(DatasetError) as err:
        load_dataset("OxfordPets", tmp_path)
    message = str(err.value)
    assert message.startswith("12 images listed in") and "split_zhou_OxfordPets.json" in message
    assert "train[0] ['abyssinian/train_0.png', 0, 'abyssinian'] -> " in message
    assert message.endswith("... and 2 more")


def test_one_missing_image(tmp_path):
    make_pets(tmp_path)
    (tmp_path / "oxford_pets" / "images" / "beagle" / "val_1.png").unlink()
    with pytest.raises(DatasetError, match=r"1 images listed .*\n  val\[5\] .*beagle/val_1\.png"):
        load_dataset("OxfordPets", tmp_path)
    assert len(load_dataset("OxfordPets", tmp_path, splits=("train", "test")).test) == 6


def test_label_outside_the_class_list(tmp_path):
    make_pets(tmp_path)

    def add_unseen_class(split):
        split["test"].append(["beagle/test_0.png", 3, "boxer"])

    rewrite_split(tmp_path, add_unseen_class)
    with pytest.raises(DatasetError, match=r"outside the class list.*\n  test\[6\] .*'boxer'"):
        load_dataset("OxfordPets", tmp_path)


def test_label_with_no_entry(tmp_path):
    make_pets(tmp_path)

    def skip_label(split):
        for name in ("train", "val", "test"):
            split[name] = [[p, 3 if lab == 2 else lab, c] for p, lab, c in split[name]]

    rewrite_split(tmp_path, skip_label)
    with pytest.raises(DatasetError, match=r"OxfordPets\.json: labels must run 0\.\.3.*\[2\]"):
        load_dataset("OxfordPets", tmp_path)


def test_inconsistent_class_name(tmp_path):
    make_pets(tmp_path)
    rewrite_split(tmp_path, lambda s: s["val"].__setitem__(0, ["abyssinian/val_0.png", 0, "cat"]))
    with pytest.raises(
        DatasetError, match=r"two class names.*\n  val\[0\] .*'abyssinian' at train"
    ):
        load_dataset("OxfordPets", tmp_path)


def test_empty_test_split(tmp_path):
    make_pets(tmp_path)
    rewrite_split(tmp_path, lambda s: s.__setitem__("test", []))
    with pytest.raises(DatasetError, match="test split .* is empty"):
        load_dataset("OxfordPets", tmp_path)


def test_fgvc_unknown_variant_and_bad_line(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    (base / "variants.txt").write_text("707-320\nA300B4\n")
    (base / "images_variant_train.txt").write_text("100 707-320\n101 A380\n")
    for split in ("val", "test"):
        (base / f"images_variant_{split}.txt").write_text("102\n")
    write_image(base / "images" / "100.jpg")
    with pytest.raises(
        DatasetError,
        match=r"images_variant_train\.txt naming a variant not in .*"
        r"variants\.txt:\n  line 2 '101 A380'",
    ):
        load_dataset("FGVCAircraft", tmp_path)
    (base / "images_variant_train.txt").write_text("100 707-320\n")
    with pytest.raises(DatasetError, match=r"images_variant_val\.txt.*\n  line 1 '102'"):
        load_dataset("FGVCAircraft", tmp_path)


def test_imagenet_folder_missing_from_classnames(tmp_path):
    make_imagenet(tmp_path)
    make_wnid_folders(tmp_path / "imagenet" / "images" / "val", ["n99999999"], per_class=1)
    with pytest.raises(DatasetError, match=r"wnid is not in .*classnames\.txt:\n  n99999999"):
        load_dataset("ImageNet", tmp_path, splits=("test",))


def test_imagenet_bad_classnames_line(tmp_path):
    make_imagenet(tmp_path)
    with (tmp_path / "imagenet" / "classnames.txt").open("a") as f:
        f.write("n01440764\n")
    with pytest.raises(DatasetError, match=r"classnames\.txt.*\n  line 6 'n01440764'"):
        load_dataset("ImageNet", tmp_path, splits=("test",))


def test_imagenetv2_folder_outside_labels(tmp_path):
    base = tmp_path / "imagenetv2"
    write_classnames(base / "classnames.txt", WNIDS)
    for folder in ("0", "1", "2", "3", "4", "5"):
        write_image(base / "imagenetv2-matched-frequency-format-val" / folder / "a.png")
    with pytest.raises(DatasetError, match=r"not a label 0\.\.4 of .*classnames\.txt:\n  5"):
        load_dataset("ImageNetV2", tmp_path)


def test_empty_class_folder(tmp_path):
    base = tmp_path / "imagenet-rendition"
    write_classnames(base / "classnames.txt", WNIDS)
    make_wnid_folders(base / "imagenet-r", ["n01440764"], per_class=1)
    (base / "imagenet-r" / "n01443537").mkdir()
    with pytest.raises(DatasetError, match=r"without any image:\n  .*imagenet-r/n01443537"):
        load_dataset("ImageNetR", tmp_path)


# --- paths stay inside the dataset, each image listed once ---------------------------------


def test_an_entry_escaping_the_image_folder_is_named(tmp_path):
    make_pets(tmp_path)
    write_image(tmp_path / "other_dataset" / "x.jpg")  # exists: reading it would succeed

    def escape(split):
        split["train"][2] = ["../../other_dataset/x.jpg", 0, "abyssinian"]

    path = rewrite_split(tmp_path, escape)
    with pytest.raises(DatasetError) as err:
        load_dataset("OxfordPets", tmp_path)
    assert str(err.value) == (
        f"1 malformed entries in {path} (each must be [relative_path, label >= 0, name]):\n"
        "  train[2] ['../../other_dataset/x.jpg', 0, 'abyssinian']: the path must stay inside "
        f"{tmp_path / 'oxford_pets' / 'images'}"
    )


def test_a_path_that_climbs_back_inside_is_accepted(tmp_path):
    make_pets(tmp_path)

    def detour(split):
        split["train"][0][0] = "beagle/../abyssinian/train_0.png"

    rewrite_split(tmp_path, detour)
    assert load_dataset("OxfordPets", tmp_path).train[0].path.parts[-2:] == (
        "abyssinian",
        "train_0.png",
    )


def test_an_image_listed_twice_in_one_split_names_both_entries(tmp_path):
    make_pets(tmp_path)

    def repeat(split):
        split["train"][3] = list(split["train"][0])
        split["train"][4] = ["./abyssinian/train_0.png", 0, "abyssinian"]

    rewrite_split(tmp_path, repeat)
    with pytest.raises(DatasetError) as err:
        load_dataset("OxfordPets", tmp_path)
    lines = str(err.value).splitlines()
    assert lines[0].startswith("2 images listed twice in one split of")
    assert lines[1].startswith("  train[3] ['abyssinian/train_0.png', 0, 'abyssinian']: same ")
    assert lines[1].endswith("as train[0] ['abyssinian/train_0.png', 0, 'abyssinian']")
    assert lines[2].startswith("  train[4] ['./abyssinian/train_0.png'")


def test_a_train_image_also_in_test_is_a_leak(tmp_path):
    make_pets(tmp_path)

    def leak(split):
        split["test"][1] = list(split["train"][0])

    rewrite_split(tmp_path, leak)
    with pytest.raises(DatasetError, match=r"listed in train and in val or test:\n  test\[1\] "):
        load_dataset("OxfordPets", tmp_path)


def test_val_and_test_may_share_images(tmp_path):
    make_pets(tmp_path)
    rewrite_split(tmp_path, lambda split: split.update(val=split["test"]))
    data = load_dataset("OxfordPets", tmp_path)
    assert [d.path for d in data.val] == [d.path for d in data.test]


def test_fgvc_repeated_and_escaping_ids(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    (base / "variants.txt").write_text("707-320\nA300B4\n")
    for split, lines in (
        ("train", ["100 707-320", "101 A300B4", "100 A300B4"]),
        ("val", ["200 707-320"]),
        ("test", ["300 A300B4"]),
    ):
        (base / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    for image_id in ("100", "101", "200", "300"):
        write_image(base / "images" / f"{image_id}.jpg")
    with pytest.raises(DatasetError) as err:
        load_dataset("fgvc_aircraft", tmp_path)
    assert str(err.value).splitlines()[1] == (
        "  images_variant_train.txt line 3 '100 A300B4': same image as "
        "images_variant_train.txt line 1 '100 707-320'"
    )
    (base / "images_variant_train.txt").write_text("100 707-320\n../../x A300B4\n")
    with pytest.raises(DatasetError, match=r"bad lines in .*\n  line 2 '../../x A300B4'"):
        load_dataset("fgvc_aircraft", tmp_path)
