"""Dithering 8-bit colour: the integer cell search and the repaint without a histogram
give what Floyd-Steinberg with the exact nearest colour gives, and what the general
path (histogram, float search) reports."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import Palette, _paint, _quantize, apply_palette


def _floyd_steinberg(image, colors, level):
    """Serpentine Floyd-Steinberg, pixel by pixel: the value is the pixel plus its
    diffused error cut to whole steps, clamped to the dtype; its colour the nearest
    palette entry (ties: lowest index)."""
    info = np.iinfo(image.dtype)
    height, width, _ = image.shape
    palette = colors.astype(np.float64)
    errors = np.zeros((height + 1, width + 2, 3))
    labels = np.empty((height, width), np.intp)
    for y in range(height):
        step = 1 if y % 2 == 0 else -1
        for x in range(width)[::step]:
            value = image[y, x].astype(np.float64) + np.trunc(errors[y, x + 1])
            value = np.clip(value, info.min, info.max)
            best = int(np.argmin(((palette - value) ** 2).sum(axis=1)))
            labels[y, x] = best
            spill = (value - palette[best]) * level
            errors[y, x + 1 + step] += spill * (7 / 16)
            errors[y + 1, x + 1 - step] += spill * (3 / 16)
            errors[y + 1, x + 1] += spill * (5 / 16)
            errors[y + 1, x + 1 + step] += spill * (1 / 16)
    return labels


def _noisy(dtype, shape=(40, 56)):
    rng = np.random.default_rng(7)
    photo = data.astronaut()[100 : 100 + 4 * shape[0] : 4, 120 : 120 + 4 * shape[1] : 4]
    noisy = np.clip(photo + rng.normal(0, 12, photo.shape), 0, 255)
    return (noisy + np.iinfo(dtype).min).astype(dtype)


def _palette(image, k, rng):
    """k colours drawn from the image, with repeats and colours an equal step apart
    (many exact ties between two entries)."""
    pixels = image.reshape(-1, 3)
    colors = pixels[rng.integers(0, len(pixels), k)].astype(np.int64)
    if k >= 4:
        info = np.iinfo(image.dtype)
        colors[1] = colors[0]  # a duplicate: the lower index wins
        colors[3] = np.clip(colors[2] + 2, info.min, info.max)  # ties halfway
    return colors.astype(image.dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("k", [2, 16, 64, 256, 700])
@pytest.mark.parametrize(
    ("level", "search"),
    [
        (1.0, "default"),
        (0.6, "default"),
        (1.0, "cells"),
        (1.0, "coarse lists"),
        (0.0, "default"),
        (0.0, "cells"),
    ],
)
@pytest.mark.parametrize("band_rows", [None, 3])
def test_byte_dithering_is_floyd_steinberg_with_the_exact_nearest_colour(
    dtype, k, level, search, band_rows, monkeypatch
):
    """Every colour compared (few colours) or the cells' lists searched (more, or
    forced here, also with the lists' blocks run out), in one band of rows or in bands
    of 3 painted on a second thread (undithered: the rows split between the cores):
    the labels, image and statistics of the plain algorithm (level 0: each pixel its
    nearest colour)."""
    if band_rows is not None:
        monkeypatch.setattr(_paint, "_BAND_PIXELS", band_rows * 56)
        monkeypatch.setattr(_paint, "_PARALLEL_SEARCH_PIXELS", 1000)
    if search != "default":  # (partial dithering has no cell search of its own)
        monkeypatch.setattr(_paint, "_BYTE_COMPARE_ALL_K", 0)
        monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 0)
        if search == "coarse lists":  # a cell made when no blocks are left
            monkeypatch.setattr(_paint, "_MAX_BLOCKS", 3)
    image = _noisy(dtype)
    rng = np.random.default_rng(k)
    colors = _palette(image, k, rng)
    result = apply_palette(image, Palette(colors), dither=level)
    labels = _floyd_steinberg(image, colors, level)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.image, colors[labels])
    # Statistics counted while dithering, exactly as from the labels.
    values = image.reshape(-1, 3).astype(np.float64)
    flat = labels.ravel()
    np.testing.assert_array_equal(result.palette.counts, np.bincount(flat, minlength=k))
    squared = ((values - colors[flat].astype(np.float64)) ** 2).sum(axis=1)
    assert result.mse == squared.sum() / values.size
    stats = result.cluster_stats()
    for c in range(3):
        sums = np.bincount(flat, weights=values[:, c], minlength=k)
        used = result.palette.counts > 0
        np.testing.assert_array_equal(
            stats[f"mean_{c}"][used], sums[used] / result.palette.counts[used]
        )
    assert result.n_input_colors == len(np.unique(image.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
@pytest.mark.parametrize("level", [1.0, 0.0])
@pytest.mark.parametrize("search", ["default", "cells"])
def test_byte_dithering_at_the_largest_distances_is_exact(dtype, level, search, monkeypatch):
    """The keys are int32 (``distance << 12 | index``): the farthest a pixel can be from
    every colour (white against a palette of near-black colours, black against
    near-white ones, 3 * 255**2) and the highest index still give the exact nearest
    colour, ties to the lowest index."""
    if search == "cells":
        monkeypatch.setattr(_paint, "_BYTE_COMPARE_ALL_K", 0)
        monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 0)
    offset = int(np.iinfo(dtype).min)
    rng = np.random.default_rng(3)
    dark = [[0, 0, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [1, 1, 1]]
    light = [[255 - c for c in color] for color in dark]
    colors = (np.array(dark * 40 + light * 40 + [[0, 0, 0]]) + offset).astype(dtype)  # k = 401
    for palette in (colors[:5], colors[200:205], colors):
        corners = rng.integers(0, 2, (24, 24, 3)) * 255
        image = (corners + offset).astype(dtype)
        result = apply_palette(image, Palette(palette), dither=level)
        labels = _floyd_steinberg(image, palette, level)
        np.testing.assert_array_equal(result.labels, labels)
        np.testing.assert_array_equal(result.image, palette[labels])


@pytest.mark.parametrize("level", [1.0, 0.0])
@pytest.mark.parametrize("palette_kind", ["cube", "duplicates"])
def test_byte_dithering_of_thousands_of_close_colours_is_exact(level, palette_kind):
    """A cell can list thousands of colours (4096 in a cube of 16 levels; 3000 copies
    of one colour): its list's length has room in the cell's state (a found
    defect: past 2044 colours the length overflowed into the list's start, giving
    wrong labels and reads out of bounds)."""
    rng = np.random.default_rng(0)
    if palette_kind == "cube":
        levels = np.arange(100, 116)
        colors = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1)
        colors = colors.reshape(-1, 3).astype(np.uint8)
        image = rng.integers(100, 116, (32, 32, 3)).astype(np.uint8)
    else:
        colors = np.array([[130] * 3] + [[128] * 3] * 3000, np.uint8)
        image = np.full((32, 32, 3), 128, np.uint8)  # (blocks are kept for 1 per pixel)
        image[::3, ::2] = 131
    result = apply_palette(image, Palette(colors), dither=level)
    labels = _floyd_steinberg(image, colors, level)
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.image, colors[labels])
    np.testing.assert_array_equal(
        result.palette.counts, np.bincount(labels.ravel(), minlength=len(colors))
    )
    if palette_kind == "cube":
        assert result.mse == 0.0  # every pixel is a palette colour: nothing to diffuse


def test_byte_colour_is_repainted_without_a_histogram(monkeypatch):
    """Dithering, or undithered with an RGB palette, finds every label itself:
    apply_palette counts no colour histogram for an 8-bit RGB image (an RGBA one
    still needs it: its transparent pixels keep their undithered colour; and the
    nearest colour of a Lab palette is found in Lab, colour by colour)."""
    counted = []
    histogram = _quantize.image_histogram

    def spy(layout, *args):
        counted.append(layout.data.shape)
        return histogram(layout, *args)

    monkeypatch.setattr(_quantize, "image_histogram", spy)
    image = data.chelsea()
    palette = Palette(image[::50, ::50].reshape(-1, 3)[:16])
    apply_palette(image, palette, dither=True)
    apply_palette(image, palette)
    assert counted == []
    apply_palette(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), palette, dither=1)
    assert len(counted) == 1
    lab = Palette(palette.colors, color_space="lab")
    labelled = apply_palette(image, lab)
    assert len(counted) == 2
    in_lab = apply_palette(np.dstack([image, np.full(image.shape[:2], 255, np.uint8)]), lab)
    np.testing.assert_array_equal(labelled.labels, in_lab.labels)


def test_an_undithered_image_of_few_colours_is_repainted_through_its_histogram(monkeypatch):
    """Searching every pixel pays on photos, not on an image of few colours (a graphic):
    that one keeps the histogram path, with the same labels."""
    counted = []
    histogram = _quantize.image_histogram
    monkeypatch.setattr(
        _quantize, "image_histogram", lambda layout, *a: counted.append(1) or histogram(layout, *a)
    )
    rng = np.random.default_rng(0)
    graphic = rng.integers(0, 256, (20, 3), dtype=np.uint8)[rng.integers(0, 20, (60, 80))]
    palette = Palette(rng.integers(0, 256, (16, 3), dtype=np.uint8))
    result = apply_palette(graphic, palette)
    assert counted == [1]
    nearest = ((graphic[..., None, :].astype(int) - palette.colors.astype(int)) ** 2).sum(-1)
    np.testing.assert_array_equal(result.labels, nearest.argmin(-1))
    assert result.n_input_colors == 20
    apply_palette(_noisy(np.uint8), palette)  # a photo: searched
    assert counted == [1]


@pytest.mark.parametrize("dither", [True, False])
def test_more_colours_than_the_byte_search_takes_still_counts_the_input_colours(dither):
    """Above 4096 colours the byte search does not apply: the histogram path reports the
    image's distinct colours (it reported 0)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    palette = Palette(rng.integers(0, 256, (5000, 3)).astype(np.uint8))
    result = apply_palette(image, palette, dither=dither)
    assert result.n_input_colors == len(np.unique(image.reshape(-1, 3), axis=0))


