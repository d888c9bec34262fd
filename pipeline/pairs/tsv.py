"""Reading the two pair lists (CC3M's TSV, the embedded sample's ``pairs.tsv``) row by row.

Both files are read as bytes and split by hand rather than with pandas/pyarrow: a CSV parser
either stops at the first bad row or silently re-interprets it (quote characters inside CC3M
captions, a stray tab, bytes that are not UTF-8), while here every row must come out with a
verdict: usable, or one named reason. The file as a whole is still rejected, before anything
is downloaded, when it is clearly not the expected format.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from . import reasons

URL = re.compile(r"^https?://\S+$", re.IGNORECASE)
# WebDataset splits a member name at its first dot; slashes would make directories.
KEY = re.compile(r"^[A-Za-z0-9_-]+$")
SAMPLE_COLUMNS = ("key", "caption", "image")


class TsvFormatError(UserError):
    """The file is not in the format the source expects; nothing has been downloaded."""


@dataclass
class InputRow:
    """One line of a pair list. ``reason`` is None while the row is still usable."""

    line: int
    caption: str
    target: str  # the image URL (CC3M) or the image path relative to the list (sample)
    key: str = ""
    source: str = ""
    reason: str | None = None


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\r\n")
            if number == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            yield number, line


def _decode(field: bytes) -> str | None:
    try:
        return field.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _caption(row: InputRow, field: bytes) -> None:
    """Set the caption, or the reason it is unusable (the text is kept, lossily, for the index)."""
    text = _decode(field)
    if text is None:
        row.caption = field.decode("utf-8", errors="replace")
        row.reason = reasons.CAPTION_NOT_UTF8
    else:
        row.caption = text
        if not text.strip():
            row.reason = reasons.EMPTY_CAPTION


def read_cc3m_tsv(path: str | Path, max_malformed_fraction: float = 0.01) -> list[InputRow]:
    """Rows of ``Train_GCC-training.tsv``: caption TAB url, no header.

    Raises :class:`TsvFormatError` naming the file and line when the first line is not a
    caption/URL pair (a header, another column layout) or when more than
    ``max_malformed_fraction`` of the rows have the wrong number of columns or no URL.
    Isolated bad rows are returned with their reason instead.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CC3M TSV not found (ingest.input)")
    rows: list[InputRow] = []
    first_malformed: InputRow | None = None
    for number, line in _lines(path):
        fields = line.split(b"\t")
        row = InputRow(line=number, caption="", target="")
        if len(fields) < 2:
            row.reason = reasons.MISSING_COLUMN
            row.caption = line.decode("utf-8", errors="replace")
        elif len(fields) > 2:
            row.reason = reasons.EXTRA_COLUMN
            row.caption = fields[0].decode("utf-8", errors="replace")
        else:
            url = _decode(fields[1].strip()) or ""
            row.target = url
            _caption(row, fields[0])
            if not URL.match(url):
                row.reason = reasons.BAD_URL
        if number == 1 and row.reason in reasons.MALFORMED:
            _reject_first_line(path, fields)
        if row.reason in reasons.MALFORMED and first_malformed is None:
            first_malformed = row
        rows.append(row)
    if not rows:
        raise TsvFormatError(f"{path}: empty file, expected CC3M rows 'caption<TAB>url'")
    malformed = sum(row.reason in reasons.MALFORMED for row in rows)
    if first_malformed is not None and malformed > max_malformed_fraction * len(rows):
        raise TsvFormatError(
            f"{path}: line {first_malformed.line}: {first_malformed.reason}; {malformed} of "
            f"{len(rows)} rows are not 'caption<TAB>url' (more than "
            f"ingest.max_malformed_fraction = {max_malformed_fraction}), so this does not look "
            "like CC3M's Train_GCC-training.tsv"
        )
    return rows


def _reject_first_line(path: Path, fields: list[bytes]) -> None:
    shown = b"\t".join(fields)[:120].decode("utf-8", errors="replace")
    if len(fields) != 2:
        raise TsvFormatError(
            f"{path}: line 1 has {len(fields)} tab-separated column(s), CC3M's "
            f"Train_GCC-training.tsv has 2 (caption<TAB>url, no header): {shown!r}"
        )
    raise TsvFormatError(
        f"{path}: line 1 looks like a header or is not 'caption<TAB>url' (second column is "
        f"not an http(s) URL): {shown!r}; CC3M's Train_GCC-training.tsv has no header"
    )


def read_sample_tsv(path: str | Path) -> list[InputRow]:
    """Rows of the embedded pairs' ``pairs.tsv`` (header: key, caption, image[, source]).

    A missing required column in the header is a :class:`TsvFormatError`; rows with a missing
    column, an unusable key or caption, or a key seen before come back with their reason.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: pair list not found (ingest.input)")
    lines = _lines(path)
    _, header_line = next(lines, (1, b""))
    header = [name.strip() for name in header_line.decode("utf-8", errors="replace").split("\t")]
    missing = [name for name in SAMPLE_COLUMNS if name not in header]
    if missing:
        raise TsvFormatError(
            f"{path}: line 1: header {header} lacks column(s) {missing}; expected "
            f"{'<TAB>'.join(SAMPLE_COLUMNS)}<TAB>source"
        )
    index = {name: header.index(name) for name in (*SAMPLE_COLUMNS, "source") if name in header}
    rows: list[InputRow] = []
    seen: set[str] = set()
    for number, line in lines:
        fields = line.split(b"\t")
        row = InputRow(line=number, caption="", target="")
        if len(fields) > index["key"]:
            row.key = fields[index["key"]].decode("utf-8", errors="replace").strip()
        if len(fields) != len(header):
            short = len(fields) < len(header)
            row.reason = reasons.MISSING_COLUMN if short else reasons.EXTRA_COLUMN
        else:
            row.target = fields[index["image"]].decode("utf-8", errors="replace").strip()
            if "source" in index:
                row.source = fields[index["source"]].decode("utf-8", errors="replace").strip()
            _caption(row, fields[index["caption"]])
            if not KEY.match(row.key):
                row.reason = reasons.INVALID_KEY
            elif row.key in seen:
                row.reason = reasons.DUPLICATE_KEY
        if KEY.match(row.key):
            seen.add(row.key)  # an earlier line claims the key whatever its own verdict
        rows.append(row)
    return rows
