"""Colours and targets are in the image's units, or refused: never a silent 1-colour result."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import Palette, apply_palette, quantize
from napari_kmeans_filter._contract import InvalidParameterError


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


@pytest.mark.parametrize("dtype", [np.int8, np.int16])
@pytest.mark.parametrize("dither", [False, True, 0.5])
@pytest.mark.parametrize("lazy", [False, True])
def test_a_perceptual_palette_on_negative_integers_is_refused_dithered_or_not(dtype, dither, lazy):
    """Every repaint checks the range a perceptual palette needs, whichever path it
    takes: a search of the histogram's rows, a dithering that finds its own labels (whose
    extremes came without the check, found by a reviewer), or the 8-bit search with no
    histogram (which had none)."""
    import dask.array as da

    signed = (data.chelsea()[:60, :80].astype(np.int16) - 128).astype(dtype)
    palette = Palette(
        np.array([[0, 0, 0], [60, 60, 60], [120, 120, 120]], dtype), color_space="lab"
    )
    image = da.from_array(signed, chunks=(30, 40, 3)) if lazy else signed
    with pytest.raises(ValueError, match=r"'color_space' parameter 'lab' needs RGB values in \[0,"):
        apply_palette(image, palette, dither=dither)
    # The same values shifted into range are taken.
    shifted = (signed.astype(np.int16) + 128) // 2
    apply_palette(shifted.astype(dtype), palette, dither=dither)


def test_delta_e_target_on_0_255_floats_is_refused_like_lab():
    # Used to return 1 colour and "CIEDE2000 0.00": the colours were clipped to white.
    cat = data.chelsea().astype(np.float64)
    with pytest.raises(InvalidParameterError, match=r"\[0, 1\]") as caught:
        quantize(cat, "auto", target_delta_e=3)
    assert caught.value.parameter == "target_delta_e"
    assert "[0, 231]" in str(caught.value)  # the image's own range
    unit = quantize(cat / 255, "auto", target_delta_e=3)
    assert len(unit.palette) > 4


def test_init_in_0_255_for_unit_floats_is_refused():
    cat = data.chelsea()
    start = cat.reshape(-1, 3)[:: cat.shape[0] * cat.shape[1] // 6][:6].astype(np.float64)
    with pytest.raises(InvalidParameterError, match="image's units") as caught:
        quantize(cat / 255.0, 6, init=start)
    assert caught.value.parameter == "init"
    # The same start in the image's units is fine and keeps 6 colours.
    assert len(quantize(cat / 255.0, 6, init=start / 255).palette) == 6


def test_init_of_16_bit_values_for_uint8_is_refused():
    cat = data.chelsea()
    start = np.linspace(0, 65535, 18).reshape(6, 3)
    with pytest.raises(InvalidParameterError, match=r"\[0, 255\]"):
        quantize(cat, 6, init=start)


def test_fixed_colors_in_0_255_for_unit_floats_are_refused():
    with pytest.raises(InvalidParameterError, match="colours / 255"):
        quantize(data.chelsea() / 255.0, 6, fixed_colors=[[255, 255, 255]])
    kept = quantize(data.chelsea() / 255.0, 6, fixed_colors=[[1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(kept.palette.colors[0], [1.0, 1.0, 1.0])


def test_float_palette_in_other_units_is_refused():
    palette = Palette(np.array([[0.0, 0.0, 0.0], [255.0, 255.0, 255.0]]))
    with pytest.raises(InvalidParameterError, match="image's units"):
        apply_palette(data.chelsea() / 255.0, palette)


def test_white_on_dim_float_data_is_still_in_units():
    # Dim fluorescence in [0, 0.05]: a fixed white (1.0) is the same units, not refused.
    dim = np.random.default_rng(0).uniform(0, 0.05, (32, 32)).astype(np.float32)
    result = quantize(dim, 3, fixed_colors=[[1.0]])
    assert result.palette.colors[0, 0] == 1.0