@pytest.mark.parametrize("dither", [True, False])
@pytest.mark.parametrize("k", [6, 200])
def test_byte_colour_without_a_histogram_reports_what_the_histogram_path_reports(
    k, dither, monkeypatch
):
    """The same labels, image, counts, error, distinct colours and per-cluster
    statistics as an opaque RGBA copy and a dask array (both counted by histogram),
    and as the same stack in bands of 7 rows (dithered: each plane starts afresh;
    undithered: the stack's rows split between the cores)."""
    image = np.stack([data.chelsea()[:90, :120], data.chelsea()[90:180, 200:320]])
    palette = Palette(_palette(image[0], k, np.random.default_rng(k)))
    whole_planes = apply_palette(image, palette, dither=dither)
    monkeypatch.setattr(_paint, "_BAND_PIXELS", 7 * 120)
    monkeypatch.setattr(_paint, "_PARALLEL_SEARCH_PIXELS", 5000)
    fast = apply_palette(image, palette, dither=dither)
    opaque = np.concatenate([image, np.full((*image.shape[:3], 1), 255, np.uint8)], axis=-1)
    counted = apply_palette(opaque, palette, dither=dither)
    lazy = apply_palette(da.from_array(image, chunks=(1, 90, 120, 3)), palette, dither=dither)
    for other in (counted, lazy, whole_planes):
        np.testing.assert_array_equal(fast.labels, np.asarray(other.labels))
        np.testing.assert_array_equal(fast.image, np.asarray(other.image)[..., :3])
        np.testing.assert_array_equal(fast.palette.counts, other.palette.counts)
        assert fast.n_input_colors == other.n_input_colors
        assert fast.mse == pytest.approx(other.mse, rel=1e-12)
        assert fast.psnr == pytest.approx(other.psnr, rel=1e-12)
        mine, theirs = fast.cluster_stats(), other.cluster_stats()
        for column in mine:
            np.testing.assert_allclose(mine[column], theirs[column], rtol=1e-12)
    assert fast.params == {**counted.params, "alpha": False}


