"""embed_pairs: stored bytes independent of how the work is split, and resumable in parts."""

import hashlib
import shutil

import numpy as np
import pytest
import yaml

from pipeline.pairs.embed import CHECKPOINT_EVERY, embed_pairs, load_embeddings
from tests.test_pairs_sample import ingest, jpeg, write_tar


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_shardings(tmp_path_factory):
    """The same 8 usable pairs ingested as 8 one-pair shards and as one shard."""
    small, _, _ = ingest(tmp_path_factory.mktemp("one_per_shard"), shard_size=1)
    large, _, _ = ingest(tmp_path_factory.mktemp("one_shard"), shard_size=100)
    assert len(list((small / "shards").glob("*.tar"))) == 8
    assert len(list((large / "shards").glob("*.tar"))) == 1
    return small / "shards", large / "shards"


def test_bytes_do_not_depend_on_shard_size_workers_or_checkpoints(
    two_shardings, tmp_path, tiny_clip
):
    small, large = two_shardings
    runs = {
        "one_per_shard": (small, {"num_workers": 0, "checkpoint_every": 3}),
        "one_shard_workers": (large, {"num_workers": 2, "checkpoint_every": 7}),
        "one_shard_default": (large, {}),
    }
    digests = set()
    for name, (shards, options) in runs.items():
        out = tmp_path / f"{name}.npz"
        embed_pairs(shards, tiny_clip, "tiny", out, tmp_path / name, batch_size=3, **options)
        digests.add(md5(out))
    assert len(digests) == 1


def test_batch_size_is_the_block_size_and_moves_only_the_last_bits(
    two_shardings, tmp_path, tiny_clip
):
    """Kernels give a row other last bits in another batch (see pipeline/pairs/embed.py), so
    the block size is part of the result; the shard size never is (test above)."""
    small, large = two_shardings
    embed_pairs(small, tiny_clip, "tiny", tmp_path / "b2.npz", tmp_path / "p2", batch_size=2)
    embed_pairs(large, tiny_clip, "tiny", tmp_path / "b5.npz", tmp_path / "p5", batch_size=5)
    two, five = load_embeddings(tmp_path / "b2.npz"), load_embeddings(tmp_path / "b5.npz")
    for name in two:
        if two[name].dtype.kind == "f":
            np.testing.assert_allclose(two[name], five[name], rtol=1e-5, atol=1e-6)
        else:
            assert (two[name] == five[name]).all(), name


class Interrupted(Exception):
    """Stands in for a killed run."""


def test_an_interrupted_run_at_default_settings_embeds_only_what_was_left(
    tmp_path, tiny_clip, monkeypatch
):
    defaults = yaml.safe_load(open("params.yaml"))["embed_pairs"]
    assert defaults["checkpoint_every"] == CHECKPOINT_EVERY
    batch = defaults["batch_size"]
    count = CHECKPOINT_EVERY + 2 * batch + 5  # one shard, as ingest.shard_size 10000 makes it
    image = jpeg(0, size=(8, 8))
    members = []
    for i in range(count):
        members += [(f"{i:05d}.jpg", image), (f"{i:05d}.txt", f"caption {i}".encode())]
    (tmp_path / "shards").mkdir()
    write_tar(tmp_path / "shards" / "pairs-000000.tar", members)
    args = (tmp_path / "shards", tiny_clip)
    calls = []
    real = tiny_clip.encode_image
    crash_at = CHECKPOINT_EVERY // batch + 2  # two blocks into the second part

    def encode_image(images):
        calls.append(len(images))
        if len(calls) == crash_at:
            raise Interrupted
        return real(images)

    monkeypatch.setattr(tiny_clip, "encode_image", encode_image)
    with pytest.raises(Interrupted):
        embed_pairs(*args, "tiny", tmp_path / "resumed.npz", tmp_path / "p1", batch_size=batch)
    assert [p.name for p in (tmp_path / "p1").glob("*.npz")] == ["part-000000.npz"]

    # the saved part is never reused under another backbone: everything is embedded again
    shutil.copytree(tmp_path / "p1", tmp_path / "p2")
    calls.clear()
    crash_at = 0
    embed_pairs(*args, "other", tmp_path / "whole.npz", tmp_path / "p2", batch_size=batch)
    assert sum(calls) == count

    calls.clear()
    metrics = embed_pairs(
        *args, "tiny", tmp_path / "resumed.npz", tmp_path / "p1", batch_size=batch
    )
    assert sum(calls) == count - CHECKPOINT_EVERY  # only the samples after the saved part
    assert metrics == {"input": count, "embedded": count, "failed": {}}
    assert md5(tmp_path / "resumed.npz") == md5(tmp_path / "whole.npz")
    assert not (tmp_path / "p1").exists()
