"""How the palette is fitted: colour histogram -> k colours.

Exact k-means on every pixel is weighted k-means on the image's distinct
colours, each weighted by its pixel count (scikit-learn's ``sample_weight``
idea).  The pipeline, one path for every input (numpy or dask, whole or
sliced histograms, fixed colours, auto k):

1. **points** -- the voting colours of the histogram in the fit space (the
   image's units, CIELAB or Oklab), whole or, for histograms of millions of
   colours, in slices (:class:`PointSet`);
2. **pyramid** -- the weighted centroids of the cells of a regular grid
   (:func:`grid_cells`): a *fine* level of at most ``settings.max_cells``
   cells (the colours themselves when they are fewer) and a *coarse* level
   of at most ``settings.start_cells``, reduced from the fine one;
3. **seeding** -- greedy weighted k-means++ on the coarse cells (Arthur &
   Vassilvitskii, 2007, with scikit-learn's ``2 + log k`` local trials),
   fixed colours first; several starts, the best kept;
4. **Lloyd** -- weighted Lloyd iterations whose assignment step is
   *sort-means* (Phillips, 2002; Celebi, "Improving the performance of
   k-means for color quantization", Image Vision Comput. 2011) with
   Hamerly's bounds (SDM 2010): a point checks only the centres nearer to its
   own than twice its distance, in order, and skips even that while its bound
   holds, which costs about one distance per point per iteration at any k
   (the passes are :mod:`._nearest`'s);
5. **swap search** -- moves one centre at a time from the cheapest cluster to
   merge into the costliest one and keeps the move if the error drops
   (Kanungo et al., "A local search approximation algorithm for k-means
   clustering", 2004), on the coarse cells and then a few times on the fine
   (each trial converged as far as the coarse search's tolerance);
6. **refinement** -- the best converges on the fine level until no point
   changes cluster, or, where the fine cells are not the exact colours, in
   Lloyd iterations on the exact colours, each starting from its cell's
   cluster (at most ``refine_iter`` of them, over-relaxed: each centre
   moves 1.9 times the way to its cluster's mean, the last move plain --
   successive over-relaxation of Lloyd's fixed-point map; Zhang et al.,
   "Fast K-Means Clustering with Anderson Acceleration", 2018, accelerate
   the same map with a history of steps);
7. **palette** -- the centres back in the image's units, rounded to its dtype,
   moved to their other integer neighbour where that lowers the error (small
   histograms only), and every histogram row assigned to its nearest palette
   colour.

Given ``init`` colours, none of this: plain weighted Lloyd from them on
the exact points, with scikit-learn's tolerance and relocation of empty
clusters (:func:`lloyd_from`), so the result is ``KMeans(init=...,
n_init=1)``'s on every pixel.

The hot loops are compiled with numba (:mod:`._jit`).  ``speed`` (1 = most
thorough ... 10 = fastest, pngquant's convention) chooses how many cells,
starts, swaps and refinement iterations are spent; see :func:`settings_for`.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

import numpy as np

from . import _exact1d as exact1d
from . import _nearest
from ._colorspace import check_fit_range, from_fit_space, to_fit_space
from ._histogram import ColorHistogram, Encoding
from ._jit import helper, kernel, preload
from ._metrics import MeanDeltaE, psnr
from ._nearest import Bounds, Neighbours, assign, cluster_radius, pass_threads, reassign
from ._progress import Report
from ._workers import n_workers, run_parts

DEFAULT_SPEED = 4

# Points held whole as float64 (at most ~100 MB for RGB); larger histograms
# (a dask stack of noisy photos, 16-bit colour) are visited in slices of
# _SLICE_ROWS, so a fit holds ~25 MB of points at a time (the 1 GB benchmark
# stack has 3.6 M colours, 8-bit RGB at most 16.7 M).
MAX_WHOLE_POINTS = 2**22
_SLICE_ROWS = 2**20
# The finest grid of the reduction has at most 2**this many cells (a dense table
# of 2 MB per level tried; 128 bins per RGB channel).
_MAX_GRID_BITS_TOTAL = 21
# Point visits the refinement on the exact colours may spend (~9 ns each
# here): 100 iterations on 1.6 M colours took 1.1 s of CPU, 3x the rest of a
# 12 MP fit, for 0.13 % less error than 21.  An over-relaxed visit (_RELAX) counts
# 1.5: more bounds fail after its larger moves.  On the 12 MP noisy mosaic at k = 256
# (1.6 M colours) the 21 plain passes took a median 0.774 s a fit, 21 relaxed ones
# 0.892 s (error -0.29 %), 14 relaxed ones 0.731 s (error -0.13 %; 3 alternated
# fits each, a script not kept).
_REFINE_WORK = 2**25
_RELAXED_VISIT = 1.5
# The refinement's Lloyd iterations are over-relaxed by this factor (each centre moves
# 1.9 times the way to its cluster's mean, the last move plain; :func:`lloyd`): late in a
# fit the clusters' borders creep a few points a pass in the same direction, and plain
# Lloyd follows them slowly (china at k = 256: still 69 of 96 615 colours changing
# cluster at the 50th pass).  `python benchmarks/sweep_budget.py --k K --variants
# relax=1+refine=50 default` over its 13 images: 30 over-relaxed iterations end at or
# below 50 plain ones in every cell but one at k = 256 (flower, +0.01 % of the peer's
# error), 0.03-0.2 % of it lower in 8 (retina, Hubble, china, ihc, the astronaut, the
# mosaics); at k = 16 and 64 the same or lower in every cell.  Worst against the best
# peer: -0.05 / -0.25 / -0.08 % at k = 16 / 64 / 256 (plain 50: -0.05 / -0.24 / -0.05).
_RELAX = 1.9


@dataclass(frozen=True)
class FitSettings:
    """What one ``speed`` spends; see :func:`settings_for`."""

    max_cells: int  # the fit converges on at most this many (reduced) colours
    start_cells: int  # the starts and the swap search run on at most this many
    n_init: int  # k-means++ starts
    n_swaps: int  # swap-search trials on the coarse cells
    n_fine_swaps: int  # and on the fine ones
    refine_iter: int  # Lloyd iterations on the exact colours after a reduction


# speed: (max_cells, start_cells, starts at k <= 16, swaps, fine swaps, refine_iter).
# Measured on the four sample photos and a 1 MP noisy mosaic at k = 2, 16, 64
# and 256 (CPU time on this 2-core machine, MSE against speed 4): speed 1
# takes ~9x speed 4's time for 0-1.7 % less error; speed 10 ~0.25x for 0-19 %
# more (1 MP, k=16: 119 ms, 0.87x Pillow's median-cut error).  At the
# default, starts on 2**13 cells instead of every colour cut the cat's k=16
# fit from 0.55 to 0.16 s at the same error; 10 exact refinement iterations
# on the 12 MP noisy mosaic (1.6 M colours) give 0.3 % less error than 1.
# Refinement stops after 50 iterations at the default: at k = 256 the output's error
# is then 0.003-0.09 % above where 100 end (china, retina, coffee, flower, a noisy
# 1 MP mosaic, Hubble, the astronaut), for 35-45 % of that stage's time.  The five
# photos' k = 256 fits took a median 1.56x libimagequant's time with 100 and 1.32x
# with 50 (bench_quantize.py, run 20261205T153025Z), the error still at or below
# the best peer's in every image x k cell.  30 (speed 5's) put the noisy mosaic
# 0.2 % above scikit-learn's KMeans on every pixel (benchmarks/sweep_budget.py).
# Over-relaxed (_RELAX), 30 iterations end below where 50 plain ones did (speed 4: 50 ->
# 30) and 20 below 30 plain ones, at most +0.005 % (speed 5: 30 -> 20; china, astronaut,
# coffee, the 1 MP mosaic, Hubble at k = 16, 64, 256); the other speeds keep their counts
# and their error drops 0.0-0.4 % (k = 64).
_SPEEDS = {
    1: (2**17, 2**15, 16, 32, 16, 300),
    2: (2**16, 2**14, 12, 16, 8, 100),
    3: (2**16, 2**14, 10, 12, 6, 100),
    4: (2**15, 2**14, 12, 8, 4, 30),
    5: (2**15, 2**12, 6, 6, 2, 20),
    6: (2**14, 2**12, 4, 4, 0, 10),
    7: (2**14, 2**11, 3, 2, 0, 5),
    8: (2**13, 2**11, 2, 1, 0, 3),
    9: (2**13, 2**10, 1, 0, 0, 2),
    10: (2**12, 2**10, 1, 2, 0, 1),
}


# At speeds 2-10, swaps on the fine cells are tried only where the coarse grid's budget
# (``start_cells``; a photo fills 75-90 % of it) is below this many cells per colour.
# With more (~10 a side of every cluster in RGB), they found no better optimum than the
# coarse search: on 10 photos (the benchmark's four, flower, histology, retina, Hubble,
# night sky, fluorescence) at k = 3-16, speed 4, the error
# moved by -0.06 to +0.09 % without them (140 fits, 130 within 0.01 %), and the fit took
# 0.47-0.95x the time (measured when each trial converged until no point moved, on every
# fine cell -- every exact colour of the cat -- in 30-90 iterations, and was rejected).
# At k = 24-256 they still lower the
# error by up to 0.9 %, and at speed 1, k = 32 (a budget of 1024 coarse cells a colour
# there too) by 0.05-0.09 %: speed 1 spends them all.
_CELLS_PER_COLOR_RESOLVED = 1024


def settings_for(speed: int, n_colors: int, n_init: int | None = None) -> FitSettings:
    """The work a ``speed`` spends on ``n_colors`` colours.

    Starts cost ~ k x cells each, so above k = 16 their number shrinks as
    16 / k (a start at k = 256 already visits every cell many times); the
    swap search, whose trials are cheap at any k, keeps its count; swaps on
    the fine cells run only where the coarse cells resolve the clusters too
    coarsely, or at speed 1 (``_CELLS_PER_COLOR_RESOLVED``).  ``n_init`` (an int) overrides
    the number of starts.  Both grids keep at least 8 cells per colour, so
    that every cluster is made of several.
    """
    max_cells, start_cells, starts, swaps, fine_swaps, refine_iter = _SPEEDS[speed]
    if n_init is None:
        n_init = max(1, round(starts * min(1.0, 16 / max(n_colors, 1))))
    if speed > 1 and start_cells >= _CELLS_PER_COLOR_RESOLVED * n_colors:
        fine_swaps = 0
    max_cells = max(max_cells, 8 * n_colors)
    start_cells = min(max(start_cells, 8 * n_colors), max_cells)
    return FitSettings(max_cells, start_cells, n_init, swaps, fine_swaps, refine_iter)


# --------------------------------------------------------------------------- points


class PointSet:
    """Weighted points in the fit space, whole or in slices of rows.

    ``rows`` selects histogram rows (None: all of them); ``weights`` are the
    fit weights of those rows.  Iterating yields ``(start, stop, points,
    weights)`` with float64 ``points`` of shape ``(stop - start, n_dims)``.
    """

    def __init__(self, histogram: ColorHistogram, encoding: Encoding, color_space: str, rows):
        self.histogram = histogram
        self.encoding = encoding
        self.color_space = color_space
        self.rows = rows
        self.size = len(histogram) if rows is None else int(rows.shape[0])
        weights = histogram.weights if rows is None else histogram.weights[rows]
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.n_dims = encoding.n_channels
        self._whole = None
        if self.size <= MAX_WHOLE_POINTS:
            self._whole = self._points(0, self.size)

    @property
    def whole(self) -> bool:
        return self._whole is not None

    def reduced(self, max_cells: int, of_cells: int | None = None):
        """These points reduced to at most ``max_cells`` grid cells.

        Returns ``(cells, cell_of_point)``: an in-memory point set and every
        point's cell, or the points themselves and None when they are few
        enough.  With ``of_cells``, the reduction is of ``reduced(of_cells)``
        instead (and maps its cells).  Kept for later fits (auto k).
        """
        cache = self.__dict__.setdefault("_reductions", {})
        key = (max_cells, of_cells)
        if key not in cache:
            source = self if of_cells is None else self.reduced(of_cells)[0]
            if source.size > max_cells:
                cache[key] = grid_cells(source, max_cells)
            else:
                cache[key] = (_gather(source), None)
        return cache[key]

    def values(self, start: int, stop: int) -> np.ndarray:
        """Colours of points ``start:stop`` in the image's units (float64)."""
        if self._whole is not None and self.color_space == "rgb":
            return self._whole[start:stop]  # the fit space is the image's units
        codes = self.histogram.codes
        codes = codes[start:stop] if self.rows is None else codes[self.rows[start:stop]]
        return self.encoding.decode(codes).astype(np.float64)

    def _points(self, start: int, stop: int) -> np.ndarray:
        values = self.values(start, stop)
        return np.ascontiguousarray(to_fit_space(values, self.color_space, self.encoding.dtype))

    def bounds(self):
        """The ``(start, stop)`` rows of the slices iteration yields."""
        if self._whole is not None:
            return [(0, self.size)]
        return [(s, min(s + _SLICE_ROWS, self.size)) for s in range(0, self.size, _SLICE_ROWS)]

    def __iter__(self):
        if self._whole is not None:
            yield 0, self.size, self._whole, self.weights
            return
        for start in range(0, self.size, _SLICE_ROWS):
            stop = min(start + _SLICE_ROWS, self.size)
            yield start, stop, self._points(start, stop), self.weights[start:stop]


