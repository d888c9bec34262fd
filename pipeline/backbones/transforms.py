"""Image preprocessing shared by every backbone (CoOp/Dassl's recipe, method.md section 5).

train: RandomResizedCrop(size, scale (0.08, 1), bicubic) + RandomHorizontalFlip + normalise;
test:  resize the shorter side to ``size`` (bicubic) + centre crop + normalise.
Images are converted to RGB first: several datasets hold grayscale or palette images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image
from torch import Tensor
from torchvision import transforms as T

from ..decode import to_rgb

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _to_rgb(image: Image.Image) -> Image.Image:
    return to_rgb(image)


def image_transform(
    size: int, mean: Sequence[float], std: Sequence[float], train: bool
) -> Callable[[Image.Image], Tensor]:
    bicubic = T.InterpolationMode.BICUBIC
    if train:
        geometry = [
            T.RandomResizedCrop(size, scale=(0.08, 1.0), interpolation=bicubic),
            T.RandomHorizontalFlip(),
        ]
    else:
        geometry = [T.Resize(size, interpolation=bicubic), T.CenterCrop(size)]
    return T.Compose([_to_rgb, *geometry, T.ToTensor(), T.Normalize(mean, std)])
