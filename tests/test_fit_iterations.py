"""The fit's iteration counts: the best run's own (scikit-learn's ``n_iter_``) and the total."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import _fit
from napari_kmeans_filter._histogram import Encoding, histogram_of_pixels


def _cat_histogram():
    image = data.chelsea()
    encoding = Encoding.for_image(image.dtype, image.shape[-1])
    return histogram_of_pixels(image.reshape(-1, 3), encoding), encoding


@pytest.mark.parametrize("max_iter", [1, 5, 300])
def test_best_run_iterations_are_at_most_max_iter(max_iter):
    """The winning start's Lloyd count never exceeds max_iter (as scikit-learn's n_iter_),
    while the total over starts, swaps and refinement does (cat, k = 8: 337 at 300)."""
    histogram, encoding = _cat_histogram()
    fit = _fit.fit_histogram(histogram, encoding, 8, max_iter=max_iter, seed=0)
    assert 1 <= fit.best_run_iter <= max_iter
    assert fit.n_iter > max_iter  # several starts and swap trials
    assert fit.best_run_iter < fit.n_iter


def test_one_run_from_init_counts_the_same_both_ways():
    """With an init there is one Lloyd run: both counts are its iterations."""
    histogram, encoding = _cat_histogram()
    start = np.array([[30, 30, 30], [90, 80, 70], [150, 140, 120], [220, 210, 200]], float)
    fit = _fit.fit_histogram(histogram, encoding, 4, init=start, max_iter=300)
    assert fit.best_run_iter == fit.n_iter > 0


def test_no_clustering_counts_no_iteration():
    """Fewer colours than asked for: the palette is the image's own, no Lloyd run."""
    image = np.zeros((4, 4, 3), np.uint8)
    image[:2] = 200
    encoding = Encoding.for_image(image.dtype, 3)
    histogram = histogram_of_pixels(image.reshape(-1, 3), encoding)
    fit = _fit.fit_histogram(histogram, encoding, 8)
    assert fit.n_iter == fit.best_run_iter == 0
