"""Lloyd's bounded passes at large k: what they spare stays exact, and moves far away spare more."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_filter import _fit, _nearest


def _brute_force_nearest(points, centres):
    squared = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    return np.argmin(squared, axis=1)  # ties: lowest index, as the engine promises


def _blobs(rng, centres, n_each, spread):
    points = np.concatenate([c + rng.normal(0, spread, (n_each, 3)) for c in centres])
    return np.ascontiguousarray(points)


def _first_pass(points, centres):
    """Labels, upper and lower bounds and cluster radii after a full assignment pass."""
    cells = _fit._Array(points, np.ones(len(points)))
    neighbours = _nearest.Neighbours(centres)
    labels = np.zeros(len(points), np.int32)
    bounds = _nearest.Bounds(len(points))
    squared = np.empty(len(points))
    _nearest.assign(cells, centres, labels, squared, neighbours=neighbours, bounds=bounds)
    upper = np.sqrt(squared)
    radius = _nearest.cluster_radius(labels, upper, len(centres))
    return cells, neighbours, labels, upper, bounds, radius


def test_a_centre_moving_far_away_leaves_the_other_points_bounds_alone():
    """Two groups of clusters far apart: when one centre of the first group moves, the
    points of the second keep their bounds on the other centres (Hamerly's single bound
    lowers every point's by the largest move of any centre, so that after a few such moves
    every point is searched again), and the first group's points lose at most that move."""
    rng = np.random.default_rng(0)
    near = np.array([[10.0, 10, 10], [30, 10, 10], [10, 30, 10], [10, 10, 30]])
    far = near + 200.0
    centres = np.concatenate([near, far])
    points = _blobs(rng, centres, 200, 3.0)
    cells, neighbours, labels, upper, bounds, radius = _first_pass(points, centres)
    before = bounds.lower.copy()
    moved = centres.copy()
    moved[0] += [1.5, 0.0, 0.0]
    drift = np.sqrt(((moved - centres) ** 2).sum(axis=1))
    neighbours.update(moved, float(drift.max()))
    _nearest.reassign(cells, moved, labels, upper, bounds, neighbours, drift, radius)
    np.testing.assert_array_equal(labels, _brute_force_nearest(points, moved))
    in_far = labels >= 4
    assert in_far.sum() == 800
    # Unchanged (up to the relative slack that guards rounding), not lowered by 1.5.
    np.testing.assert_allclose(bounds.lower[in_far], before[in_far], rtol=1e-8)
    assert np.all(bounds.lower >= before - drift.max() - 1e-9)


