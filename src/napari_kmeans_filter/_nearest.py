"""The nearest-colour search: every point's nearest centre, exactly, at any k.

It serves the three places that need it: the fit's assignment passes
(:func:`assign`, :func:`reassign`, which Lloyd's iterations in :mod:`._fit`
call), the palette's assignment of every histogram row (the repaint's lookup
table is made from it: :func:`._fit.assign_rows`) and dithering
(:func:`dither_plane`, :func:`dither_rgb`, :func:`dither_rgb_cells`, which
:class:`._paint.Ditherer` runs plane by plane).

What spares work, all exact (ties go to the lowest index):

* **sorted neighbours** (:class:`Neighbours`) -- for every centre its other
  centres by increasing distance; a search from a point's own (or guessed)
  centre stops at the first centre farther than twice the point's distance
  to it (triangle inequality; *sort-means*, S. J. Phillips, "Acceleration of
  k-means and related clustering algorithms", ALENEX 2002);
* **bounds** -- Hamerly's lower bound on the distance to every other centre
  lets a Lloyd pass skip a point without any search (G. Hamerly, "Making
  k-means even faster", SDM 2010).  It is kept in two parts
  (:class:`Bounds`): one on the point's second-nearest centre, lowered in
  :func:`reassign` only by that centre's moves, and one on all the others,
  lowered only by the moves of the centres near the point's own
  (:func:`_local_drift`), as late in a fit at large k most centres stand
  still while a few move.  A search sets them to the exact second and third
  distances (with complete neighbour lists); a point on the border of two
  clusters whose bounds fail is then often settled by one distance;
* **cell lists** -- for dithered RGB, the colours that can be nearest to any
  value in a cell of a grid (finer with more colours, at most 64^3), made on
  a cell's first use (P. Heckbert,
  "Color image quantization for frame buffer display", SIGGRAPH 1982); for
  8-bit colour, integer cells whose lists are exact (:func:`_box_list`),
  most of them a single colour.

The search is written into each loop that runs it, five times: as one
:func:`._jit.helper` inlined by numba into each, it measured slower
everywhere (CPU seconds, best of 7, 2 cores shared, re-measured for this
module): 60 Lloyd iterations on the astronaut's 113 k colours 0.093 -> 0.11
s at k = 16, 0.29 -> 0.32 s at k = 256; dithering 3 MP of the noisy mosaic
0.14 -> 0.23 s at k = 16 (compare all), 0.54 -> 0.59 s at k = 256 (cell
lists); a 1 MP greyscale plane at k = 64 0.029 -> 0.040 s.  So the copies
stay, each beside the others here, where one change reads against all:

* :func:`_assign` (every point) and :func:`_reassign` (only where Hamerly's
  bounds fail) -- the fit's passes, any number of dimensions;
* :func:`dither_plane` (any number of channels) and :func:`dither_rgb`
  (three, the values in scalars: 3-4x faster than the general loop, whose
  values live in an array the compiler must reload after every store), the
  search fused with Floyd-Steinberg error diffusion, whose value at a pixel
  is known only when the pixel is reached;
* :func:`dither_rgb_cells` -- :func:`dither_rgb`'s labels for 8-bit colour, in
  integers: the error to the next pixel in a register, the distances exact,
  in int32 keys that hold the colour's index; also the undithered labels of
  8-bit RGB repainted with a palette (no error passed on).

All five find the exact nearest centre, ties going to the lowest index
(``tests/test_nearest.py`` checks each against a brute-force argmin, and
``tests/test_dither_speed_paths.py`` the 8-bit kernel against plain
Floyd-Steinberg).
"""

from __future__ import annotations

import math

import numpy as np

from ._jit import helper, kernel
from ._workers import n_workers, run_parts

# Complete neighbour lists are re-sorted only once the centres have moved by this
# share of the median nearest-centre distance (see Neighbours.update): the
# re-sort was 12 % of a k = 256 fit's CPU time, after every Lloyd iteration.
_STALE_SHARE = 0.05
# Sort-means keeps, for every centre, the other centres in order of distance;
# beyond this many it searches all centres for the rare point that needs it
# (k = 4096 would otherwise hold a 4096 x 4095 table).
_MAX_NEIGHBOURS = 256
# Rows a pass sums at a time; sets of more than one block use one thread per core
# (the kernels release the GIL; the threads are kept between passes, see
# _workers.run_parts): a pass over a photo's ~110 000 colours takes ~1.4 ms on one
# core, over the 12 MP mosaic's 1.6 M colours ~25 ms.
_PASS_ROWS = 2**16
_PARALLEL_POINTS = _PASS_ROWS + 1
_WORKERS = min(n_workers(), 8)
# Relative slack on the stopping rule: a centre is skipped only when it is
# provably (up to rounding of square roots) not nearer.
_SLACK = 1e-9
# Dithered RGB: the grid of nearest-colour candidate lists, at most _GRID cells
# an axis and _CELLS_PER_SPACING x k**(1/3) (see grid_size), and the longest
# list kept besides the home colour (a longer one walks the home's neighbours).
_GRID = 64
_CELLS_PER_SPACING = 4.0
_CELL_LIST = 15
# Colours a block of dither_rgb_cells's blocks holds: 4 took, k=256, 41.5-48.5 /
# 34.9 / 27.8 ns a pixel on the cat / astronaut / 2 MP mosaic, 8 took 43.4-49.2 / 34.6
# / 27.6 (most lists are short; 16 was slower still).  With int32 keys (16 bytes a
# colour), whole dithered calls at k = 128 / 256 / 1024 on the same images, two runs
# each: no width of 4, 8 or 16 ahead on all three (the spread between runs was as
# large as the differences).
_LANES = 4


# --------------------------------------------------------------------------- sorted neighbours


