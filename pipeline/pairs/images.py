"""Image options shared by both ingest sources, applied with img2dataset's own resizer.

The sample source runs the very ``Resizer`` that img2dataset applies to downloaded CC3M
images, so both sources store images resized, re-encoded and rejected the same way.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from functools import cached_property

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
            io.BytesIO(data)
        )
        sizes = {
            "width": width,
            "height": height,
            "original_width": original_width,
            "original_height": original_height,
        }
        return image, sizes, error
