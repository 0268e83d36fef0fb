"""The nearest-colour search: every point's nearest centre, exactly, at any k.

One search serves the three places that need it: the fit's assignment passes
(:func:`assign`, :func:`reassign`, which Lloyd's iterations in :mod:`._fit`
call), the palette's assignment of every histogram row (the repaint's lookup
table is made from it) and error diffusion, whose value at a pixel is known
only when the pixel is reached (:func:`nearest_point`, :func:`nearest_rgb`,
inlined into the dithering kernels of :mod:`._paint`).

What spares work, all exact (ties go to the lowest index):

* **sorted neighbours** (:class:`Neighbours`) -- for every centre its other
  centres by increasing distance; a search from a point's own (or guessed)
  centre stops at the first centre farther than twice the point's distance
  to it (triangle inequality; *sort-means*, S. J. Phillips, "Acceleration of
  k-means and related clustering algorithms", ALENEX 2002);
* **bounds** -- Hamerly's lower bound on the distance to every other centre
  lets a Lloyd pass skip a point without any search (G. Hamerly, "Making
  k-means even faster", SDM 2010);
* **cell lists** -- for dithered RGB, the colours that can be nearest to any
  value in a cell of a 64^3 grid, made on a cell's first use (P. Heckbert,
  "Color image quantization for frame buffer display", SIGGRAPH 1982).

The searches are :func:`._jit.helper` functions, inlined where they are
called.  Where a specialised copy is measured faster, it sits beside the
general one here with its figure.
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import helper, kernel
from ._workers import n_workers, run_parts

# Sort-means keeps, for every centre, the other centres in order of distance;
# beyond this many it searches all centres for the rare point that needs it
# (k = 4096 would otherwise hold a 4096 x 4095 table).
_MAX_NEIGHBOURS = 256
# Rows a pass sums at a time; sets of _PARALLEL_POINTS or more use one thread
# per core (the kernels release the GIL): on the 12 MP mosaic's 1.6 M colours
# each pass is ~25 ms on one core.
_PASS_ROWS = 2**16
_PARALLEL_POINTS = 2**18
_WORKERS = min(n_workers(), 8)
# Relative slack on the stopping rule: a centre is skipped only when it is
# provably (up to rounding of square roots) not nearer.
_SLACK = 1e-9


# --------------------------------------------------------------------------- searches


@helper
def _compare_all(points, i, centres, home, home_squared):
    """Nearest centre to ``points[i]`` among all of them, starting from ``home``.

    Returns ``(best, best_squared, second)``: ``second`` is the distance to
    the nearest of the other centres (a lower bound for Hamerly's test).
    """
    k, n_dims = centres.shape
    best = home
    best_squared = home_squared
    second = np.inf
    for j in range(k):
        if j == home:
            continue
        candidate = 0.0
        for c in range(n_dims):
            step = points[i, c] - centres[j, c]
            candidate += step * step
        if candidate < best_squared or (candidate == best_squared and j < best):
            second = min(second, math.sqrt(best_squared))
            best = j
            best_squared = candidate
        else:
            second = min(second, math.sqrt(candidate))
    return best, best_squared, second


@helper
def _walk(points, i, centres, order, gaps, unlisted, home, home_squared):
    """Nearest centre to ``points[i]``, visiting ``home``'s neighbours by distance.

    Stops at the first neighbour that cannot be nearer (farther from
    ``home`` than the point's distance to ``home`` plus to the best so far);
    the lists may hold only the nearest neighbours: ``unlisted[home]`` bounds
    the distance to the others, and a search that could reach that far
    compares every centre.  Returns ``(best, best_squared, second)``,
    ``second`` bounding from below the distance to every centre but the best.
    """
    k = centres.shape[0]
    n_dims = points.shape[1]
    n_neighbours = order.shape[1]
    home_distance = math.sqrt(home_squared)
    best = home
    best_squared = home_squared
    reach = 2.0 * home_distance * (1.0 + _SLACK) + 1e-300
    second = np.inf
    exhausted = True
    for m in range(n_neighbours):
        if gaps[home, m] > reach:
            second = min(second, gaps[home, m] - home_distance)
            exhausted = False
            break
        j = order[home, m]
        candidate = 0.0
        for c in range(n_dims):
            step = points[i, c] - centres[j, c]
            candidate += step * step
        if candidate < best_squared or (candidate == best_squared and j < best):
            second = min(second, math.sqrt(best_squared))
            best = j
            best_squared = candidate
            reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK) + 1e-300
        else:
            second = min(second, math.sqrt(candidate))
    if n_neighbours < k - 1:
        if exhausted or reach >= unlisted[home]:
            # A centre missing from the list could be nearer: search them all.
            return _compare_all(points, i, centres, home, home_squared)
        second = min(second, unlisted[home] - home_distance)
    return best, best_squared, second


@helper
def nearest_point(point, centres, order, gaps, unlisted, home, brute_force_k):
    """Nearest centre to ``point`` (``point[0]``: one row), searched from ``home``.

    Up to ``brute_force_k`` centres it compares them all, above it walks
    ``home``'s neighbours (:func:`_walk`).  Returns ``(best, best_squared)``.
    """
    home_squared = 0.0
    for c in range(point.shape[1]):
        step = point[0, c] - centres[home, c]
        home_squared += step * step
    if centres.shape[0] <= brute_force_k:
        best, best_squared, _ = _compare_all(point, 0, centres, home, home_squared)
    else:
        best, best_squared, _ = _walk(point, 0, centres, order, gaps, unlisted, home, home_squared)
    return best, best_squared


# The RGB searches below are the ones above with the three values in scalars:
# the dithering kernel that holds them so ran 3-4x faster than the one that
# keeps a pixel's value in an array (which the compiler must reload after
# every store into the error rows): 35 vs 117 ns a pixel.


@helper
def _compare_all_rgb(v0, v1, v2, colors):
    """Nearest of all ``colors`` to (v0, v1, v2): ``(best, best_squared)``."""
    best = 0
    best_squared = np.inf
    for j in range(colors.shape[0]):
        d0 = v0 - colors[j, 0]
        d1 = v1 - colors[j, 1]
        d2 = v2 - colors[j, 2]
        candidate = d0 * d0 + d1 * d1 + d2 * d2
        if candidate < best_squared:  # in index order: ties go to the lowest
            best = j
            best_squared = candidate
    return best, best_squared


@helper
def _walk_rgb(v0, v1, v2, colors, order, gaps, unlisted, home):
    """:func:`_walk` for a value in scalars: ``(best, best_squared)``."""
    k = colors.shape[0]
    n_neighbours = order.shape[1]
    d0 = v0 - colors[home, 0]
    d1 = v1 - colors[home, 1]
    d2 = v2 - colors[home, 2]
    best = home
    best_squared = d0 * d0 + d1 * d1 + d2 * d2
    home_distance = math.sqrt(best_squared)
    reach = 2.0 * home_distance * (1.0 + _SLACK) + 1e-300
    exhausted = True
    for m in range(n_neighbours):
        if gaps[home, m] > reach:
            exhausted = False
            break
        j = order[home, m]
        d0 = v0 - colors[j, 0]
        d1 = v1 - colors[j, 1]
        d2 = v2 - colors[j, 2]
        candidate = d0 * d0 + d1 * d1 + d2 * d2
        if candidate < best_squared or (candidate == best_squared and j < best):
            best = j
            best_squared = candidate
            reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK) + 1e-300
    if n_neighbours < k - 1 and (exhausted or reach >= unlisted[home]):
        return _compare_all_rgb(v0, v1, v2, colors)
    return best, best_squared


@helper
def _fill_cell(cells, cell, c0, c1, c2, diagonal, colors):
    """Make the candidate list of the cell centred on (c0, c1, c2); returns its length.

    The colours within the distance from the cell's centre to its nearest
    colour plus the cell's diagonal are the only ones that can be nearest to
    a value in the cell; they are stored in index order after the length
    (at most ``cells.shape[1] - 1`` of them; a longer list is only counted).
    """
    room = cells.shape[1] - 1
    k = colors.shape[0]
    nearest = np.inf
    for j in range(k):
        d0 = c0 - colors[j, 0]
        d1 = c1 - colors[j, 1]
        d2 = c2 - colors[j, 2]
        nearest = min(nearest, d0 * d0 + d1 * d1 + d2 * d2)
    limit = math.sqrt(nearest) + diagonal
    limit *= limit
    listed = 0
    for j in range(k):
        d0 = c0 - colors[j, 0]
        d1 = c1 - colors[j, 1]
        d2 = c2 - colors[j, 2]
        if d0 * d0 + d1 * d1 + d2 * d2 <= limit:
            listed += 1
            if listed <= room:
                cells[cell, listed] = j
    cells[cell, 0] = listed
    return listed


@helper
def nearest_rgb(v0, v1, v2, colors, order, gaps, unlisted, home, brute_force_k, grid):
    """Nearest of the RGB ``colors`` to (v0, v1, v2): ``(best, best_squared)``.

    Up to ``brute_force_k`` colours it compares them all (``home`` unread);
    above, it looks among the candidates of the value's cell of ``grid``
    (:func:`cell_grid`), made on the
    cell's first use, or, where that list is too long, walks ``home``'s
    neighbours.
    """
    if colors.shape[0] <= brute_force_k:
        return _compare_all_rgb(v0, v1, v2, colors)
    cells, low, sizes, diagonal, n_bins = grid
    a0 = min(max(int((v0 - low[0]) / sizes[0]), 0), n_bins - 1)
    a1 = min(max(int((v1 - low[1]) / sizes[1]), 0), n_bins - 1)
    a2 = min(max(int((v2 - low[2]) / sizes[2]), 0), n_bins - 1)
    cell = (a0 * n_bins + a1) * n_bins + a2
    listed = cells[cell, 0]
    if listed < 0:
        c0 = low[0] + (a0 + 0.5) * sizes[0]
        c1 = low[1] + (a1 + 0.5) * sizes[1]
        c2 = low[2] + (a2 + 0.5) * sizes[2]
        listed = _fill_cell(cells, cell, c0, c1, c2, diagonal, colors)
    if listed > cells.shape[1] - 1:
        return _walk_rgb(v0, v1, v2, colors, order, gaps, unlisted, home)
    best = cells[cell, 1]
    d0 = v0 - colors[best, 0]
    d1 = v1 - colors[best, 1]
    d2 = v2 - colors[best, 2]
    best_squared = d0 * d0 + d1 * d1 + d2 * d2
    for t in range(2, listed + 1):
        j = cells[cell, t]
        d0 = v0 - colors[j, 0]
        d1 = v1 - colors[j, 1]
        d2 = v2 - colors[j, 2]
        candidate = d0 * d0 + d1 * d1 + d2 * d2
        if candidate < best_squared:  # in index order: ties go to the lowest
            best = j
            best_squared = candidate
    return best, best_squared


# The grid of nearest-colour candidate lists: cells an axis, and the longest
# list kept (a longer one falls back to walking the neighbour table).
_GRID = 64
_CELL_LIST = 15


def cell_grid(low: np.ndarray, high: np.ndarray):
    """An empty grid of candidate lists over the box ``[low, high]`` (3 channels).

    Returns the ``grid`` tuple :func:`nearest_rgb` reads: ``cells`` (one row
    per cell: the list's length, -1 until made, then the colours), the box's
    ``low`` corner, the cells' ``sizes``, their diagonal (with slack) and the
    cells an axis.
    Lists are filled as values fall in them, so each thread needs its own.
    """
    cells = np.full((_GRID**3, 1 + _CELL_LIST), -1, dtype=np.int16)
    sizes = np.maximum(np.asarray(high, np.float64) - low, 1e-300) / _GRID
    diagonal = math.sqrt(float(sizes @ sizes)) * (1.0 + _SLACK)
    return cells, np.asarray(low, np.float64), sizes, diagonal, _GRID


def no_cell_grid():
    """A placeholder ``grid`` for palettes small enough to compare all colours."""
    return np.zeros((1, 1 + _CELL_LIST), dtype=np.int16), np.zeros(3), np.ones(3), 1.0, 1


# --------------------------------------------------------------------------- sorted neighbours


@kernel
def _resort_neighbours(centres, order, gaps):
    """Recompute the distances along ``order`` and re-sort each row by insertion.

    The rows of successive Lloyd iterations are nearly sorted, so this is
    linear in their length (a full sort in numba also took ~20 s to compile).
    """
    k, n_dims = centres.shape
    for a in range(k):
        for m in range(order.shape[1]):
            j = order[a, m]
            total = 0.0
            for c in range(n_dims):
                step = centres[a, c] - centres[j, c]
                total += step * step
            gap = math.sqrt(total)
            slot = m
            while slot > 0 and gaps[a, slot - 1] > gap:
                gaps[a, slot] = gaps[a, slot - 1]
                order[a, slot] = order[a, slot - 1]
                slot -= 1
            gaps[a, slot] = gap
            order[a, slot] = j


class Neighbours:
    """For every centre, the other centres by increasing distance, kept as they move.

    ``order[a]`` lists the nearest ``min(k - 1, _MAX_NEIGHBOURS)`` other
    centres of centre a and ``gaps[a]`` their distances, ascending; with
    shorter lists than k - 1, ``unlisted[a]`` bounds the distance to every
    centre missing from a's list.  Built by numpy; between Lloyd iterations
    the lists are re-sorted in place, and the bound loosened by twice the
    distance the centres moved, until it has lost a quarter of its value.
    """

    # Rows of the distance matrix computed at once by numpy (bounds memory at k = 4096).
    _ROWS = 256

    def __init__(self, centres: np.ndarray):
        k = centres.shape[0]
        n_neighbours = min(k - 1, _MAX_NEIGHBOURS)
        self.order = np.empty((k, n_neighbours), dtype=np.int64)
        self.gaps = np.empty((k, n_neighbours))
        self.unlisted = np.full(k, np.inf)
        self._rebuild(centres)

    def _rebuild(self, centres: np.ndarray) -> None:
        k, n_neighbours = self.order.shape
        self.moved = 0.0  # how far centres moved since: the bound's slack
        self._fresh_unlisted = np.inf
        if n_neighbours == 0:
            return
        for start in range(0, k, self._ROWS):
            rows = np.arange(start, min(start + self._ROWS, k))
            squared = ((centres[rows, np.newaxis, :] - centres[np.newaxis, :, :]) ** 2).sum(axis=2)
            squared[np.arange(rows.size), rows] = np.inf
            if n_neighbours < k - 1:
                # One more than listed: its distance bounds the unlisted ones.
                nearest = np.argpartition(squared, n_neighbours, axis=1)[:, : n_neighbours + 1]
            else:
                nearest = np.broadcast_to(np.arange(k), squared.shape)
            values = np.take_along_axis(squared, nearest, axis=1)
            ranked = np.argsort(values, axis=1, kind="stable")
            nearest = np.take_along_axis(nearest, ranked, axis=1)
            values = np.sqrt(np.take_along_axis(values, ranked, axis=1))
            self.order[rows] = nearest[:, :n_neighbours]
            self.gaps[rows] = values[:, :n_neighbours]
            if n_neighbours < k - 1:
                self.unlisted[rows] = values[:, n_neighbours]
        if n_neighbours < k - 1:
            self._fresh_unlisted = float(np.median(self.unlisted))

    def update(self, centres: np.ndarray, moved: float = np.inf) -> None:
        """Follow ``centres``, none of which moved farther than ``moved``."""
        k, n_neighbours = self.order.shape
        if n_neighbours == 0:
            return
        if n_neighbours < k - 1:
            self.moved += moved
            if not 2 * self.moved < 0.25 * self._fresh_unlisted:
                self._rebuild(centres)
                return
            self.unlisted -= 2 * moved
        _resort_neighbours(centres, self.order, self.gaps)

    def copy(self) -> Neighbours:
        twin = object.__new__(Neighbours)
        twin.__dict__.update(
            {
                key: getattr(value, "copy", lambda v=value: v)()
                for key, value in self.__dict__.items()
            }
        )
        return twin


# --------------------------------------------------------------------------- the fit's passes


@kernel
def _assign(
    points, weights, centres, order, gaps, unlisted, labels, lower, drift, sums, totals, squared
):
    """One assignment pass: ``labels`` updated to every point's nearest centre.

    ``labels`` holds each point's previous centre (any valid index); the new
    nearest one is exact, ties going to the lower index.  Hamerly's bound
    ``lower[i]`` (on the distance from point i to every centre but its own)
    shrinks by ``drift``, the farthest any centre moved since it was set; a
    point nearer its centre than that needs no search, the others are
    searched by :func:`_walk`, which sets their bound again.

    Adds the weighted points into ``sums``/``totals`` per new label and writes
    each point's squared distance into ``squared`` (when it is not empty).
    Returns the number of points that changed label and the weighted squared
    error.
    """
    n, n_dims = points.shape
    n_neighbours = order.shape[1]
    keep_squared = squared.shape[0] > 0
    changed = 0
    inertia = 0.0
    for i in range(n):
        home = labels[i]
        home_squared = 0.0
        for c in range(n_dims):
            step = points[i, c] - centres[home, c]
            home_squared += step * step
        best = home
        best_squared = home_squared
        bound = lower[i] - drift
        if n_neighbours > 0 and math.sqrt(home_squared) * (1.0 + _SLACK) >= bound:
            best, best_squared, second = _walk(
                points, i, centres, order, gaps, unlisted, home, home_squared
            )
            lower[i] = second * (1.0 - _SLACK)
        else:
            lower[i] = bound
        if best != home:
            changed += 1
            labels[i] = best
        weight = weights[i]
        totals[best] += weight
        for c in range(n_dims):
            sums[best, c] += weight * points[i, c]
        inertia += weight * best_squared
        if keep_squared:
            squared[i] = best_squared
    return changed, inertia


@kernel
def _reassign(
    points,
    weights,
    centres,
    order,
    gaps,
    unlisted,
    labels,
    upper,
    lower,
    drift,
    max_drift,
    sums,
    totals,
):
    """One Lloyd assignment pass that touches only the points whose bounds fail.

    Hamerly's algorithm (SDM 2010): ``upper[i]`` bounds the distance from
    point i to its centre and grows by that centre's ``drift``; ``lower[i]``
    bounds its distance to every other centre and shrinks by ``max_drift``.
    While the first is below the second (or below half the distance from the
    centre to its nearest other centre) the point cannot change cluster and
    is not looked at; otherwise its distance is recomputed and, if needed,
    searched by :func:`_walk`.  A point that changes cluster moves its
    weight and weighted coordinates from one centre to the other in ``sums`` /
    ``totals`` (which therefore hold changes).  Returns the number of points
    that changed cluster.
    """
    n, n_dims = points.shape
    n_neighbours = order.shape[1]
    changed = 0
    for i in range(n):
        home = labels[i]
        bound = lower[i] - max_drift
        near = gaps[home, 0] * 0.5 if n_neighbours > 0 else np.inf
        if near > bound:
            bound = near
        reach_home = upper[i] + drift[home]
        lower[i] = lower[i] - max_drift
        if reach_home * (1.0 + _SLACK) < bound:
            upper[i] = reach_home
            continue
        home_squared = 0.0
        for c in range(n_dims):
            step = points[i, c] - centres[home, c]
            home_squared += step * step
        home_distance = math.sqrt(home_squared)
        if home_distance * (1.0 + _SLACK) < bound:
            upper[i] = home_distance
            continue
        best, best_squared, second = _walk(
            points, i, centres, order, gaps, unlisted, home, home_squared
        )
        upper[i] = math.sqrt(best_squared)
        lower[i] = second * (1.0 - _SLACK)
        if best != home:
            changed += 1
            labels[i] = best
            weight = weights[i]
            totals[home] -= weight
            totals[best] += weight
            for c in range(n_dims):
                sums[home, c] -= weight * points[i, c]
                sums[best, c] += weight * points[i, c]
    return changed


_NO_SQUARED = np.zeros(0)


def _in_blocks(points, run):
    """Call ``run(index, first, last, rows, block, weights)`` for every block of
    ``_PASS_ROWS`` points, slice after slice (``rows`` indexes the slice's
    ``block``), with one thread per core for large point sets; ``index``
    numbers the blocks in the order their results must be added."""
    n_threads = _WORKERS if points.size >= _PARALLEL_POINTS else 1
    index = 0
    for start, stop, block, weights in points:
        jobs = [
            (index + number, start + offset, min(start + offset + _PASS_ROWS, stop), offset)
            for number, offset in enumerate(range(0, stop - start, _PASS_ROWS))
        ]
        index += len(jobs)

        def job(spec, block=block, weights=weights):
            number, first, last, offset = spec
            run(number, first, last, slice(offset, offset + last - first), block, weights)

        run_parts(job, jobs, n_threads)


def _n_blocks(points) -> int:
    return sum(-(-(stop - start) // _PASS_ROWS) for start, stop in points.bounds())


def assign(points, centres, labels, squared=None, *, neighbours=None, lower=None, drift=0.0):
    """Nearest centre of every point (``labels`` updated in place from its guesses).

    ``lower`` (per point, updated in place) carries Hamerly bounds between
    passes, valid after the centres moved by at most ``drift``; without it
    every point is searched.  Returns ``(sums, totals, inertia, n_changed)``:
    the weighted sum and weight of the points of each centre, and the
    weighted squared error.

    Points are visited in blocks of ``_PASS_ROWS`` rows, each summed on its
    own and the blocks added in order, so the result does not depend on
    slicing or threads; large point sets use one thread per core.
    """
    if neighbours is None:
        neighbours = Neighbours(centres)
    if lower is None:
        lower = np.zeros(points.size)
        drift = 0.0
    k, n_dims = centres.shape
    n_blocks = _n_blocks(points)
    sums = np.zeros((n_blocks, k, n_dims))
    totals = np.zeros((n_blocks, k))
    counts = np.zeros((n_blocks, 2))

    def run(index, first, last, rows, block, weights):
        counts[index] = _assign(
            block[rows],
            weights[rows],
            centres,
            neighbours.order,
            neighbours.gaps,
            neighbours.unlisted,
            labels[first:last],
            lower[first:last],
            drift,
            sums[index],
            totals[index],
            _NO_SQUARED if squared is None else squared[first:last],
        )

    _in_blocks(points, run)
    # Added in block order, whatever ran where.
    return (
        np.add.reduce(sums, axis=0),
        np.add.reduce(totals, axis=0),
        float(np.add.reduce(counts[:, 1])),
        int(counts[:, 0].sum()),
    )


def reassign(points, centres, labels, upper, lower, neighbours, drift):
    """A Hamerly pass (:func:`_reassign`) after the centres moved by ``drift`` (k,).

    Returns ``(delta_sums, delta_totals, n_changed)``: what moved between
    clusters, added in block order.
    """
    k, n_dims = centres.shape
    n_blocks = _n_blocks(points)
    sums = np.zeros((n_blocks, k, n_dims))
    totals = np.zeros((n_blocks, k))
    changed = np.zeros(n_blocks, dtype=np.int64)
    max_drift = float(drift.max()) if drift.size else 0.0

    def run(index, first, last, rows, block, weights):
        changed[index] = _reassign(
            block[rows],
            weights[rows],
            centres,
            neighbours.order,
            neighbours.gaps,
            neighbours.unlisted,
            labels[first:last],
            upper[first:last],
            lower[first:last],
            drift,
            max_drift,
            sums[index],
            totals[index],
        )

    _in_blocks(points, run)
    return np.add.reduce(sums, axis=0), np.add.reduce(totals, axis=0), int(changed.sum())
