"""Exact one-dimensional k-means: the global optimum on a weighted histogram.

On one channel (greyscale photos, a fluorescence channel, a CT slice) k-means
is a 1-D problem, and 1-D k-means has an exact global optimum: the clusters
of an optimal solution are contiguous runs of the sorted values, so a dynamic
programme over the ``L`` distinct values finds it (Wang & Song, "Ckmeans.1d.dp:
optimal k-means clustering in one dimension by dynamic programming", The R
Journal 3(2), 2011)::

    D[q, j] = min_{i < j} D[q - 1, i] + cost(i, j)

where ``cost(i, j)`` is the weighted squared error of values ``i .. j-1``
around their centre, computed in O(1) from prefix sums.  The plain programme
is O(k L^2).  The cost matrix satisfies the quadrangle inequality, so the
argmin ``i`` is monotone in ``j`` and each row of the programme is found by
divide and conquer in O(L log L) (Grønlund, Larsen, Mathiasen, Nielsen,
Schneider & Song, "Fast exact k-means, k-medians and Bregman divergence
clustering in 1D", arXiv:1701.07204, 2017): O(k L log L) in all.

Integer centres (the palette of an integer image) are a different problem:
the best integer centre of a run is the integer nearest its mean (the cost is
a convex quadratic in the centre), but the best *partition* for integer
centres can differ from the real-valued one, so the programme's run cost is
that of the rounded centre, ``S2 - 2 c S1 + c^2 W``.  This cost satisfies the
quadrangle inequality too, so divide and conquer stays exact.  Sketch: for runs
``A < B < C`` let ``c1`` be optimal for ``ABC`` and ``c2`` for ``B``, say
``c1 <= c2``; ``d(x) = (x - c2)^2 - (x - c1)^2`` decreases in ``x`` and
``sum_B w d <= 0``, so ``sum_C w d <= 0`` and giving ``c1`` to ``AB`` and
``c2`` to ``BC`` costs at most ``f(ABC) + f(B)`` (symmetric when ``c1 > c2``).
The argument holds for centres restricted to any set, fixed ones included.

The whole programme runs in one compiled call.  A row of ``q`` runs can only
end at ``q .. L - n + q`` (``n`` free runs, one value each at least), so its
work and its row of the table of choices are ``W = L - n + 1`` wide, not
``L + 1``: k close to L is cheap (uint16 at k = 65 000: rows 537 wide, 140 MB
of int32 starts), and ``k >= L`` with no fixed values needs no programme at
all (every value its own centre).  Work is O(n W log W), table 4 n W bytes.

Sums are kept exact where the data allow: integer values with integer weights
use int64 prefix sums (sum of x^2 over 12 MP of uint16 is ~5e16, past the 2^53
that float64 holds exactly) and each run's cost is formed in integers about an
integer pivot; other data use double-double (compensated) prefix sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._jit import helper, kernel

# At or below this many distinct values the plain O(k L^2) programme runs (the
# reference the faster one is tested against); above, divide and conquer, which
# is faster already on uint8: 256 levels, k = 16: 1.9 ms -> 0.4 ms, k = 64:
# 13 ms -> 1.0 ms (best of 2 on a loaded 2-core machine).
FULL_MAX_LEVELS = 64
# Integer sums are used when sum(w) * range^2 stays below 2^61: the run cost
# S2 - 2 c S1 + c^2 W then never leaves int64 (each term is at most 2^62).
_INT_LIMIT = 2.0**61

# Modes of the run cost (which sums, which centres).
_INT_REAL, _INT_INT, _FLOAT_REAL, _FLOAT_INT = 0, 1, 2, 3


@dataclass(frozen=True)
class Exact1D:
    """The optimal 1-D clustering of a weighted histogram.

    Attributes
    ----------
    centres : ndarray of float64, shape (n,)
        The centres in increasing order of their classes; ``n = min(k, L + m)``
        for ``L`` distinct values and ``m`` fixed values (fewer distinct
        values than free centres leave those centres out).
    fixed : ndarray of bool, shape (n,)
        Which centres are the given fixed values.
    labels : ndarray of intp, shape (L,)
        The class of each distinct value (an index into ``centres``).
    thresholds : ndarray of float64, shape (n - 1,)
        ``thresholds[i]`` is the largest value in classes ``0 .. i`` (as
        :func:`skimage.filters.threshold_multiotsu` returns them: the last
        value of the lower class).  A value equal to a threshold belongs to the
        *lower* class: ``np.searchsorted(thresholds, x, side="left")`` (or
        ``np.digitize(x, thresholds, right=True)``) gives the class of ``x``.
        Empty classes (a fixed value no value is nearest to) repeat the
        previous threshold; ``-inf`` before any value.
    cost : float
        The weighted sum of squared distances to the centres: the global
        minimum over ``k`` centres (integers when ``integer_centres``).
    """

    centres: np.ndarray
    fixed: np.ndarray
    labels: np.ndarray
    thresholds: np.ndarray
    cost: float


# --------------------------------------------------------------------------- sums


@helper
def _dd_diff(hi, lo, col, j, i):
    # (hi[j] + lo[j]) - (hi[i] + lo[i]) with the rounding error of the hi part
    # recovered (Knuth's TwoSum): the run's sum stays accurate to its own size,
    # not the size of the whole prefix.
    a = hi[j, col]
    b = -hi[i, col]
    s = a + b
    bb = s - a
    err = (a - (s - bb)) + (b - bb)
    return s + (err + (lo[j, col] - lo[i, col]))


@kernel
def _dd_prefix(terms, out_hi, out_lo):
    # Compensated running sums (Neumaier): hi + lo carries ~106 bits.  terms is
    # (n, 3); the sums are (n + 1, 3), one row per prefix (the three sums of a
    # prefix share a cache line).
    for col in range(terms.shape[1]):
        hi = 0.0
        lo = 0.0
        out_hi[0, col] = 0.0
        out_lo[0, col] = 0.0
        for t in range(terms.shape[0]):
            x = terms[t, col]
            s = hi + x
            if abs(hi) >= abs(x):
                lo += (hi - s) + x
            else:
                lo += (x - s) + hi
            hi = s
            out_hi[t + 1, col] = hi
            out_lo[t + 1, col] = lo


@helper
def _run_cost(isums, hi, lo, mode, i, j):
    """Weighted squared error of values ``i .. j-1`` around their best centre."""
    if mode == 0 or mode == 1:
        w = isums[j, 0] - isums[i, 0]
        s1 = isums[j, 1] - isums[i, 1]
        s2 = isums[j, 2] - isums[i, 2]
        if mode == 1:
            # Nearest integer to s1 / w (values are shifted to be >= 0); a tie
            # costs the same either side.
            c = (2 * s1 + w) // (2 * w)
            return float(s2 - 2 * c * s1 + c * c * w)
        # About the integer pivot c = floor(mean): exact integer part, then the
        # fractional remainder r / w (0 <= r < w) in float.
        c = s1 // w
        r = s1 - c * w
        return float(s2 - 2 * c * s1 + c * c * w) - float(r) * float(r) / float(w)
    w = _dd_diff(hi, lo, 0, j, i)
    s1 = _dd_diff(hi, lo, 1, j, i)
    s2 = _dd_diff(hi, lo, 2, j, i)
    if mode == 3:
        c = np.floor(s1 / w + 0.5)
        value = s2 - 2.0 * c * s1 + c * c * w
    else:
        value = s2 - s1 * s1 / w
    return max(value, 0.0)


@helper
def _cost_int_int(isums, hi, lo, mode, i, j):
    # _run_cost of integer sums and centres (the common case: integer images),
    # with no test of the mode: the programme is compiled once per cost.
    w = isums[j, 0] - isums[i, 0]
    s1 = isums[j, 1] - isums[i, 1]
    s2 = isums[j, 2] - isums[i, 2]
    c = (2 * s1 + w) // (2 * w)
    return float(s2 - 2 * c * s1 + c * c * w)


# ------------------------------------------------------------------------ programme
#
# The table of choices is stored in a window: with ``n`` free runs, row ``q``
# (q free runs so far) only ever ends at ``j`` in ``[q, L - n + q]`` (every run
# holds a value; the runs still to come need one each), so ``arg[q, f, j - q]``
# has ``L - n + 1`` columns, not ``L + 1`` (k = 255 on 256 levels: 2 columns).


@helper
def _free_row_full(prev, out, choice, q, isums, hi, lo, mode, j_low, j_high):
    # out[j] = min over i < j of prev[i] + cost(i, j), every i tried.
    first = q - 1  # the previous row ends no earlier
    while first < prev.shape[0] and prev[first] == np.inf:
        first += 1
    for j in range(max(j_low, first + 1), j_high + 1):
        best = np.inf
        best_i = -1
        for i in range(first, j):
            if prev[i] == np.inf:
                continue
            value = prev[i] + _run_cost(isums, hi, lo, mode, i, j)
            if value < best:
                best = value
                best_i = i
        out[j] = best
        choice[j - q] = best_i


@helper
def _free_row_dc(
    prev, out, choice, below, q, isums, hi, lo, mode, j_low, j_high, bound, stack, cost
):
    # The same row by divide and conquer: the leftmost argmin is monotone in j
    # (quadrangle inequality), so the middle j's argmin splits the i range of
    # the two halves.  An explicit stack instead of recursion.  With ``bound``
    # (no fixed values), the previous row's argmin arg[q - 1, 0, j - q + 1]
    # bounds this row's from below: with one run more the last run starts no
    # earlier (the same inequality; Knuth's bound), which narrows the search
    # (uint16, k = 256: 2x fewer cost evaluations).  Starts are searched
    # between the first and the last reachable end of the previous row (in the
    # first row: 0 only); it ends no earlier than q - 1.
    first = q - 1
    while first < prev.shape[0] and prev[first] == np.inf:
        first += 1
    j_low = max(j_low, first + 1)
    if j_low > j_high:
        return
    last = j_high - 1
    while last > first and prev[last] == np.inf:
        last -= 1
    width = choice.shape[0]
    stack[0, 0] = j_low
    stack[0, 1] = j_high
    stack[0, 2] = first
    stack[0, 3] = last
    top = 1
    while top > 0:
        top -= 1
        lo_j = stack[top, 0]
        hi_j = stack[top, 1]
        lo_i = stack[top, 2]
        hi_i = stack[top, 3]
        mid = (lo_j + hi_j) // 2
        stop = min(hi_i, mid - 1)
        start = lo_i
        if bound and q > 1 and mid - q + 1 < width:
            start = max(start, np.int64(below[mid - q + 1]))
        start = min(start, stop)  # never an empty range (rounding)
        best = np.inf
        best_i = start
        for i in range(start, stop + 1):
            # prev[i] = inf (unreachable) never wins: no test needed.
            value = prev[i] + cost(isums, hi, lo, mode, i, mid)
            if value < best:
                best = value
                best_i = i
        out[mid] = best
        choice[mid - q] = best_i
        if mid + 1 <= hi_j:
            stack[top, 0] = mid + 1
            stack[top, 1] = hi_j
            stack[top, 2] = best_i
            stack[top, 3] = hi_i
            top += 1
        if lo_j <= mid - 1:
            stack[top, 0] = lo_j
            stack[top, 1] = mid - 1
            stack[top, 2] = lo_i
            stack[top, 3] = best_i
            top += 1


@helper
def _fixed_row(prev, out, arg, kind, q, f, values, weights, fixed_value, j_low, j_high):
    # The last run's centre is a given value, and the run may be empty (no
    # value nearest to it): T[j] = min(prev[j], T[j-1] + w (x - f)^2) is the
    # best over every start, accumulated with no prefix-sum cancellation.
    run = np.inf
    start = -1
    for j in range(j_low, j_high + 1):  # prev[j] is unreachable below j_low = q
        if j > 0 and run < np.inf:
            d = values[j - 1] - fixed_value
            run += weights[j - 1] * d * d
        if prev[j] <= run:
            run = prev[j]
            start = j
        if run < out[j]:
            out[j] = run
            arg[q, f, j - q] = start
            kind[q, f, j - q] = 1


@kernel
def _programme(isums, hi, lo, mode, values, weights, fixed, n_free, full, arg, kind):
    """D[n_free, n_fixed, L]; fills the choices ``arg`` / ``kind`` (windowed)."""
    n_levels = values.shape[0]
    n_fixed = fixed.shape[0]
    size = n_levels + 1
    previous = np.full((n_fixed + 1, size), np.inf)
    current = np.full((n_fixed + 1, size), np.inf)
    stack = np.empty((64, 4), np.int64)
    for q in range(n_free + 1):
        # Runs still to come need one value each: j <= L - (n_free - q).
        j_high = n_levels - (n_free - q)
        for f in range(n_fixed + 1):
            # This buffer held row q - 2, reachable at q - 2 .. j_high - 2 only:
            # resetting that window keeps the work per row O(window), not O(L).
            row = current[f]
            row[max(q - 2, 0) : j_high + 1] = np.inf
            if q == 0 and f == 0:
                row[0] = 0.0
                continue
            if q > 0:
                # The last row is read at j = L only (with no fixed values: rows of
                # fixed centres chain from every end of the row before them).
                j_low = n_levels if q == n_free and n_fixed == 0 else q
                if full:
                    _free_row_full(
                        previous[f], row, arg[q, f], q, isums, hi, lo, mode, j_low, j_high
                    )
                else:
                    # Knuth's bound holds for runs with free centres only.
                    below = arg[q - 1, 0]
                    # One call site per run-cost function: numba specialises the row
                    # kernel on the function passed, and a variable holding either one
                    # would not type.
                    if mode == 1:
                        _free_row_dc(
                            previous[f],
                            row,
                            arg[q, f],
                            below,
                            q,
                            isums,
                            hi,
                            lo,
                            mode,
                            j_low,
                            j_high,
                            n_fixed == 0,
                            stack,
                            _cost_int_int,
                        )
                    else:
                        _free_row_dc(
                            previous[f],
                            row,
                            arg[q, f],
                            below,
                            q,
                            isums,
                            hi,
                            lo,
                            mode,
                            j_low,
                            j_high,
                            n_fixed == 0,
                            stack,
                            _run_cost,
                        )
            if f > 0:
                _fixed_row(
                    current[f - 1], row, arg, kind, q, f, values, weights, fixed[f - 1], q, j_high
                )
        previous, current = current, previous
    return previous[n_fixed, n_levels]


# ------------------------------------------------------------- penalised programme
#
# Integer data with integer centres have integer run costs, and the optimal cost
# F(m) with m runs is convex in m (the quadrangle inequality).  So for an
# integer penalty lam per run, min over partitions of cost + lam * runs is
# reached at every m with F(m - 1) - F(m) >= lam >= F(m) - F(m + 1), and
# lam = F(k) - F(k + 1) reaches k.  That problem has no rows: one pass over the
# ends, each run's start found among candidates kept in a queue (a later start,
# once better, stays better: the same inequality), O(L log L) per pass, exact
# in int64.  A search over lam (6-18 passes; see _lagrangian) costs about the
# same for any k: uint16 at k = 256 0.09 s against 0.8 s for the rows, at
# k = 4096 0.11 s against ~20 s (Aggarwal, Schieber & Tokuyama, "Finding a
# minimum-weight k-link path in graphs with the concave Monge property and
# applications", 1994).


@helper
def _int_cost(isums, i, j):
    w = isums[j, 0] - isums[i, 0]
    s1 = isums[j, 1] - isums[i, 1]
    s2 = isums[j, 2] - isums[i, 2]
    c = (2 * s1 + w) // (2 * w)
    return s2 - 2 * c * s1 + c * c * w


@helper
def _later_is_better(isums, best, runs, fewer, later, earlier, j):
    # Penalised cost of ending a run at j after `later` against after `earlier`;
    # equal costs are told apart by the run count (fewer or more runs first).
    a = best[later] + _int_cost(isums, later, j)
    b = best[earlier] + _int_cost(isums, earlier, j)
    if a != b:
        return a < b
    if fewer:
        return runs[later] < runs[earlier]
    return runs[later] > runs[earlier]


@kernel
def _penalised(isums, lam, fewer, parent):
    """min over partitions of cost + lam * runs; returns (runs, cost); ``parent``
    gets each end's run start (the optimum with the fewest or the most runs)."""
    n = isums.shape[0] - 1
    best = np.empty(n + 1, np.int64)
    runs = np.empty(n + 1, np.int64)
    best[0] = 0
    runs[0] = 0
    queue = np.empty(n + 1, np.int64)  # candidate starts ...
    since = np.empty(n + 1, np.int64)  # ... and the first end each is best for
    head = 0
    tail = 0
    for j in range(1, n + 1):
        new = j - 1
        while tail > head and _later_is_better(
            isums, best, runs, fewer, new, queue[tail - 1], max(since[tail - 1], j)
        ):
            tail -= 1
        if tail == head:
            queue[tail] = new
            since[tail] = j
            tail += 1
        else:
            last = queue[tail - 1]
            low = max(since[tail - 1], j)  # not better there
            if _later_is_better(isums, best, runs, fewer, new, last, n):
                high = n  # better there
                while high - low > 1:
                    middle = (low + high) // 2
                    if _later_is_better(isums, best, runs, fewer, new, last, middle):
                        high = middle
                    else:
                        low = middle
                queue[tail] = new
                since[tail] = high
                tail += 1
        while tail - head >= 2 and since[head + 1] <= j:
            head += 1
        start = queue[head]
        best[j] = best[start] + _int_cost(isums, start, j) + lam
        runs[j] = runs[start] + 1
        parent[j] = start
    return runs[n], best[n] - lam * runs[n]


