"""Pair lists: CC3M TSV validation before download, sample TSV rows, error buckets."""

import pytest

from pipeline.pairs import reasons
from pipeline.pairs.tsv import TsvFormatError, read_cc3m_tsv, read_sample_tsv

GOOD = b"a dog on a beach\thttp://example.com/1.jpg\n"


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_cc3m_rows_get_a_reason_each(tmp_path):
    path = write(
        tmp_path,
        "cc3m.tsv",
        GOOD
        + b"no url column here\n"  # line 2
        + b"three\thttp://x.org/a.jpg\textra\n"  # line 3
        + b"   \thttp://x.org/b.jpg\n"  # line 4
        + b"caf\xe9 latte\thttp://x.org/c.jpg\r\n"  # line 5: latin-1, CRLF
        + b"a cat\tftp://x.org/d.jpg\n"  # line 6
        + b'a "quoted" caption\thttps://x.org/e.jpg\n',  # line 7
    )
    rows = read_cc3m_tsv(path, max_malformed_fraction=0.5)
    assert [r.line for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.reason for r in rows] == [
        None,
        reasons.MISSING_COLUMN,
        reasons.EXTRA_COLUMN,
        reasons.EMPTY_CAPTION,
        reasons.CAPTION_NOT_UTF8,
        reasons.BAD_URL,
        None,
    ]
    assert rows[0].caption == "a dog on a beach" and rows[0].target == "http://example.com/1.jpg"
    assert rows[6].caption == 'a "quoted" caption'
    assert rows[4].target == "http://x.org/c.jpg"


@pytest.mark.parametrize(
    "first_line, message",
    [
        (b"caption\turl\n", "line 1 looks like a header"),
        (b"a dog\n", "line 1 has 1 tab-separated column"),
        (b"url\tcaption\tkey\n", "line 1 has 3 tab-separated column"),
        (b"http://x.org/1.jpg\ta dog\n", "line 1 looks like a header"),
    ],
)
def test_cc3m_first_line_not_caption_url_is_rejected(tmp_path, first_line, message):
    path = write(tmp_path, "bad.tsv", first_line + GOOD)
    with pytest.raises(TsvFormatError, match=message) as error:
        read_cc3m_tsv(path)
    assert str(path) in str(error.value)


def test_cc3m_mostly_malformed_file_is_rejected_naming_first_bad_line(tmp_path):
    path = write(tmp_path, "bad.tsv", GOOD + GOOD + b"x\n" + b"y\tz\n" + GOOD)
    with pytest.raises(TsvFormatError, match=r"line 3: missing_column; 2 of 5 rows"):
        read_cc3m_tsv(path, max_malformed_fraction=0.1)
    assert len(read_cc3m_tsv(path, max_malformed_fraction=0.4)) == 5


def test_cc3m_empty_and_missing_files(tmp_path):
    with pytest.raises(TsvFormatError, match="empty file"):
        read_cc3m_tsv(write(tmp_path, "empty.tsv", b""))
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_cc3m_tsv(tmp_path / "nope.tsv")


def test_sample_tsv_rows(tmp_path):
    path = write(
        tmp_path,
        "pairs.tsv",
        b"key\tcaption\timage\tsource\n"
        b"a\ta red bus\timages/a.jpg\tcoco\n"  # 2
        b"b\ta cat\n"  # 3
        b"a\tanother a\timages/a2.jpg\tcoco\n"  # 4
        b"c.d\tdotted key\timages/c.jpg\tcoco\n"  # 5
        b"e\t\timages/e.jpg\tcoco\n"  # 6
        b"f\t\xff\xfe\timages/f.jpg\tcoco\n"  # 7
        b"g\tgood\timages/g.jpg\tcoco\textra\n",  # 8
    )
    rows = read_sample_tsv(path)
    assert [(r.line, r.key, r.reason) for r in rows] == [
        (2, "a", None),
        (3, "b", reasons.MISSING_COLUMN),
        (4, "a", reasons.DUPLICATE_KEY),
        (5, "c.d", reasons.INVALID_KEY),
        (6, "e", reasons.EMPTY_CAPTION),
        (7, "f", reasons.CAPTION_NOT_UTF8),
        (8, "g", reasons.EXTRA_COLUMN),
    ]
    assert rows[0].target == "images/a.jpg" and rows[0].source == "coco"


def test_sample_tsv_header_must_name_the_columns(tmp_path):
    path = write(tmp_path, "pairs.tsv", b"key\ttext\timage\na\tb\tc\n")
    with pytest.raises(
        TsvFormatError, match=r"pairs.tsv: line 1: .*lacks column\(s\) \['caption'\]"
    ):
        read_sample_tsv(path)


@pytest.mark.parametrize(
    "message, bucket",
    [
        ("HTTP Error 404: Not Found", reasons.HTTP_404),
        ("HTTP Error 403: Forbidden", reasons.HTTP_ERROR),
        ("The read operation timed out", reasons.TIMEOUT),
        ("<urlopen error timed out>", reasons.TIMEOUT),
        ("<urlopen error [Errno 111] Connection refused>", reasons.CONNECTION_ERROR),
        ("Image decoding error", reasons.DECODE_ERROR),
        ("image too small", reasons.IMAGE_REJECTED),
        ("Use of image disallowed by X-Robots-Tag directive", reasons.DISALLOWED),
        ("unknown url type: ''", reasons.OTHER),
        (None, reasons.OTHER),
    ],
)
def test_error_buckets(message, bucket):
    assert reasons.bucket_error(message) == bucket
