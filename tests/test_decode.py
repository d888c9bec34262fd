"""pipeline.decode: every PIL mode a dataset may hold becomes the RGB it shows."""

import io

import numpy as np
import pytest
from PIL import Image

from pipeline.decode import open_rgb, to_rgb


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


RAMP16 = (np.arange(64 * 4).reshape(4, 64) * 257).astype(np.uint16)  # 0..65535 in steps of 257


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_sixteen_bit_grey_is_scaled_not_clipped(fmt):
    data = saved(Image.fromarray(RAMP16), fmt)
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    rgb = pixels(open_rgb(data))
    expected = RAMP16 // 257  # exact: every value is a multiple of 257
    assert (rgb == expected[..., None]).all()
    assert (rgb == 255).mean() < 0.01  # convert("RGB") alone saturates ~99.6% of these


def test_thirty_two_bit_grey_holds_sixteen_bit_samples():
    values = np.array([[0, 257, 65535, 70000, -5]], dtype=np.int32)
    image = Image.open(io.BytesIO(saved(Image.fromarray(values), "TIFF")))
    assert image.mode == "I"
    assert pixels(to_rgb(image))[0, :, 0].tolist() == [0, 1, 255, 255, 0]


def test_palette_without_transparency_keeps_its_colours():
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    rgb = pixels(open_rgb(saved(image, "PNG")))
    assert rgb[0].tolist() == [[10, 20, 30], [200, 100, 50]]


def test_palette_transparency_is_composited_on_white():
    image = Image.new("P", (2, 1))
    image.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    image.putpixel((1, 0), 1)
    data = saved(image, "PNG", transparency=0)  # index 0 (black) is fully transparent
    assert pixels(open_rgb(data))[0].tolist() == [[255, 255, 255], [200, 100, 50]]


def test_grey_with_alpha_is_composited_on_white():
    grey = Image.fromarray(np.array([[0, 0, 100]], dtype=np.uint8))
    alpha = Image.fromarray(np.array([[0, 255, 128]], dtype=np.uint8))
    image = Image.merge("LA", (grey, alpha))
    rgb = pixels(open_rgb(saved(image, "PNG")))
    # 100 * 128/255 + 255 * 127/255 = 177.2
    assert rgb[0, :, 0].tolist() == [255, 0, 177]
    assert (rgb[0] == rgb[0, :, :1]).all()


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (1, 1), (0, 0, 0, 0))
    assert pixels(open_rgb(saved(image, "PNG"))).tolist() == [[[255, 255, 255]]]


def test_cmyk_is_converted_with_the_black_channel():
    cmyk = Image.new("CMYK", (1, 1), (255, 0, 51, 102))
    rgb = pixels(open_rgb(saved(cmyk, "TIFF")))
    # channel = (255 - ink)(255 - K) / 255 with K = 102
    assert rgb.tolist() == [[[0, 153, 122]]]


def test_jpeg_cmyk_decodes_to_rgb():
    data = saved(Image.new("CMYK", (8, 8), (0, 0, 0, 0)), "JPEG", quality=100)
    assert np.abs(pixels(open_rgb(data)) - 255).max() <= 2  # no ink: white


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=10)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    assert image.n_frames == 2
    image.seek(1)
    assert pixels(to_rgb(image))[0, 0].tolist() == [255, 0, 0]
    assert pixels(open_rgb(buffer.getvalue()))[0, 0].tolist() == [255, 0, 0]


def test_rgb_and_grey_are_unchanged():
    rgb = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert (pixels(open_rgb(saved(Image.fromarray(rgb), "PNG"))) == rgb).all()
    grey = rgb[..., 0]
    assert (pixels(open_rgb(saved(Image.fromarray(grey), "PNG"))) == grey[..., None]).all()


def test_truncated_file_fails_at_decode():
    data = saved(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG")
    with pytest.raises(OSError):
        open_rgb(data[: len(data) // 2])


def test_ingest_resizer_scales_sixteen_bit_grey_instead_of_saturating():
    from pipeline.pairs.images import ImageOptions

    data = saved(Image.fromarray(np.tile(RAMP16, (16, 1))), "PNG")  # 64 x 64
    jpeg, sizes, error = ImageOptions(image_size=64, resize_mode="no").resize(data)
    assert error is None and sizes["original_width"] == 64
    grey = pixels(open_rgb(jpeg))[..., 0]
    expected = np.tile(RAMP16 // 257, (16, 1))
    assert np.abs(grey - expected).mean() < 3  # JPEG noise only; the Resizer alone gives ~255