@kernel
def _resort_neighbours(centres, order, gaps, table):
    """Recompute the distances along ``order`` and re-sort each row by insertion.

    The rows of successive Lloyd iterations are nearly sorted, so this is
    linear in their length (a full sort in numba also took ~20 s to compile);
    each entry is read and put in place in one pass, and the sort keeps the
    largest gap so far at hand (most entries stay in place).  With complete
    lists a row's distances to every centre are computed first, in index
    order (vectorised; for three channels from the centres copied into
    ``table``'s rows 1-3 channel by channel): at k = 256, 275 -> 138 us a
    re-sort over 302 re-sorts of two photos' fits (the same values; each
    distance computed once for both its rows, written down a column too,
    had cost more than computing it twice).  ``table`` (4 x k with complete
    lists) is scratch space, allocated by the caller: a kernel
    that allocates makes a process that loads it from numba's cache import
    numba's array module too (~25 ms of a small file's command line).
    """
    k, n_dims = centres.shape
    n_neighbours = order.shape[1]
    complete = n_neighbours == k - 1
    by_channel = complete and n_dims == 3 and k >= 4
    if by_channel:
        for j in range(k):
            table[1, j] = centres[j, 0]
            table[2, j] = centres[j, 1]
            table[3, j] = centres[j, 2]
    distance = table[0]  # a row's distances, with complete lists
    for a in range(k):
        if by_channel:
            x, y, z = centres[a, 0], centres[a, 1], centres[a, 2]
            for j in range(k):
                s0 = x - table[1, j]
                s1 = y - table[2, j]
                s2 = z - table[3, j]
                distance[j] = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2)
        elif complete:
            for j in range(k):
                total = 0.0
                for c in range(n_dims):
                    step = centres[a, c] - centres[j, c]
                    total += step * step
                distance[j] = math.sqrt(total)
        listed = order[a]
        sorted_gaps = gaps[a]
        last = -np.inf  # the largest gap sorted so far: most stay where they are
        for m in range(n_neighbours):
            j = listed[m]  # an insertion moves only the entries before m
            if complete:
                gap = distance[j]
            else:
                total = 0.0
                for c in range(n_dims):
                    step = centres[a, c] - centres[j, c]
                    total += step * step
                gap = math.sqrt(total)
            if gap >= last:
                sorted_gaps[m] = gap
                last = gap
                continue
            slot = m
            while slot > 0 and sorted_gaps[slot - 1] > gap:
                sorted_gaps[slot] = sorted_gaps[slot - 1]
                listed[slot] = listed[slot - 1]
                slot -= 1
            sorted_gaps[slot] = gap
            listed[slot] = j


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-d float array without NaNs (the same value, up to the sign of a
    zero) in a fifth of the time (2 against 11 us; the lists take it after every re-sort,
    hundreds of times a fit)."""
    middle = values.size // 2
    if values.size % 2:
        return float(np.partition(values, middle)[middle])
    low, high = np.partition(values, (middle - 1, middle))[middle - 1 : middle + 1]
    return float((low + high) / 2)


def _sorted_rows(values: np.ndarray, labels):
    """Each row of ``values`` sorted, with its ``labels`` (None: the column numbers):
    ``np.argsort(values, axis=1, kind="stable")``'s order and values.

    Equal distances keep their order: the swap search reads every centre's first
    neighbour, and the lists' order of equal distances (centres of single colours on an
    integer grid) decides which.  numpy's quicksort, with the rows that hold equal
    values sorted again stably, gives that order in a fifth of the time (k = 256: 0.4
    against 2.1 ms, of a build that took 5 ms four times a fit).
    """
    ranked = np.argsort(values, axis=1)
    ordered = np.take_along_axis(values, ranked, axis=1)
    tied = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
    if tied.size:
        ranked[tied] = np.argsort(values[tied], axis=1, kind="stable")
        ordered[tied] = np.take_along_axis(values[tied], ranked[tied], axis=1)
    if labels is not None:
        ranked = np.take_along_axis(labels, ranked, axis=1)
    return ranked, ordered


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
        self.stale = 0.0  # how far centres moved since the gaps were exact
        self.near = 0.0  # the median gap to a nearest other centre then
        if n_neighbours == 0:
            return
        for start in range(0, k, self._ROWS):
            rows = np.arange(start, min(start + self._ROWS, k))
            # Summed a dimension at a time, in the order numpy's sum over the
            # last axis takes (the same values), without a (rows, k, C) temporary.
            squared = (centres[rows, np.newaxis, 0] - centres[np.newaxis, :, 0]) ** 2
            for c in range(1, centres.shape[1]):
                squared += (centres[rows, np.newaxis, c] - centres[np.newaxis, :, c]) ** 2
            squared[np.arange(rows.size), rows] = np.inf  # itself: last
            if n_neighbours < k - 1:
                # One more than listed: its distance bounds the unlisted ones.
                nearest = np.argpartition(squared, n_neighbours, axis=1)[:, : n_neighbours + 1]
                values = np.take_along_axis(squared, nearest, axis=1)
                nearest, values = _sorted_rows(values, nearest)
            else:
                nearest, values = _sorted_rows(squared, None)
            values = np.sqrt(values)
            self.order[rows] = nearest[:, :n_neighbours]
            self.gaps[rows] = values[:, :n_neighbours]
            if n_neighbours < k - 1:
                self.unlisted[rows] = values[:, n_neighbours]
        if n_neighbours < k - 1:
            self._fresh_unlisted = _median(self.unlisted)
        else:
            self.near = _median(self.gaps[:, 0])

    def update(self, centres: np.ndarray, moved: float = np.inf) -> None:
        """Follow ``centres``, none of which moved farther than ``moved``.

        Complete lists (k - 1 others) are not re-sorted while the centres have
        moved, in all, by less than ``_STALE_SHARE`` of the median distance
        to a nearest other centre: every gap is lowered by twice the move
        instead, which keeps each row sorted and every gap a lower bound on
        its centre's distance, and a search that stops at the first gap
        beyond its reach still misses no nearer centre (the rows after it were
        at least as far before the move).  So the searches stay exact; only
        the bounds are looser.  :meth:`settle` makes them exact again.
        """
        k, n_neighbours = self.order.shape
        if n_neighbours == 0:
            return
        if n_neighbours < k - 1:
            self.moved += moved
            if not 2 * self.moved < 0.25 * self._fresh_unlisted:
                self._rebuild(centres)
                return
            self.unlisted -= 2 * moved
        else:
            stale = self.stale + moved
            if stale < _STALE_SHARE * self.near:
                self.stale = stale
                self.gaps -= 2 * moved
                return
        self._resort(centres)
        self.stale = 0.0
        if n_neighbours == k - 1:
            self.near = _median(self.gaps[:, 0])

    def as_built(self) -> bool:
        """Whether these lists are those :class:`Neighbours` would build for the centres
        they were last settled for (:meth:`settle`): complete lists, whose gaps are then
        exact, and no two equal in a row (whose order would depend on the moves since)."""
        k, n_neighbours = self.order.shape
        if n_neighbours != k - 1 or self.stale > 0:
            return False
        return not bool((self.gaps[:, 1:] == self.gaps[:, :-1]).any())

    def settle(self, centres: np.ndarray) -> None:
        """Exact gaps again after :meth:`update` lowered them (``centres`` current)."""
        if self.stale > 0:
            self._resort(centres)
            self.stale = 0.0
            self.near = _median(self.gaps[:, 0])

    def _resort(self, centres: np.ndarray) -> None:
        k, n_neighbours = self.order.shape
        table = np.empty((4, k) if n_neighbours == k - 1 else (1, 1))
        _resort_neighbours(centres, self.order, self.gaps, table)

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


class Bounds:
    """Lower bounds on every point's distances to the centres but its own, kept
    from one Lloyd pass to the next (:func:`assign`, :func:`reassign`).

    Hamerly's single bound on all the other centres, split in two (the idea
    of Drake and Hamerly's adaptive bounds with one bound kept apart: J. Drake
    and G. Hamerly, "Accelerated k-means with adaptive distance bounds", NIPS
    OPT workshop 2012): ``second[i]`` is a centre other than point i's own,
    its second-nearest when it was last searched (its own only before its
    first search, after :meth:`forget` or at k = 1: then the kernels search),
    ``lower[i, 0]`` bounds the distance from point i to it and ``lower[i, 1]``
    the distance to every other centre.  In :func:`reassign`'s passes the
    first shrinks only by that centre's own move (:func:`assign` lowers both
    by the largest move).  When a point's bounds fail but the others are still
    bounded farther than its own centre, the distance to ``second[i]`` settles
    which of the two is nearest, instead of a search.  A search walks on
    until the third distance is proven (it stopped at the second before): with
    a bound on the others only as tight as the second's, hardly any point was
    settled so, and a fit took as long.

    In the 49 refinement passes over the 96 615 colours of a photo (china,
    k = 256; counted by an instrumented copy of :func:`_reassign`, not kept)
    the bounds fail for 11 % of the colours a pass: 5.8 k are settled
    by their own distance, 1.3 k by the second's (250-310 in the last passes),
    3.8 k are searched; with the single bound, 16.5 k failed a pass and 10.7 k
    were searched.  Against one bound, same results, medians of
    ``benchmarks/ab_core.py`` alternated 3 and 2 times: the five photos at
    k = 256 -2 to -6 % (the astronaut +1 %), the 12 MP noisy mosaic -6 % at
    k = 16 and 256.  12 bytes more a point (k-means on 4 M colours: 48 MB).

    Zero bounds (a new set, or :meth:`forget`) make the next pass look at the
    point: a search, unless half the gap from its centre to the nearest other
    one settles it.
    """

    def __init__(self, n_points: int):
        self.lower = np.zeros((n_points, 2))
        self.second = np.zeros(n_points, np.int32)

    def with_centre(self, distances: np.ndarray) -> Bounds:
        """A copy still valid after a centre moved to where each point is ``distances``
        (n,) from (it may be any point's second or one of the others)."""
        twin = object.__new__(Bounds)
        twin.lower = np.minimum(self.lower, distances[:, np.newaxis])
        twin.second = self.second.copy()
        return twin

    def forget(self, rows) -> None:
        """No bound for ``rows`` any more: they are searched at the next pass."""
        self.lower[rows] = 0.0

    def least(self) -> np.ndarray:
        """(n,) Hamerly's bound: on the distance from each point to every centre but its own."""
        return self.lower.min(axis=1)


@kernel
def _assign(
    points,
    weights,
    centres,
    order,
    gaps,
    unlisted,
    labels,
    lower,
    second_of,
    drift,
    sums,
    totals,
    squared,
):
    """One assignment pass: ``labels`` updated to every point's nearest centre.

    ``labels`` holds each point's previous centre (any valid index); the new
    nearest one is exact, ties going to the lower index.  Two bounds spare
    most of the search:

    * Hamerly's, split in two (see :class:`Bounds`): ``lower[i, 0]`` bounds
      the distance from point i to centre ``second_of[i]`` and ``lower[i, 1]``
      to every other centre but its own; both shrink by ``drift`` (the
      farthest any centre moved since they were set) and a point nearer its
      centre than both needs no search (G. Hamerly, "Making k-means even
      faster", SDM 2010);
    * sort-means: otherwise the other centres are visited by increasing
      distance from the point's centre, stopping at the first one that
      cannot be nearer by the triangle inequality (Phillips, 2002).  The
      lists may hold only the nearest centres: ``unlisted[a]`` bounds the
      distance from centre a to any centre not in its list, and a point whose
      search could reach that far searches every centre.

    A point searched gets in ``second_of`` the nearest of the other centres
    visited (its second-nearest, with complete lists) with its distance in
    ``lower[i, 0]``, and the third's (or what the stopping rule proves of the
    centres not visited, or ``unlisted`` of the ones missing from a partial
    list) in ``lower[i, 1]``.  Adds the weighted
    points into ``sums``/``totals`` per new label and writes each point's
    squared distance into ``squared`` (when it is not empty).  Returns the
    number of points that changed label and the weighted squared error.
    """
    n, n_dims = points.shape
    k = centres.shape[0]
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
        home_distance = math.sqrt(home_squared)
        best = home
        best_squared = home_squared
        bound_second = lower[i, 0] - drift
        bound_rest = lower[i, 1] - drift
        if n_neighbours > 0 and home_distance * (1.0 + _SLACK) >= min(bound_second, bound_rest):
            # Search, and set the point's bounds: the nearest distances among the
            # other centres visited, or what the stopping rule proves of the rest.
            reach = 2.0 * home_distance * (1.0 + _SLACK) + 1e-300
            rest = np.inf
            second = home
            second_squared = np.inf
            third_squared = np.inf
            exhausted = True
            for m in range(n_neighbours):
                if gaps[home, m] > reach:
                    # The nearest is proven; walk on while an unvisited centre could
                    # be nearer than the third met, so that the second and third
                    # kept are exact (a loose bound fails again passes later).
                    exhausted = False
                    beyond = gaps[home, m] - home_distance
                    if beyond * beyond >= third_squared:
                        rest = beyond
                        break
                j = order[home, m]
                candidate = 0.0
                for c in range(n_dims):
                    step = points[i, c] - centres[j, c]
                    candidate += step * step
                if candidate < best_squared or (candidate == best_squared and j < best):
                    third_squared = second_squared
                    second, second_squared = best, best_squared
                    best = j
                    best_squared = candidate
                    reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK) + 1e-300
                elif candidate < second_squared:
                    third_squared = second_squared
                    second, second_squared = j, candidate
                else:
                    third_squared = min(third_squared, candidate)
            if n_neighbours < k - 1 and (exhausted or reach >= unlisted[home]):
                # A centre missing from the list could be nearer: search them all.
                best = home
                best_squared = home_squared
                rest = np.inf
                second = home
                second_squared = np.inf
                third_squared = np.inf
                for j in range(k):
                    if j == home:
                        continue
                    candidate = 0.0
                    for c in range(n_dims):
                        step = points[i, c] - centres[j, c]
                        candidate += step * step
                    if candidate < best_squared or (candidate == best_squared and j < best):
                        third_squared = second_squared
                        second, second_squared = best, best_squared
                        best = j
                        best_squared = candidate
                    elif candidate < second_squared:
                        third_squared = second_squared
                        second, second_squared = j, candidate
                    else:
                        third_squared = min(third_squared, candidate)
            elif n_neighbours < k - 1:
                rest = min(rest, unlisted[home] - home_distance)
            second_of[i] = second
            lower[i, 0] = math.sqrt(second_squared) * (1.0 - _SLACK)
            lower[i, 1] = min(rest, math.sqrt(third_squared)) * (1.0 - _SLACK)
        else:
            lower[i, 0] = bound_second
            lower[i, 1] = bound_rest
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
    second_of,
    around,
    max_drift,
    sums,
    totals,
    radius,
):
    """One Lloyd assignment pass that touches only the points whose bounds fail.

    Hamerly's algorithm (SDM 2010), its lower bound split in two (see
    :class:`Bounds`): ``upper[i]`` bounds the distance from point i to its
    centre and grows by that centre's drift; ``lower[i, 0]`` bounds its
    distance to centre ``second_of[i]`` and shrinks by that centre's drift;
    ``lower[i, 1]`` bounds its distance to every other centre and shrinks by
    ``max_drift``, or, better where the centres near the point's own stood
    still, by the farthest any of them moved (the others are too far to
    matter; see :func:`_local_drift`).  While the first is below the other
    two (or below half the distance from the centre to its nearest other
    centre) the point cannot change cluster and is not looked at.  Otherwise
    its distance is recomputed; if only ``second_of[i]`` can still be nearer,
    its distance settles which of the two is (a point on the border of two
    clusters); else the point is searched as in :func:`_assign`.
    ``around[h]`` holds, for centre h: its drift, half the gap to its nearest
    other centre, the farthest a centre within its reach moved and a lower
    bound on its distance to every centre beyond (:func:`_local_drift`).  A
    point that changes cluster moves its weight and weighted coordinates from
    one centre to the other in ``sums`` / ``totals`` (which therefore hold
    changes) and widens ``radius`` of its new centre to its distance.  Returns
    the number of points that changed cluster.
    """
    n, n_dims = points.shape
    k = centres.shape[0]
    n_neighbours = order.shape[1]
    changed = 0
    for i in range(n):
        home = labels[i]
        near = second_of[i]
        previous = lower[i, 1]
        reach_home = upper[i] + around[home, 0]
        # Hamerly's bound, or the one from the centres within home's reach
        # (moved by at most around[home, 2]) and the edge of that reach for
        # all the others, whichever is larger.
        local = previous - around[home, 2]
        edge = around[home, 3]
        bound_rest = max(previous - max_drift, min(local, edge - reach_home) * (1.0 - _SLACK))
        bound_second = lower[i, 0] - around[near, 0]
        lower[i, 0] = bound_second
        lower[i, 1] = bound_rest
        bound = max(min(bound_second, bound_rest), around[home, 1])
        if reach_home * (1.0 + _SLACK) < bound:
            upper[i] = reach_home
            continue
        home_squared = 0.0
        for c in range(n_dims):
            step = points[i, c] - centres[home, c]
            home_squared += step * step
        home_distance = math.sqrt(home_squared)
        tighter = min(local, edge - home_distance) * (1.0 - _SLACK)
        if tighter > bound_rest:
            bound_rest = tighter
            lower[i, 1] = tighter
        if home_distance * (1.0 + _SLACK) < max(min(bound_second, bound_rest), around[home, 1]):
            upper[i] = home_distance
            continue
        best = home
        best_squared = home_squared
        searched = True
        if home_distance * (1.0 + _SLACK) < bound_rest and near != home:
            # Only the second centre can be nearer: its distance decides.
            near_squared = 0.0
            for c in range(n_dims):
                step = points[i, c] - centres[near, c]
                near_squared += step * step
            near_distance = math.sqrt(near_squared)
            if near_squared > home_squared or (near_squared == home_squared and home < near):
                lower[i, 0] = near_distance * (1.0 - _SLACK)
            else:
                # The second is the nearest: no farther than home, so nearer than
                # bound_rest, than any other.  The centre left is the second now.
                best = near
                best_squared = near_squared
                second_of[i] = home
                lower[i, 0] = home_distance * (1.0 - _SLACK)
            searched = False
        if searched:
            # The search of _assign, written again (see the module's docstring):
            # the two as one inlined helper took Lloyd 12-20 % longer.
            reach = 2.0 * home_distance * (1.0 + _SLACK) + 1e-300
            rest = np.inf
            second = home
            second_squared = np.inf
            third_squared = np.inf
            exhausted = True
            for m in range(n_neighbours):
                if gaps[home, m] > reach:
                    # The nearest is proven; walk on while an unvisited centre could
                    # be nearer than the third met, so that the second and third
                    # kept are exact (a loose bound fails again passes later).
                    exhausted = False
                    beyond = gaps[home, m] - home_distance
                    if beyond * beyond >= third_squared:
                        rest = beyond
                        break
                j = order[home, m]
                candidate = 0.0
                for c in range(n_dims):
                    step = points[i, c] - centres[j, c]
                    candidate += step * step
                if candidate < best_squared or (candidate == best_squared and j < best):
                    third_squared = second_squared
                    second, second_squared = best, best_squared
                    best = j
                    best_squared = candidate
                    reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK) + 1e-300
                elif candidate < second_squared:
                    third_squared = second_squared
                    second, second_squared = j, candidate
                else:
                    third_squared = min(third_squared, candidate)
            if n_neighbours < k - 1 and (exhausted or reach >= unlisted[home]):
                best = home
                best_squared = home_squared
                rest = np.inf
                second = home
                second_squared = np.inf
                third_squared = np.inf
                for j in range(k):
                    if j == home:
                        continue
                    candidate = 0.0
                    for c in range(n_dims):
                        step = points[i, c] - centres[j, c]
                        candidate += step * step
                    if candidate < best_squared or (candidate == best_squared and j < best):
                        third_squared = second_squared
                        second, second_squared = best, best_squared
                        best = j
                        best_squared = candidate
                    elif candidate < second_squared:
                        third_squared = second_squared
                        second, second_squared = j, candidate
                    else:
                        third_squared = min(third_squared, candidate)
            elif n_neighbours < k - 1:
                rest = min(rest, unlisted[home] - home_distance)
            second_of[i] = second
            lower[i, 0] = math.sqrt(second_squared) * (1.0 - _SLACK)
            lower[i, 1] = min(rest, math.sqrt(third_squared)) * (1.0 - _SLACK)
        upper[i] = math.sqrt(best_squared)
        if best != home:
            if upper[i] > radius[best]:
                radius[best] = upper[i]
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


