"""The status vocabulary shared by ingest, embed and filter.

Every input row ends up with exactly one status: ``success`` or one failure reason. Raw error
messages (img2dataset's, PIL's) are kept in the index's ``detail`` column; metrics count the
buckets below so they stay comparable between runs and sources.
"""

from __future__ import annotations

import re

SUCCESS = "success"

# Row-level problems found before anything is downloaded or written.
MISSING_COLUMN = "missing_column"
EXTRA_COLUMN = "extra_column"
BAD_URL = "bad_url"
EMPTY_CAPTION = "empty_caption"
CAPTION_NOT_UTF8 = "caption_not_utf8"
INVALID_KEY = "invalid_key"
DUPLICATE_KEY = "duplicate_key"
MISSING_IMAGE = "missing_image"

# Download / decode outcomes (img2dataset's error messages, bucketed).
HTTP_404 = "http_404"
HTTP_ERROR = "http_error"
TIMEOUT = "timeout"
CONNECTION_ERROR = "connection_error"
DECODE_ERROR = "decode_error"
IMAGE_REJECTED = "image_rejected"
DISALLOWED = "disallowed"
SHARD_FAILED = "shard_failed"
OTHER = "other"

# Filter-only reasons.
DUPLICATE_IMAGE = "duplicate_image"
BELOW_THRESHOLD = "below_threshold"

#: rows a CC3M TSV must not have many of; a file full of them is not CC3M's format
MALFORMED = (MISSING_COLUMN, EXTRA_COLUMN, BAD_URL)

_BUCKETS: list[tuple[str, re.Pattern[str]]] = [
    (HTTP_404, re.compile(r"HTTP Error 404\b")),
    (HTTP_ERROR, re.compile(r"HTTP Error \d{3}\b")),
    (TIMEOUT, re.compile(r"timed out|timeout", re.IGNORECASE)),
    (DECODE_ERROR, re.compile(r"decod|cannot identify image|truncated", re.IGNORECASE)),
    (IMAGE_REJECTED, re.compile(r"image too small|area too large|aspect ratio too large")),
    (DISALLOWED, re.compile(r"X-Robots-Tag")),
    (
        CONNECTION_ERROR,
        re.compile(
            r"urlopen error|Connection|Name or service|Remote end closed|IncompleteRead"
            r"|certificate|SSL",
            re.IGNORECASE,
        ),
    ),
]


def bucket_error(message: str | None) -> str:
    """Map a raw download/decode error message to one of a few failure reasons."""
    if not message:
        return OTHER
    for reason, pattern in _BUCKETS:
        if pattern.search(message):
            return reason
    return OTHER
