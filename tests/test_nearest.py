"""The nearest-colour search (_nearest.py): every copy finds the exact nearest centre."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import Palette, _fit, _nearest, _paint, apply_palette, quantize


def _brute_force_nearest(points, centres):
    squared = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(squared, axis=1)  # ties: lowest index, as the engine promises


@pytest.mark.parametrize("k", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("guess", ["zeros", "random"])
def test_assignment_is_the_exact_nearest_centre(k, guess):
    """Sort-means and the bounds only skip work: labels equal the brute-force argmin,
    including ties (integer grid points equidistant from two centres) and k above the
    neighbour-list length (300 > 256), whatever the starting guesses."""
    rng = np.random.default_rng(k)
    points = rng.integers(0, 12, (4000, 3)).astype(np.float64)  # many exact ties
    centres = rng.integers(0, 12, (k, 3)).astype(np.float64) + rng.choice([0, 0.5], (k, 3))
    labels = np.zeros(len(points), np.int64)
    if guess == "random":
        labels = rng.integers(0, k, len(points))
    cells = _fit._Array(points, np.ones(len(points)))
    _nearest.assign(cells, centres, labels)
    np.testing.assert_array_equal(labels, _brute_force_nearest(points, centres))


@pytest.mark.parametrize("k", [5, 300])
def test_neighbour_lists_stay_sorted_and_bounded_as_centres_move(k):
    """The lists are re-sorted in place as the centres move, or, while the moves are
    small, their gaps lowered by twice the move: each row stays sorted, every gap a
    lower bound, and every centre after a gap at least that far (what the search's
    stopping rule needs); settle() makes them exact.  With more than 256 other
    centres, ``unlisted`` stays a lower bound on the distance to the unlisted ones."""
    rng = np.random.default_rng(k)
    centres = rng.normal(0, 50, (k, 3))
    neighbours = _nearest.Neighbours(centres)
    rows = np.arange(k)[:, None]
    for scale in (1, 0.01, 0.01, 1, 0.001):
        step = rng.normal(0, scale, centres.shape)
        centres = centres + step
        neighbours.update(centres, float(np.sqrt((step**2).sum(axis=1)).max()))
        distances = np.sqrt(((centres[:, None] - centres[None]) ** 2).sum(axis=2))
        listed = distances[rows, neighbours.order]
        assert np.all(neighbours.gaps <= listed + 1e-9)
        assert np.all(np.diff(neighbours.gaps, axis=1) >= 0)
        # Every centre listed after position m is at least gaps[:, m] away.
        later = np.minimum.accumulate(listed[:, ::-1], axis=1)[:, ::-1]
        assert np.all(later >= neighbours.gaps - 1e-9)
        settled = neighbours.copy()
        settled.settle(centres)
        np.testing.assert_allclose(settled.gaps, distances[rows, settled.order], atol=1e-9)
        assert np.all(np.diff(settled.gaps, axis=1) >= 0)
        for a in range(k):
            unlisted = np.setdiff1d(np.arange(k), [a, *neighbours.order[a]])
            if unlisted.size:
                assert distances[a, unlisted].min() >= neighbours.unlisted[a] - 1e-9


@pytest.mark.parametrize("n_dims", [1, 2, 3, 4])
def test_settled_lists_are_what_a_new_build_gives(n_dims):
    """Lists re-sorted as the centres move hold, once settled, the order and the very
    gaps a new build gives for the same centres (three channels take their own loop);
    as_built() says so, and is false while gaps are lowered or where equal distances
    could be in another order. The fit then keeps them from one stage to the next."""
    rng = np.random.default_rng(n_dims)
    centres = rng.normal(0, 50, (60, n_dims))
    neighbours = _nearest.Neighbours(centres)
    for scale in (5.0, 0.001, 2.0):
        step = rng.normal(0, scale, centres.shape)
        centres = centres + step
        neighbours.update(centres, float(np.sqrt((step**2).sum(axis=1)).max()))
        if neighbours.stale > 0:
            assert not neighbours.as_built()
        neighbours.settle(centres)
        built = _nearest.Neighbours(centres)
        np.testing.assert_array_equal(neighbours.order, built.order)
        np.testing.assert_array_equal(neighbours.gaps, built.gaps)
        assert neighbours.as_built()
    # Centres on an integer grid: equal distances, in index order when built.
    grid = np.array([[x, y, 0] for x in range(4) for y in range(4)], dtype=float)
    built = _nearest.Neighbours(grid)
    assert not built.as_built()
    squared = ((grid[:, None] - grid[None]) ** 2).sum(axis=2)
    squared[np.arange(16), np.arange(16)] = np.inf
    stable = np.argsort(squared, axis=1, kind="stable")[:, :15]
    np.testing.assert_array_equal(built.order, stable)


@pytest.mark.parametrize("k", [64, 300])
def test_greyscale_dithering_picks_the_exact_nearest_colour(k, monkeypatch):
    """The general dithering kernel walks the neighbour lists (all of them past 256
    colours): its labels equal comparing every colour (ties: lowest index)."""
    rng = np.random.default_rng(k)
    image = np.clip(data.camera()[::2, ::2] + rng.normal(0, 6, (256, 256)), 0, 65535)
    image = (image * 200).astype(np.uint16)  # 16-bit: room for 300 distinct levels
    palette = quantize(image, k, random_state=0, speed=10).palette
    fast = apply_palette(image, palette, dither=True)
    monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 10**6)
    every = apply_palette(image, palette, dither=True)
    np.testing.assert_array_equal(fast.labels, every.labels)


def test_rgb_dithering_past_the_neighbour_lists_picks_the_exact_nearest_colour(monkeypatch):
    """The RGB kernel's cell lists, and above 256 colours its walk that may run off the
    lists, give the labels of comparing every colour."""
    rng = np.random.default_rng(0)
    image = np.clip(data.astronaut()[::2, ::2] + rng.normal(0, 8, (256, 256, 3)), 0, 255)
    image = image.astype(np.uint8)
    palette = quantize(image, 400, random_state=0, speed=10).palette
    fast = apply_palette(image, palette, dither=True)
    monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 10**6)
    every = apply_palette(image, palette, dither=True)
    np.testing.assert_array_equal(fast.labels, every.labels)


def test_rgb_dithering_cell_lists_with_alpha_and_planes(monkeypatch):
    """The cell lists need no undithered labels: a stack of planes and an RGBA image
    with transparent pixels (which keep their undithered label) give the labels of
    comparing every colour."""
    rng = np.random.default_rng(3)
    rgb = np.clip(data.astronaut()[::4, ::4] + rng.normal(0, 8, (128, 128, 3)), 0, 255)
    rgb = rgb.astype(np.uint8)
    palette = quantize(rgb, 100, random_state=0, speed=10).palette
    alpha = np.where(rng.random((128, 128)) < 0.2, 0, 255).astype(np.uint8)
    rgba = np.concatenate([rgb, alpha[..., None]], axis=-1)
    stack = np.stack([rgb, rgb[::-1]])
    fast = [apply_palette(x, palette, dither=True) for x in (rgba, stack)]
    monkeypatch.setattr(_paint, "_BRUTE_FORCE_K", 10**6)
    every = [apply_palette(x, palette, dither=True) for x in (rgba, stack)]
    for one, other in zip(fast, every, strict=True):
        np.testing.assert_array_equal(one.labels, other.labels)
        np.testing.assert_array_equal(one.image, other.image)
    undithered = apply_palette(rgba, palette)
    hidden = alpha == 0
    np.testing.assert_array_equal(fast[0].labels[hidden], undithered.labels[hidden])


def test_integer_dithering_passes_on_whole_steps_only():
    """An integer image receives diffused error in whole steps toward zero (the rest
    is dropped, as in Pillow's integer Floyd-Steinberg), a float image all of it:
    both still mix two colours to the mean of a flat area between them."""
    palette = quantize(np.array([[[0, 0, 0], [255, 255, 255]]], np.uint8), 2).palette
    grey = np.full((64, 64, 3), 64, np.uint8)
    mixed = apply_palette(grey, palette, dither=True)
    assert abs(mixed.image.mean() - 64) < 3
    ramp = np.repeat(np.linspace(0, 1, 256)[None, :, None], 64, axis=0).repeat(3, axis=2)
    floats = apply_palette(ramp, Palette(np.array([[0.0] * 3, [1.0] * 3])), dither=True)
    assert np.abs(floats.image.mean(axis=(0, 2)) - ramp[0, :, 0]).mean() < 0.05
    rgb = data.astronaut()[::4, ::4]
    palette = quantize(rgb, 64, random_state=0, speed=10).palette
    whole = apply_palette(rgb, palette, dither=True)
    plain = apply_palette(rgb.astype(np.float64), palette_as_float(palette), dither=True)
    assert whole.mse < plain.mse  # the dropped fractions: less noise


def palette_as_float(palette):
    return Palette(np.asarray(palette.colors, np.float64))
