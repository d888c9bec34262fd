"""Stage 1 of GRAM: image-caption pre-training pairs.

``ingest`` turns a source (the embedded sample pairs, or the user's CC3M TSV downloaded with
img2dataset) into WebDataset shards plus an index that lists every input row with a status;
``embed`` computes image and caption features of every shard member under the backbone;
``filter`` keeps the pairs whose image-caption cosine similarity clears a threshold.
"""