def _bounds(parent, n):
    out = [n]
    while out[-1] > 0:
        out.append(int(parent[out[-1]]))
    return np.array(out[::-1], np.int64)


def _lagrangian(isums, k):
    """Run boundaries (k + 1 of them) of an optimal k-run partition, and its cost."""
    n = isums.shape[0] - 1
    parent = np.empty(n + 1, np.int64)
    if k == 1:
        return np.array([0, n], np.int64)
    # Wanted: a lam with fewest(lam) <= k <= most(lam).  Known points of F: (n, 0)
    # (every value its own centre) and (1, F(1)).  Between points (m_h, F_h) and
    # (m_l, F_l), m_h < k < m_l, try the slope s of the chord, floor'd: the slopes
    # F(m - 1) - F(m) are integers, so either all of them between are s (an edge
    # of F: both ends optimal at s, fewest(s) <= m_h, done) or fewest(s) falls
    # strictly between m_h and m_l, a new point.  Usually a few passes (~10 for
    # uint16, against ~45 for bisection, kept as the fallback).
    low, high = -1, int(_int_cost(isums, 0, n)) + 1
    m_l, cost_l, m_h, cost_h = n, 0, 1, high - 1
    for _ in range(64):
        lam = (cost_h - cost_l) // (m_l - m_h)
        runs, cost = _penalised(isums, lam, True, parent)
        if runs == k:
            return _bounds(parent, n)
        if runs <= m_h:
            high = lam
            break
        if runs < k:
            m_h, cost_h, high = runs, cost, lam
        else:
            m_l, cost_l, low = runs, cost, lam
    else:
        # The smallest lam whose fewest-run optimum has at most k runs.
        while high - low > 1:
            middle = (low + high) // 2
            runs, _ = _penalised(isums, middle, True, parent)
            if runs <= k:
                high = middle
            else:
                low = middle
    fewest, _ = _penalised(isums, high, True, parent)
    few = _bounds(parent, n)
    if fewest == k:
        return few
    most, _ = _penalised(isums, high, False, parent)
    many = _bounds(parent, n)
    if most == k:
        return many
    # fewest < k < most, both optimal for lam: where a run [m_j, m_j+1] of the
    # many-run optimum lies inside a run [f_i, f_i+1] of the other, the many-run
    # prefix up to m_j then the few-run suffix from f_i+1 is optimal for lam too
    # (exchange by the quadrangle inequality), with j + 1 + fewest - i - 1 runs;
    # j - i grows by at most 1 per run of the many-run optimum, from 0 to
    # most - fewest, and only at such nested runs: some j gives k runs.
    i = 0
    for j in range(most):
        while few[i + 1] <= many[j]:
            i += 1
        if many[j + 1] <= few[i + 1] and j - i == k - fewest:
            return np.concatenate([many[: j + 1], few[i + 1 :]])
    raise AssertionError("no k-run optimum found")  # pragma: no cover


