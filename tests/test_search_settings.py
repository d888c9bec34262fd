"""scripts/search_settings.py scores on held-out images only: never test, never a training image."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import search_settings  # noqa: E402

from pipeline.data import DatasetSplits, few_shot_splits  # noqa: E402
from pipeline.data.types import Datum  # noqa: E402


def _dataset(per_class: int = 6, classes: int = 4) -> DatasetSplits:
    def split(name: str, n: int) -> list[Datum]:
        return [
            Datum(Path(f"/{name}/{c}_{i}.png"), c, f"class{c}")
            for c in range(classes)
            for i in range(n)
        ]

    return DatasetSplits(
        name="toy",
        classnames=[f"class{c}" for c in range(classes)],
        train=split("train", per_class),
        val=split("val", 4),
        test=split("test", 3),
        template="a photo of a {}.",
        prograd_template="a photo of a {}.",
    )


def test_held_out_is_val_plus_undrawn_train_of_the_base_classes():
    full = _dataset()
    run = few_shot_splits(full, 4, seed=1, subsample="base")
    items = search_settings.held_out(full, run, "base")
    paths = {d.path for d in items}
    assert not paths & {d.path for d in run.train}
    assert not any(str(p).startswith("/test/") for p in paths)
    # base = classes 0 and 1: 2 undrawn train + 4 val images each
    assert len(items) == 12
    assert {d.label for d in items} == {0, 1}
    assert sum(str(p).startswith("/val/") for p in paths) == 8


def test_held_out_labels_match_the_run_classnames():
    full = _dataset()
    run = few_shot_splits(full, 4, seed=2, subsample="new")
    for item in search_settings.held_out(full, run, "new"):
        assert run.classnames[item.label] == item.classname