class _Array:
    """A PointSet-like view of points held in memory (the reduced cells)."""

    def __init__(self, points: np.ndarray, weights: np.ndarray):
        self.points = np.ascontiguousarray(points, dtype=np.float64)
        self.weights = np.ascontiguousarray(weights, dtype=np.float64)
        self.size, self.n_dims = self.points.shape
        self.whole = True

    def bounds(self):
        return [(0, self.size)]

    def __iter__(self):
        yield 0, self.size, self.points, self.weights


# --------------------------------------------------------------------------- kernels


@helper
def _sort_farthest_first(pool, start, count, distance):
    """Sort ``pool[start:start + count]`` (point indices) by decreasing ``distance``, in
    place and allocating nothing (see :func:`_seed`): Shell's sort with Knuth's gaps
    (1, 4, 13, ...).  A heapsort ran as fast here and took 0.1 s longer to compile."""
    gap = 1
    while gap < count // 3:
        gap = 3 * gap + 1
    while gap > 0:
        for m in range(start + gap, start + count):
            item = pool[m]
            value = distance[item]
            slot = m
            while slot >= start + gap and distance[pool[slot - gap]] < value:
                pool[slot] = pool[slot - gap]
                slot -= gap
            pool[slot] = item
        gap //= 3


# The seeding keeps a cluster's points farthest first once it holds at most this many
# times (centres still to seed) x (candidates a centre): sorting costs more than the
# cluster's length, and what it saves is a share of every later candidate's walk over it.
# k-means++ alone, ms, on the astronaut's / coffee's ~13 000 coarse cells, before (linked
# lists) -> now:
# k = 256 35 / 36 -> 23 / 25; k = 64 13 / 11 -> 12 / 10; k = 16 3.2 / 2.6 -> 3.4 / 2.8
# (12 starts, on both cores).  Every cluster sorted: 26 ms at k = 256 but k = 16 twice
# as slow (sorting the large first clusters); none: 30 ms at k = 256.
_SORT_SHARE = 2


@kernel
def _seed(points, weights, centres, n_given, uniforms, n_trials, labels, squared, links, scratch):
    """Greedy weighted k-means++: fill ``centres[n_given:]`` with points.

    Returns how many centres are set: fewer than k only when every point
    already coincides with a centre.  Each new centre is the best of
    ``n_trials`` candidates drawn with probability proportional to weight x
    squared distance to the nearest centre so far (``uniforms`` supplies the
    random numbers, so the result depends only on them).  Keeps every point's
    nearest centre in ``labels`` and its squared distance in ``squared``.
    ``links`` (int64, ``3 n + 3 k``) and ``scratch`` (float64, ``2 n + k``)
    are work space, allocated by the caller: a kernel that allocates its own
    arrays also compiles numba's ``np.empty``/``np.zeros`` for them on a
    first-ever run (the previous version of this kernel compiled in 1.07 s
    with them, 0.90 s without).

    A candidate can only win points whose centre is nearer to it than twice
    their distance (triangle inequality).  So each centre's points are kept
    together in ``links`` (a pool of 3 n point indices: the clusters one after
    the other, each new one after the last, moved down when the pool is
    full), with their largest distance: a cluster whose farthest point the
    candidate cannot win is skipped whole, and the other points that it
    cannot win are skipped without a distance.  A cluster small enough
    (``_SORT_SHARE``) is kept farthest first, so that a walk over it stops at
    the first such point.  Only the order in which a candidate's gain is
    summed differs from walking every point: the same centres and labels,
    unless two candidates' gains are equal in exact arithmetic and round
    apart (``tests/test_fit.py`` compares with greedy k-means++ computing
    every distance, on integers, whose sums are exact).
    """
    n, n_dims = points.shape
    k = centres.shape[0]
    pool_size = links.shape[0] - 3 * k  # at least 3 n: room for a new cluster
    pool = links[:pool_size]
    first_of = links[pool_size : pool_size + k]
    size_of = links[pool_size + k : pool_size + 2 * k]
    ordered = links[pool_size + 2 * k : pool_size + 3 * k]
    cumulative = scratch[:n]
    distance = scratch[n : 2 * n]
    radius = scratch[2 * n : 2 * n + k]
    draw = 0
    if n_given == 0:
        total = 0.0
        for i in range(n):
            total += weights[i]
            cumulative[i] = total
        target = uniforms[draw] * total
        low, high = 0, n - 1
        while low < high:  # the first index whose cumulative weight exceeds target
            middle = (low + high) // 2
            if cumulative[middle] > target:
                high = middle
            else:
                low = middle + 1
        first = low
        draw += 1
        for c in range(n_dims):
            centres[0, c] = points[first, c]
        n_given = 1
    for j in range(k):  # loops, not size_of[:] = 0: numba's slice assignment costs compiling
        size_of[j] = 0
        radius[j] = 0.0
        ordered[j] = 0
    for i in range(n):
        best = 0
        best_squared = np.inf
        for j in range(n_given):
            candidate = 0.0
            for c in range(n_dims):
                step = points[i, c] - centres[j, c]
                candidate += step * step
            if candidate < best_squared:
                best = j
                best_squared = candidate
        labels[i] = best
        squared[i] = best_squared
        distance[i] = math.sqrt(best_squared)
        size_of[best] += 1
    # The clusters one after the other in the pool, in the order of their centres.
    used = 0
    for j in range(n_given):
        first_of[j] = used
        used += size_of[j]
        size_of[j] = 0
    for i in range(n):
        j = labels[i]
        pool[first_of[j] + size_of[j]] = i
        size_of[j] += 1
    for i in range(n):
        radius[labels[i]] = max(radius[labels[i]], distance[i])
    for new in range(n_given, k):
        total = 0.0
        for i in range(n):
            total += weights[i] * squared[i]
            cumulative[i] = total
        if total <= 0.0:
            return new  # every point coincides with a centre: nothing left to seed
        best_point = -1
        best_gain = -1.0
        for _ in range(n_trials):
            target = uniforms[draw] * total
            low, high = 0, n - 1
            while low < high:
                middle = (low + high) // 2
                if cumulative[middle] > target:
                    high = middle
                else:
                    low = middle + 1
            pick = low
            draw += 1
            gain = 0.0
            for j in range(new):
                if size_of[j] == 0:
                    continue
                step_total = 0.0
                for c in range(n_dims):
                    step = points[pick, c] - centres[j, c]
                    step_total += step * step
                gap = math.sqrt(step_total)
                if gap >= 2.0 * radius[j]:
                    continue
                in_order = ordered[j] == 1
                for t in range(first_of[j], first_of[j] + size_of[j]):
                    i = pool[t]
                    if gap >= 2.0 * distance[i]:
                        if in_order:
                            break  # nor any point after it, nearer its centre
                        continue
                    candidate = 0.0
                    for c in range(n_dims):
                        step = points[i, c] - points[pick, c]
                        candidate += step * step
                    if candidate < squared[i]:
                        gain += weights[i] * (squared[i] - candidate)
            if gain > best_gain:
                best_gain = gain
                best_point = pick
        for c in range(n_dims):
            centres[new, c] = points[best_point, c]
        if used + n > pool_size:
            # No room for a cluster of every point after the last: the clusters
            # moved to the front, in their order (each only moves down).
            used = 0
            for j in range(new):
                for t in range(size_of[j]):
                    pool[used + t] = pool[first_of[j] + t]
                first_of[j] = used
                used += size_of[j]
        worth_sorting = _SORT_SHARE * (k - new) * n_trials
        # The points the new centre wins leave their clusters (which keep their
        # order) for its own, after the last.
        first_of[new] = used
        won = 0
        for j in range(new):
            if size_of[j] == 0:
                continue
            step_total = 0.0
            for c in range(n_dims):
                step = centres[new, c] - centres[j, c]
                step_total += step * step
            gap = math.sqrt(step_total)
            if gap >= 2.0 * radius[j]:
                continue
            start = first_of[j]
            stop = start + size_of[j]
            kept = start
            remaining = 0.0
            t = start
            while t < stop:
                i = pool[t]
                if gap < 2.0 * distance[i]:
                    candidate = 0.0
                    for c in range(n_dims):
                        step = points[i, c] - centres[new, c]
                        candidate += step * step
                    if candidate < squared[i]:
                        squared[i] = candidate
                        distance[i] = math.sqrt(candidate)
                        labels[i] = new
                        pool[used + won] = i
                        won += 1
                        radius[new] = max(radius[new], distance[i])
                        t += 1
                        continue
                elif ordered[j] == 1:
                    break  # the rest are nearer their centre: they stay, in order
                pool[kept] = i
                kept += 1
                remaining = max(remaining, distance[i])
                t += 1
            if kept < t:
                for rest in range(t, stop):
                    pool[kept + rest - t] = pool[rest]
            size_of[j] = kept - start + stop - t
            if ordered[j] == 1:
                radius[j] = distance[pool[start]] if size_of[j] > 0 else 0.0
            else:
                radius[j] = remaining
                if size_of[j] <= worth_sorting:
                    ordered[j] = 2  # sorted below
        size_of[new] = won
        ordered[new] = 2 if won <= worth_sorting else 0
        for j in range(new + 1):  # one place that sorts: each call site compiles a copy
            if ordered[j] == 2:
                _sort_farthest_first(pool, first_of[j], size_of[j], distance)
                ordered[j] = 1
        used += won
    return k