# --------------------------------------------------------------------------- driver


def table_bytes(n_levels: int, k: int, n_fixed: int = 0) -> int:
    """Memory :func:`fit` holds for its table of choices, in bytes.

    With ``n = min(k - n_fixed, L)`` free runs the table has ``(n + 1) *
    (n_fixed + 1) * (L - n + 1)`` entries (a row of ``q`` runs only ends at
    ``q .. L - n + q``): an int32 start each, and an int8 kind (free or fixed
    run) when there are fixed values.  uint16 at k = 256: 67 MB; a float image
    of 10 M distinct values at k = 256: 10 GB.  No table at all when every
    value is its own centre (``k >= L``, no fixed values).
    """
    n_free = min(k - n_fixed, n_levels)
    if n_fixed == 0 and n_free >= n_levels:
        return 0
    per_entry = 5 if n_fixed else 4
    return per_entry * (n_free + 1) * (n_fixed + 1) * (n_levels - n_free + 1)


# Budgets of the exact path (a caller falls back to its heuristic beyond them):
# the table of choices, and cost evaluations, estimated as n W log2 W for n free
# runs and rows W = L - n + 1 wide (~4-6 ns each here: uint16 at k = 256 is
# 2.7e8, ~1 s; the budget ~2-3 s).
MAX_TABLE_BYTES = 2**28
MAX_EVALUATIONS = 2**29


