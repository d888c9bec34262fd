"""Image options shared by both ingest sources, applied with img2dataset's own resizer.

The sample source runs the very ``Resizer`` that img2dataset applies to downloaded CC3M
images, so both sources store images resized, re-encoded and rejected the same way, with one
exception: the Resizer's OpenCV decode saturates 16-bit grey images (a 16-bit PNG comes out
white), so the sample source first re-encodes those as 8-bit PNG, scaled as
:mod:`pipeline.decode` does. Downloaded CC3M images go through img2dataset untouched.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cached_property

from PIL import Image

from ..decode import SIXTEEN_BIT_MODES, open_rgb

# albumentations (imported by img2dataset) otherwise asks PyPI for a newer version.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

RESIZE_MODES = ("no", "keep_ratio", "center_crop", "border", "keep_ratio_largest")


@dataclass(frozen=True)
class ImageOptions:
    """img2dataset's image arguments (same names, same meaning)."""

    image_size: int = 256
    resize_mode: str = "keep_ratio"
    encode_quality: int = 95
    min_image_size: int = 0
    resize_only_if_bigger: bool = True

    def img2dataset_kwargs(self) -> dict:
        return {
            "image_size": self.image_size,
            "resize_mode": self.resize_mode,
            "encode_quality": self.encode_quality,
            "encode_format": "jpg",
            "min_image_size": self.min_image_size,
            "resize_only_if_bigger": self.resize_only_if_bigger,
        }

    @cached_property
    def resizer(self):
        from img2dataset.resizer import Resizer

        return Resizer(**self.img2dataset_kwargs())

    def resize(self, data: bytes) -> tuple[bytes | None, dict, str | None]:
        """-> (jpeg bytes or None, size metadata, error message or None)."""
        image, width, height, original_width, original_height, error = self.resizer(
            io.BytesIO(_eight_bit(data))
        )
        sizes = {
            "width": width,
            "height": height,
            "original_width": original_width,
            "original_height": original_height,
        }
        return image, sizes, error


def _eight_bit(data: bytes) -> bytes:
    """16- or 32-bit grey image bytes -> an 8-bit PNG of the same picture; others unchanged."""
    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            mode = image.mode
    except Exception:  # not an image PIL knows: the Resizer reports the error
        return data
    if mode not in SIXTEEN_BIT_MODES:
        return data
    buffer = io.BytesIO()
    open_rgb(data).convert("L").save(buffer, "PNG")
    return buffer.getvalue()
