"""A web server on 127.0.0.1 serving tiny generated images, and CC3M-format TSVs pointing at
it, so that img2dataset downloads for real without any network but the loopback."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

# A port nothing listens on: connections to it are refused at once.
REFUSED_URL = "http://127.0.0.1:9/refused.jpg"


@dataclass(frozen=True)
class Response:
    status: int
    content_type: str
    body: bytes
    delay: float = 0.0  # seconds to wait before answering (a slow server)


def noise_jpeg(seed: int, shape: tuple[int, int] = (48, 64)) -> bytes:
    """A JPEG of seeded uniform noise, ``shape`` = (height, width)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def image(seed: int, shape: tuple[int, int] = (48, 64)) -> Response:
    return Response(200, "image/jpeg", noise_jpeg(seed, shape))


def _handler(routes: Mapping[str, Response]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's naming)
            response = routes.get(self.path, Response(404, "text/plain", b"not found"))
            time.sleep(response.delay)
            try:
                self.send_response(response.status)
                self.send_header("Content-Type", response.content_type)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                self.wfile.write(response.body)
            except OSError:  # the client gave up (its timeout)
                pass

        def log_message(self, *args):
            pass

    return Handler


@contextmanager
def serve(routes: Mapping[str, Response]) -> Iterator[str]:
    """Serve ``routes`` (path -> response, anything else a 404) on 127.0.0.1 at a free port;
    yields the base URL, e.g. ``http://127.0.0.1:41234``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(dict(routes)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def write_cc3m_tsv(path: Path, rows: Sequence[tuple[str | bytes, str | None]]) -> Path:
    """``rows`` of (caption, url) in ``Train_GCC-training.tsv``'s format: caption TAB url, no
    header. A bytes caption is written as is (e.g. not UTF-8); a url of None leaves the row
    with one column."""
    lines = []
    for caption, url in rows:
        text = caption if isinstance(caption, bytes) else caption.encode()
        lines.append(text if url is None else text + b"\t" + url.encode())
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def image_routes(count: int, seed: int = 0, shape: tuple[int, int] = (48, 64)) -> dict:
    """``/images/<i>.jpg`` for i < count, each a distinct noise JPEG."""
    return {f"/images/{i}.jpg": image(seed + i, shape) for i in range(count)}


# Caption parts: distinct captions whose words recur across rows, so that caption
# clustering (CHC) has shared vocabulary to group by, unlike "caption 0", "caption 1", ...
STYLES = ("a photo of", "a sketch of", "a painting of", "a cartoon of", "a close-up of")
SUBJECTS = (
    "a dog",
    "a red car",
    "a bowl of soup",
    "a mountain lake",
    "an old airplane",
    "a striped cloth",
    "a tulip",
)
PLACES = ("on the beach", "in the city", "at night", "in the snow", "indoors")


def varied_captions(count: int) -> list[str]:
    """``count`` distinct captions (at most 175), the same for the same count."""
    total = len(STYLES) * len(SUBJECTS) * len(PLACES)
    if not 0 < count <= total:
        raise ValueError(f"count must be in 1..{total}, got {count}")
    captions = []
    for i in range(count):
        style = STYLES[i % len(STYLES)]
        subject = SUBJECTS[(i // len(STYLES)) % len(SUBJECTS)]
        place = PLACES[i // (len(STYLES) * len(SUBJECTS))]
        captions.append(f"{style} {subject} {place}")
    return captions


def captioned_image_tsv(path: Path, base_url: str, count: int) -> Path:
    """A CC3M-format TSV of ``count`` rows, row i = (caption i of :func:`varied_captions`,
    image i of :func:`image_routes`), every one downloadable from the server at
    ``base_url``."""
    rows = [
        (caption, f"{base_url}/images/{i}.jpg") for i, caption in enumerate(varied_captions(count))
    ]
    return write_cc3m_tsv(path, rows)
