"""Cross-Modal Hierarchical Clustering (GRAM 3.2): caption topics, then visual domains.

* :mod:`.embed` - Sentence-BERT caption embeddings (all-MiniLM-L6-v2 from its package).
* :mod:`.backends` - UMAP / HDBSCAN on CPU or cuML.
* :mod:`.block_umap` - ours: UMAP on every CPU core, reproducibly (``topics.umap.engine:
  block``), from :mod:`.umap_graph` (k-NN, fuzzy graph, spectral init) and :mod:`.umap_layout`
  (the SGD on vertex blocks); :mod:`.umap_cache` keeps umap-learn's fits between runs.
* :mod:`.ctfidf` - the paper's cluster-wise TF-IDF (Eq. 3) and unique topic words.
* :mod:`.topics` - ``TopicModel``: embed -> reduce -> cluster -> name, optional fit-on-sample.
* :mod:`.domains` - faiss k-means on image features inside each topic.
* :mod:`.report`, :mod:`.montage` - tables and pictures for people.

Heavy libraries (umap, hdbscan, faiss, sentence-transformers) load only when used.
"""

from .ctfidf import ClusterTfidf, cluster_tfidf, make_vectorizer, unique_labels
from .domains import cluster_domains, domain_count, kmeans_domains
from .topics import TopicError, TopicModel, TopicResult

__all__ = [
    "ClusterTfidf",
    "TopicError",
    "TopicModel",
    "TopicResult",
    "cluster_domains",
    "cluster_tfidf",
    "domain_count",
    "kmeans_domains",
    "make_vectorizer",
    "unique_labels",
]