@kernel
def _widen_bounds(points, low, high):
    """``low``/``high`` widened to the per-dimension extremes of ``points``: one pass."""
    n, n_dims = points.shape
    for i in range(n):
        for c in range(n_dims):
            value = points[i, c]
            if value < low[c]:
                low[c] = value
            if value > high[c]:
                high[c] = value


@helper
def _grid_position(value, low, scale, bins, warp, mix, c):
    """Bin (0 .. bins - 1) of ``value`` along dimension ``c``.

    With ``mix`` 0 the bins are equal; otherwise a bin's position is
    ``(1 - mix) x`` the uniform one ``+ mix x`` the weighted share of the points
    below it (``warp[c]``: that share at equal steps over the box, linear in
    between), so dense ranges get narrow bins.
    """
    t = (value - low) * scale
    if mix > 0.0:
        steps = warp.shape[1] - 1
        u = min(max(t, 0.0), 1.0) * steps
        b = min(int(u), steps - 1)
        share = warp[c, b] + (u - b) * (warp[c, b + 1] - warp[c, b])
        t = (1.0 - mix) * t + mix * share
    return min(max(int(t * bins), 0), bins - 1)


@kernel
def _grid_mark(points, low, scale, bins, warp, mix, table):
    """Mark the grid cells (``bins`` per dimension) holding ``points``; returns new marks."""
    n, n_dims = points.shape
    marked = 0
    for i in range(n):
        cell = 0
        for c in range(n_dims):
            position = _grid_position(points[i, c], low[c], scale[c], bins, warp, mix, c)
            cell = cell * bins + position
        if table[cell] == 0:
            table[cell] = 1
            marked += 1
    return marked


@kernel
def _grid_sums(points, weights, low, scale, bins, warp, mix, cell_ids, sums, totals, cell_of_point):
    """Weighted sums per grid cell; ``cell_ids`` maps a cell to its compact index."""
    n, n_dims = points.shape
    for i in range(n):
        cell = 0
        for c in range(n_dims):
            position = _grid_position(points[i, c], low[c], scale[c], bins, warp, mix, c)
            cell = cell * bins + position
        index = cell_ids[cell]
        cell_of_point[i] = index
        totals[index] += weights[i]
        for c in range(n_dims):
            sums[index, c] += weights[i] * points[i, c]


# --------------------------------------------------------------------------- stages


def grid_cells(points, max_cells: int):
    """Reduce ``points`` to the weighted centroids of the cells of a grid.

    The grid has the same number of bins along every dimension over the
    points' bounding box, as many as it can with at most ``max_cells``
    occupied cells (tried in steps of 2**(1/3), so the number of cells grows
    by about 2 a step).  A centroid is the weighted mean of its cell's points,
    so the reduction loses only the spread inside cells.  With power-of-two
    bins only, the 2 MP noisy mosaic (775 k colours) got 7.9 k cells for a
    budget of 32 k, and its exact refinement needed 100+ Lloyd iterations.

    The bins are equal unless the weight is concentrated: when the heaviest
    2 % of the cells hold more than :data:`_DENSE_SHARE` of it (a dark, mostly
    empty background: the Hubble deep field's 0.93, a synthetic night sky's
    0.92; the sample photos 0.21-0.65), the grid is made again with bins
    that follow each dimension's weighted distribution half way
    (:func:`_grid_position`), so the background is cut into many cells instead
    of a few: lumped into ~200 cells it held 1.4 of the Hubble field's 4.6 MSE
    at k = 256 (1.7 % above scikit-learn's KMeans on every pixel).

    Returns ``(cells, cell_of_point)``: an :class:`_Array` of the centroids
    and, for every point, the index of its cell.
    """
    low = np.full(points.n_dims, np.inf)
    high = np.full(points.n_dims, -np.inf)
    for _, _, block, _ in points:
        _widen_bounds(block, low, high)
    span = high - low
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0) * (1 - 1e-12)
    uniform = np.zeros((points.n_dims, 2))
    cells, cell_of_point = _grid(points, max_cells, low, scale, uniform, 0.0)
    heaviest = np.sort(cells.weights)[::-1][: math.ceil(_DENSE_TOP * cells.size)]
    if heaviest.sum() > _DENSE_SHARE * cells.weights.sum():
        warp = _weighted_shares(points, low, scale)
        cells, cell_of_point = _grid(points, max_cells, low, scale, warp, _DENSE_MIX)
    return cells, cell_of_point


# The weight is concentrated when the heaviest _DENSE_TOP of the cells hold
# more than _DENSE_SHARE of it; then the bins follow the weight by _DENSE_MIX.
_DENSE_TOP = 0.02
_DENSE_SHARE = 0.8
_DENSE_MIX = 0.5
# Steps of the weighted distribution of each dimension the adaptive bins follow.
_WARP_STEPS = 4096


def _weighted_shares(points, low, scale):
    """Per dimension, the share of the weight below each of ``_WARP_STEPS + 1``
    equal steps over the box (0 first, 1 last)."""
    counts = np.zeros((points.n_dims, _WARP_STEPS))
    for _, _, block, weights in points:
        for c in range(points.n_dims):
            step = np.minimum(
                ((block[:, c] - low[c]) * scale[c] * _WARP_STEPS).astype(np.int64), _WARP_STEPS - 1
            )
            counts[c] += np.bincount(np.maximum(step, 0), weights=weights, minlength=_WARP_STEPS)
    shares = np.zeros((points.n_dims, _WARP_STEPS + 1))
    np.cumsum(counts, axis=1, out=shares[:, 1:])
    shares /= np.maximum(shares[:, -1:], 1e-300)
    return shares


def _grid(points, max_cells, low, scale, warp, mix):
    """The grid of :func:`grid_cells` with the bins ``warp``/``mix`` place."""
    finest = max(2, round(2 ** (_MAX_GRID_BITS_TOTAL / points.n_dims)))
    # A grid with at most max_cells cells fits whatever the data; try finer ones.
    bins = max(2, min(finest, int(max_cells ** (1 / points.n_dims))))
    marks = None
    while bins < finest:
        finer = min(finest, max(bins + 1, round(bins * 2 ** (1 / 3))))
        table, n_marked = _mark_grid(points, low, scale, finer, warp, mix)
        if n_marked > max_cells:
            break
        bins, marks = finer, table
    if marks is None:
        marks, _ = _mark_grid(points, low, scale, bins, warp, mix)
    # Compact indices in cell order, written for the occupied cells only: the table has
    # up to 2**21 entries, and a cumulative sum over all of them (16 MB of int64 to
    # fault in) took 5-8 ms of a 0.07 MP photo's 0.13 s fit at k = 16.  The other entries
    # are never read: _grid_sums places the same points with the same _grid_position,
    # bins, warp and mix as the marking of ``marks``.
    occupied = np.flatnonzero(marks)
    n_cells = occupied.size
    cell_ids = np.empty(marks.size, dtype=np.int64)
    cell_ids[occupied] = np.arange(n_cells)
    sums = np.zeros((n_cells, points.n_dims))
    totals = np.zeros(n_cells)
    cell_of_point = np.empty(points.size, dtype=np.int32)
    for start, stop, block, weights in points:
        _grid_sums(
            block,
            weights,
            low,
            scale,
            bins,
            warp,
            mix,
            cell_ids,
            sums,
            totals,
            cell_of_point[start:stop],
        )
    return _Array(sums / totals[:, np.newaxis], totals), cell_of_point


def _mark_grid(points, low, scale, bins, warp, mix):
    """The occupied cells of a grid of ``bins`` per dimension (a 0/1 table) and their number."""
    table = np.zeros(bins**points.n_dims, dtype=np.uint8)
    marked = 0
    for _, _, block, _ in points:
        marked += _grid_mark(block, low, scale, bins, warp, mix, table)
    return table, marked