def pass_threads(n_points: int) -> int:
    """The threads one pass (:func:`assign`, :func:`reassign`) over ``n_points`` runs on,
    called outside a part of :func:`~._workers.run_parts` (inside one: its thread only)."""
    return _WORKERS if n_points >= _PARALLEL_POINTS else 1


def _blocks(n_rows: int) -> list[tuple[int, int]]:
    """A slice's blocks, ``(offset, stop)`` in it: as few as hold at most ``_PASS_ROWS``
    rows each, an even number of them when more than one, of equal length (to a row).
    Equal and even, so that the two threads of a pass (this machine's cores) finish
    together: 96 615 colours as 65 536 + 31 079 rows kept one core waiting for the other a
    third of every pass, and three equal blocks would leave one thread two.  The layout
    depends on the slice's length alone, never on the threads."""
    n_blocks = -(-n_rows // _PASS_ROWS)
    n_blocks += n_blocks % 2 if n_blocks > 1 else 0
    return [(n_rows * b // n_blocks, n_rows * (b + 1) // n_blocks) for b in range(n_blocks)]


def _in_blocks(points, run):
    """Call ``run(index, first, last, rows, block, weights)`` for every block of at most
    ``_PASS_ROWS`` points (:func:`_blocks`), slice after slice (``rows`` indexes the
    slice's ``block``), with one thread per core for large point sets; ``index``
    numbers the blocks in the order their results must be added."""
    n_threads = pass_threads(points.size)
    index = 0
    for start, stop, block, weights in points:
        jobs = [
            (index + number, start + offset, start + end, offset)
            for number, (offset, end) in enumerate(_blocks(stop - start))
        ]
        index += len(jobs)

        def job(spec, block=block, weights=weights):
            number, first, last, offset = spec
            run(number, first, last, slice(offset, offset + last - first), block, weights)

        run_parts(job, jobs, n_threads)


def _n_blocks(points) -> int:
    return sum(len(_blocks(stop - start)) for start, stop in points.bounds())


def assign(points, centres, labels, squared=None, *, neighbours=None, bounds=None, drift=0.0):
    """Nearest centre of every point (``labels`` updated in place from its guesses).

    ``bounds`` (a :class:`Bounds`, updated in place) carries Hamerly bounds
    between passes, valid after the centres moved by at most ``drift``;
    without it every point is searched.  Returns ``(sums, totals, inertia,
    n_changed)``: the weighted sum and weight of the points of each centre,
    and the weighted squared error.

    Points are visited in blocks of at most ``_PASS_ROWS`` rows (:func:`_blocks`), each
    summed on its own and the blocks added in order, so the result does not depend on
    slicing or threads; large point sets use one thread per core.
    """
    if neighbours is None:
        neighbours = Neighbours(centres)
    if bounds is None:
        bounds = Bounds(points.size)
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
            bounds.lower[first:last],
            bounds.second[first:last],
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


@kernel
def _local_drift(order, gaps, unlisted, drift, radius, around):
    """What :func:`_reassign` needs to know around every centre h (``around[h]``).

    Its drift; half the gap to its nearest other centre; the farthest a
    centre within its reach moved; and a lower bound on its distance to every
    centre beyond that reach (listed or not).  The reach is
    ``2 (radius[h] + drift[h]) + gaps[h, 0]``: a point of h is at most
    ``radius[h] + drift[h]`` from it, and its bound on the other centres is at
    most its distance to h's nearest other one, so a centre beyond that reach
    bounds it no lower than the bound already is.  (Any reach gives valid
    bounds; this one keeps the list of centres whose moves count short.  With
    the second centre kept apart (:class:`Bounds`), the bound on the rest may
    exceed that distance when h's nearest is the point's second: the reach is
    then a little short, which costs tightness, never validity.)
    """
    k, n_neighbours = order.shape
    for h in range(k):
        reach = 2.0 * (radius[h] + drift[h])
        around[h, 0] = drift[h]
        around[h, 1] = np.inf
        if n_neighbours > 0:
            reach += gaps[h, 0]
            around[h, 1] = gaps[h, 0] * 0.5
        most = 0.0
        end = unlisted[h] if n_neighbours < k - 1 else np.inf
        for m in range(n_neighbours):
            if gaps[h, m] > reach:
                end = min(end, gaps[h, m])
                break
            moved = drift[order[h, m]]
            if moved > most:
                most = moved
        around[h, 2] = most
        around[h, 3] = end


@kernel
def _cluster_radius(labels, upper, radius):
    """``radius[h]``: the largest ``upper`` of the points labelled h (0 if none)."""
    radius[:] = 0.0
    for i in range(labels.shape[0]):
        if upper[i] > radius[labels[i]]:
            radius[labels[i]] = upper[i]


def cluster_radius(labels, upper, k):
    """Every cluster's largest ``upper``: the ``radius`` :func:`reassign` starts from."""
    radius = np.empty(k)
    _cluster_radius(labels, upper, radius)
    return radius


def reassign(points, centres, labels, upper, bounds, neighbours, drift, radius):
    """A Hamerly pass (:func:`_reassign`) after the centres moved by ``drift`` (k,).

    ``radius`` (k,) bounds the distance from every centre to its points before
    the move (:func:`cluster_radius`) and is kept a bound after it.  Returns
    ``(delta_sums, delta_totals, n_changed)``: what moved between clusters,
    added in block order.
    """
    k, n_dims = centres.shape
    n_blocks = _n_blocks(points)
    sums = np.zeros((n_blocks, k, n_dims))
    totals = np.zeros((n_blocks, k))
    radii = np.zeros((n_blocks, k))
    changed = np.zeros(n_blocks, dtype=np.int64)
    max_drift = float(drift.max()) if drift.size else 0.0
    around = np.empty((k, 4))
    _local_drift(neighbours.order, neighbours.gaps, neighbours.unlisted, drift, radius, around)

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
            bounds.lower[first:last],
            bounds.second[first:last],
            around,
            max_drift,
            sums[index],
            totals[index],
            radii[index],
        )

    _in_blocks(points, run)
    # A point that stayed is at most its old bound plus its centre's drift away;
    # one that moved in widened its new centre's radius.
    radius += drift
    if n_blocks == 1:  # most passes: a few microseconds of numpy each, hundreds a fit
        np.maximum(radius, radii[0], out=radius)
        return sums[0], totals[0], int(changed[0])
    np.maximum(radius, radii.max(axis=0), out=radius)
    return np.add.reduce(sums, axis=0), np.add.reduce(totals, axis=0), int(changed.sum())


# --------------------------------------------------------------------------- dithering


@kernel
def dither_plane(
    pixels,
    n_color,
    alpha_channel,
    colors,
    order,
    gaps,
    guess,
    level,
    low,
    high,
    palette,
    labels,
    image,
    counts,
    sums,
    squared,
    brute_force_k,
    whole,
):
    """Floyd-Steinberg error diffusion over one (H, W, channels) plane, serpentine.

    Every visible pixel takes the palette colour nearest to its value plus the
    error diffused to it (clamped to the palette's bounding box), and passes
    ``level`` times its own error on to its unvisited neighbours with the
    weights 7/16, 3/16, 5/16 and 1/16 (R. W. Floyd and L. Steinberg, "An
    adaptive algorithm for spatial greyscale", Proc. SID 17(2), 1976).
    Rows alternate direction.  With ``whole`` (integer images) the error a
    pixel receives is cut to whole steps of its values, toward zero, before
    it is added, and the rest dropped, as the value it can hold is an
    integer (Pillow's integer Floyd-Steinberg does the same by its truncating
    division): a dead zone that keeps flat areas from flickering between
    colours over sub-step errors.  On the cat and the astronaut at k = 16,
    64, 256 it lowered both the MSE (136.4 -> 130.9, 48.1 -> 39.6, 15.8 ->
    11.1 on the cat) and the error after a Gaussian blur of 1 px (18.2 ->
    17.2, 4.7 -> 4.3, 0.90 -> 0.81), below Pillow's on the blurred error.
    ``guess`` (the undithered labels) starts each
    nearest-colour search, which visits the palette's other colours by
    distance (``order``/``gaps``) and stops when none can be nearer.  Fully
    transparent pixels keep their guess and take no error.  Adds each label's
    pixel count, input colour sum and squared error into ``counts``, ``sums``
    and ``squared``.
    """
    height, width, n_channels = pixels.shape
    k = colors.shape[0]
    n_neighbours = order.shape[1]
    # The errors of this row and the next, swapped by index: swapping two array
    # variables instead made numba's loop ~3x slower (117 vs 35 ns a pixel).
    errors = np.zeros((2, width + 2, n_color))
    value = np.empty(n_color)
    now = 0
    for y in range(height):
        step = 1 if y % 2 == 0 else -1
        later = 1 - now
        errors[later, :, :] = 0.0
        for index in range(width):
            x = index if step == 1 else width - 1 - index
            home = guess[y, x]
            if alpha_channel >= 0 and not pixels[y, x, alpha_channel] > 0:
                labels[y, x] = home
                for c in range(n_color):
                    image[y, x, c] = palette[home, c]
                for c in range(n_color, n_channels):
                    image[y, x, c] = pixels[y, x, c]
                continue
            home_squared = 0.0
            for c in range(n_color):
                spread = errors[now, x + 1, c]
                v = pixels[y, x, c] + (math.trunc(spread) if whole else spread)
                v = min(max(v, low[c]), high[c])
                value[c] = v
                d = v - colors[home, c]
                home_squared += d * d
            best = home
            best_squared = home_squared
            if k <= brute_force_k:
                # Few colours: comparing all is cheaper than walking the table
                # (the error spreads values far from their undithered colour).
                for j in range(k):
                    candidate = 0.0
                    for c in range(n_color):
                        d = value[c] - colors[j, c]
                        candidate += d * d
                    if candidate < best_squared or (candidate == best_squared and j < best):
                        best = j
                        best_squared = candidate
                n_search = 0
            else:
                n_search = n_neighbours
            home_distance = math.sqrt(home_squared)
            reach = 2.0 * home_distance * (1.0 + _SLACK) + 1e-300
            exhausted = n_search > 0
            for m in range(n_search):
                if gaps[home, m] > reach:
                    exhausted = False
                    break
                j = order[home, m]
                candidate = 0.0
                for c in range(n_color):
                    d = value[c] - colors[j, c]
                    candidate += d * d
                if candidate < best_squared or (candidate == best_squared and j < best):
                    best = j
                    best_squared = candidate
                    reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK) + 1e-300
            if exhausted and n_search < k - 1:
                for j in range(k):
                    candidate = 0.0
                    for c in range(n_color):
                        d = value[c] - colors[j, c]
                        candidate += d * d
                    if candidate < best_squared or (candidate == best_squared and j < best):
                        best = j
                        best_squared = candidate
            labels[y, x] = best
            error = 0.0
            counts[best] += 1
            for c in range(n_color):
                image[y, x, c] = palette[best, c]
                original = np.float64(pixels[y, x, c])
                sums[best, c] += original
                d = original - colors[best, c]
                error += d * d
                spill = (value[c] - colors[best, c]) * level
                errors[now, x + 1 + step, c] += spill * (7.0 / 16.0)
                errors[later, x + 1 - step, c] += spill * (3.0 / 16.0)
                errors[later, x + 1, c] += spill * (5.0 / 16.0)
                errors[later, x + 1 + step, c] += spill * (1.0 / 16.0)
            squared[best] += error
            for c in range(n_color, n_channels):
                image[y, x, c] = pixels[y, x, c]
        now = later


@kernel
def dither_rgb(
    pixels,
    alpha_channel,
    colors,
    order,
    gaps,
    guess,
    level,
    low,
    high,
    palette,
    labels,
    image,
    counts,
    sums,
    squared,
    brute_force_k,
    whole,
    slots,
    pool,
    used,
    grid,
    cell_sizes,
):
    """:func:`dither_plane` for three colour channels, the common case, with the
    values in scalars: 3-4x faster than the general loop over channels (whose
    values live in an array the compiler must reload after every store).

    Above ``brute_force_k`` colours, the value range is cut into a grid of
    ``grid`` cells an axis, and each cell a value falls in gets, on first use,
    the list of the only colours that can be nearest to a point in it
    (Heckbert's locally sorted search, 1982): the colour nearest the cell's
    centre (its *home*) and the others within that distance plus the cell's
    diagonal.  ``slots[cell]`` is the cell's row of ``pool`` (-1: not made
    yet; ``used[0]`` rows are taken); a row holds the list's length (without
    the home; more than fits: the home's neighbour table is walked instead,
    as in :func:`dither_plane`), the home, then the others.  So no pixel
    needs its undithered label: ``guess`` is read only for fully transparent
    pixels, which keep it.
    """
    height, width, n_channels = pixels.shape
    k = colors.shape[0]
    n_neighbours = order.shape[1]
    room = pool.shape[1] - 2
    s0, s1, s2 = cell_sizes[0], cell_sizes[1], cell_sizes[2]
    # A value's cell by multiplication (a division is the slowest step of the
    # chain from one pixel's error to the next); a value rounded into the
    # next cell is still within the list's reach, which counts a whole diagonal.
    i0, i1, i2 = 1.0 / s0, 1.0 / s1, 1.0 / s2
    diagonal = math.sqrt(s0 * s0 + s1 * s1 + s2 * s2) * (1.0 + _SLACK)
    errors = np.zeros((2, 3 * (width + 2)))  # (row, 3 * column + channel)
    now = 0
    for y in range(height):
        step = 1 if y % 2 == 0 else -1
        later = 1 - now
        errors[later, :] = 0.0
        for index in range(width):
            x = index if step == 1 else width - 1 - index
            if alpha_channel >= 0 and not pixels[y, x, alpha_channel] > 0:
                home = guess[y, x]
                labels[y, x] = home
                for c in range(3):
                    image[y, x, c] = palette[home, c]
                for c in range(3, n_channels):
                    image[y, x, c] = pixels[y, x, c]
                continue
            o0 = np.float64(pixels[y, x, 0])
            o1 = np.float64(pixels[y, x, 1])
            o2 = np.float64(pixels[y, x, 2])
            here = 3 * (x + 1)
            e0, e1, e2 = errors[now, here], errors[now, here + 1], errors[now, here + 2]
            if whole:
                e0, e1, e2 = math.trunc(e0), math.trunc(e1), math.trunc(e2)
            v0 = min(max(o0 + e0, low[0]), high[0])
            v1 = min(max(o1 + e1, low[1]), high[1])
            v2 = min(max(o2 + e2, low[2]), high[2])
            if k <= brute_force_k:
                # In index order with a strict comparison: ties go to the
                # lowest index, as in the lists below.
                best = 0
                best_squared = np.inf
                for j in range(k):
                    d0 = v0 - colors[j, 0]
                    d1 = v1 - colors[j, 1]
                    d2 = v2 - colors[j, 2]
                    candidate = d0 * d0 + d1 * d1 + d2 * d2
                    if candidate < best_squared:
                        best = j
                        best_squared = candidate
            else:
                a0 = min(max(int((v0 - low[0]) * i0), 0), grid - 1)
                a1 = min(max(int((v1 - low[1]) * i1), 0), grid - 1)
                a2 = min(max(int((v2 - low[2]) * i2), 0), grid - 1)
                cell = (a0 * grid + a1) * grid + a2
                row = slots[cell]
                if row < 0:
                    row = used[0]
                    used[0] += 1
                    slots[cell] = row
                    c0 = low[0] + (a0 + 0.5) * s0
                    c1 = low[1] + (a1 + 0.5) * s1
                    c2 = low[2] + (a2 + 0.5) * s2
                    nearest = np.inf
                    home = 0
                    for j in range(k):
                        d0 = c0 - colors[j, 0]
                        d1 = c1 - colors[j, 1]
                        d2 = c2 - colors[j, 2]
                        candidate = d0 * d0 + d1 * d1 + d2 * d2
                        if candidate < nearest:
                            nearest = candidate
                            home = j
                    limit = math.sqrt(nearest) + diagonal
                    limit *= limit
                    listed = 0
                    for j in range(k):
                        d0 = c0 - colors[j, 0]
                        d1 = c1 - colors[j, 1]
                        d2 = c2 - colors[j, 2]
                        if j != home and d0 * d0 + d1 * d1 + d2 * d2 <= limit:
                            listed += 1
                            if listed <= room:
                                pool[row, 1 + listed] = j
                    pool[row, 0] = listed
                    pool[row, 1] = home
                listed = pool[row, 0]
                home = pool[row, 1]
                d0 = v0 - colors[home, 0]
                d1 = v1 - colors[home, 1]
                d2 = v2 - colors[home, 2]
                best = home
                best_squared = d0 * d0 + d1 * d1 + d2 * d2
                if listed <= room:
                    for t in range(2, listed + 2):
                        j = pool[row, t]
                        d0 = v0 - colors[j, 0]
                        d1 = v1 - colors[j, 1]
                        d2 = v2 - colors[j, 2]
                        candidate = d0 * d0 + d1 * d1 + d2 * d2
                        if candidate < best_squared or (candidate == best_squared and j < best):
                            best = j
                            best_squared = candidate
                else:
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
                            reach = (home_distance + math.sqrt(candidate)) * (1.0 + _SLACK)
                            reach += 1e-300
                    if exhausted and n_neighbours < k - 1:
                        for j in range(k):
                            d0 = v0 - colors[j, 0]
                            d1 = v1 - colors[j, 1]
                            d2 = v2 - colors[j, 2]
                            candidate = d0 * d0 + d1 * d1 + d2 * d2
                            if candidate < best_squared or (candidate == best_squared and j < best):
                                best = j
                                best_squared = candidate
            labels[y, x] = best
            counts[best] += 1
            sums[best, 0] += o0
            sums[best, 1] += o1
            sums[best, 2] += o2
            d0 = o0 - colors[best, 0]
            d1 = o1 - colors[best, 1]
            d2 = o2 - colors[best, 2]
            squared[best] += d0 * d0 + d1 * d1 + d2 * d2
            image[y, x, 0] = palette[best, 0]
            image[y, x, 1] = palette[best, 1]
            image[y, x, 2] = palette[best, 2]
            for c in range(3, n_channels):
                image[y, x, c] = pixels[y, x, c]
            e0 = (v0 - colors[best, 0]) * level
            e1 = (v1 - colors[best, 1]) * level
            e2 = (v2 - colors[best, 2]) * level
            ahead, behind = here + 3 * step, here - 3 * step
            errors[now, ahead] += e0 * (7.0 / 16.0)
            errors[now, ahead + 1] += e1 * (7.0 / 16.0)
            errors[now, ahead + 2] += e2 * (7.0 / 16.0)
            errors[later, behind] += e0 * (3.0 / 16.0)
            errors[later, behind + 1] += e1 * (3.0 / 16.0)
            errors[later, behind + 2] += e2 * (3.0 / 16.0)
            errors[later, here] += e0 * (5.0 / 16.0)
            errors[later, here + 1] += e1 * (5.0 / 16.0)
            errors[later, here + 2] += e2 * (5.0 / 16.0)
            errors[later, ahead] += e0 * (1.0 / 16.0)
            errors[later, ahead + 1] += e1 * (1.0 / 16.0)
            errors[later, ahead + 2] += e2 * (1.0 / 16.0)
        now = later


@helper
def _box_list(lo0, lo1, lo2, hi0, hi1, hi2, ints, squares, source, n_source, out):
    """The colours that can be nearest to some point of the integer box ``[lo, hi]``.

    ``source[:n_source]`` holds every such colour (all colours, or a larger
    box's list).  Writes the colour nearest the box's centre (the *home*
    ``h``) to ``out[1]``, then every other colour ``j`` of ``source`` that is
    nearer than ``h`` to some point of the box, or as near with a lower index:
    ``|p - j|^2 - |p - h|^2`` is linear in ``p``, so its least value over the
    box is at a corner, computed exactly in integers.  A colour that is
    nearest anywhere in the box is ``h`` or listed.  Returns how many are
    listed besides ``h`` (``out[0]`` is left to the caller).
    """
    # Twice the centre, in integers.  Branch-free, as which colours are listed is
    # not predictable: the home is the least key ``distance << 12 | index``, and
    # every colour is written where the next listed one goes, the count moving on
    # only when it is listed (lists were made 1.4x as fast; ``out`` has room for
    # one past the last).
    m0, m1, m2 = lo0 + hi0, lo1 + hi1, lo2 + hi2
    nearest = np.int64(2**62)
    for t in range(n_source):
        j = np.int64(source[t])
        d0 = m0 - 2 * ints[j, 0]
        d1 = m1 - 2 * ints[j, 1]
        d2 = m2 - 2 * ints[j, 2]
        nearest = min(nearest, ((d0 * d0 + d1 * d1 + d2 * d2) << 12) | j)
    home = nearest & 4095
    out[1] = home
    h0, h1, h2 = ints[home, 0], ints[home, 1], ints[home, 2]
    listed = 0
    for t in range(n_source):
        j = np.int64(source[t])
        g0, g1, g2 = ints[j, 0] - h0, ints[j, 1] - h1, ints[j, 2] - h2
        reach = g0 * (hi0 if g0 > 0 else lo0)
        reach += g1 * (hi1 if g1 > 0 else lo1)
        reach += g2 * (hi2 if g2 > 0 else lo2)
        # The least of |p - j|^2 - |p - h|^2 over the box's corners.
        least = squares[j] - squares[home] - 2 * reach
        out[2 + listed] = j
        listed += (j != home) & ((least < 0) | ((least == 0) & (j < home)))
    return listed


@kernel
def dither_rgb_cells(
    pixels,
    alpha_channel,
    offset,
    ints,
    guess,
    labels,
    errors,
    first,
    stop,
    diffuse,
    compare_all,
    fine_bits,
    state,
    blocks,
    used,
    coarse_bits,
    coarse_made,
    coarse,
):
    """The labels of :func:`dither_rgb` at level 1 for 8-bit colour (integer images of
    one byte a channel), rows ``first`` to ``stop`` of a plane: the same values and
    labels, in integers.

    The diffused error reaches such a pixel in whole steps, so every value
    ``v`` is an integer triple in 0..255 (after subtracting ``offset``, the
    dtype's minimum), every error a whole number of sixteenths, and every
    distance to a palette colour an exact integer: the float kernel's values
    and nearest colours exactly (its sums of sixteenths are exact too), ties
    to the lowest index.  What the next pixel needs of this one (7 x its value
    and its colour's index) stays in registers, and the next row's error at a
    column is written once, when the three pixels above it are done (Floyd and
    Steinberg's weights 1, 5, 3): the chain from one pixel's colour to the next
    one's is short.  That
    chain is all this kernel does: the image and the statistics are painted
    from the labels, off the chain (``_paint._paint_byte_rows``).

    ``errors`` (int64, shape (2, 3 * (width + 2)), zero before a plane's first
    row) carries the sixteenths of error from one call to the next: row ``y``
    reads ``errors[y % 2]`` and writes the next row's into the other.  With
    ``diffuse`` false no error is passed on: each pixel gets its own nearest
    colour, and consecutive pixels no longer wait for each other.

    The nearest colour is found by a key ``distance << 12 | index``, an int32
    (a distance is at most 3 * 255**2 < 2**18): the least key is the nearest
    colour, ties to the lowest index.  The compare-all and cell-list searches
    leave out ``|v|^2 << 12``, which every colour shares (the keys' order is the
    same).  Up to ``compare_all`` colours every
    colour is compared, without branches (vectorised).  Above, the values fall
    in cells of ``2**fine_bits`` levels an axis; each cell, on first
    use, gets the colours that can be nearest to one of its values
    (:func:`_box_list`, Heckbert's locally sorted search made exact for
    integer boxes), taken from its coarse cell's list (``2**coarse_bits``
    levels an axis, made from every colour on first use).  Many cells have a
    single such colour: ``state[cell]`` is then that label, and the pixel
    needs no distance at all.  Else ``state[cell] - k`` is ``first << 11 |
    n``: the cell's list in ``n`` blocks of ``_LANES`` columns of ``blocks``
    from column ``first * _LANES`` (rows: each colour's terms of the key, as
    for comparing all colours; the last block padded with the home),
    searched whole by keys;
    ``n`` is 0 when the blocks ran out, and ``first`` then names the coarse
    cell whose list is searched (11 bits of ``n``: a list of all 4096 colours
    takes 1024 blocks).
    ``state`` starts at -1, ``coarse_made`` at 0 (``used[0]`` rows of
    ``blocks`` are taken); they carry over from one call to the next.

    ``ints`` are the palette's levels (``palette - offset`` as int64).  Fully
    transparent pixels keep their ``guess`` and pass on no error, as in
    :func:`dither_rgb`.
    """
    width = pixels.shape[1]
    k = ints.shape[0]
    fine_side = 256 >> fine_bits
    coarse_side = 256 >> coarse_bits
    fine_top = (1 << fine_bits) - 1
    coarse_top = (1 << coarse_bits) - 1
    squares = np.empty(k, np.int64)
    for j in range(k):
        squares[j] = ints[j, 0] ** 2 + ints[j, 1] ** 2 + ints[j, 2] ** 2
    # The key |v - c|^2 << 12 | index less |v|^2 << 12 (the same for every colour: the
    # order stays) is, per colour, (|c|^2 << 12 | index) - v . (2c << 12): three
    # products and three sums a colour instead of three differences, three products,
    # two sums, a shift and an or.  A key lies within +-2**31 (|c|^2 - 2 v . c within
    # +-3 * 255**2 < 2**18), so the keys are int32, each step cut back to 32 bits (numba
    # widens int32 arithmetic to int64; sums modulo 2**32 end exact) -- twice the keys
    # an instruction of int64 ones, which held each colour's levels too.  ns a pixel,
    # kernel alone, the astronaut: int64 keys with |v|^2 against int32 keys with it,
    # k = 16 17.0 -> 14.7, 48 28.1 -> 17.1, 64 25.1 -> 21.1, 128 35.6 -> 26.7; without
    # it, the cat's and the astronaut's dithering at k = 64 took 10 % less again.
    terms = np.empty((4, k), np.int32)
    for j in range(k):
        terms[0, j] = (squares[j] << 12) | j
        terms[1, j] = -(ints[j, 0] << 13)
        terms[2, j] = -(ints[j, 1] << 13)
        terms[3, j] = -(ints[j, 2] << 13)
    everyone = np.arange(k)
    spare = np.empty(k + 2, np.int64)
    # 7 x each colour's levels, four to a row (an index times 32 bytes: a shift, not
    # the product by a runtime stride), and a last row of zeros, for "no error".
    seven = np.zeros(4 * (k + 1), np.int64)
    for j in range(k):
        for c in range(3):
            seven[4 * j + c] = 7 * ints[j, c]
    now = first % 2
    for y in range(first, stop):
        step = 1 if y % 2 == 0 else -1
        later = 1 - now
        # The previous pixel's value x 7 and colour (k: none, no error passed on), and
        # the last two pixels' errors.
        a0 = a1 = a2 = 0
        n = k
        p0 = p1 = p2 = 0  # the previous pixel's
        q0 = q1 = q2 = 0  # the one before
        for index in range(width):
            x = index if step == 1 else width - 1 - index
            here = 3 * (x + 1)
            if alpha_channel >= 0 and not pixels[y, x, alpha_channel] > 0:
                labels[y, x] = guess[y, x]
                e0 = e1 = e2 = 0
                a0 = a1 = a2 = 0
                n = k
            else:
                w0 = np.int64(pixels[y, x, 0]) - offset
                w1 = np.int64(pixels[y, x, 1]) - offset
                w2 = np.int64(pixels[y, x, 2]) - offset
                if diffuse:
                    # The sixteenths reaching this pixel are s = b - 7 c, b the row
                    # above's and 7 x the previous value (known before that pixel's
                    # colour c is), and the value is w plus s / 16 in whole steps toward
                    # zero: (16 w + s + (15 if s < 0)) >> 4, as an arithmetic shift
                    # floors.  Both sums wait only for the load of 7 c, not for the
                    # error, x 7, added and rounded: at k = 64, 1.54 -> 1.40-1.48x the
                    # time of Pillow's dithering (benchmarks/bench_dither.py, median of
                    # its three images; the 2 MP mosaic 1.97 -> 1.47x).
                    b0 = errors[now, here] + a0
                    b1 = errors[now, here + 1] + a1
                    b2 = errors[now, here + 2] + a2
                    s0, u0 = b0 - seven[4 * n], (16 * w0 + b0) - seven[4 * n]
                    s1, u1 = b1 - seven[4 * n + 1], (16 * w1 + b1) - seven[4 * n + 1]
                    s2, u2 = b2 - seven[4 * n + 2], (16 * w2 + b2) - seven[4 * n + 2]
                    w0 = min(max((u0 + ((s0 >> 63) & 15)) >> 4, 0), 255)
                    w1 = min(max((u1 + ((s1 >> 63) & 15)) >> 4, 0), 255)
                    w2 = min(max((u2 + ((s2 >> 63) & 15)) >> 4, 0), 255)
                v0, v1, v2 = np.int32(w0), np.int32(w1), np.int32(w2)
                least = np.int32(2**31 - 1)
                if k <= compare_all:
                    # Every colour, without branches (vectorised): the least key.
                    for j in range(k):
                        key = np.int32(terms[0, j] + np.int32(v0 * terms[1, j]))
                        key = np.int32(key + np.int32(v1 * terms[2, j]))
                        least = min(least, np.int32(key + np.int32(v2 * terms[3, j])))
                else:
                    cell = ((w0 >> fine_bits) * fine_side + (w1 >> fine_bits)) * fine_side
                    cell += w2 >> fine_bits
                    entry = state[cell]
                    if entry < 0:
                        entry = _make_cell(
                            w0,
                            w1,
                            w2,
                            ints,
                            squares,
                            terms,
                            everyone,
                            spare,
                            fine_bits,
                            state,
                            cell,
                            blocks,
                            used,
                            coarse_bits,
                            coarse_side,
                            coarse_top,
                            fine_top,
                            coarse_made,
                            coarse,
                        )
                    if entry < k:
                        least = np.int32(entry)  # its one colour (the distance is not needed)
                    else:
                        start, n_blocks = (entry - k) >> 11, (entry - k) & 2047
                        if n_blocks > 0:
                            # One loop over the list's slots: numba vectorised a loop
                            # over blocks (of loops over lanes) across blocks, with
                            # gathers, and ran a single block's lanes one by one.
                            at = start * _LANES
                            for t in range(at, at + n_blocks * _LANES):
                                key = np.int32(blocks[0, t] + np.int32(v0 * blocks[1, t]))
                                key = np.int32(key + np.int32(v1 * blocks[2, t]))
                                least = min(least, np.int32(key + np.int32(v2 * blocks[3, t])))
                        else:
                            for t in range(1, coarse[start, 0] + 2):
                                j = np.int64(coarse[start, t])
                                d0 = w0 - ints[j, 0]
                                d1 = w1 - ints[j, 1]
                                d2 = w2 - ints[j, 2]
                                key = ((d0 * d0 + d1 * d1 + d2 * d2) << 12) | j
                                least = min(least, np.int32(key))
                n = np.int64(least) & 4095
                labels[y, x] = n
                a0, a1, a2 = 7 * w0, 7 * w1, 7 * w2
                e0 = w0 - ints[n, 0]
                e1 = w1 - ints[n, 1]
                e2 = w2 - ints[n, 2]
            if index > 0:
                # The column behind this pixel in the next row is complete.
                behind = here - 3 * step
                errors[later, behind] = q0 + 5 * p0 + 3 * e0
                errors[later, behind + 1] = q1 + 5 * p1 + 3 * e1
                errors[later, behind + 2] = q2 + 5 * p2 + 3 * e2
            q0, q1, q2 = p0, p1, p2
            p0, p1, p2 = e0, e1, e2
        last = 3 * (width if step == 1 else 1)
        errors[later, last] = q0 + 5 * p0
        errors[later, last + 1] = q1 + 5 * p1
        errors[later, last + 2] = q2 + 5 * p2
        now = later


@helper
def _make_cell(
    w0,
    w1,
    w2,
    ints,
    squares,
    terms,
    everyone,
    spare,
    fine_bits,
    state,
    cell,
    blocks,
    used,
    coarse_bits,
    coarse_side,
    coarse_top,
    fine_top,
    coarse_made,
    coarse,
):
    """Make the list of the cell of :func:`dither_rgb_cells` that holds the value
    ``(w0, w1, w2)`` (and its coarse cell's, if not made yet); returns its state."""
    k = ints.shape[0]
    a0, a1, a2 = w0 >> coarse_bits, w1 >> coarse_bits, w2 >> coarse_bits
    wide = (a0 * coarse_side + a1) * coarse_side + a2
    if coarse_made[wide] == 0:
        coarse_made[wide] = 1
        coarse[wide, 0] = _box_list(
            a0 << coarse_bits,
            a1 << coarse_bits,
            a2 << coarse_bits,
            (a0 << coarse_bits) + coarse_top,
            (a1 << coarse_bits) + coarse_top,
            (a2 << coarse_bits) + coarse_top,
            ints,
            squares,
            everyone,
            k,
            coarse[wide],
        )
    b0, b1, b2 = w0 >> fine_bits, w1 >> fine_bits, w2 >> fine_bits
    n_wide = coarse[wide, 0] + 1  # with its home
    listed = _box_list(
        b0 << fine_bits,
        b1 << fine_bits,
        b2 << fine_bits,
        (b0 << fine_bits) + fine_top,
        (b1 << fine_bits) + fine_top,
        (b2 << fine_bits) + fine_top,
        ints,
        squares,
        coarse[wide, 1 : n_wide + 1],
        n_wide,
        spare,
    )
    if listed == 0:
        entry = spare[1]
    else:
        # The list in blocks of _LANES (each colour's terms of the key), the last
        # padded with the home: searched whole, vectorised.
        n_blocks = (listed + _LANES) // _LANES
        start = used[0]
        if (start + n_blocks) * _LANES <= blocks.shape[1]:
            used[0] += n_blocks
            for t in range(n_blocks * _LANES):
                j = spare[1 + t] if t <= listed else spare[1]
                at = start * _LANES + t
                for row in range(4):
                    blocks[row, at] = terms[row, j]
            entry = k + ((start << 11) | n_blocks)
        else:  # no room left: the coarse list is searched
            entry = k + (wide << 11)
    state[cell] = entry
    return entry


def grid_size(n_colors: int) -> int:
    """Cells an axis of :func:`dither_rgb`'s grid for a palette of ``n_colors``.

    Finer with more colours (their spacing shrinks as k**(1/3)), so that a
    cell's list stays a few colours long; a list costs 2k distances to make.
    """
    return int(min(_GRID, max(4, round(_CELLS_PER_SPACING * n_colors ** (1 / 3)))))


def cell_grid(low: np.ndarray, high: np.ndarray, n_colors: int, n_pixels: int):
    """Empty candidate lists for :func:`dither_rgb` over the box ``[low, high]``.

    Returns ``(slots, pool, used, grid, cell_sizes)``: every cell's row of
    ``pool`` (-1 until made), the rows (at most one per pixel or per cell,
    uninitialised: only the rows taken are touched), the count of rows
    taken, the cells an axis and their sizes.  Lists are made as values fall
    in their cells, so each thread needs its own.
    """
    grid = grid_size(n_colors)
    slots = np.full(grid**3, -1, dtype=np.int32)
    pool = np.empty((max(1, min(grid**3, n_pixels)), 2 + _CELL_LIST), dtype=np.int32)
    sizes = np.maximum(np.asarray(high, np.float64) - low, 1e-300) / grid
    return slots, pool, np.zeros(1, np.int64), grid, sizes


def no_cell_grid():
    """The :func:`cell_grid` placeholder of palettes that compare all colours."""
    return (
        np.full(1, -1, dtype=np.int32),
        np.zeros((1, 2 + _CELL_LIST), dtype=np.int32),
        np.zeros(1, np.int64),
        1,
        np.ones(3),
    )
