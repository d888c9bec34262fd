import pytest
import torch
from PIL import Image

from pipeline.features import ImageDecodeError, image_features
from tests.coop_fakes import write_noise_images


@pytest.fixture()
def images(tmp_path):
    return write_noise_images(tmp_path, 5, seed=0, shape=(40, 48))


class CountingEncoder:
    """Wraps a backbone's encode_image to count how many images it really encodes."""

    def __init__(self, backbone, monkeypatch):
        self.count = 0
        original = backbone.encode_image

        def counted(batch, visual_prompt=None):
            # rows of real images; all-zero rows are the padding of a short batch
            self.count += int((batch.flatten(1).abs().sum(1) > 0).sum())
            return original(batch, visual_prompt)

        monkeypatch.setattr(backbone, "encode_image", counted)


def test_cached_features_equal_direct_encoding_and_are_computed_once(
    tiny_clip, images, tmp_path, monkeypatch
):
    counter = CountingEncoder(tiny_clip, monkeypatch)
    cache = tmp_path / "cache"
    first = image_features(tiny_clip, images, cache_dir=cache, batch_size=2)
    assert counter.count == 5
    again = image_features(tiny_clip, images[::-1], cache_dir=cache)
    assert counter.count == 5  # nothing re-encoded
    torch.testing.assert_close(again, first.flip(0))

    transform = tiny_clip.image_transform(train=False)
    with torch.no_grad():
        direct = tiny_clip.encode_image(torch.stack([transform(Image.open(p)) for p in images]))
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=1e-5)


def test_interrupted_encoding_resumes_with_only_the_missing_images(
    tiny_clip, images, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    partial = image_features(tiny_clip, images[:2], cache_dir=cache)
    counter = CountingEncoder(tiny_clip, monkeypatch)
    full = image_features(tiny_clip, images, cache_dir=cache)
    assert counter.count == 3
    assert torch.equal(full[:2], partial)


def test_a_stored_feature_does_not_depend_on_the_images_encoded_with_it(
    tiny_clip, images, tmp_path
):
    together = image_features(tiny_clip, images, cache_dir=tmp_path / "a", batch_size=4)
    alone = image_features(tiny_clip, images[4:], cache_dir=tmp_path / "b", batch_size=4)
    others = image_features(tiny_clip, images[2:], cache_dir=tmp_path / "c", batch_size=4)
    assert torch.equal(together[4:], alone)
    assert torch.equal(together[2:], others)


def test_augmented_views_are_fixed_per_image_and_view(tiny_clip, images, tmp_path):
    torch.manual_seed(123)
    view0 = image_features(tiny_clip, images, view=0, cache_dir=tmp_path / "a")
    torch.manual_seed(456)  # the global random state must not matter
    view0_again = image_features(tiny_clip, images[::-1], view=0, cache_dir=tmp_path / "b")
    view1 = image_features(tiny_clip, images, view=1, cache_dir=tmp_path / "a")
    test = image_features(tiny_clip, images, cache_dir=tmp_path / "a")
    torch.testing.assert_close(view0, view0_again.flip(0))
    assert not torch.allclose(view0, view1)
    assert not torch.allclose(view0, test)


def test_augmented_views_do_not_depend_on_where_the_files_live(tiny_clip, images, tmp_path):
    """A clone in another folder (or on another machine) draws the same training crops."""
    moved = []
    for path in images:
        target = tmp_path / "elsewhere" / "deeper" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
        moved.append(target)
    here = image_features(tiny_clip, images, view=0, cache_dir=tmp_path / "a")
    there = image_features(tiny_clip, moved, view=0, cache_dir=tmp_path / "b")
    assert torch.equal(here, there)


def test_corrupt_and_missing_images_are_named(tiny_clip, images, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ImageDecodeError, match="corrupt.jpg: cannot decode"):
        image_features(tiny_clip, [images[0], corrupt], cache_dir=tmp_path / "c")
    with pytest.raises(ImageDecodeError, match="absent.png: image file is missing"):
        image_features(tiny_clip, [tmp_path / "absent.png"], cache_dir=tmp_path / "c")