def evaluations(n_levels: int, k: int, n_fixed: int = 0) -> float:
    """The work :func:`fit` budgets for: cost evaluations, ``n W log2 W`` per fixed
    value + 1 (divide and conquer over rows of ``W = L - n + 1`` ends), plus
    ``n W`` per fixed value for the rows whose last centre is fixed."""
    n_free = min(k - n_fixed, n_levels)
    if n_fixed == 0 and n_free >= n_levels:
        return 0.0
    width = n_levels - n_free + 1
    per_row = width * max(np.log2(max(width, 2)), 1.0)
    return (max(n_free, 1) * (n_fixed + 1) * per_row) + (n_free + 1) * n_fixed * width


def _lagrangian_work(n_levels: int, passes: int = 24) -> float:
    """Cost evaluations of the penalised programme: ~2 log2 L + 4 per value and pass
    (uint16: 6-18 passes for k = 16 ... 30 000)."""
    return passes * n_levels * (2 * max(np.log2(max(n_levels, 2)), 1.0) + 4)


def affordable(n_levels: int, k: int, n_fixed: int = 0, integer: bool = False) -> bool:
    """Whether :func:`fit` stays within ``MAX_TABLE_BYTES`` and ``MAX_EVALUATIONS``.

    True for uint8 and 12-bit data at any k, uint16 up to k = 512, and for any ``k`` at
    least the number of levels (no fixed values: each level its own centre) or
    close to it (uint16 at k = 65 000: rows 537 ends wide); false for, e.g., a
    float image of 10 M distinct values, or uint16 at k = 4096.

    ``integer``: the values and weights are integers (an integer image's
    histogram, whose sums w x^2 fit int64: fewer than 2^61 / range^2 pixels)
    and the centres are integers.  With no fixed values the penalised
    programme then takes any k for up to ~540 000 levels (uint16 at k = 4096:
    0.11 s), with O(L) memory.
    """
    if integer and n_fixed == 0 and _lagrangian_work(n_levels) <= MAX_EVALUATIONS:
        return True
    return (
        table_bytes(n_levels, k, n_fixed) <= MAX_TABLE_BYTES
        and evaluations(n_levels, k, n_fixed) <= MAX_EVALUATIONS
    )


