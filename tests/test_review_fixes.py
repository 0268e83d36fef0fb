"""Regression tests for defects found in review (each failed before its fix)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import Palette, quantize


@pytest.mark.parametrize("color_space", ["lab", "oklab"])
def test_perceptual_space_rejects_floats_outside_unit_range(color_space):
    # 0..255 floats used to be clipped to [0, 1]: every colour became white.
    cat = data.chelsea().astype(np.float32)
    with pytest.raises(ValueError, match="color_space"):
        quantize(cat, 8, color_space=color_space)


@pytest.mark.parametrize("color_space", ["lab", "oklab"])
def test_perceptual_space_on_unit_floats_keeps_the_colours(color_space):
    cat = data.chelsea()
    unit = cat.astype(np.float32) / 255
    result = quantize(unit, 8, color_space=color_space)
    assert len(result.palette) == 8
    reference = quantize(cat, 8, color_space=color_space)
    # Same problem in other units: errors agree to within the rounding of uint8.
    assert result.mse * 255**2 == pytest.approx(reference.mse, rel=0.05)


def test_perceptual_space_rejects_negative_integers():
    signed = data.chelsea().astype(np.int16) - 128
    with pytest.raises(ValueError, match="color_space"):
        quantize(signed, 4, color_space="lab")


def test_greyscale_stack_without_channel_axis_none_is_refused_with_advice():
    stack = np.zeros((5, 64, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="channel_axis=None"):
        quantize(stack, 4)
    assert quantize(stack, 4, channel_axis=None).labels.shape == stack.shape


def test_many_channels_do_not_allocate_a_dense_grid():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 120, 12)).astype(np.uint8)
    result = quantize(image, 6)
    assert result.palette.colors.shape == (6, 12)


def test_large_k_swap_search_stays_bounded():
    # k x k x C temporaries made k=4096 take over 1 GB; above 512 the swap is skipped.
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (64, 64, 3)).astype(np.uint8)
    result = quantize(image, 600, n_init=1)
    assert len(result.palette) <= 600


@pytest.mark.parametrize(
    "description, message",
    [
        ({"colors": [[300, 0, 0], [0, 0, 0]], "dtype": "uint8"}, r"\[0, 255\]"),
        ({"colors": [[0.5, 0, 0], [0, 0, 0]], "dtype": "uint8"}, "integers"),
        ({"colors": [[float("nan"), 0, 0], [0, 0, 0]], "dtype": "float64"}, "finite"),
        ({"colors": [[0, 0, 0]], "counts": [-1], "dtype": "uint8"}, "negative"),
        ({"colors": [[0, 0, 0]], "dtype": "str"}, "dtype"),
    ],
)
def test_palette_from_dict_rejects_bad_descriptions(description, message):
    with pytest.raises(ValueError, match=message):
        Palette.from_dict(description)
