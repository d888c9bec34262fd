"""TopicModel on synthetic caption clusters: topics, determinism, errors, fit-on-sample."""

import numpy as np
import pytest
from sklearn.decomposition import PCA
from sklearn.metrics import adjusted_rand_score

from pipeline.chc.backends import make_clusterer, make_reducer
from pipeline.chc.config import topic_model_from_params
from pipeline.chc.topics import TopicError, TopicModel, assign_to_topics
from pipeline.params import ParamError

WORDS = ["dog", "bicycle", "castle", "violin", "pizza", "rocket"]
FILLER = ["small", "old", "red", "drawing", "photo", "icon", "vector", "blue"]


def blobs(per_topic=50, dim=16, spread=0.12, seed=0):
    """Six well separated clusters whose captions share one distinctive word each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(WORDS), dim))
    embeddings, captions, truth = [], [], []
    for topic, word in enumerate(WORDS):
        for i in range(per_topic):
            embeddings.append(centres[topic] + spread * rng.normal(size=dim))
            captions.append(f"a {FILLER[i % 8]} {word} {FILLER[(i * 3 + topic) % 8]}")
            truth.append(topic)
    return captions, np.asarray(embeddings, dtype=np.float32), np.asarray(truth)


def model(**options):
    reducer = make_reducer(n_neighbors=10, n_epochs=100)  # few epochs: small, easy data
    clusterer = make_clusterer(min_cluster_size=10)
    embedder = options.pop("embedder", None)
    return TopicModel(embedder=embedder, reducer=reducer, clusterer=clusterer, **options)


class FakeEmbedder:
    def __init__(self, embeddings):
        self.embeddings = embeddings
        self.calls = 0

    def encode(self, captions):
        self.calls += 1
        assert len(captions) == len(self.embeddings)
        return self.embeddings


@pytest.fixture(scope="module")
def data():
    return blobs()


def test_topics_recover_clusters_and_name_them(data):
    captions, embeddings, truth = data
    embedder = FakeEmbedder(embeddings)
    result = model(embedder=embedder).fit(captions)  # no embeddings given -> embedder used
    assert embedder.calls == 1
    assert result.num_topics == len(WORDS)
    clustered = result.labels >= 0
    assert result.noise_fraction <= 0.05
    assert adjusted_rand_score(truth[clustered], result.labels[clustered]) == 1.0
    assert sorted(result.topic_words) == sorted(WORDS)
    table = result.topics
    assert list(table.columns) == ["topic_id", "topic_word", "size", "words", "scores", "examples"]
    assert list(table["topic_id"]) == list(range(len(WORDS)))
    assert list(table["size"]) == sorted(table["size"], reverse=True)
    assert table["size"].sum() == clustered.sum()
    for row in table.itertuples():
        assert row.words[0] == row.topic_word and len(row.words) <= 10
        assert len(row.examples) == 3 and all(row.topic_word in e for e in row.examples)
        members = np.flatnonzero(result.labels == row.topic_id)
        assert {captions[i].split()[2] for i in members} == {row.topic_word}
    assert result.reduced.shape == (len(captions), 5)
    assert list(result.words_of(np.array([-1, 0]))) == ["", result.topic_words[0]]


def test_same_params_give_identical_topics(data):
    captions, embeddings, _ = data
    first = model().fit(captions, embeddings)
    second = model().fit(captions, embeddings)
    np.testing.assert_array_equal(first.labels, second.labels)
    np.testing.assert_array_equal(first.reduced, second.reduced)
    assert first.topics.equals(second.topics)


def test_only_noise_names_the_params_to_change():
    rng = np.random.default_rng(1)
    embeddings = rng.uniform(size=(300, 8)).astype(np.float32)  # no structure at all
    topic_model = TopicModel(
        embedder=None, reducer=PCA(n_components=5), clusterer=make_clusterer(min_cluster_size=50)
    )
    with pytest.raises(TopicError, match="only noise") as error:
        topic_model.fit([f"caption {i}" for i in range(300)], embeddings)
    message = str(error.value)
    assert "topics.hdbscan.min_cluster_size (now 50)" in message
    assert "topics.umap.n_neighbors" in message and "more captions" in message


def test_fewer_topics_than_a_meta_task_needs(data):
    captions, embeddings, _ = data
    with pytest.raises(TopicError, match="6 topics") as error:
        model(min_topics=8).fit(captions, embeddings)
    message = str(error.value)
    assert "topics.min_topics" in message
    assert "topics.hdbscan.min_cluster_size (now 10)" in message
    assert "topics.umap.n_neighbors (now 10)" in message


def test_too_few_captions_for_umap():
    captions, embeddings, _ = blobs(per_topic=1)
    topic_model = TopicModel(
        embedder=None,
        reducer=make_reducer(n_neighbors=10),
        clusterer=make_clusterer(min_cluster_size=2),
        min_topics=2,
    )
    with pytest.raises(TopicError) as error:
        topic_model.fit(captions, embeddings)
    assert str(error.value).startswith(
        f"topics.umap.n_neighbors: 10: {len(captions)} captions to fit are too few for UMAP"
    )


class NoUmap:
    """A reducer that fails the test if it is ever run."""

    n_neighbors = 2

    def fit_transform(self, x):
        raise AssertionError("UMAP ran although the outcome was known before")


@pytest.mark.parametrize("count, fit_sample_size", [(49, None), (0, None), (400, 49)])
def test_too_few_captions_for_the_topics_fails_before_umap(count, fit_sample_size):
    rng = np.random.default_rng(0)
    topic_model = TopicModel(
        embedder=None,
        reducer=NoUmap(),
        clusterer=make_clusterer(min_cluster_size=10),
        min_topics=5,
        fit_sample_size=fit_sample_size,
    )
    with pytest.raises(TopicError) as error:
        topic_model.fit([f"c{i}" for i in range(count)], rng.normal(size=(count, 4)) + 0.1)
    message = str(error.value)
    fitted = min(count, fit_sample_size or count)
    assert message.startswith(
        f"topics.hdbscan.min_cluster_size: 10: {fitted} captions to fit cannot form "
        "topics.min_topics = 5 topics of at least 10 captions each (that takes 50)"
    )
    assert ("topics.fit_sample_size" in message) == (fit_sample_size is not None)
    assert "filter.min_similarity" in message


def test_embeddings_must_match_captions(data):
    captions, embeddings, _ = data
    with pytest.raises(ValueError, match="one row per caption"):
        model().fit(captions[:-1], embeddings)


def test_assignment_to_nearest_centroid_with_calibrated_noise():
    angles = np.deg2rad([0, 10, -10, 90, 80, 100, 45, 5, 60, 85])
    embeddings = 2.0 * np.stack([np.cos(angles), np.sin(angles)], axis=1)  # norms do not matter
    fit_index = np.arange(7)
    fit_labels = np.array([0, 0, 0, 1, 1, 1, -1])
    rest = np.array([7, 8, 9])
    # Centroids at 0 and 90 degrees. Fitted best cosines: 1, cos 10 (x2), 1, cos 10 (x2) and
    # cos 45 for the noise point; noise fraction 1/7 -> threshold = linear quantile:
    # cos 45 + 6/7 * (cos 10 - cos 45) = 0.9454. At 5 deg: cos 5 = 0.996 -> topic 0;
    # at 60 deg: best is topic 1 with cos 30 = 0.866 < threshold -> noise; 85 deg -> topic 1.
    got = assign_to_topics(embeddings, fit_index, fit_labels, rest, assign_noise=True)
    np.testing.assert_array_equal(got, [0, -1, 1])
    got = assign_to_topics(embeddings, fit_index, fit_labels, rest, assign_noise=False)
    np.testing.assert_array_equal(got, [0, 1, 1])


def test_fit_on_sample_assigns_the_rest(data):
    captions, embeddings, truth = data
    sampled = model(fit_sample_size=180, sample_seed=3).fit(captions, embeddings)
    assert len(sampled.fit_index) == 180 and sampled.reduced.shape == (180, 5)
    assert len(np.unique(sampled.fit_index)) == 180
    clustered = sampled.labels >= 0
    assert clustered.mean() >= 0.95
    assert adjusted_rand_score(truth[clustered], sampled.labels[clustered]) == 1.0
    assert sorted(sampled.topic_words) == sorted(WORDS)
    assert sampled.topics["size"].sum() == clustered.sum()
    again = model(fit_sample_size=180, sample_seed=3).fit(captions, embeddings)
    np.testing.assert_array_equal(sampled.labels, again.labels)


def test_params_are_checked_by_key():
    params = {
        "topics": {
            "backend": "cpu",
            "umap": {
                "n_components": 5,
                "n_neighbors": 15,
                "min_dist": 0.0,
                "metric": "cosine",
                "random_state": 42,
                "n_epochs": None,
                "init": "spectral",
                "engine": "umap-learn",
                "blocks": 4,
            },
            "umap_cache": None,
            "hdbscan": {
                "min_cluster_size": 1,
                "min_samples": None,
                "cluster_selection_method": "eom",
            },
            "stop_words": "english",
            "min_topics": 2,
            "fit_sample_size": None,
            "sample_seed": 0,
            "assign_noise": True,
            "top_n_words": 10,
            "n_examples": 3,
        }
    }
    with pytest.raises(ParamError, match="topics.hdbscan.min_cluster_size"):
        topic_model_from_params(params)
    params["topics"]["hdbscan"]["min_cluster_size"] = 10
    params["topics"]["backend"] = "gpu"
    with pytest.raises(ParamError, match="topics.backend"):
        topic_model_from_params(params)
    params["topics"]["backend"] = "cpu"
    built = topic_model_from_params(params, embedder=FakeEmbedder(None))
    assert built.reducer.n_neighbors == 15 and built.clusterer.min_cluster_size == 10
    assert built.min_topics == 2
    assert type(built.reducer).__name__ == "UMAP"
    params["topics"]["umap_cache"] = 3
    with pytest.raises(ParamError, match="topics.umap_cache"):
        topic_model_from_params(params)
    params["topics"]["umap_cache"] = "some/folder"
    cached = topic_model_from_params(params, embedder=FakeEmbedder(None)).reducer
    assert type(cached).__name__ == "CachedUMAP" and str(cached.cache_dir) == "some/folder"
    assert cached.n_neighbors == 15 and cached.options["min_dist"] == 0.0
    params["topics"]["umap"]["engine"] = "block"
    block = topic_model_from_params(params, embedder=FakeEmbedder(None)).reducer
    assert type(block).__name__ == "BlockUMAP" and block.blocks == 4
    assert str(block.cache_dir) == "some/folder" and block.n_neighbors == 15
    params["topics"]["umap"]["blocks"] = 3
    with pytest.raises(ParamError, match="topics.umap.blocks = 3: must be 1 or even"):
        topic_model_from_params(params)
    params["topics"]["umap"]["engine"] = "fast"
    with pytest.raises(ParamError, match="topics.umap.engine"):
        topic_model_from_params(params)


def test_backend_choice_and_fallback(monkeypatch, caplog):
    from pipeline.chc import backends

    monkeypatch.setattr(backends, "cuml_available", lambda: False)
    assert backends.resolve_backend("cpu") == "cpu"
    assert backends.resolve_backend("auto") == "cpu"
    assert "cuML is not importable" in caplog.text
    with pytest.raises(ImportError, match="topics.backend = cuml .* set topics.backend"):
        backends.resolve_backend("cuml")
    monkeypatch.setattr(backends, "cuml_available", lambda: True)
    assert backends.resolve_backend("auto") == "cuml"
    assert backends.resolve_backend("cpu") == "cpu"


def test_clusterer_labels_equal_hdbscan_defaults():
    """make_clusterer sets hdbscan's core-distance workers to the CPU count: same labels."""
    from hdbscan import HDBSCAN

    rng = np.random.default_rng(3)
    X = np.concatenate(
        [rng.normal(c, 0.3, (150, 5)) for c in (0, 3, 6)] + [rng.uniform(-2, 8, (60, 5))]
    )
    expected = HDBSCAN(min_cluster_size=10, metric="euclidean").fit(X).labels_
    np.testing.assert_array_equal(make_clusterer(min_cluster_size=10).fit(X).labels_, expected)
    assert expected.max() >= 2 and (expected == -1).any()
