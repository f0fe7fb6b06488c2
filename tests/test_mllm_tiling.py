"""InternVL dynamic tiling: known grids, tile contents, normalisation, and equality with transformers' PIL path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mllm_fixtures import random_image
from PIL import Image
from torchvision import transforms as T

from makd.mllm.tiling import (
    TilingSpec,
    closest_grid,
    normalize_tiles,
    pixel_values,
    tile_image,
    tile_tensor,
    tiles_to_tensor,
)


@pytest.mark.parametrize(
    ("size", "max_tiles", "grid", "n_tiles"),
    [
        ((500, 375), 12, (4, 3), 13),  # REFERENCE: a 500x375 image becomes 13 tiles
        ((448, 448), 12, (1, 1), 1),  # exact tile: no thumbnail
        ((896, 448), 12, (2, 1), 3),
        ((300, 900), 12, (1, 3), 4),
        ((1000, 100), 12, (10, 1), 11),  # aspect 10 -> 10x1
        ((1000, 1000), 12, (3, 3), 10),  # square tie: more tiles while the image has > half their pixels
        ((500, 500), 12, (1, 1), 1),  # square tie, small image: stays one tile
        ((500, 375), 6, (3, 2), 7),  # fewer tiles allowed: closest ratio among grids of <= 6 tiles
        ((500, 375), 1, (1, 1), 1),  # --max-tiles 1 turns tiling off
    ],
)
def test_known_grids(size, max_tiles, grid, n_tiles):
    assert closest_grid(*size, max_tiles=max_tiles) == grid
    tiles = tile_image(random_image(*size, seed=0), TilingSpec(max_tiles=max_tiles))
    assert len(tiles) == n_tiles
    assert all(t.size == (448, 448) for t in tiles)


def test_tiles_are_row_major_crops_then_thumbnail():
    image = random_image(896, 448, seed=3)
    tiles = tile_image(image, TilingSpec(max_tiles=12))
    resized = np.asarray(image.resize((896, 448), Image.Resampling.BICUBIC))
    np.testing.assert_array_equal(np.asarray(tiles[0]), resized[:, :448])
    np.testing.assert_array_equal(np.asarray(tiles[1]), resized[:, 448:])
    np.testing.assert_array_equal(np.asarray(tiles[2]), np.asarray(image.resize((448, 448), Image.Resampling.BICUBIC)))


def test_normalisation_equals_torchvision_official_transform():
    spec = TilingSpec(max_tiles=4)
    image = random_image(700, 400, seed=5)
    official = T.Compose([T.Resize((448, 448), interpolation=T.InterpolationMode.BICUBIC), T.ToTensor(),
                          T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))])
    expected = torch.stack([official(t) for t in tile_image(image, spec)])
    got = pixel_values(image, spec)
    assert got.dtype == torch.float32 and got.shape == expected.shape
    assert torch.equal(got, expected)


def test_grid_choice_equals_transformers_for_many_sizes():
    from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

    rng = np.random.default_rng(0)
    sizes = [(int(w), int(h)) for w, h in rng.integers(20, 3000, size=(300, 2))] + [(448 * a, 448 * b) for a in
                                                                                  range(1, 5) for b in range(1, 5)]
    for max_tiles in (1, 6, 12):
        for w, h in sizes:
            assert closest_grid(w, h, max_tiles) == get_optimal_tiled_canvas((h, w), (448, 448), 1, max_tiles), (w, h)


def test_pixels_equal_transformers_pil_image_processor():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import GotOcr2ImageProcessorPil

    processor = GotOcr2ImageProcessorPil(size={"height": 448, "width": 448}, crop_to_patches=True, max_patches=12,
                                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    for i, size in enumerate([(500, 375), (300, 900), (448, 448)]):
        image = random_image(*size, seed=10 + i)
        expected = processor(images=[image], return_tensors="pt")["pixel_values"]
        assert torch.equal(pixel_values(image, TilingSpec(max_tiles=12)), expected)


def test_grayscale_and_rgba_become_rgb():
    gray = Image.fromarray(np.full((40, 120), 128, dtype=np.uint8), mode="L")
    tiles = pixel_values(gray, TilingSpec(max_tiles=2))
    assert tiles.shape == (3, 3, 448, 448)  # 120x40 -> 2x1 grid + thumbnail
    value = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    torch.testing.assert_close(tiles[0, :, 200, 200], value)
    rgba = Image.fromarray(np.full((40, 120, 4), 128, dtype=np.uint8), mode="RGBA")
    assert torch.equal(pixel_values(rgba, TilingSpec(max_tiles=2)), tiles)


@pytest.mark.parametrize(
    ("size", "max_tiles", "n_tiles"), [((500, 375), 12, 13), ((300, 900), 12, 4), ((64, 48), 1, 1)]
)
def test_uint8_torch_tiles_equal_the_pil_tiles_bit_for_bit(size, max_tiles, n_tiles):
    """The fast path (one PIL resize, tiles as tensor views, normalisation on the device) changes no value."""
    spec = TilingSpec(max_tiles=max_tiles)
    image = random_image(*size, seed=20)
    reference = tile_image(image, spec)
    tiles = tile_tensor(image, spec)
    assert tiles.dtype == torch.uint8 and tiles.shape == (n_tiles, 3, 448, 448)
    expected = torch.from_numpy(np.stack([np.asarray(t) for t in reference])).permute(0, 3, 1, 2)
    assert torch.equal(tiles, expected)
    assert torch.equal(normalize_tiles(tiles, spec), tiles_to_tensor(reference, spec))  # bound: 0, not 2.4e-7
    half = normalize_tiles(tiles, spec, torch.bfloat16)
    assert half.dtype == torch.bfloat16
    assert (half.float() - tiles_to_tensor(reference, spec)).abs().max() <= 2.7 * 2**-8  # bf16 rounding of |x| < 2.7


def test_bad_spec_is_rejected():
    with pytest.raises(ValueError, match="max_tiles must be >= 1"):
        TilingSpec(max_tiles=0)
