"""Reading the ``topics:`` and ``domains:`` sections of params.yaml, each value range-checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipeline.params import ParamError, check_choice, check_range, get

from .backends import BACKENDS, ENGINES, make_clusterer, make_reducer
from .ctfidf import make_vectorizer
from .topics import TopicModel


def _optional_int(params: dict[str, Any], key: str, low: int) -> int | None:
    value = get(params, key)
    return None if value is None else check_range(key, value, low, integer=True)


def _flag(params: dict[str, Any], key: str) -> bool:
    value = get(params, key)
    if not isinstance(value, bool):
        raise ParamError(f"params.yaml: {key} = {value!r}: must be true or false")
    return value


def _optional_folder(params: dict[str, Any], key: str) -> str | None:
    value = get(params, key)
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ParamError(f"params.yaml: {key} = {value!r}: must be a folder path or null")
    return value


def topic_model_from_params(params: dict[str, Any], embedder=None) -> TopicModel:
    """A ``TopicModel`` built from ``params["topics"]`` (see params.yaml for the meaning)."""
    backend = check_choice("topics.backend", get(params, "topics.backend"), BACKENDS)
    reducer = _reducer_from_params(params, backend)
    clusterer = _clusterer_from_params(params, backend)
    stop_words = check_choice(
        "topics.stop_words", get(params, "topics.stop_words"), ("english", None)
    )
    return TopicModel(
        embedder=embedder,
        reducer=reducer,
        clusterer=clusterer,
        vectorizer=make_vectorizer(stop_words=stop_words),
        min_topics=check_range(
            "topics.min_topics", get(params, "topics.min_topics"), 1, integer=True
        ),
        fit_sample_size=_optional_int(params, "topics.fit_sample_size", 2),
        sample_seed=check_range(
            "topics.sample_seed", get(params, "topics.sample_seed"), 0, integer=True
        ),
        assign_noise=_flag(params, "topics.assign_noise"),
        top_n_words=check_range(
            "topics.top_n_words", get(params, "topics.top_n_words"), 1, integer=True
        ),
        n_examples=check_range(
            "topics.n_examples", get(params, "topics.n_examples"), 0, integer=True
        ),
    )


def _reducer_from_params(params: dict[str, Any], backend: str):
    """UMAP of ``topics.umap`` (and ``topics.umap_cache``) on ``backend``."""
    metric = get(params, "topics.umap.metric")
    if not isinstance(metric, str):
        raise ParamError(f"params.yaml: topics.umap.metric = {metric!r} must be a metric name")
    return make_reducer(
        backend,
        n_components=check_range(
            "topics.umap.n_components", get(params, "topics.umap.n_components"), 1, integer=True
        ),
        n_neighbors=check_range(
            "topics.umap.n_neighbors", get(params, "topics.umap.n_neighbors"), 2, integer=True
        ),
        min_dist=check_range("topics.umap.min_dist", get(params, "topics.umap.min_dist"), 0.0, 1.0),
        metric=metric,
        random_state=check_range(
            "topics.umap.random_state", get(params, "topics.umap.random_state"), 0, integer=True
        ),
        n_epochs=_optional_int(params, "topics.umap.n_epochs", 1),
        init=check_choice(
            "topics.umap.init", get(params, "topics.umap.init"), ("spectral", "random", "pca")
        ),
        cache=_optional_folder(params, "topics.umap_cache"),
        engine=check_choice("topics.umap.engine", get(params, "topics.umap.engine"), ENGINES),
        blocks=_blocks(params),
    )


def _blocks(params: dict[str, Any]) -> int:
    blocks = check_range("topics.umap.blocks", get(params, "topics.umap.blocks"), 1, integer=True)
    if blocks > 1 and blocks % 2:
        raise ParamError(
            f"params.yaml: topics.umap.blocks = {blocks}: must be 1 or even (the layout's "
            "blocks meet in pairs)"
        )
    return blocks


def _clusterer_from_params(params: dict[str, Any], backend: str):
    """HDBSCAN of ``topics.hdbscan`` on ``backend``."""
    return make_clusterer(
        backend,
        min_cluster_size=check_range(
            "topics.hdbscan.min_cluster_size",
            get(params, "topics.hdbscan.min_cluster_size"),
            2,
            integer=True,
        ),
        min_samples=_optional_int(params, "topics.hdbscan.min_samples", 1),
        cluster_selection_method=check_choice(
            "topics.hdbscan.cluster_selection_method",
            get(params, "topics.hdbscan.cluster_selection_method"),
            ("eom", "leaf"),
        ),
    )


@dataclass(frozen=True)
class DomainSettings:
    k: int
    min_points_per_domain: int
    seed: int
    niter: int
    nredo: int
    montage_topics: int
    montage_images: int


def domain_settings(params: dict[str, Any]) -> DomainSettings:
    def integer(name: str, low: int) -> int:
        return check_range(f"domains.{name}", get(params, f"domains.{name}"), low, integer=True)

    return DomainSettings(
        k=integer("k", 1),
        min_points_per_domain=integer("min_points_per_domain", 1),
        seed=integer("seed", 0),
        niter=integer("niter", 1),
        nredo=integer("nredo", 1),
        montage_topics=integer("montage_topics", 0),
        montage_images=integer("montage_images", 1),
    )
