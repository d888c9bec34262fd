"""The loopback server and CC3M-format TSV helpers that the ingest tests download from."""

import io
import time
import urllib.error
import urllib.request

import pytest
from PIL import Image

from pipeline.pairs.tsv import read_cc3m_tsv
from tests.loopback_http import (
    Response,
    captioned_image_tsv,
    image_routes,
    serve,
    varied_captions,
)


def fetch(url, timeout=5.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.headers["Content-Type"], response.read()


def test_tsv_rows_download_their_own_images(tmp_path):
    routes = image_routes(3, seed=7, shape=(20, 30))
    with serve(routes) as base_url:
        assert base_url.startswith("http://127.0.0.1:")
        rows = read_cc3m_tsv(captioned_image_tsv(tmp_path / "cc3m.tsv", base_url, 3), 0.0)
        assert [row.caption for row in rows] == [
            "a photo of a dog on the beach",
            "a sketch of a dog on the beach",
            "a painting of a dog on the beach",
        ]
        assert all(row.reason is None for row in rows)
        bodies = []
        for i, row in enumerate(rows):
            kind, body = fetch(row.target)
            assert (kind, body) == ("image/jpeg", routes[f"/images/{i}.jpg"].body)
            assert Image.open(io.BytesIO(body)).size == (30, 20)
            bodies.append(body)
        assert len(set(bodies)) == 3
        with pytest.raises(urllib.error.HTTPError, match="404"):
            fetch(f"{base_url}/images/3.jpg")


def test_a_slow_route_outlasts_a_short_timeout():
    with serve({"/slow.jpg": Response(200, "image/jpeg", b"x", delay=1.0)}) as base_url:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            fetch(f"{base_url}/slow.jpg", timeout=0.2)
        assert time.monotonic() - start < 0.9


def test_varied_captions_are_distinct_and_share_words():
    captions = varied_captions(175)
    assert len(set(captions)) == 175
    assert captions[-1] == "a close-up of a tulip indoors"
    assert sum("a dog" in c for c in captions) == 25  # 5 styles x 5 places
    with pytest.raises(ValueError, match="1..175"):
        varied_captions(176)
