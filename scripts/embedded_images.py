"""Image rendering for the embedded sample: fixed encoder settings, pixel-level dedup."""

from __future__ import annotations

import hashlib
import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

CLIPART_SIDE = 128  # longer side of openclipart images, pixels
SMALL_SIDE = 64  # Fashion-MNIST (28 px) and digits (8 px) are upscaled to this
# A few openclipart PNGs are rendered at up to 623 Mpx; decoding one costs seconds and GBs.
MAX_SOURCE_PIXELS = 25_000_000
JPEG_OPTIONS = {"format": "JPEG", "quality": 85, "subsampling": 2, "optimize": False}
PNG_OPTIONS = {"format": "PNG", "compress_level": 9, "optimize": False}


def clipart_image(path: Path) -> Image.Image | None:
    """RGB on white, longer side CLIPART_SIDE; None for a PNG too large to decode cheaply."""
    try:
        with warnings.catch_warnings():
            # Pillow warns from 89 Mpx and refuses from 179 Mpx; the size check below decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
    except Image.DecompressionBombError:
        return None
    with im:
        if im.size[0] * im.size[1] > MAX_SOURCE_PIXELS:
            return None
        rgba = im.convert("RGBA")
    # Clip art is transparent line art: composite on white before resizing (no dark fringes).
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    rgb = Image.alpha_composite(white, rgba).convert("RGB")
    scale = CLIPART_SIDE / max(rgb.size)
    size = tuple(max(1, round(side * scale)) for side in rgb.size)
    return rgb.resize(size, Image.Resampling.LANCZOS)


def grey_image(pixels: np.ndarray) -> Image.Image:
    """A small grey array (uint8) upscaled to SMALL_SIDE, stored as RGB."""
    image = Image.fromarray(pixels, mode="L")
    return image.resize((SMALL_SIDE, SMALL_SIDE), Image.Resampling.BICUBIC).convert("RGB")


def sketch(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Sobel edge magnitude of the grey image, dark lines on white."""
    grey = np.asarray(image.convert("L"), dtype=np.float64)
    magnitude = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    strength = np.sqrt(magnitude / max(magnitude.max(), 1e-9))
    return Image.fromarray(np.round(255 * (1 - strength)).astype(np.uint8)).convert("RGB")


def inverted(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Photometric negative: the garment turns dark on a white background."""
    return Image.fromarray(255 - np.asarray(image))


def rendition(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Garment tinted one random colour, composited (alpha = grey level) over random stripes."""
    alpha = np.asarray(image.convert("L"), dtype=np.float64)[..., None] / 255
    ink, stripe_a, stripe_b = rng.integers(0, 256, size=(3, 3))
    period = int(rng.integers(6, 13))
    rows, cols = np.indices(alpha.shape[:2])
    band = ((rows + cols) // (period // 2)) % 2 == 0
    background = np.where(band[..., None], stripe_a, stripe_b)
    mixed = alpha * ink + (1 - alpha) * background
    return Image.fromarray(np.round(mixed).astype(np.uint8))


VARIANTS = {"sketch": sketch, "inverted": inverted, "rendition": rendition}


class ImageWriter:
    """Encodes images with fixed settings and refuses any pixel content written before.

    Disjointness (pairs vs downstream, split vs split) is checked on the decoded pixels of
    the encoded file, the way tests/test_embedded_data.py checks it.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def write(self, image: Image.Image, path: Path) -> bool:
        buffer = io.BytesIO()
        image.save(buffer, **(JPEG_OPTIONS if path.suffix == ".jpg" else PNG_OPTIONS))
        with Image.open(io.BytesIO(buffer.getvalue())) as decoded:
            digest = hashlib.sha256(decoded.convert("RGB").tobytes()).hexdigest()
        if digest in self.seen:
            return False
        self.seen.add(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(buffer.getvalue())
        return True