def lloyd(
    points,
    centres,
    labels,
    *,
    max_iter,
    tol,
    fixed=0,
    neighbours=None,
    moved=0.0,
    bounds=None,
    final=True,
    relocate=False,
    relax=1.0,
):
    """Weighted Lloyd iterations from ``centres`` (labels: each point's guess).

    Stops when no point changes cluster, when the centres move no more than
    ``tol`` (squared, summed over centres, absolute) or after ``max_iter``
    iterations.  The first ``fixed`` centres never move.  ``neighbours``
    (built when no centre was farther than ``moved`` from ``centres``) and
    ``bounds`` (Hamerly bounds valid for ``centres``), when given, are reused
    and left matching the result.  Returns ``(centres, inertia, n_iter,
    stable)``, ``stable`` telling whether no point changes cluster any more;
    ``labels`` holds the assignment to the returned centres -- with
    ``final`` False, when the iterations run out, the one before the last
    update (which saves a pass where only the centres matter; ``inertia`` and
    ``stable`` are then those of that assignment).  An emptied cluster keeps
    its centre (the swap search moves it if useful), or with ``relocate``
    takes the farthest point (:func:`_relocate_empty`).

    ``relax`` > 1 over-relaxes the updates: each centre moves ``relax`` times
    the way to its cluster's mean (successive over-relaxation of Lloyd's
    fixed-point iteration; see ``_RELAX``).  The last update is plain, and so
    is every update from a pass that moved no point on, so the centres
    returned are their clusters' means, as Lloyd's are.  ``tol`` applies to
    the plain step's move, which the overshoot keeps long: with ``tol`` > 0 the
    run stops later than plain Lloyd's would (the fit relaxes only with 0).
    """
    centres = centres.copy()
    if neighbours is None:
        neighbours = Neighbours(centres)
    elif moved:
        neighbours.update(centres, moved)
    if bounds is None:
        bounds = Bounds(points.size)
    # The first pass looks at every point: exact sums, distances and bounds.
    squared = np.empty(points.size)
    sums, totals, inertia, _ = assign(
        points, centres, labels, squared, neighbours=neighbours, bounds=bounds, drift=0.0
    )
    upper = np.sqrt(squared, out=squared)
    radius = cluster_radius(labels, upper, centres.shape[0])
    stable = False
    iteration = 1
    plain = relax == 1.0
    while True:
        filled = totals > 0
        if relocate and not np.all(filled[fixed:]):
            _relocate_empty(points, centres, labels, upper, bounds, sums, totals, fixed)
            filled = totals > 0
        means = centres.copy()
        means[filled] = sums[filled] / totals[filled, np.newaxis]
        means[:fixed] = centres[:fixed]
        drift = np.sqrt(((means - centres) ** 2).sum(axis=1))
        last = float((drift**2).sum()) <= tol or iteration >= max_iter
        if plain or last:
            step = 1.0
            updated = means
        else:
            step = relax  # the empty and the fixed centres' means are where they are
            updated = centres + relax * (means - centres)
            drift = np.sqrt(((updated - centres) ** 2).sum(axis=1))
        centres = updated
        neighbours.update(centres, float(drift.max()))
        if last:
            break
        iteration += 1
        delta_sums, delta_totals, changed = reassign(
            points, centres, labels, upper, bounds, neighbours, drift, radius
        )
        sums += delta_sums
        totals += delta_totals
        if changed == 0:
            if step != 1.0:
                plain = True  # no point moved: plain updates from here make them the means
                continue
            stable = True  # the centres are the means of their clusters
            break
    neighbours.settle(centres)  # exact gaps for the caller (the swap search reads them)
    if not final:
        return centres, math.nan, iteration, stable
    # One more full pass: the exact inertia and bounds of the returned centres.
    _, _, inertia, changed = assign(
        points, centres, labels, neighbours=neighbours, bounds=bounds, drift=float(drift.max())
    )
    return centres, inertia, iteration, stable or changed == 0


