"""Arrays users have: any byte order, the full range of every integer dtype, transparency,
the same picture in different dtypes, palettes in other units (issue: every file and array)."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from napari_kmeans_filter import Palette, apply_palette, quantize

INTEGER_DTYPES = [np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64, np.uint64]


def _five_colour_picture():
    """Black, white and three colours in blocks of different sizes, in [0, 1]."""
    image = np.zeros((40, 50, 3))
    image[:, 8:20] = [1.0, 0.0, 0.0]
    image[:, 20:33] = [0.0, 0.6, 0.2]
    image[:, 33:45] = [1.0, 1.0, 1.0]
    image[:, 45:] = [0.2, 0.2, 0.8]
    return image


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">u2", ">i4", "<u2"])
def test_any_byte_order_gives_the_native_result(dtype):
    rng = np.random.default_rng(0)
    native = (rng.random((30, 40)) * 1000).astype(np.dtype(dtype).newbyteorder("="))
    swapped = native.astype(dtype)
    ours, reference = quantize(swapped, 4), quantize(native, 4)
    np.testing.assert_array_equal(ours.labels, reference.labels)
    np.testing.assert_array_equal(ours.image, reference.image)
    assert ours.image.dtype == np.dtype(dtype)  # the input's dtype, byte order included
    assert ours.psnr == reference.psnr
    # And lazily, as from a big-endian zarr store.
    lazy = quantize(da.from_array(swapped, chunks=(10, 20)), 4)
    np.testing.assert_array_equal(lazy.labels.compute(), reference.labels)


@pytest.mark.parametrize("dtype", INTEGER_DTYPES)
def test_extreme_integer_values_stay_in_their_clusters(dtype):
    """Each painted value lies within the values of its cluster (a mean cannot leave the
    hull of its points). A cast that overflows (float(2**64 - 1) == 2**64) or wraps puts
    it outside, e.g. 2**64 - 1 painted as 0 -- for int64 and uint64 too."""
    info = np.iinfo(dtype)
    grey = np.array(
        [[info.min, info.max, info.max], [info.max - 1, info.min, 0], [info.min + 1, 0, info.max]],
        dtype=dtype,
    )
    for k in (2, 3, 4):
        result = quantize(grey, k)
        assert result.image.dtype == dtype
        for label in np.unique(result.labels):
            members = grey[result.labels == label]
            painted = result.image[result.labels == label]
            assert members.min() <= painted.min() and painted.max() <= members.max()
    exact = quantize(grey, 5)
    np.testing.assert_array_equal(exact.image, grey)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    dtype=st.sampled_from(INTEGER_DTYPES),
    byteorder=st.sampled_from(["<", ">"]),
    seed=st.integers(0, 2**16),
    k=st.integers(1, 6),
)
def test_property_extremes_and_byte_orders(dtype, byteorder, seed, k):
    """Over byte orders and the extreme values of every integer dtype: with k at least the
    number of distinct values the image comes back exactly; otherwise at most k colours,
    each inside its cluster's range."""
    info = np.iinfo(dtype)
    rng = np.random.default_rng(seed)
    choices = np.array([info.min, info.min + 1, 0, info.max - 1, info.max], dtype=dtype)
    image = rng.choice(choices, (6, 7)).astype(np.dtype(dtype).newbyteorder(byteorder))
    result = quantize(image, k)
    distinct = np.unique(image)
    if k >= len(distinct):
        np.testing.assert_array_equal(result.image, image)
        assert result.mse == 0
    else:
        assert len(np.unique(result.image)) <= k
        for label in np.unique(result.labels):
            members = image[result.labels == label]
            painted = result.image[result.labels == label]
            assert members.min() <= painted.min() and painted.max() <= members.max()


def test_psnr_reads_the_same_for_the_same_picture_in_any_dtype():
    picture = _five_colour_picture()
    as_uint8 = np.rint(picture * 255).astype(np.uint8)
    versions = {
        "uint8": as_uint8,
        "float32": as_uint8.astype(np.float32) / 255,
        "uint16 (12-bit)": (as_uint8.astype(np.uint16) * 4095 + 127) // 255,
        "int32": as_uint8.astype(np.int32),
    }
    psnr = {name: quantize(image, 3, random_state=0).psnr for name, image in versions.items()}
    for name, value in psnr.items():
        assert value == pytest.approx(psnr["uint8"], abs=0.3), (name, psnr)


def test_transparent_pixels_do_not_count_anywhere():
    """The same visible picture reads the same whatever colour hides under alpha 0: the
    error, the palette and its counts ignore fully transparent pixels."""
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
    alpha = np.full((30, 40), 255, np.uint8)
    alpha[:, :20] = 0
    results = []
    for hidden in ([0, 255, 0], [255, 0, 255]):
        image = np.dstack([rgb, alpha])
        image[alpha == 0, :3] = hidden
        results.append(quantize(image, 6, random_state=0))
    first, second = results
    assert first.mse == second.mse
    assert first.psnr == second.psnr
    np.testing.assert_array_equal(first.palette.colors, second.palette.colors)
    assert first.palette.counts.sum() == np.count_nonzero(alpha)
    assert first.n_input_colors == len(np.unique(rgb[alpha > 0], axis=0))
    visible = first.labels[alpha > 0]
    np.testing.assert_array_equal(np.bincount(visible, minlength=6), first.palette.counts)
    # Alpha is carried through unchanged.
    np.testing.assert_array_equal(first.image[..., 3], alpha)


def test_fully_transparent_image_is_refused_by_name():
    image = np.zeros((4, 5, 4), np.uint8)
    with pytest.raises(ValueError, match="transparent"):
        quantize(image, 2)


@pytest.mark.parametrize(
    ("palette_dtype", "image_dtype"),
    [
        (np.uint8, np.uint16),
        (np.uint16, np.uint8),  # 16-bit values that fit 8 bits: still 16-bit units
        (np.int16, np.uint8),
        (np.uint32, np.uint16),
        (np.float64, np.uint8),
        (np.uint8, np.float32),
    ],
)
def test_palette_in_other_units_is_refused(palette_dtype, image_dtype):
    palette = Palette(np.array([[0, 0, 0], [1, 1, 1]], dtype=palette_dtype))
    image = np.zeros((4, 5, 3), dtype=image_dtype)
    with pytest.raises(ValueError, match="palette"):
        apply_palette(image, palette)


def test_palette_of_a_list_applies_to_uint8():
    """Counterpart: an int64 palette (from a plain list) in the image's range is fine, and
    a palette of the image's bit depth whatever its sign (int8 values on uint8)."""
    image = np.array([[[10, 10, 10], [250, 240, 250]]], np.uint8)
    for colors in (np.array([[0, 0, 0], [255, 255, 255]]), np.array([[0] * 3, [127] * 3], np.int8)):
        result = apply_palette(image, Palette(colors))
        assert result.image.dtype == np.uint8
        np.testing.assert_array_equal(result.labels, [[0, 1]])