def test_bounded_lloyd_passes_find_the_exact_nearest_centre_at_every_iteration():
    """Many Lloyd iterations at k = 256 on integer colours (exact ties), some centres
    standing still and some moving (as late in a fit): after every pass each point's
    label is the brute-force nearest centre, ties to the lowest index."""
    rng = np.random.default_rng(1)
    points = rng.integers(0, 40, (6000, 3)).astype(np.float64)
    weights = rng.integers(1, 5, len(points)).astype(np.float64)
    centres = points[rng.choice(len(points), 256, replace=False)] + 0.25
    cells = _fit._Array(points, weights)
    neighbours = _nearest.Neighbours(centres)
    labels = np.zeros(len(points), np.int32)
    bounds = _nearest.Bounds(len(points))
    squared = np.empty(len(points))
    sums, totals, _, _ = _nearest.assign(
        cells, centres, labels, squared, neighbours=neighbours, bounds=bounds
    )
    upper = np.sqrt(squared)
    radius = _nearest.cluster_radius(labels, upper, len(centres))
    for iteration in range(12):
        updated = centres.copy()
        filled = totals > 0
        updated[filled] = sums[filled] / totals[filled, np.newaxis]
        if iteration % 3 == 2:
            # A few centres jump (as a swap moves one): the others keep their bounds.
            jumped = rng.choice(256, 4, replace=False)
            updated[jumped] = points[rng.choice(len(points), 4, replace=False)] + 0.5
        drift = np.sqrt(((updated - centres) ** 2).sum(axis=1))
        centres = updated
        neighbours.update(centres, float(drift.max()))
        delta_sums, delta_totals, _ = _nearest.reassign(
            cells, centres, labels, upper, bounds, neighbours, drift, radius
        )
        sums += delta_sums
        totals += delta_totals
        np.testing.assert_array_equal(labels, _brute_force_nearest(points, centres))
        # The kept bounds are bounds: upper on the own centre, lower[:, 0] on the
        # second centre kept, lower[:, 1] on every other.
        distances = np.sqrt(((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
        rows = np.arange(len(points))
        own = distances[rows, labels]
        assert np.all(upper >= own * (1 - 1e-9))
        distances[rows, labels] = np.inf
        second = bounds.second
        assert np.all(bounds.lower[:, 0] <= distances[rows, second] * (1 + 1e-9))
        assert np.all(bounds.least() <= distances.min(axis=1) * (1 + 1e-9))
        distances[rows, second] = np.inf
        assert np.all(bounds.lower[:, 1] <= distances.min(axis=1) * (1 + 1e-9))
        assert np.all(second != labels)  # the kernels never keep a point's own centre
        for h in np.unique(labels):
            assert radius[h] >= own[labels == h].max() * (1 - 1e-9)


def test_a_colour_settled_by_its_second_centre_keeps_the_lowest_index_of_equals():
    """A colour between its centre and its second, the others far: after a move that
    makes the two equally far, the pass settles it by the second's distance alone, and
    the tie goes to the lower index whichever of the two was its own (the engine's
    promise); a move that makes the second strictly nearer moves it there."""
    points = np.array([[0.0, 0, 0], [0, 0, 0], [0, 50, 0]])
    for own, other in ((1, 0), (0, 1)):
        centres = np.array([[0.0, 0, 0], [0, 0, 0], [100, 0, 0], [0, 60, 0]])
        centres[own], centres[other] = [-1, 0, 0], [2, 0, 0]
        for moved_centre, place, expected in (
            (own, [-2.0, 0, 0], 0),  # own centre as far as the other: the lower index
            (other, [1.0, 0, 0], 0),  # the other as near as the own centre: the lower index
            (other, [0.5, 0, 0], other),  # the other nearer
        ):
            cells, neighbours, labels, upper, bounds, radius = _first_pass(points, centres)
            assert list(labels[:2]) == [own, own]
            assert list(bounds.second[:2]) == [other, other]
            moved = centres.copy()
            moved[moved_centre] = place
            drift = np.sqrt(((moved - centres) ** 2).sum(axis=1))
            neighbours.update(moved, float(drift.max()))
            _nearest.reassign(cells, moved, labels, upper, bounds, neighbours, drift, radius)
            assert labels[0] == labels[1] == expected
            np.testing.assert_array_equal(labels, _brute_force_nearest(points, moved))
            # The second kept is the other of the two, at its exact distance.
            left = own if expected == other else other
            assert list(bounds.second[:2]) == [left, left]
            far = np.sqrt(((points[0] - moved[left]) ** 2).sum())
            np.testing.assert_allclose(bounds.lower[:2, 0], far, rtol=1e-8)
            # Settled without a search: the bound on the others is the one kept, lowered
            # by the move (58.5-59), not the exact third distance (60) a search sets.
            assert np.all(bounds.lower[:2, 1] < 60 * (1 - 1e-9) - 0.5)


_SWAP_SEARCH, _RUN_PARTS = _fit._swap_search, _fit.run_parts


def _swap_searches(monkeypatch, cores, image, k, **kwargs):
    """Every swap search's result (centres, inertia, iterations) in a fit on ``cores``
    cores, and how many moves were tried at once (calls of ``run_parts`` with > 1 part)."""
    from napari_kmeans_filter import quantize

    monkeypatch.setattr(_fit, "n_workers", lambda: cores)
    searches, ahead = [], []
    search, run_parts = _SWAP_SEARCH, _RUN_PARTS

    inside = []

    def recording_search(*args, **kw):
        inside.append(True)
        try:
            state, n_iter, stable = search(*args, **kw)
        finally:
            inside.pop()
        searches.append((state[0].copy(), state[1], n_iter, stable))
        return state, n_iter, stable

    def counting_run_parts(work, parts, n_threads):
        if inside:
            ahead.append(len(parts))
        return run_parts(work, parts, n_threads)

    monkeypatch.setattr(_fit, "_swap_search", recording_search)
    monkeypatch.setattr(_fit, "run_parts", counting_run_parts)
    result = quantize(image, k, **kwargs)
    return searches, result, ahead


def test_moves_tried_at_once_give_the_swap_search_of_one_move_after_the_other(monkeypatch):
    """After a rejected move the next ones run on the other cores; a move run after an
    accepted one is dropped and its random number drawn again. The cat at k = 16 has
    accepted and rejected moves in both searches (coarse cells, then every colour); at k = 64
    a move tried at once with the next is accepted and more follow; the small image with
    fixed colours has a costliest cluster that cannot always be split."""
    from skimage import data

    rng = np.random.default_rng(3)
    few = rng.integers(0, 4, (40, 50, 3), dtype=np.uint8) * 60
    cases = [
        (data.chelsea(), 16, {}),
        (data.chelsea(), 64, {}),  # a move accepted after a rejection, and more after it
        (few, 12, {"fixed_colors": [[0, 0, 0], [180, 180, 180]]}),
    ]
    for image, k, kwargs in cases:
        one, one_result, one_ahead = _swap_searches(monkeypatch, 1, image, k, **kwargs)
        two, two_result, _ = _swap_searches(monkeypatch, 2, image, k, **kwargs)
        assert max(one_ahead, default=1) == 1
        assert len(one) == len(two)
        for (c1, i1, n1, s1), (c2, i2, n2, s2) in zip(one, two, strict=True):
            np.testing.assert_array_equal(c1, c2)
            assert (i1, n1, s1) == (i2, n2, s2)
        np.testing.assert_array_equal(one_result.palette.colors, two_result.palette.colors)
        np.testing.assert_array_equal(one_result.labels, two_result.labels)
        assert one_result.n_iter == two_result.n_iter
    # The cat at k = 16 did try moves at once (else the comparison proves nothing).
    _, _, ahead = _swap_searches(monkeypatch, 2, data.chelsea(), 16)
    assert ahead.count(2) >= 3


def _check_bounds(points, centres, labels, bounds, upper=None):
    """Labels the brute-force nearest; ``upper`` on the own centre, ``lower[:, 0]`` on the
    second kept (where it is another centre) and ``lower[:, 1]`` on every other centre."""
    squared = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
    np.testing.assert_array_equal(labels, np.argmin(squared, axis=1))
    distances = np.sqrt(squared)
    rows = np.arange(len(points))
    if upper is not None:
        assert np.all(upper >= distances[rows, labels] * (1 - 1e-9))
    distances[rows, labels] = np.inf
    second = bounds.second
    real = second != labels
    assert np.all(bounds.lower[real, 0] <= distances[rows, second][real] * (1 + 1e-9))
    distances[rows[real], second[real]] = np.inf
    assert np.all(bounds.lower[:, 1] <= distances.min(axis=1) * (1 + 1e-9))


@pytest.mark.parametrize("k", [2, 3, 16, 300])
def test_bounds_stay_valid_when_the_swap_search_moves_a_centre(k):
    """A swap trial moves one centre (often many points' second) to a point and starts
    from the bounds lowered to the new place (Bounds.with_centre): after the trial's full
    pass every label is exact and both bounds are bounds, accepted or not, at k = 2
    (no other centre), 3, 16 and 300 (partial neighbour lists)."""
    rng = np.random.default_rng(k)
    points = rng.integers(0, 20, (3000, 3)).astype(np.float64)
    cells = _fit._Array(points, np.ones(len(points)))
    centres = rng.integers(0, 20, (k, 3)) + 0.5
    neighbours = _nearest.Neighbours(centres)
    labels = np.zeros(len(points), np.int32)
    bounds = _nearest.Bounds(len(points))
    _nearest.assign(cells, centres, labels, neighbours=neighbours, bounds=bounds)
    for _ in range(15):
        if rng.random() < 0.5:  # the centre that is the most points' second
            removed = int(np.bincount(bounds.second, minlength=k).argmax())
        else:
            removed = int(rng.integers(k))
        chosen = points[rng.integers(len(points))]
        moved = centres.copy()
        moved[removed] = chosen
        trial = bounds.with_centre(np.sqrt(((points - chosen) ** 2).sum(axis=1)))
        _check_bounds(points, centres, labels, bounds)
        trial_labels = labels.copy()
        trial_neighbours = neighbours.copy()
        trial_neighbours.update(moved, float(np.sqrt(((chosen - centres[removed]) ** 2).sum())))
        _nearest.assign(cells, moved, trial_labels, neighbours=trial_neighbours, bounds=trial)
        _check_bounds(points, moved, trial_labels, trial)
        if rng.random() < 0.5:  # accepted
            centres, labels, bounds, neighbours = moved, trial_labels, trial, trial_neighbours


@pytest.mark.parametrize("k", [2, 16, 300])
def test_bounds_stay_valid_through_last_passes_and_relocations(k):
    """Passes of small moves, far jumps, relocations (a point moved whole to a centre that
    jumps onto it, its bounds forgotten) and Lloyd's last pass (a full pass from bounds
    lowered by the largest move): every label exact, every bound a bound."""
    rng = np.random.default_rng(10 + k)
    points = rng.integers(0, 25, (4000, 3)).astype(np.float64)
    centres = rng.integers(0, 25, (k, 3)) + rng.choice([0.0, 0.5], (k, 3))
    cells, neighbours, labels, upper, bounds, radius = _first_pass(points, centres)
    squared = np.empty(len(points))
    for step in range(24):
        moved = centres.copy()
        some = rng.random(k) < 0.3
        moved[some] += rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], (some.sum(), 3))
        if step % 4 == 1:  # one far jump
            moved[rng.integers(k)] = rng.integers(-25, 50, 3)
        if step % 4 == 2:  # a relocation
            empty, row = int(rng.integers(k)), int(rng.integers(len(points)))
            labels[row], upper[row] = empty, np.inf
            bounds.forget(row)
            moved[empty] = points[row]
        drift = np.sqrt(((moved - centres) ** 2).sum(axis=1))
        centres = moved
        neighbours.update(centres, float(drift.max()))
        if step % 4 == 3:  # Lloyd's last pass
            _nearest.assign(
                cells,
                centres,
                labels,
                squared,
                neighbours=neighbours,
                bounds=bounds,
                drift=float(drift.max()),
            )
            upper = np.sqrt(squared)
            radius = _nearest.cluster_radius(labels, upper, k)
        else:
            _nearest.reassign(cells, centres, labels, upper, bounds, neighbours, drift, radius)
        _check_bounds(points, centres, labels, bounds, upper)