def _kmeans_pp_draws(k: int, given: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """The random numbers one k-means++ start of :func:`_kmeans_pp` uses, drawn from ``rng``
    (drawn before the starts run, in their order, so that they can run at once)."""
    return rng.random_sample(1 + (k - len(given)) * (2 + int(math.log(k))))


def _kmeans_pp(points: _Array, k: int, given: np.ndarray, uniforms: np.ndarray):
    n_trials = 2 + int(math.log(k))
    centres = np.zeros((k, points.n_dims))
    centres[: len(given)] = given
    labels = np.empty(points.size, dtype=np.int32)
    squared = np.empty(points.size)
    links = np.empty(3 * points.size + 3 * k, dtype=np.int64)
    scratch = np.empty(2 * points.size + k)
    filled = _seed(
        points.points,
        points.weights,
        centres,
        len(given),
        uniforms,
        n_trials,
        labels,
        squared,
        links,
        scratch,
    )
    return centres[:filled], labels


def _swap_search(points: _Array, state, stable, *, n_swaps, fixed, max_iter, tol, rng):
    """Move one centre at a time from the cheapest cluster to merge to the costliest.

    The removed centre is the one whose cluster costs least to merge into its
    nearest neighbour's (Ward's cost); it is re-seeded inside the cluster with
    the largest squared error at a point drawn with probability proportional
    to its weighted squared distance.  Lloyd converges from there (as far as
    ``tol``) and the move is kept only if the error drops; after a rejected
    move the next-cheapest centre is removed instead.  Fixed centres are never
    moved.  ``state`` is ``(centres, inertia, labels, neighbours, bounds)`` of
    Lloyd converged as far as ``tol`` (``stable`` if no point would change
    cluster); returns the best state found, the iterations spent and whether
    that state is stable.

    At small k most moves are rejected (all 8 of the coffee photo's at
    k = 16), so after a rejection, while a pass over the points runs on one
    core, the next moves -- the ones tried if this one is rejected too -- are
    tried at once on the other cores.  A move tried after an accepted one is
    dropped, and its random number is drawn again for the move that follows:
    the result, and the iterations counted, are those of one move after the
    other.
    """
    centres, inertia, labels, neighbours, bounds = state
    k = centres.shape[0]
    n_iter = 0
    failures = 0  # after a rejected move, try the next-cheapest centre to remove
    squared = np.empty(points.size)
    # Moves at once only where a pass runs on one thread (inside a part, a pass runs in the
    # part's thread); at most 4: a run of moves ends at the first one accepted.
    lanes = min(n_workers(), 4) if pass_threads(points.size) == 1 else 1
    tried = 0
    while tried < n_swaps and k - fixed >= 2:
        _, totals, _, _ = assign(
            points, centres, labels, squared, neighbours=neighbours, bounds=bounds
        )
        kept = rng.get_state()  # the random numbers of moves dropped are drawn again
        moves = []
        # After an accepted move the next is often accepted too (k = 256: 8 in 8 on the
        # photos), after a rejected one often rejected (k = 16): only then run ahead.
        wanted = min(lanes if failures else 1, n_swaps - tried)
        costs = _swap_costs(points, labels, squared, totals, neighbours, fixed)
        for lane in range(wanted):
            move = _swap_move(points, labels, squared, costs, fixed, failures + lane, rng)
            if move is None:
                break
            moves.append(move)
        if not moves:
            break
        results: list = [None] * len(moves)

        def attempt(lane, moves=moves, results=results, base=(centres, labels, neighbours, bounds)):
            results[lane] = _swap_trial(
                points, base, moves[lane], fixed=fixed, max_iter=max_iter, tol=tol
            )

        run_parts(attempt, range(len(moves)), len(moves))
        for lane, (outcome, trial_labels, trial_neighbours, trial_bounds) in enumerate(results):
            trial_centres, trial_inertia, iterations, trial_stable = outcome
            tried += 1
            n_iter += iterations
            if trial_inertia < inertia:
                centres, inertia = trial_centres, trial_inertia
                labels, neighbours, bounds = trial_labels, trial_neighbours, trial_bounds
                stable = trial_stable
                failures = 0
                # The moves after this one were tried from the old state: dropped, and
                # the numbers they drew given back.
                if lane + 1 < len(moves):
                    rng.set_state(kept)
                    for _ in range(lane + 1):
                        rng.random_sample()
                break
            failures += 1
        else:
            if len(moves) < wanted:
                break  # every move made was rejected and the next cannot be made
    return (centres, inertia, labels, neighbours, bounds), n_iter, stable


def _swap_trial(points: _Array, base, move, *, fixed, max_iter, tol):
    """Lloyd from ``base`` (centres, labels, neighbours, bounds) with one centre moved.

    ``move`` is :func:`_swap_move`'s ``(removed, chosen)``; ``base`` is left as it
    was.  Returns ``((centres, inertia, n_iter, stable), labels, neighbours, bounds)``.
    """
    centres, labels, neighbours, bounds = base
    removed, chosen = move
    trial = centres.copy()
    trial[removed] = chosen
    trial_labels = labels.copy()
    # Bounds stay valid without the removed centre; add the new one.
    trial_bounds = bounds.with_centre(np.sqrt(((points.points - chosen) ** 2).sum(axis=1)))
    trial_neighbours = neighbours.copy()
    outcome = lloyd(
        points,
        trial,
        trial_labels,
        max_iter=max_iter,
        tol=tol,
        fixed=fixed,
        neighbours=trial_neighbours,
        moved=float(np.sqrt(((chosen - centres[removed]) ** 2).sum())),
        bounds=trial_bounds,
    )
    return outcome, trial_labels, trial_neighbours, trial_bounds


def _swap_costs(points: _Array, labels, squared, totals, neighbours, fixed):
    """What every move :func:`_swap_search` may try from one state depends on: the
    centres in order of the cost of merging each into its nearest (Ward's cost; the
    fixed ones last) and every cluster's weighted squared error."""
    k = totals.shape[0]
    neighbour_weight = totals[neighbours.order[:, 0]]
    pair = totals + neighbour_weight
    merge_cost = np.where(pair > 0, totals * neighbour_weight / np.maximum(pair, 1e-300), 0)
    merge_cost = merge_cost * neighbours.gaps[:, 0] ** 2
    merge_cost[:fixed] = np.inf
    errors = np.bincount(labels, weights=points.weights * squared, minlength=k)
    return np.argsort(merge_cost, kind="stable"), errors


def _swap_move(points: _Array, labels, squared, costs, fixed, failures, rng):
    """The move :func:`_swap_search` tries after ``failures`` rejected ones from the state
    :func:`_swap_costs` gave ``costs`` for.

    Returns ``(removed, chosen)``: the centre removed and the point it moves to,
    or None when the costliest cluster cannot be split.  Draws one random number
    from ``rng`` for a move and none for None (numpy's ``RandomState.choice``
    with ``p``, written out so that :func:`_swap_search` can tell how many were
    drawn).
    """
    order, errors = costs
    removed = int(order[failures % (order.shape[0] - fixed)])
    others = errors.copy()
    others[removed] = -1
    split = int(np.argmax(others))
    members = np.flatnonzero(labels == split)
    member_error = points.weights[members] * squared[members]
    if members.size < 2 or member_error.sum() <= 0:
        return None
    cumulative = np.cumsum(member_error / member_error.sum())
    cumulative /= cumulative[-1]
    pick = int(np.searchsorted(cumulative, rng.random_sample(), side="right"))
    return removed, points.points[members[pick]]


# --------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class Fit:
    """Fitted centres and the work done."""

    centres: np.ndarray  # (k, C) in the fit space
    labels: np.ndarray  # (points.size,) each point's centre
    n_iter: int  # Lloyd iterations run, over every start, swap trial and refinement
    #: Lloyd iterations of the start the centres come from (scikit-learn's ``n_iter_``: the
    #: best run's, at most ``max_iter``); the swaps and passes that follow only polish it.
    best_run_iter: int = 0


def fit_plan():
    """The fit's kernels, ``(kernel, example arguments)``, in the order a fit first calls
    them (after the histogram's kernel). The fit works in float64 whatever the image, so
    the argument types (``numba.typeof`` of the examples) are those of every colour fit;
    ``tests/test_startup.py`` checks that a call then compiles none of them again. What a
    first-ever run's second process compiles (:mod:`._warmup`) and the single start's
    idle core loads (:func:`fit_centres`)."""
    f1, f2 = np.zeros(1), np.zeros((1, 1))
    i1, i2, labels = np.zeros(1, np.int64), np.zeros((1, 1), np.int64), np.zeros(1, np.int32)
    return [
        (_widen_bounds, (f2, f1, f1)),
        (_grid_mark, (f2, f1, f1, 1, f2, 1.0, np.zeros(1, np.uint8))),
        (_grid_sums, (f2, f1, f1, f1, 1, f2, 1.0, i1, f2, f1, labels)),
        (_seed, (f2, f1, f2, 1, f1, 1, labels, f1, i1, f1)),
        (_nearest._assign, (f2, f1, f2, i2, f2, f1, labels, f2, labels, 1.0, f2, f1, f1)),
        (_nearest._cluster_radius, (labels, f1, f1)),
        (_nearest._resort_neighbours, (f2, i2, f2, f2)),
        (_nearest._local_drift, (i2, f2, f1, f1, f1, f2)),
        (_nearest._reassign, (f2, f1, f2, i2, f2, f1, labels, f1, f2, labels, f2, 1.0, f2, f1, f1)),
        (_label_stats, (f2, np.zeros(1, np.uint32), labels, f2, f2, f1, f1)),
    ]


def fit_centres(
    points: PointSet,
    n_colors: int,
    *,
    settings: FitSettings,
    init=None,
    fixed_colors=None,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
    report: Report = lambda fraction: None,
) -> Fit:
    """k-means centres of ``points`` (more points than ``n_colors``), in the fit space.

    ``init`` (k, C) runs plain Lloyd from there on the exact points
    (:func:`lloyd_from`); otherwise the pyramid of the module's docstring.
    ``fixed_colors`` (m, C) are the first m centres and never move.
    """
    if init is not None:
        return lloyd_from(points, init, max_iter=max_iter, tol=tol, report=report)
    if points.n_dims == 1:
        # One channel: the global optimum by dynamic programming on the histogram
        # (_exact1d: Wang & Song 2011; Gronlund et al. 2017) instead of a heuristic, over the
        # centres the output can hold (integers for integer images).
        fixed_1d = None if fixed_colors is None else np.asarray(fixed_colors)[:, 0]
        n_fixed_1d = 0 if fixed_1d is None else len(fixed_1d)
        dtype = points.encoding.dtype
        # 64-bit integers beyond 2**53 are not distinct as float64 values: heuristic fit.
        exact_in_float = dtype.kind == "f" or dtype.itemsize <= 4
        values = weights = None
        integer = False
        if exact_in_float and dtype.kind in "ui" and n_fixed_1d == 0:
            # Integer pixel counts (or integral weights) of an integer image: the penalised
            # programme takes any k in O(L) memory (uint16 at k = 4096: ~0.1 s).
            values = np.concatenate([v[:, 0] for _, _, v, _ in points])
            weights = np.concatenate([w for _, _, _, w in points])
            integer = exact1d.integer_sums(values, weights)
        if exact_in_float and exact1d.affordable(
            points.size, n_colors, n_fixed_1d, integer=integer
        ):
            if values is None:
                values = np.concatenate([v[:, 0] for _, _, v, _ in points])
                weights = np.concatenate([w for _, _, _, w in points])
            centres, labels, _ = exact1d.fit_points(
                values,
                weights,
                n_colors,
                fixed=fixed_1d,
                integer_centres=dtype.kind in "ui",
            )
            report(1.0)
            return Fit(centres[:, None], labels, 0)
    rng = np.random.RandomState(seed)
    fixed = np.zeros((0, points.n_dims)) if fixed_colors is None else fixed_colors
    n_fixed = fixed.shape[0]
    # The pyramid: coarse cells for the starts and swaps, fine cells (or the
    # exact colours) to converge on, and the exact colours last.
    fine, cell_of_point = points.reduced(settings.max_cells)
    coarse, cell_of_fine = points.reduced(settings.start_cells, settings.max_cells)
    tol_abs = tol * _spread(fine) * points.n_dims
    report(0.1)
    n_iter = 0
    best = None
    best_run_iter = 0
    draws = [_kmeans_pp_draws(n_colors, fixed, rng) for _ in range(settings.n_init)]
    runs: list = [None] * settings.n_init
    done = []
    caller = threading.get_ident()  # progress is told from the calling thread only

    def run_start(start: int) -> None:
        centres, labels = _kmeans_pp(coarse, n_colors, fixed, draws[start])
        neighbours, bounds = Neighbours(centres), Bounds(coarse.size)
        centres, inertia, iterations, stable = lloyd(
            coarse,
            centres,
            labels,
            max_iter=max_iter,
            tol=tol_abs,
            fixed=n_fixed,
            neighbours=neighbours,
            bounds=bounds,
        )
        runs[start] = (centres, inertia, labels, neighbours, bounds, iterations, stable)
        done.append(start)
        if threading.get_ident() == caller:
            report(0.1 + 0.6 * len(done) / settings.n_init)

    if settings.n_init == 1 and n_workers() > 1:
        # One start: while its seeding runs here (~25 ms at k = 256 on a small photo), an
        # idle core loads the kernels the fit needs next -- in a command line's process
        # (_jit.preload), where each is loaded once for this call: 8-36 ms less a small
        # photo's whole command at k = 256, all six benchmark photos (median 17 ms), medians
        # of 9 alternated runs (benchmarks/bench_cli.py --ref-src).
        plan = fit_plan()
        preload(plan[[call for call, _ in plan].index(_seed) :])
    # The starts are independent (their random numbers are drawn above, in order): they run
    # on every core, and the best is taken in their order, as one after the other would.
    run_parts(run_start, range(settings.n_init), n_workers())
    for centres, inertia, labels, neighbours, bounds, iterations, stable in runs:
        n_iter += iterations
        if best is None or inertia < best[1]:
            best = (centres, inertia, labels, neighbours, bounds)
            stable_best = stable
            best_run_iter = iterations
    report(0.7)
    best, iterations, stable = _swap_search(
        coarse,
        best,
        stable_best,
        n_swaps=settings.n_swaps,
        fixed=n_fixed,
        max_iter=max_iter,
        tol=tol_abs,
        rng=rng,
    )
    n_iter += iterations
    centres, _, labels, neighbours, bounds = best
    report(0.8)
    # Converge where the coarse cells came from: every fine cell (or colour)
    # starts from its coarse cell's cluster, and Lloyd runs until no point
    # changes cluster (tol=0) -- unless swaps on the fine cells follow: then it,
    # and each of their trials, goes only as far as the coarse search (tol_abs),
    # and the last stretch is done once, for the centres kept (below, or by the
    # refinement on the exact colours).  Against converging each time until no
    # point moves: fits at k = 64 and 256 in 0.81-1.07x the time (median 0.91x;
    # 9 images, benchmarks/ab_core.py alternated 3 times), the error -0.17 to
    # +0.20 % (13 images, benchmarks/sweep_budget.py; the cat at k = 32: +0.2 %),
    # every image still below the best peer.  Without swaps to follow (k <= 16 at
    # the default), stopping early only moved the work to the refinement's
    # costlier passes (up to 1.07x).
    fine_swaps = cell_of_fine is not None and settings.n_fine_swaps > 0
    fine_tol = tol_abs if fine_swaps else 0.0
    if cell_of_fine is not None or not stable:
        if cell_of_fine is not None:
            labels = labels[cell_of_fine]
        # The coarse search's lists are settled for these centres: kept when they are
        # what a new build would give (which took 3.5 ms at k = 256).
        if not neighbours.as_built():
            neighbours = Neighbours(centres)
        bounds = Bounds(fine.size)
        centres, inertia, iterations, stable = lloyd(
            fine,
            centres,
            labels,
            max_iter=max_iter,
            tol=fine_tol,
            fixed=n_fixed,
            neighbours=neighbours,
            bounds=bounds,
        )
        n_iter += iterations
        if fine_swaps:
            # The coarse optimum is not quite the fine one: a few more swaps
            # where the error is measured exactly.
            best, iterations, stable = _swap_search(
                fine,
                (centres, inertia, labels, neighbours, bounds),
                stable,
                n_swaps=settings.n_fine_swaps,
                fixed=n_fixed,
                max_iter=max_iter,
                tol=tol_abs,
                rng=rng,
            )
            centres, _, labels, neighbours, bounds = best
            n_iter += iterations
        if cell_of_point is None and not stable and fine_tol > 0:
            centres, _, iterations, stable = lloyd(
                fine,
                centres,
                labels,
                max_iter=max_iter,
                tol=0.0,
                fixed=n_fixed,
                neighbours=neighbours,
                bounds=bounds,
            )
            n_iter += iterations
    if cell_of_point is not None:
        # Each exact colour starts from its cell's cluster: a cell is smaller
        # than the clusters, so few points move.
        labels = labels[cell_of_point]
        # Iterations over millions of colours add up: at most _REFINE_WORK
        # point visits, relaxed ones counting _RELAXED_VISIT (the 12 MP noisy
        # mosaic's 1.6 M colours get 14).
        visit = _RELAXED_VISIT if _RELAX != 1.0 else 1.0
        budget = max(1, int(_REFINE_WORK // (points.size * visit)))
        centres, _, iterations, _ = lloyd(
            points,
            centres,
            labels,
            max_iter=min(max_iter, settings.refine_iter, budget),
            tol=0.0,
            fixed=n_fixed,
            neighbours=neighbours if neighbours.as_built() else None,
            final=False,  # the labels only start the palette's assignment
            relax=_RELAX,
        )
        n_iter += iterations
    report(1.0)
    return Fit(centres, labels, n_iter, best_run_iter)


def lloyd_from(
    points: PointSet,
    init: np.ndarray,
    *,
    max_iter: int,
    tol: float,
    report: Report = lambda fraction: None,
) -> Fit:
    """Plain weighted Lloyd from ``init`` on the exact points, scikit-learn's way.

    The iterations of ``sklearn.cluster.KMeans(init=init, n_init=1,
    algorithm="lloyd")`` on every pixel, run on the distinct colours weighted
    by their pixel counts (the same sums): assign every point to its nearest
    centre, move every centre to its points' weighted mean; stop when no
    point changes cluster, after ``max_iter`` iterations, or when the centres
    moved by at most ``tol`` times the mean over channels of the points'
    weighted variance (squared distances summed over centres; scikit-learn's
    ``_tolerance``).  No grid cells and no cap on the iterations: the bounds
    of :func:`lloyd`'s passes only spare distance computations.

    A cluster left empty takes the distinct colour farthest from its centre
    (:func:`_relocate_empty`), as scikit-learn relocates it to the farthest
    sample -- but never two centres on one colour.
    """
    labels = np.zeros(points.size, dtype=np.int32)
    report(0.1)
    centres, _, n_iter, _ = lloyd(
        points,
        np.array(init, dtype=np.float64),
        labels,
        max_iter=max_iter,
        tol=tol * _spread(points),
        relocate=True,
    )
    report(1.0)
    return Fit(centres, labels, n_iter, n_iter)


def _relocate_empty(points, centres, labels, upper, bounds, sums, totals, fixed=0) -> None:
    """Give every empty cluster the distinct colour farthest from its own centre.

    scikit-learn (``_relocate_empty_clusters_dense``) moves an empty cluster
    to the sample with the largest squared distance to its centre (not
    weighted), taking that one sample's weight from its cluster.  On a
    histogram a sample is a distinct colour, so the colour moves whole (all
    its pixels: the next assignment would move them anyway) and two empty
    clusters never land on one colour.  Updates ``sums``/``totals`` for the
    moved colours, their ``labels``, and resets their Hamerly bounds.  The
    first ``fixed`` centres are never moved.
    """
    empty = fixed + np.flatnonzero(totals[fixed:] <= 0)
    # The farthest len(empty) colours of each slice, then of all of them.
    rows, distances = [], []
    for start, stop, block, _ in points:
        squared = ((block - centres[labels[start:stop]]) ** 2).sum(axis=1)
        top = np.arange(squared.size)
        if squared.size > len(empty):
            top = np.argpartition(squared, -len(empty))[-len(empty) :]
        rows.append(start + top)
        distances.append(squared[top])
    rows, distances = np.concatenate(rows), np.concatenate(distances)
    # Farthest first, equal distances in row order; a colour on its centre
    # (distance 0) would put two centres on one colour.
    order = np.lexsort((rows, -distances))[: len(empty)]
    farthest = rows[order][distances[order] > 0]
    for cluster, row in zip(empty, farthest, strict=False):
        start, block, weights = _point_of(points, row)
        value, weight = block[row - start], weights[row - start]
        old = labels[row]
        sums[old] -= weight * value
        totals[old] -= weight
        sums[cluster] = weight * value
        totals[cluster] = weight
        labels[row] = cluster
        upper[row] = np.inf  # measured and searched again next pass
        bounds.forget(row)
    # A cluster with no colour left to take (fewer distinct colours than
    # centres would be needed) keeps its centre.
    still = totals <= 0
    still[:fixed] = False
    sums[still] = centres[still]
    totals[still] = 1.0


def _point_of(points, row):
    """``(start, block, weights)`` of the slice of ``points`` holding ``row``."""
    for start, stop, block, weights in points:
        if start <= row < stop:
            return start, block, weights
    raise IndexError(row)


def _spread(points) -> float:
    """Mean over dimensions of the points' weighted variance (two passes, sliced)."""
    total = 0.0
    first = np.zeros(points.n_dims)
    for _, _, block, weights in points:
        total += float(weights.sum())
        first += weights @ block
    mean = first / total
    second = 0.0
    for _, _, block, weights in points:
        second += float((weights @ (block - mean) ** 2).sum())
    return second / total / points.n_dims


def _gather(points: PointSet) -> _Array:
    blocks = [(block, weights) for _, _, block, weights in points]
    if len(blocks) == 1:
        return _Array(*blocks[0])
    return _Array(np.concatenate([b for b, _ in blocks]), np.concatenate([w for _, w in blocks]))


# --------------------------------------------------------------------------- palette


@dataclass(frozen=True)
class Assignment:
    """Every histogram row's palette index and the error of the repaint.

    Sums are over visible pixels, in the image's units: ``color_sums[j]`` adds
    the colours of the pixels of entry j, ``squared_errors[j]`` their squared
    distance to it (over colour channels).
    """

    row_labels: np.ndarray  # (n_rows,) int32
    color_sums: np.ndarray  # (k, C) float64
    squared_errors: np.ndarray  # (k,) float64
    extremes: tuple  # (min, max) of the visible colour values

    @property
    def squared_error(self) -> float:
        return float(self.squared_errors.sum())

    @property
    def value_range(self) -> float:
        return max(self.extremes[1] - self.extremes[0], 0.0)

    def renumbered(self, keep: np.ndarray) -> Assignment:
        """The same assignment with only the entries where ``keep`` (all unused)."""
        renumber = (np.cumsum(keep) - 1).astype(np.int32)
        return Assignment(
            renumber[self.row_labels],
            self.color_sums[keep],
            self.squared_errors[keep],
            self.extremes,
        )


@kernel
def _label_stats(values, counts, labels, colors, color_sums, squared_errors, extremes):
    """Per palette entry: the count-weighted sum of ``values`` and squared error.

    ``extremes`` ([low, high]) is widened to the values of rows with counts.
    """
    n, n_dims = values.shape
    for i in range(n):
        weight = counts[i]
        if weight == 0:
            continue
        label = labels[i]
        error = 0.0
        for c in range(n_dims):
            value = values[i, c]
            step = value - colors[label, c]
            error += step * step
            color_sums[label, c] += weight * value
            extremes[0] = min(extremes[0], value)
            extremes[1] = max(extremes[1], value)
        squared_errors[label] += weight * error


def assign_rows(
    histogram: ColorHistogram,
    encoding: Encoding,
    colors: np.ndarray,
    color_space: str,
    guess=None,
    points=None,
    search=True,
):
    """Index of the nearest palette colour of every histogram row, and the error.

    With ``search`` False only the extremes of the visible values are found
    (every row labelled 0, no error counted): for a repaint that finds its
    own labels, such as RGB dithering, which counts its statistics itself.

    ``guess`` (int32 per row, overwritten) is where each row's search starts:
    any valid labels, exact anyway, but near ones make it cheap.  ``points``
    reuses the fit's :class:`PointSet` when it holds every row.  A row whose colour is in the
    palette gets that entry exactly, even where float64 cannot tell
    neighbouring values apart (64-bit integers).
    """
    k, n_dims = colors.shape
    if not search:
        # The rows' values decoded in the image's dtype, not made points in float64
        # (the 2 MP noisy photo's 1.6 M rows: 24-27 -> 9-12 ms).
        extremes = [np.inf, -np.inf]  # of the visible values
        every = [np.inf, -np.inf]  # of all, which the fit space must hold (as a search's)
        shown = histogram.pixel_counts > 0
        for start in range(0, len(histogram), _SLICE_ROWS):
            stop = min(start + _SLICE_ROWS, len(histogram))
            codes, visible = histogram.codes[start:stop], shown[start:stop]
            if color_space == "rgb":
                values = encoding.decode(codes[visible])
            elif codes.size:
                values = encoding.decode(codes)
                every = [min(every[0], values.min()), max(every[1], values.max())]
                values = values[visible]
            else:
                continue
            if values.size:
                extremes = [min(extremes[0], values.min()), max(extremes[1], values.max())]
        if np.isfinite(every[0]):
            check_fit_range(every[0], every[1], color_space, encoding.dtype)
        labels = np.zeros(len(histogram), dtype=np.int32)
        bounds = (float(extremes[0]), float(extremes[1]))
        return Assignment(labels, np.zeros((k, n_dims)), np.zeros(k), bounds)
    if points is None or points.rows is not None:
        points = PointSet(histogram, encoding, color_space, None)
    centres = np.ascontiguousarray(
        to_fit_space(colors.astype(np.float64), color_space, encoding.dtype)
    )
    neighbours = Neighbours(centres)
    labels = _grid_guess(points, centres, neighbours) if guess is None else guess
    assign(points, centres, labels, neighbours=neighbours)
    dtype = encoding.dtype
    if not (color_space == "rgb" and dtype.kind in "ui" and dtype.itemsize <= 4):
        # Integers up to 32 bits are exact in float64 and compared in their own
        # units: a palette colour is at distance 0, every other one at 1 or
        # more, so the search already found it (the lookup took ~45 ms of a
        # 12 MP fit's row assignment).
        palette_codes = encoding.encode(colors)
        order = np.argsort(palette_codes, kind="stable")
        sorted_codes = palette_codes[order]
        position = np.minimum(np.searchsorted(sorted_codes, histogram.codes), len(colors) - 1)
        same = sorted_codes[position] == histogram.codes
        labels[same] = order[position[same]]
    shown = histogram.pixel_counts
    colors_float = colors.astype(np.float64)
    color_sums = np.zeros((k, n_dims))
    squared_errors = np.zeros(k)
    extremes = np.array([np.inf, -np.inf])
    for start in range(0, len(histogram), _SLICE_ROWS):
        stop = min(start + _SLICE_ROWS, len(histogram))
        _label_stats(
            points.values(start, stop),
            shown[start:stop],
            labels[start:stop],
            colors_float,
            color_sums,
            squared_errors,
            extremes,
        )
    return Assignment(labels, color_sums, squared_errors, (float(extremes[0]), float(extremes[1])))


# Points and colours from which :func:`_grid_guess` pays: with fewer, every
# point searches from colour 0 (the cat's 33 k colours at k = 16: 1.7 ms, with the
# grid 2.2 ms; at k = 256 18 ms against 3.9 ms).
_GUESS_MIN_POINTS = 2**12
_GUESS_MIN_COLORS = 32
# Its finer grid has at most 2**this many cells (32 an axis in 3-D).
_GUESS_GRID_BITS = 15


def _grid_guess(points, centres, neighbours):
    """Where every point's nearest-centre search starts (int32 labels), for a
    palette given without them (:func:`apply_palette`).

    From centre 0, every point's search reaches up to twice its distance to
    it: most of the palette at k = 256 (the astronaut's 113 k colours took
    71 ms).  Instead the centres of a grid's cells over the points' box are
    assigned first -- a coarse grid's from 0, then a finer one's each from its
    coarse cell's label -- and every point starts from its fine cell's
    label, a few neighbours away from its own.  Only a start: the search
    stays exact.
    """
    n_dims = points.n_dims
    labels = np.zeros(points.size, dtype=np.int32)
    if points.size < _GUESS_MIN_POINTS or centres.shape[0] < _GUESS_MIN_COLORS:
        return labels
    fine = int(2 ** (_GUESS_GRID_BITS // n_dims))
    if fine < 4:
        return labels
    coarse = max(2, fine // 4)
    low = np.full(n_dims, np.inf)
    high = np.full(n_dims, -np.inf)
    for _, _, block, _ in points:
        _widen_bounds(block, low, high)
    size = np.maximum(high - low, 1e-300) / fine
    if not np.all(np.isfinite(size)):
        return labels

    def cell_centres(bins, cells):
        index = np.array(np.unravel_index(cells, (bins,) * n_dims), dtype=np.float64).T
        return np.ascontiguousarray(low + (index + 0.5) * size * (fine / bins))

    flats = []
    occupied = np.zeros(fine**n_dims, dtype=bool)
    for _, _, block, _ in points:
        bins = np.clip(((block - low) / size).astype(np.int64), 0, fine - 1)
        flat = bins[:, 0]
        for c in range(1, n_dims):
            flat = flat * fine + bins[:, c]
        occupied[flat] = True
        flats.append(flat)
    coarse_labels = np.zeros(coarse**n_dims, dtype=np.int32)
    coarse_cells = _Array(cell_centres(coarse, np.arange(coarse**n_dims)), np.ones(coarse**n_dims))
    assign(coarse_cells, centres, coarse_labels, neighbours=neighbours)
    # The occupied fine cells, each from its coarse parent's label.
    cells = np.flatnonzero(occupied)
    index = np.array(np.unravel_index(cells, (fine,) * n_dims)) // (fine // coarse)
    fine_labels = coarse_labels[np.ravel_multi_index(tuple(index), (coarse,) * n_dims)]
    fine_cells = _Array(cell_centres(fine, cells), np.ones(cells.size))
    assign(fine_cells, centres, fine_labels, neighbours=neighbours)
    label_of_cell = np.zeros(fine**n_dims, dtype=np.int32)
    label_of_cell[cells] = fine_labels
    for (start, stop), flat in zip(points.bounds(), flats, strict=True):
        labels[start:stop] = label_of_cell[flat]
    return labels


def as_dtype(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip float colours into ``dtype`` without float64 overflow at its ends."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "ui":
        return values.astype(dtype)
    info = np.iinfo(dtype)
    colors = np.empty(values.shape, dtype=dtype)
    # float(2**63 - 1) rounds up to 2**63: compare in float, assign the ends exactly.
    high = values >= float(info.max)
    low = values <= float(info.min)
    inside = ~(high | low)
    colors[inside] = np.rint(values[inside]).astype(dtype)
    colors[high] = info.max
    colors[low] = info.min
    return colors


# Work budget (points x colours) of the integer palette search below: it runs
# only on small histograms, where it is cheap. Its gain is small (at most
# 0.008 % less error on the sample photos) but it decides near ties with
# peers that round differently (the cat at k=2: 492.145 with it, 492.165
# without, scikit-learn on every pixel 492.156).
_INTEGER_SEARCH_BUDGET = 2**18


def best_integer_colors(colors, colors_float, points: PointSet):
    """Move palette coordinates to their other integer neighbour where that lowers the error.

    Rounding each centre to the nearest integer is optimal only while no pixel
    changes colour; pixels on cluster borders do, so the other neighbour
    (floor instead of ceil, or back) is sometimes better. Each trial changes one
    coordinate of one colour, so only that colour's distances are recomputed.
    Skipped when the histogram is too large for the budget.
    """
    n_points, n_colors = points.size, colors.shape[0]
    if n_points * n_colors > _INTEGER_SEARCH_BUDGET or n_colors < 2 or not points.whole:
        return colors
    if colors.dtype.itemsize > 4:
        return colors  # float64 cannot step by 1 near the ends of 64-bit integers
    ((_, _, values, weights),) = list(points)
    trial = colors.astype(np.float64)
    distances = ((values[:, np.newaxis, :] - trial[np.newaxis]) ** 2).sum(axis=2)
    rows = np.arange(n_points)

    def split(distances):
        two = np.argpartition(distances, 1, axis=1)[:, :2]
        first, second = distances[rows, two[:, 0]], distances[rows, two[:, 1]]
        swap = second < first
        nearest = np.where(swap, two[:, 1], two[:, 0])
        return nearest, np.minimum(first, second), np.maximum(first, second)

    nearest, best, second = split(distances)
    error = float(weights @ best)
    info = np.iinfo(colors.dtype)
    for colour in range(n_colors):
        for channel in range(colors.shape[1]):
            value = trial[colour, channel]
            other = value + (1.0 if colors_float[colour, channel] > value else -1.0)
            if not info.min <= other <= info.max:
                continue
            moved = trial[colour].copy()
            moved[channel] = other
            moved_distance = ((values - moved) ** 2).sum(axis=1)
            others_best = np.where(nearest == colour, second, best)
            moved_error = float(weights @ np.minimum(others_best, moved_distance))
            if moved_error < error:
                trial[colour] = moved
                distances[:, colour] = moved_distance
                nearest, best, second = split(distances)
                error = moved_error
    return trial.astype(colors.dtype)


# --------------------------------------------------------------------------- histogram -> palette


@dataclass(frozen=True)
class PaletteFit:
    """A fitted palette and what it does to the histogram's rows."""

    colors: np.ndarray  # (k, C) image dtype; fixed colours first, then dark to light
    # (in init's order when a fit ran from init)
    counts: np.ndarray  # (k,) int64 visible pixels per colour
    assignment: Assignment
    n_iter: int  # Lloyd iterations run in all (0: no clustering needed)
    best_run_iter: int = 0  # those of the start the palette comes from (see Fit)


def luminance_order(colors: np.ndarray) -> np.ndarray:
    """Order of ``colors`` from dark to light; ties broken by the channels in turn."""
    values = colors.astype(np.float64)
    if values.shape[1] >= 3:
        luminance = values[:, :3] @ np.array([0.2126, 0.7152, 0.0722])  # Rec. 709
    else:
        luminance = values.mean(axis=1)
    keys = [values[:, c] for c in reversed(range(values.shape[1]))] + [luminance]
    return np.lexsort(keys)


def fit_histogram(
    histogram: ColorHistogram,
    encoding: Encoding,
    n_colors: int,
    *,
    color_space: str = "rgb",
    speed: int = DEFAULT_SPEED,
    init=None,
    fixed_colors=None,
    n_init: int | None = None,
    max_iter: int = 300,
    tol: float = 1e-4,
    seed: int = 0,
    report: Report = lambda fraction: None,
    points: PointSet | None = None,
) -> PaletteFit:
    """Fit at most ``n_colors`` colours to a histogram and assign every row.

    ``init`` and ``fixed_colors`` are in the image's units (float64 arrays);
    fixed colours come first in the palette, in the given order, exactly.
    ``points``, the histogram's voting colours from an earlier fit, saves
    building them again.

    A speed below the default also runs the default's search and keeps the
    better of the two fits (lower weighted squared error in the fit space):
    each search finds its own local optima, and speed=1 alone ended above the
    default on 11 of 43 benchmark cells (by up to 0.5 %, coffee at k = 64).
    So searching harder never does worse, for 15-50 % more time at speed=1.
    """
    common = dict(
        color_space=color_space,
        init=init,
        fixed_colors=fixed_colors,
        n_init=n_init,
        max_iter=max_iter,
        tol=tol,
        seed=seed,
    )
    if speed >= DEFAULT_SPEED or init is not None or n_init is not None:
        return _fit_histogram(histogram, encoding, n_colors, speed, report, points, **common)
    if points is None and np.any(histogram.weights > 0):
        voters = histogram.weights > 0
        rows = None if np.all(voters) else np.flatnonzero(voters)
        points = PointSet(histogram, encoding, color_space, rows)

    def first_part(fraction):
        report(0.85 * fraction)

    def second_part(fraction):
        report(0.85 + 0.15 * fraction)

    thorough = _fit_histogram(histogram, encoding, n_colors, speed, first_part, points, **common)
    if thorough.n_iter == 0:  # every colour kept exactly: nothing to search
        return thorough
    default = _fit_histogram(
        histogram, encoding, n_colors, DEFAULT_SPEED, second_part, points, **common
    )
    errors = [_fit_error(fit, points, encoding.dtype, color_space) for fit in (thorough, default)]
    return thorough if errors[0] <= errors[1] else default


def _fit_error(fit: PaletteFit, points: PointSet, dtype, color_space: str) -> float:
    """Weighted squared error of ``fit`` over the voting ``points``, in the fit space."""
    centres = _to_fit(fit.colors.astype(np.float64), color_space, dtype)
    row_labels = fit.assignment.row_labels
    labels = row_labels if points.rows is None else row_labels[points.rows]
    total = 0.0
    for start, stop, values, weights in points:
        gaps = values - centres[labels[start:stop]]
        total += float(np.einsum("ij,ij,i->", gaps, gaps, weights))
    return total


def _fit_histogram(
    histogram,
    encoding,
    n_colors,
    speed,
    report,
    points,
    *,
    color_space,
    init,
    fixed_colors,
    n_init,
    max_iter,
    tol,
    seed,
):
    dtype = encoding.dtype
    weights = histogram.weights
    voters = weights > 0
    if not np.any(voters):
        raise ValueError(
            "The 'image' parameter has no pixel to fit: every pixel is fully transparent "
            "(alpha <= 0), outside the 'mask' or of zero 'sample_weight'."
        )
    fixed = None if fixed_colors is None else as_dtype(np.asarray(fixed_colors), dtype)
    n_fixed = 0 if fixed is None else fixed.shape[0]
    rows = None if np.all(voters) else np.flatnonzero(voters)
    n_iter = best_run_iter = 0
    fit = None
    if np.count_nonzero(voters) <= n_colors - n_fixed:
        # Few enough colours: the palette is exactly the image's own colours.
        colors = encoding.decode(histogram.codes if rows is None else histogram.codes[rows])
    else:
        if points is None:
            points = PointSet(histogram, encoding, color_space, rows)
        settings = settings_for(speed, n_colors, n_init)
        fit = fit_centres(
            points,
            n_colors,
            settings=settings,
            init=None if init is None else _to_fit(init, color_space, dtype),
            fixed_colors=None if fixed is None else _to_fit(fixed, color_space, dtype),
            max_iter=max_iter,
            tol=tol,
            seed=seed,
            report=report,
        )
        n_iter, best_run_iter = fit.n_iter, fit.best_run_iter
        colors_float = from_fit_space(fit.centres, color_space, dtype)
        colors = as_dtype(colors_float, dtype)
        if init is None and color_space == "rgb" and dtype.kind in "ui" and n_fixed == 0:
            colors = best_integer_colors(colors, colors_float, points)
        colors = colors[n_fixed:]
    colors, where = np.unique(colors, axis=0, return_inverse=True)
    where = where.reshape(-1)
    if init is not None and fit is not None:
        # Each centre ran Lloyd from its row of init: the palette keeps init's order
        # (scikit-learn's KMeans(init=...) contract), a colour reached twice at its first.
        first = np.full(len(colors), len(where))
        np.minimum.at(first, where, np.arange(len(where)))
        order = np.argsort(first)
    elif init is not None:
        # The image's own colours (no more than k): each at the place of its nearest
        # init row, where Lloyd from init takes it (ties: dark to light).
        start = np.asarray(init, np.float64)
        values = colors.astype(np.float64)
        nearest = ((values[:, None, :] - start[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
        order = np.lexsort((np.argsort(luminance_order(colors)), nearest))
    else:
        order = luminance_order(colors)
    ranks = np.argsort(order)
    colors = colors[order]
    guess = None
    if fixed is not None:
        colors = np.concatenate([fixed, _without(colors, fixed, encoding)])
    elif fit is not None:
        # Start every row's search at its cluster's colour (hidden rows: 0).
        guess = np.zeros(len(histogram), dtype=np.int32)
        fitted_label = ranks[where][fit.labels]
        if rows is None:
            guess[:] = fitted_label
        else:
            guess[rows] = fitted_label
    assignment = assign_rows(histogram, encoding, colors, color_space, guess, points)
    counts = np.bincount(
        assignment.row_labels, weights=histogram.pixel_counts, minlength=len(colors)
    ).astype(np.int64)
    unused = counts == 0
    unused[:n_fixed] = False
    if np.any(unused):
        # A fitted colour can lose all its pixels after rounding to the image's
        # dtype; dropping it changes no pixel's nearest colour.
        keep = ~unused
        colors, counts = colors[keep], counts[keep]
        assignment = assignment.renumbered(keep)
    return PaletteFit(colors, counts, assignment, n_iter, best_run_iter)


def _to_fit(values, color_space, dtype):
    return np.ascontiguousarray(to_fit_space(np.asarray(values, np.float64), color_space, dtype))


def _without(colors, fixed, encoding):
    """``colors`` minus any that equal a fixed colour."""
    taken = {code.tobytes() for code in encoding.encode(fixed)}
    keep = [code.tobytes() not in taken for code in encoding.encode(colors)]
    return colors[np.array(keep, dtype=bool)]


# --------------------------------------------------------------------------- fewest colours


@dataclass(frozen=True)
class FewestFit:
    """The fit with the fewest colours reaching the targets, and what was tried."""

    fit: PaletteFit
    curve: dict  # "n_colors", "psnr" (and "delta_e") of every k fitted, "reached"


def fit_fewest(
    histogram: ColorHistogram,
    encoding: Encoding,
    *,
    target_psnr: float | None,
    target_delta_e: float | None,
    max_colors: int,
    color_space: str = "rgb",
    fixed_colors=None,
    report: Report = lambda fraction: None,
    **fit_options,
) -> FewestFit:
    """The fewest colours whose repaint reaches ``target_psnr`` (dB, at least)
    and ``target_delta_e`` (mean CIEDE2000, at most).

    Fits k = 2, 4, 8, ... until one reaches the targets, then bisects between
    the last k that missed and the first that reached, so the chosen k is
    always next to a k - 1 whose fit misses: O(log k) fits, each reusing the
    histogram's points and their grid reduction.  Above ``max_colors`` it
    stops and returns that many, with ``curve["reached"]`` False.
    """
    voters = histogram.weights > 0
    rows = None if np.all(voters) else np.flatnonzero(voters)
    points = PointSet(histogram, encoding, color_space, rows)
    n_fixed = 0 if fixed_colors is None else len(fixed_colors)
    n_visible = float(histogram.pixel_counts.sum())
    delta_e = None if target_delta_e is None else MeanDeltaE(histogram, encoding)
    tried = {}
    # Progress is weighted by each fit's cost, about linear in k (a fixed part for the
    # passes over the points): the last fits of a high target take most of the time.
    # The total is estimated before each fit, from the k at which the targets are
    # expected to be reached (:func:`_predicted_k`), and the bar is kept from going back.
    spent, shown = [0.0], [0.0]

    def cost(k):
        return k + 8.0

    def show(fraction):
        shown[0] = max(shown[0], min(0.95, fraction))
        report(shown[0])

    def reaches(k, later):
        """Whether the fit at ``k`` reaches the targets; ``later``: the estimated cost
        of the fits after it."""
        if k not in tried:
            total = spent[0] + cost(k) + later
            fitted = fit_histogram(
                histogram,
                encoding,
                k,
                color_space=color_space,
                fixed_colors=fixed_colors,
                points=points,
                report=lambda fraction: show((spent[0] + fraction * cost(k)) / total),
                **fit_options,
            )
            spent[0] += cost(k)
            mse = fitted.assignment.squared_error / (n_visible * encoding.n_channels)
            figures = {"psnr": psnr(mse, encoding.dtype, fitted.assignment.value_range)}
            ok = target_psnr is None or figures["psnr"] >= target_psnr
            if delta_e is not None:
                figures["delta_e"] = delta_e(fitted.colors, fitted.assignment.row_labels)
                ok = ok and figures["delta_e"] <= target_delta_e
            tried[k] = (ok, fitted, figures)
            show(spent[0] / total)
        return tried[k][0]

    def bisections(low, high):
        """Fits a bisection between a k that missed and one that reached still needs."""
        return max(0, int(np.ceil(np.log2(max(1, high - low)))))

    def still_to_come(k):
        """The estimated cost of the fits after ``k`` while doubling: the doublings up to
        the k expected to reach, then the bisection below it."""
        expected = _predicted_k(tried, k, highest, target_psnr, target_delta_e)
        doublings, j = 0.0, k
        while j < expected:
            j = min(2 * j, highest)
            doublings += cost(j)
        return doublings + bisections(j // 2, j) * cost(0.75 * j)

    lowest = max(1, n_fixed)
    # Lossless at the number of distinct colours: no need to look further.
    highest = min(max_colors, int(np.count_nonzero(voters)) + n_fixed)
    missed, k = lowest - 1, max(lowest, min(2, highest))
    while not reaches(k, still_to_come(k)) and k < highest:
        missed, k = k, min(2 * k, highest)
    reached = tried[k][0]
    if reached:
        while k - missed > 1:
            middle = (missed + k) // 2
            if reaches(middle, (bisections(missed, k) - 1) * cost(middle)):
                k = middle
            else:
                missed = middle
    ks = sorted(tried)
    curve = {"n_colors": ks, "psnr": [tried[j][2]["psnr"] for j in ks], "reached": reached}
    if delta_e is not None:
        curve["delta_e"] = [tried[j][2]["delta_e"] for j in ks]
    return FewestFit(tried[k][1], curve)


def _predicted_k(tried: dict, k: int, highest: int, target_psnr, target_delta_e) -> int:
    """The k (a doubling of ``k``, at most ``highest``) at which a search for the fewest
    colours is expected to reach its targets, for its progress bar only.

    PSNR and the logarithm of the mean CIEDE2000 change about linearly with log2 k on
    photos, so the last two fits tried give the doublings still needed; before two, the
    guess is 64 colours.
    """
    done = sorted(tried)
    if len(done) < 2:
        return min(highest, max(k, 64))
    low, high = done[-2], done[-1]
    span = np.log2(high / low)
    needed = 1.0
    figures = []
    if target_psnr is not None:
        figures.append(("psnr", target_psnr, 1.0))
    if target_delta_e is not None:
        figures.append(("delta_e", target_delta_e, -1.0))
    for name, target, sign in figures:
        before, after = tried[low][2][name], tried[high][2][name]
        if name == "delta_e":
            before, after, target = (np.log(max(v, 1e-12)) for v in (before, after, target))
        gain = sign * (after - before) / span  # per doubling, toward the target
        gap = sign * (target - after)
        needed = max(needed, 8.0 if gain <= 0 else min(8.0, gap / gain))
    expected = k
    for _ in range(int(np.ceil(needed)) - 1):
        expected = min(2 * expected, highest)
    return expected
