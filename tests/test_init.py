"""Given starting colours (``init=``): scikit-learn's Lloyd, on the exact histogram."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data
from sklearn.cluster import KMeans

from napari_kmeans_filter import _fit, quantize
from napari_kmeans_filter._histogram import Encoding, histogram_of_pixels


def _matched(palette, centres):
    """For every scikit-learn centre, the palette colour nearest to it (a bijection)."""
    nearest = ((centres[:, None, :] - palette[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert len(set(nearest)) == len(centres)
    return palette[nearest]


@pytest.fixture(scope="module")
def astronaut():
    image = data.astronaut()
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 100_000  # 113 382 colours
    return image


@pytest.mark.parametrize("k", [8, 24])
def test_init_follows_scikit_learn_on_a_photo_of_many_colours(astronaut, k):
    """Plain weighted Lloyd on the distinct colours is KMeans on every pixel: the same
    centres (up to the palette's rounding to uint8), in init's order, and the same error."""
    pixels = astronaut.reshape(-1, 3).astype(np.float64)
    rng = np.random.default_rng(k)
    start = pixels[rng.choice(len(pixels), k, replace=False)]
    ours = quantize(astronaut, k, init=start)
    theirs = KMeans(k, init=start, n_init=1, max_iter=300, tol=1e-4, algorithm="lloyd").fit(pixels)
    palette = ours.palette.colors.astype(np.float64)
    centres = theirs.cluster_centers_
    np.testing.assert_allclose(palette, centres, rtol=0, atol=0.5 + 1e-6)  # colour i: init[i]
    rounded = np.clip(np.rint(centres), 0, 255)
    their_mse = ((pixels[:, None, :] - rounded[None]) ** 2).sum(axis=2).min(axis=1).mean() / 3
    assert ours.mse == pytest.approx(their_mse, rel=1e-3)


def test_an_empty_cluster_takes_the_farthest_colour_never_a_taken_one(astronaut):
    """Two starts on one colour and one far from every pixel: scikit-learn relocates the
    emptied clusters to the farthest samples; here they take distinct colours, and the
    result is scikit-learn's."""
    pixels = astronaut.reshape(-1, 3).astype(np.float64)
    start = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 0], [255, 0, 255], [254, 0, 255]], float)
    ours = quantize(astronaut, 5, init=start)
    assert len(ours.palette) == 5
    assert len(np.unique(ours.palette.colors, axis=0)) == 5
    theirs = KMeans(5, init=start, n_init=1, algorithm="lloyd").fit(pixels).cluster_centers_
    palette = ours.palette.colors.astype(np.float64)
    np.testing.assert_allclose(_matched(palette, theirs), theirs, rtol=0, atol=0.5 + 1e-6)


def test_init_whole_and_sliced_histograms_agree(monkeypatch):
    """The exact Lloyd (and its relocation) visits a large histogram in slices: the same
    centres as holding it whole."""
    image = data.chelsea()
    encoding = Encoding.for_image(image.dtype, 3)
    histogram = histogram_of_pixels(image.reshape(-1, 3), encoding)
    start = np.array([[0, 0, 0], [0, 0, 0], [128, 128, 128], [250, 250, 250]], float)
    whole = _fit.fit_histogram(histogram, encoding, 4, init=start)
    monkeypatch.setattr(_fit, "MAX_WHOLE_POINTS", 10_000)
    monkeypatch.setattr(_fit, "_SLICE_ROWS", 7_919)
    sliced = _fit.fit_histogram(histogram, encoding, 4, init=start)
    np.testing.assert_array_equal(sliced.colors, whole.colors)
    np.testing.assert_array_equal(sliced.assignment.row_labels, whole.assignment.row_labels)


def test_init_keeps_its_order_on_an_image_of_fewer_colours_than_k():
    """No more distinct colours than k: the palette is the image's own colours, each at
    the place of its nearest init row, as Lloyd from init (scikit-learn) puts them."""
    from sklearn.cluster import KMeans as SkKMeans

    from napari_kmeans_filter import KMeansQuantizer

    X = np.array([[10, 10, 10], [0, 0, 0], [10, 10, 10], [0, 0, 0], [0, 0, 0]], float)
    start = np.array([[10, 10, 10], [0, 0, 0]], float)
    np.testing.assert_array_equal(
        KMeansQuantizer(2, init=start, n_init=1).fit(X).labels_,
        SkKMeans(2, init=start, n_init=1).fit(X).labels_,
    )
    image = X.reshape(1, 5, 3).astype(np.uint8)
    np.testing.assert_array_equal(quantize(image, 2, init=start).palette.colors, start)


def test_init_with_fixed_colors_is_refused_before_any_work():
    """Lloyd from an init array moves every colour, so none could stay fixed: refused,
    naming both, instead of a palette whose first fitted colour is silently replaced."""
    with pytest.raises(ValueError, match="'fixed_colors' parameter must be None with an 'init'"):
        quantize(data.chelsea()[::4, ::4], 6, init=np.zeros((6, 3)), fixed_colors=[[0, 0, 0]])
