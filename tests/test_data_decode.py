"""Every image mode decodes to the right 8-bit RGB pixels, on every path that reads images (file, cache)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from test_data_helpers import pixels

from makd.data.image_cache import cache_images
from makd.data.image_index import ImageIndex
from makd.formats.image_decode import read_rgb, to_rgb8

# A 16-bit ramp over the whole range: 0, 257, 2 * 257, ... would map to 0, 1, 2, ... in 8 bits.
RAMP16 = (np.arange(16 * 16, dtype=np.uint32).reshape(16, 16) * 257).astype(np.uint16)


def test_sixteen_bit_png_is_scaled_by_its_bit_depth(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "g16.png")
    with Image.open(tmp_path / "g16.png") as opened:
        assert opened.mode == "I;16"
        assert (pixels(opened.convert("RGB")) == 255).mean() > 0.99  # PIL's own conversion: the reported bug
    rgb = pixels(read_rgb(tmp_path / "g16.png"))
    assert rgb.shape == (16, 16, 3) and (rgb == np.arange(256).reshape(16, 16)[..., None]).all()
    mid = np.full((4, 4), 32768, dtype=np.uint16)  # half of 65535 is grey 128, not white
    Image.fromarray(mid).save(tmp_path / "mid.png")
    assert (pixels(read_rgb(tmp_path / "mid.png")) == 128).all()


def test_sixteen_bit_tiff_big_endian_and_wide_int_modes(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "g16.tif")  # BitsPerSample 16
    assert (pixels(read_rgb(tmp_path / "g16.tif"))[..., 1] == np.arange(256).reshape(16, 16)).all()
    big = Image.frombytes("I;16B", (16, 16), RAMP16.astype(">u2").tobytes())
    assert (pixels(to_rgb8(big))[..., 2] == np.arange(256).reshape(16, 16)).all()
    # mode I with 16-bit values (what older Pillow gave for 16-bit PNGs) and with 8-bit values (L.convert("I"))
    wide = Image.fromarray(RAMP16.astype(np.int32), mode="I")
    assert (pixels(to_rgb8(wide))[..., 0] == np.arange(256).reshape(16, 16)).all()
    narrow = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("I")
    assert (pixels(to_rgb8(narrow))[..., 0] == np.arange(256).reshape(16, 16)).all()
    negative = Image.fromarray(np.array([[-5, 65535]], dtype=np.int32), mode="I")
    assert pixels(to_rgb8(negative))[0, :, 0].tolist() == [0, 255]


def test_float_images(tmp_path):
    unit = np.linspace(0.0, 1.0, 256, dtype=np.float32).reshape(16, 16)
    Image.fromarray(unit, mode="F").save(tmp_path / "unit.tif")
    rgb = pixels(read_rgb(tmp_path / "unit.tif"))
    assert rgb.shape == (16, 16, 3) and (rgb[..., 0] == np.rint(unit * 255)).all()
    byte_range = Image.fromarray(np.array([[0.0, 100.4, 300.0]], dtype=np.float32), mode="F")
    assert pixels(to_rgb8(byte_range))[0, :, 0].tolist() == [0, 100, 255]


def test_alpha_palette_and_cmyk_modes(tmp_path):
    la = Image.fromarray(np.stack([np.full((3, 3), 77, np.uint8), np.zeros((3, 3), np.uint8)], -1), mode="LA")
    la.save(tmp_path / "la.png")
    assert (pixels(read_rgb(tmp_path / "la.png")) == 77).all()  # grey kept, alpha dropped
    palette = Image.new("P", (2, 1))
    palette.putpalette([200, 10, 20, 5, 6, 250] + [0] * 762)
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    palette.save(tmp_path / "p.png")
    assert pixels(read_rgb(tmp_path / "p.png")).tolist() == [[[200, 10, 20], [5, 6, 250]]]
    Image.new("CMYK", (2, 2), (255, 0, 0, 0)).save(tmp_path / "cyan.tif")
    assert (pixels(read_rgb(tmp_path / "cyan.tif")) == [0, 255, 255]).all()
    assert to_rgb8(Image.new("1", (2, 2), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_loader_and_cache_read_sixteen_bit_images_the_same(tmp_path):
    Image.fromarray(RAMP16).save(tmp_path / "a.png")
    index = ImageIndex(["a"], [0], ["c"], "t", str(tmp_path), [str(tmp_path / "a.png")])
    expected = np.repeat(np.arange(256, dtype=np.uint8).reshape(16, 16)[..., None], 3, axis=2)
    assert (pixels(index.load(0)) == expected).all()
    cached = cache_images(index, 16)
    assert cached.pixels is not None and (pixels(cached.load(0)) == expected).all()


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_eight_bit_modes_are_unchanged(mode):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)).convert(mode)
    assert (pixels(to_rgb8(image)) == pixels(image.convert("RGB"))).all()