def _is_integral(a: np.ndarray) -> bool:
    return bool(np.all(np.isfinite(a)) and np.all(a == np.round(a)))


def _check(values, weights, k, fixed):
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights)
    if values.ndim != 1 or weights.shape != values.shape:
        raise ValueError("values and weights must be 1-D arrays of the same length")
    if not np.all(np.isfinite(values)):
        raise ValueError("values must be finite")
    if values.size > 1 and not np.all(np.diff(values) > 0):
        raise ValueError("values must be sorted and distinct")
    if weights.dtype.kind not in "uif" or not np.all(np.isfinite(weights)) or np.any(weights < 0):
        raise ValueError("weights must be finite and non-negative")
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    fixed = np.unique(np.asarray([] if fixed is None else fixed, dtype=np.float64).ravel())
    if not np.all(np.isfinite(fixed)):
        raise ValueError("fixed values must be finite")
    if fixed.size > k:
        raise ValueError(f"{fixed.size} fixed values but only k={k} centres")
    keep = weights > 0
    return values[keep], weights[keep], int(k), fixed


def integer_sums(values, weights) -> bool:
    """Whether the weighted sums of ``values`` are kept exactly in int64: integer values
    and weights with ``sum(w) * range^2`` below 2^61 (so every run cost stays in int64).
    What the penalised programme needs (``affordable(..., integer=True)``)."""
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights)
    if not values.size:
        return False
    if not (_is_integral(values) and _is_integral(weights) and np.abs(values).max() < 2.0**52):
        return False
    span = float(values.max() - values.min())
    return float(weights.sum()) * max(span, 1.0) ** 2 < _INT_LIMIT