@pytest.mark.parametrize(
    ("n_planes", "height", "width"),
    [
        (1, 300, 451),
        (1, 512, 512),
        (2, 1000, 1000),
        (3, 10, 10),
        (5000, 4, 4),
        (1, 2, 70000),
        (1, 128, 128),
        (4, 90, 90),
    ],
)
def test_bands_cover_every_row_once_in_order_and_end_short(n_planes, height, width):
    """Every row of every plane in one band, in order; no band above _BAND_PIXELS but
    for a single row; and the last bands shrink (each at most half of what was left,
    down to _LAST_BAND_PIXELS), so that the painting the caller waits for is short --
    unless all fit in one band (a small dask block: no hand-over to another thread)."""
    bands = _paint._bands(n_planes, height, width)
    rows = [(p, row) for band in bands for p, first, stop in band for row in range(first, stop)]
    assert rows == [(p, row) for p in range(n_planes) for row in range(height)]
    sizes = [sum((stop - first) * width for _, first, stop in band) for band in bands]
    assert all(size <= max(_paint._BAND_PIXELS, width) for size in sizes)
    left = n_planes * height * width
    if left <= _paint._BAND_PIXELS:
        assert len(bands) == 1
        return
    for size in sizes:
        assert size <= max(left // 2, _paint._LAST_BAND_PIXELS, width)
        left -= size


@pytest.mark.parametrize("dtype", [np.int8, np.float32])
@pytest.mark.parametrize("level", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("lazy", [False, True])
def test_negative_alpha_is_as_transparent_as_alpha_zero(dtype, level, lazy):
    """Visible means alpha > 0 for the histogram and for every repaint, dithered or not,
    in memory or in dask blocks: with signed or float alpha, a pixel of negative alpha is
    fully transparent (found defects: the dithering kernels, and the count of a dithered
    dask block's statistics, took only alpha == 0 as transparent, and counted an int8
    image of alpha -5 as 4 visible pixels of no input colour)."""
    rng = np.random.default_rng(5)
    if dtype == np.int8:
        colours = rng.integers(-128, 128, (10, 14, 3))
        alpha = rng.choice([-5, 0, 100], (10, 14))
        palette = rng.integers(-128, 128, (6, 3)).astype(dtype)
    else:
        colours = rng.random((10, 14, 3))
        alpha = rng.choice([-0.25, 0.0, 0.8], (10, 14))
        palette = rng.random((6, 3)).astype(dtype)
    negative = np.dstack([colours, alpha]).astype(dtype)
    zero = np.dstack([colours, np.maximum(alpha, 0)]).astype(dtype)
    if lazy:  # (each block dithered on its own: compared with the same blocks)
        negative, zero = (da.from_array(x, chunks=(5, 7, 4)) for x in (negative, zero))
    got = apply_palette(negative, Palette(palette), dither=level, alpha=True)
    want = apply_palette(zero, Palette(palette), dither=level, alpha=True)
    np.testing.assert_array_equal(np.asarray(got.labels), np.asarray(want.labels))
    np.testing.assert_array_equal(np.asarray(got.image)[..., :3], np.asarray(want.image)[..., :3])
    np.testing.assert_array_equal(got.palette.counts, want.palette.counts)
    assert got.palette.counts.sum() == np.count_nonzero(alpha > 0)
    assert (got.mse, got.n_input_colors) == (want.mse, want.n_input_colors)
