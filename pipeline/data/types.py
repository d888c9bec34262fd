"""The records every dataset reader produces, and the error they raise on bad input."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

SPLITS = ("train", "val", "test")


class DatasetError(UserError):
    """A dataset on disk that the pipeline cannot use; the message names the file and entry."""


@dataclass(frozen=True)
class Datum:
    """One labelled image. ``path`` is absolute; ``classname`` is prompt-ready (no ``_``)."""

    path: Path
    label: int
    classname: str


@dataclass
class DatasetSplits:
    """A dataset read from disk: ``classnames[label]`` names each label.

    ``template`` is CoOp's hand-written zero-shot template (``"a photo of a {}."``) and
    ``prograd_template`` ProGrad's (it moves the class name to the end for five datasets).
    ``val_is_test`` marks ImageNet, whose val split *is* its test set (CoOp's convention):
    few-shot sampling then leaves val alone.
    """

    name: str
    classnames: list[str]
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    template: str
    prograd_template: str
    val_is_test: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    def split(self, which: str) -> list[Datum]:
        if which not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {which!r}")
        return getattr(self, which)


@dataclass
class Problems:
    """Collects every problem of one kind, then raises them together (first ``cap`` shown).

    Reporting all missing images at once saves a user one round trip per broken entry.
    """

    what: str
    cap: int = 10
    items: list[str] = field(default_factory=list)

    def add(self, message: str) -> None:
        self.items.append(message)

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = "\n  ".join(self.items[: self.cap])
        more = len(self.items) - self.cap
        tail = f"\n  ... and {more} more" if more > 0 else ""
        raise DatasetError(f"{len(self.items)} {self.what}:\n  {shown}{tail}")