def _sums(values, weights, integer_centres):
    """Prefix sums (one row per prefix) and the run-cost mode; values shifted by a pivot."""
    n = values.size
    dummy_int = np.zeros((1, 3), np.int64)
    if integer_sums(values, weights):
        shift = float(values[0])
        x = (values - shift).astype(np.int64)
        w = weights.astype(np.int64)
        isums = np.zeros((n + 1, 3), np.int64)
        np.cumsum(w, out=isums[1:, 0])
        np.cumsum(w * x, out=isums[1:, 1])
        np.cumsum(w * x * x, out=isums[1:, 2])
        empty = np.zeros((1, 3))
        mode = _INT_INT if integer_centres else _INT_REAL
        return mode, shift, isums, empty, empty
    # A pivot near the middle keeps the shifted values small (less cancellation
    # in s2 - s1^2 / w); an integer pivot keeps integer centres integers.
    shift = float(np.round(values[n // 2])) if integer_centres else float(values[n // 2])
    x = values - shift
    w = weights.astype(np.float64)
    terms = np.stack([w, w * x, w * x * x], axis=1)
    hi = np.empty((n + 1, 3))
    lo = np.empty((n + 1, 3))
    _dd_prefix(terms, hi, lo)
    mode = _FLOAT_INT if integer_centres else _FLOAT_REAL
    return mode, shift, dummy_int, hi, lo


def fit(
    values,
    weights,
    k: int,
    *,
    fixed=None,
    integer_centres: bool = False,
    method: str = "auto",
) -> Exact1D:
    """Globally optimal k-means of a weighted 1-D histogram.

    Parameters
    ----------
    values : array_like of float, shape (L,)
        The distinct values, strictly increasing (a histogram's occupied bins).
    weights : array_like, shape (L,)
        Non-negative weights of the values: pixel counts (integers: the sums are
        then exact) or sample weights.  Values of weight zero are ignored.
    k : int
        Number of centres, fixed ones included.
    fixed : array_like of float, optional
        Values that must be centres (fixed palette colours).  Each is a centre
        whatever it costs; the other ``k - len(fixed)`` centres are placed
        optimally around them.
    integer_centres : bool
        Minimise over integer centres (the palette of an integer image): not
        the rounded real optimum, which can be up to ~1 % worse.
    method : {"auto", "full", "dc", "lagrangian"}
        ``"full"``: the O(k L^2) programme; ``"dc"``: divide and conquer,
        O(k L log L); ``"lagrangian"``: a penalty per run, bisected, O(L log L
        log cost) whatever k (integer data, integer centres, no fixed values
        only); ``"auto"``: full up to ``FULL_MAX_LEVELS`` values, then the
        cheaper of the other two by :func:`evaluations`.  All are exact.

    Returns
    -------
    Exact1D
        Centres, classes, thresholds and the optimal cost.

    Notes
    -----
    The result is the global optimum (up to float rounding of the total, and
    exactly in the run costs for integer data), not a local one: the
    programme looks at every partition of the sorted values into contiguous
    runs, and an optimal clustering is one (Wang & Song 2011).

    References
    ----------
    .. [1] H. Wang and M. Song, "Ckmeans.1d.dp: Optimal k-means clustering in
       one dimension by dynamic programming", The R Journal 3(2):29-33, 2011.
    .. [2] A. Grønlund, K. G. Larsen, A. Mathiasen, J. S. Nielsen, S. Schneider
       and M. Song, "Fast exact k-means, k-medians and Bregman divergence
       clustering in 1D", arXiv:1701.07204, 2017.
    """
    values, weights, k, fixed = _check(values, weights, k, fixed)
    if method not in ("auto", "full", "dc", "lagrangian"):
        raise ValueError(f"method must be 'auto', 'full', 'dc' or 'lagrangian', got {method!r}")
    if integer_centres and not _is_integral(fixed):
        raise ValueError("fixed values must be integers when integer_centres is set")
    n_levels = values.size
    n_fixed = fixed.size
    if n_levels == 0:
        if n_fixed == 0:
            raise ValueError("no values of positive weight")
        return Exact1D(
            fixed,
            np.ones(n_fixed, bool),
            np.zeros(0, np.intp),
            np.full(n_fixed - 1, -np.inf),
            0.0,
        )
    n_free = min(k - n_fixed, n_levels)
    if n_fixed == 0 and n_free == n_levels and (not integer_centres or _is_integral(values)):
        # As many centres as values: each value is its own class, at no cost.
        return Exact1D(
            values.copy(),
            np.zeros(n_levels, bool),
            np.arange(n_levels, dtype=np.intp),
            values[:-1].copy(),
            0.0,
        )
    full = method == "full" or (method == "auto" and n_levels <= FULL_MAX_LEVELS)
    mode, shift, isums, hi, lo = _sums(values, weights, integer_centres)
    weights_f = weights.astype(np.float64)

    total = int(_int_cost(isums, 0, n_levels)) if mode == _INT_INT else 0
    # Penalised costs stay below 4 F(1): no int64 overflow below 2^61.
    penalised = mode == _INT_INT and n_fixed == 0 and total < 2**60
    if method == "lagrangian" and not penalised:
        raise ValueError("method='lagrangian' needs integer data, integer centres, no fixed values")
    if penalised and (
        method == "lagrangian"
        or (
            method == "auto"
            and not full
            and _lagrangian_work(n_levels, 16) < evaluations(n_levels, k)
        )
    ):
        bounds = _lagrangian(isums, n_free)
        starts, ends = bounds[:-1], bounds[1:]
        which = np.full(n_free, -1, np.int64)
        cost = float(sum(int(_int_cost(isums, a, b)) for a, b in zip(starts, ends, strict=True)))
    else:
        width = n_levels - n_free + 1
        arg = np.full((n_free + 1, n_fixed + 1, width), -1, np.int32)
        kind_shape = (n_free + 1, n_fixed + 1, width) if n_fixed else (1, 1, 1)
        kind = np.zeros(kind_shape, np.int8)
        cost = _programme(isums, hi, lo, mode, values, weights_f, fixed, n_free, full, arg, kind)
        cost = float(cost)
        starts, ends, which = _walk(arg, kind, n_free, n_fixed, n_levels)
    free = which < 0
    centres = np.empty(len(starts))
    centres[~free] = fixed[which[~free]]
    i, j = starts[free], ends[free]
    if mode in (_INT_REAL, _INT_INT):
        # Exact rationals: the run's mean is shift + s1 / q (s1 >= 0: values shifted to
        # be >= 0), its nearest integer ties to even.
        s1 = isums[j, 1] - isums[i, 1]
        q = isums[j, 0] - isums[i, 0]
        if integer_centres:
            low, rest = np.divmod(s1, q)
            odd = (low + int(shift) % 2) % 2 == 1
            low += (2 * rest > q) | ((2 * rest == q) & odd)
            centres[free] = low.astype(np.float64) + shift
        else:
            base = int(shift)
            centres[free] = [(int(a) + base * int(b)) / int(b) for a, b in zip(s1, q, strict=True)]
    else:
        means = [
            float(np.average(values[a:b], weights=weights[a:b])) for a, b in zip(i, j, strict=True)
        ]
        centres[free] = np.rint(means) if integer_centres else means
    # An empty fixed run costs nothing wherever the programme put it: list the
    # classes in increasing order of centre (the runs that hold values already
    # are; a stable sort keeps them so).
    order = np.argsort(centres, kind="stable")
    starts, ends, free = starts[order], ends[order], free[order]
    labels = np.repeat(np.arange(len(order), dtype=np.intp), ends - starts)
    if mode in (_FLOAT_REAL, _FLOAT_INT):
        # The programme's total adds up each run's s2 - s1^2 / w, whose rounding
        # is that of s2 (a singleton run costs ~1 ulp of w x^2, not 0): over many
        # runs (20 000 floats at k = 19 990: 2e-4 relative) the total drifts.  The
        # partition is right; its cost is summed again from the values, exactly
        # rounded.
        d = values - centres[order][labels]
        cost = math.fsum(weights_f * d * d)
    return Exact1D(centres[order], ~free, labels, _thresholds(starts, ends, values), cost)


@kernel
def _walk(arg, kind, n_free, n_fixed, n_levels):
    """The runs of the optimum, read back from (all runs, all values): start, end, and
    the fixed value's index (-1 for a free centre), in order of position."""
    n = n_free + n_fixed
    starts = np.empty(n, np.int64)
    ends = np.empty(n, np.int64)
    which = np.full(n, -1, np.int64)
    q, f, j = n_free, n_fixed, n_levels
    for index in range(n - 1, -1, -1):
        i = arg[q, f, j - q]
        starts[index] = i
        ends[index] = j
        if n_fixed > 0 and kind[q, f, j - q] == 1:
            which[index] = f - 1
            f -= 1
        else:
            q -= 1
        j = i
    return starts, ends, which


def _thresholds(starts, ends, values):
    """The largest value of classes 0 .. i, for i < n - 1 (-inf before any value)."""
    last = np.full(len(starts), -np.inf)
    held = ends > starts
    last[held] = values[ends[held] - 1]
    return np.maximum.accumulate(last)[:-1] if len(last) else last


def fit_points(values, weights, k: int, *, fixed=None, integer_centres: bool = False):
    """:func:`fit` on 1-D points in any order: the shape the k-means engine works in.

    Parameters
    ----------
    values : array_like of float, shape (n,)
        Distinct values (a one-channel histogram's colours), in any order.
    weights : array_like, shape (n,)
        Their weights (pixel counts or votes).
    k : int
        Number of centres, fixed ones included.
    fixed : array_like of float, shape (m,), optional
        Values that must be centres.
    integer_centres : bool
        Minimise over integer centres (integer images).

    Returns
    -------
    centres : ndarray of float64, shape (n_centres,)
        The fixed values first, in the given order, then the other centres in
        increasing order (the engine's convention).
    labels : ndarray of intp, shape (n,)
        Each value's centre, an index into ``centres``; values of weight 0
        are labelled with their nearest centre.
    result : Exact1D
        The optimum in sorted order (cost, thresholds).
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    weights = np.asarray(weights).ravel()
    order = np.argsort(values, kind="stable")
    fixed_given = np.asarray([] if fixed is None else fixed, dtype=np.float64).ravel()
    result = fit(
        values[order], weights[order], k, fixed=fixed_given, integer_centres=integer_centres
    )
    free = result.centres[~result.fixed]
    centres = np.concatenate([fixed_given, free])
    # Sorted-class index -> engine index (fixed values by their given position).
    to_engine = np.empty(len(result.centres), np.intp)
    to_engine[~result.fixed] = len(fixed_given) + np.arange(len(free))
    to_engine[result.fixed] = [
        int(np.flatnonzero(fixed_given == v)[0]) for v in result.centres[result.fixed]
    ]
    labels = np.empty(len(values), np.intp)
    positive = np.asarray(weights[order]) > 0
    sorted_labels = np.empty(len(values), np.intp)
    sorted_labels[positive] = to_engine[result.labels]
    if not positive.all():
        # Weight-0 values took no part: nearest centre (ties to the lower index).
        distance = np.abs(values[order][~positive, None] - centres[None, :])
        sorted_labels[~positive] = distance.argmin(axis=1)
    labels[order] = sorted_labels
    return centres, labels, result
