"""Hand-written prompt templates per dataset (``datasets.md``).

``COOP_TEMPLATES``: CoOp's CUSTOM_TEMPLATES (``trainers/zsclip.py``), used for zero-shot
CLIP. ``PROGRAD_TEMPLATES``: ProGrad's own table (``trainers/prograd.py`` lines 201-217),
used for its zero-shot teacher and context initialisation; it moves the class name to the
end for OxfordPets, OxfordFlowers, FGVCAircraft, DescribableTextures and Food101.
"""

from __future__ import annotations

DEFAULT_TEMPLATE = "a photo of a {}."

_PHOTO = "a photo of a {}."

COOP_TEMPLATES: dict[str, str] = {
    "OxfordPets": "a photo of a {}, a type of pet.",
    "OxfordFlowers": "a photo of a {}, a type of flower.",
    "FGVCAircraft": "a photo of a {}, a type of aircraft.",
    "DescribableTextures": "{} texture.",
    "EuroSAT": "a centered satellite photo of {}.",
    "StanfordCars": _PHOTO,
    "Food101": "a photo of {}, a type of food.",
    "SUN397": _PHOTO,
    "Caltech101": _PHOTO,
    "UCF101": "a photo of a person doing {}.",
    "ImageNet": _PHOTO,
    "ImageNetSketch": _PHOTO,
    "ImageNetV2": _PHOTO,
    "ImageNetA": _PHOTO,
    "ImageNetR": _PHOTO,
}

PROGRAD_TEMPLATES: dict[str, str] = {
    **COOP_TEMPLATES,
    "OxfordPets": "a type of pet, a photo of a {}.",
    "OxfordFlowers": "a type of flower, a photo of a {}.",
    "FGVCAircraft": "a type of aircraft, a photo of a {}.",
    "DescribableTextures": "a texture of {}.",
    "Food101": "a type of food, a photo of {}.",
}


def check_template(template: object, where: str) -> str:
    """A template is a string with exactly one ``{}`` where the class name goes."""
    if not isinstance(template, str) or template.count("{}") != 1:
        raise ValueError(f"{where}: template {template!r} must be a string with exactly one '{{}}'")
    return template
