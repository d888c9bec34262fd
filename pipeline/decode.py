"""The one way the pipeline turns image files into RGB: every PIL mode mapped to what it shows.

``Image.convert("RGB")`` alone gets several modes wrong: 16-bit grey (``I;16``, and ``I``,
as which PIL opens 16- and 32-bit grey PNG/TIFF) is clipped at 255, so a 16-bit PNG turns
almost white; and alpha is dropped, so what lay under transparent pixels (often black) shows.
Here:

* 16-bit and 32-bit integer grey are read as 16-bit samples and scaled to 8 bits
  (``round(v * 255 / 65535)``; values outside 0..65535 are clipped), since 16 bits is what
  PNG and TIFF store in them;
* float grey (``F``) keeps PIL's reading (0..255, clipped);
* images with alpha (``RGBA``, ``LA``, ``PA``, palette with a transparency entry) are
  composited on white, the background a viewer shows them on;
* ``CMYK`` uses PIL's conversion (``(255 - C)(255 - K) / 255`` per channel); ICC profiles are
  not applied;
* animated files (GIF, APNG, WebP) give their first frame.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
WHITE = (255, 255, 255)


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    scaled = np.rint(np.clip(values, 0, 65535) * (255.0 / 65535.0)).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    )


def to_rgb(image: Image.Image) -> Image.Image:
    """Any opened PIL image (first frame if animated) -> an 8-bit RGB image."""
    if getattr(image, "n_frames", 1) > 1 and image.tell() != 0:
        image.seek(0)
    if image.mode == "RGB":
        return image
    if image.mode in SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(image).convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def open_rgb(source: str | Path | bytes) -> Image.Image:
    """Decode a file (path or its bytes) fully to RGB; PIL's errors pass through to the caller,
    which knows what to name in its message."""
    stream = io.BytesIO(source) if isinstance(source, bytes | bytearray) else source
    with Image.open(stream) as image:
        image.load()  # a truncated file fails here, not inside a transform later
        rgb = to_rgb(image)
        if rgb is image:  # the RGB image itself: copy it out before the file is closed
            rgb = image.copy()
        return rgb
