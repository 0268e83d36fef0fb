"""Weighted k-means on a colour histogram, with a bounded reduction for huge histograms.

scikit-learn's ``KMeans(...).fit(X, sample_weight=counts)`` on the distinct
colours is the same problem as k-means on every pixel.  ``weighted_kmeans``
runs its k-means++ starts on a grid reduction of at most ``START_CELLS`` cell
centroids (weighted by pixel counts), searches by swapping centres, then
converges on finer levels: a grid of at most ``MAX_GRID_CELLS`` cells when the
histogram has more than ``MAX_EXACT_POINTS`` colours (noisy 12 MP photos have
~10**6), and the exact histogram last.  The benchmark measures what the
reduction costs in MSE.
"""

from __future__ import annotations

import contextlib

import numpy as np

# scikit-learn is imported where it is used: it takes ~1.5 s to import, which
# every command-line call and `import napari_kmeans_filter` would pay.

MAX_EXACT_POINTS = 2**17
MAX_GRID_CELLS = 2**16
START_CELLS = 2**15
# Lloyd iterations when polishing a small exact histogram to tol=0.
MAX_POLISH_ITER = 100
# The finest grid tried has at most this many cells (a dense occupancy count).
MAX_GRID_BINS_TOTAL = 2**21
# Lloyd iterations on the exact histogram after a start found on the grid; the
# grid start is already within a cell width of a local optimum, so few suffice.
MAX_REFINE_ITER = 10
# k-means++ starts for n_init="auto": 8 on histograms small enough to fit
# exactly (they decide between local optima that differ by ~0.5 % MSE on the
# sample photos), 4 on reduced ones, where each start costs more.
DEFAULT_N_INIT = 8
DEFAULT_N_INIT_LARGE = 4
# Swap-search trials after the best start (see _swap_search).
N_SWAP_TRIALS = 8
MAX_SWAP_CLUSTERS = 512
# Below this many points, scikit-learn's OpenMP threads cost more than they
# save: measured here, a 25 k-point fit took 0.02-0.03 s on one thread and
# 0.03-0.4 s on two (the slow end whenever another process holds a core).
SINGLE_THREAD_POINTS = 2**17

_threadpools = None


def _thread_limit(n_points):
    """A context manager limiting OpenMP and BLAS to one thread for small problems."""
    global _threadpools
    if n_points >= SINGLE_THREAD_POINTS:
        return contextlib.nullcontext()
    if _threadpools is None:
        # The controller only sees the OpenMP runtime of libraries already
        # loaded: import scikit-learn's k-means first.
        import sklearn.cluster  # noqa: F401
        from threadpoolctl import ThreadpoolController

        _threadpools = ThreadpoolController()
    return _threadpools.limit(limits=1)


def grid_reduce(points: np.ndarray, weights: np.ndarray, max_cells: int = MAX_GRID_CELLS):
    """Weighted centroids of the non-empty cells of the finest regular grid that has
    at most ``max_cells`` non-empty cells.

    The grid has the same number of bins along every dimension (a power of two,
    so that a coarser grid is the finer one shifted right by a bit); a centroid
    is the weighted mean of the points in its cell, so the reduction loses only
    the spread inside cells, which shrinks as the grid adapts to the data.
    """
    n_dims = points.shape[1]
    finest_bits = max(1, min(int(np.log2(MAX_GRID_BINS_TOTAL) // n_dims), 62 // n_dims))
    low = points.min(axis=0)
    span = points.max(axis=0) - low
    span[span == 0] = 1.0
    finest_bins = 2**finest_bits
    bin_of = [
        np.minimum(
            ((points[:, d] - low[d]) / span[d] * finest_bins).astype(np.int64), finest_bins - 1
        )
        for d in range(n_dims)
    ]
    for coarsen in range(finest_bits):
        bits = finest_bits - coarsen
        cell_index = np.zeros(points.shape[0], dtype=np.int64)
        for d in range(n_dims):
            cell_index = (cell_index << bits) | (bin_of[d] >> coarsen)
        if bits * n_dims <= 24:
            # A dense count is ~5x faster than np.unique here (0.55 s lost at 12 MP).
            present = np.bincount(cell_index, minlength=2 ** (bits * n_dims)) > 0
            n_occupied, occupied = int(np.count_nonzero(present)), None
        else:
            # Many channels: a dense count would need 2**(bits*dims) bins; sort.
            occupied = np.unique(cell_index)
            n_occupied = occupied.shape[0]
        if n_occupied <= max_cells or bits == 1:
            break
    if occupied is None:
        cell_index = (np.cumsum(present) - 1)[cell_index]
    else:
        cell_index = np.searchsorted(occupied, cell_index)
    cell_weights, cell_sums = weighted_sums(cell_index, weights, points)
    keep = cell_weights > 0
    return cell_sums[keep] / cell_weights[keep, np.newaxis], cell_weights[keep]


def weighted_sums(index, weights, points, minlength=0):
    """Per group ``index``: the total weight and the weighted sum of ``points`` (n, d)."""
    totals = np.bincount(index, weights=weights, minlength=minlength)
    sums = np.empty((totals.shape[0], points.shape[1]))
    for dim in range(points.shape[1]):
        sums[:, dim] = np.bincount(index, weights=weights * points[:, dim], minlength=minlength)
    return totals, sums


def _fit_once(points, weights, n_clusters, init, max_iter, tol, seed):
    with _thread_limit(points.shape[0]):
        return _fit_once_unlimited(points, weights, n_clusters, init, max_iter, tol, seed)


def _fit_once_unlimited(points, weights, n_clusters, init, max_iter, tol, seed):
    from sklearn.cluster import KMeans

    model = KMeans(
        n_clusters=n_clusters,
        init=init,
        n_init=1,
        max_iter=max_iter,
        tol=tol,
        random_state=seed,
        algorithm="lloyd",
    )
    model.fit(points, sample_weight=weights)
    return model.cluster_centers_, float(model.inertia_), int(model.n_iter_), model.labels_


def weighted_kmeans(
    points,
    weights,
    n_clusters,
    *,
    init="k-means++",
    n_init=None,
    max_iter=300,
    tol=1e-4,
    random_state=None,
    progress=None,
):
    """Cluster weighted ``points`` into ``n_clusters``; returns ``(centres, n_iter)``.

    The caller guarantees more distinct points than clusters.  ``random_state``
    is a ``np.random.RandomState``; each start gets its own seed drawn from it,
    so results are reproducible.  ``progress(fraction)`` is called after every
    start and refinement stage.

    Large histograms go through a pyramid: the k-means++ starts run on a coarse
    grid reduction (at most ``START_CELLS`` cells), the best start converges on
    a fine one (at most ``MAX_GRID_CELLS``), and Lloyd iterations on the exact
    histogram finish it (at most ``MAX_REFINE_ITER``).
    """
    report = progress or (lambda fraction: None)
    if n_init is None:
        n_init = DEFAULT_N_INIT if points.shape[0] <= MAX_EXACT_POINTS else DEFAULT_N_INIT_LARGE
    if not isinstance(init, str):
        # A user-given start: plain Lloyd on the exact histogram, which is the
        # same trajectory scikit-learn follows on every pixel from that start.
        centres, _, n_iter, _ = _fit_once(points, weights, n_clusters, init, max_iter, tol, None)
        report(1.0)
        return centres, n_iter

    # Coarse to exact; every level is (points, weights).
    levels = [(points, weights)]
    for max_cells in (MAX_GRID_CELLS, START_CELLS):
        if levels[0][0].shape[0] > max_cells:
            cells, cell_weights = grid_reduce(points, weights, max_cells)
            if n_clusters < cells.shape[0] < 0.7 * levels[0][0].shape[0]:
                levels.insert(0, (cells, cell_weights))
    if points.shape[0] <= MAX_EXACT_POINTS:
        # Small enough to polish until no label changes (tol=0): cheap, and it
        # closes the gap a relative tolerance leaves to the local optimum.
        exact_iter, exact_tol = min(max_iter, MAX_POLISH_ITER), 0.0
    else:
        exact_iter, exact_tol = min(max_iter, MAX_REFINE_ITER), tol
    n_steps = n_init + len(levels)

    start_points, start_weights = levels[0]
    seeds = random_state.randint(np.iinfo(np.int32).max, size=n_init)
    best = None
    total_iter = 0
    for start, seed in enumerate(seeds):
        centres, inertia, n_iter, labels = _fit_once(
            start_points, start_weights, n_clusters, "k-means++", max_iter, tol, seed
        )
        total_iter += n_iter
        if best is None or inertia < best[1]:
            best = (centres, inertia, labels)
        report((start + 1) / n_steps)
    # The search handles k x k matrices; above MAX_SWAP_CLUSTERS they cost
    # more memory and time than the search gains.
    n_swaps = N_SWAP_TRIALS if n_clusters <= MAX_SWAP_CLUSTERS else 0
    centres, n_iter = _swap_search(
        start_points, start_weights, *best, max_iter, tol, random_state, n_swaps
    )
    total_iter += n_iter
    for step, (level_points, level_weights) in enumerate(levels):
        is_exact = step == len(levels) - 1
        if step == 0 and not is_exact:
            continue  # the starts already converged on this level
        centres, _, n_iter, _ = _fit_once(
            level_points,
            level_weights,
            n_clusters,
            centres,
            exact_iter if is_exact else max_iter,
            exact_tol if is_exact else tol,
            None,
        )
        total_iter += n_iter
        report((n_init + step + 1) / n_steps)
    return centres, total_iter


def _swap_search(points, weights, centres, inertia, labels, max_iter, tol, rng, n_trials):
    """Escape Lloyd's local optimum by moving one centre at a time (a swap search).

    Each trial removes the centre whose cluster is cheapest to merge into its
    nearest neighbour (Ward's cost) and re-seeds it inside the cluster with the
    largest squared error, at a point drawn with probability proportional to
    its weighted squared distance (as k-means++ does); Lloyd then converges and
    the move is kept only if the inertia drops.  Local search of this kind is
    what lifts k-means above Lloyd's starts (Kanungo et al., "A local search
    approximation algorithm for k-means clustering", 2004).
    """
    total_iter = 0
    n_clusters = centres.shape[0]
    failures = 0  # after a rejected move, try the next-cheapest centre to remove
    for _ in range(n_trials):
        cluster_weight = np.bincount(labels, weights=weights, minlength=n_clusters)
        offsets = points - centres[labels]
        squared = np.einsum("ij,ij->i", offsets, offsets) * weights
        cluster_error = np.bincount(labels, weights=squared, minlength=n_clusters)
        norms = np.einsum("ij,ij->i", centres, centres)
        gaps = np.maximum(norms[:, np.newaxis] + norms[np.newaxis, :] - 2 * centres @ centres.T, 0)
        pair_weight = cluster_weight[:, np.newaxis] * cluster_weight[np.newaxis, :]
        total_weight = cluster_weight[:, np.newaxis] + cluster_weight[np.newaxis, :]
        merge_cost = np.where(total_weight > 0, pair_weight / np.maximum(total_weight, 1e-300), 0)
        merge_cost = merge_cost * gaps
        np.fill_diagonal(merge_cost, np.inf)
        removed = int(np.argsort(merge_cost.min(axis=1), kind="stable")[failures % n_clusters])
        errors = cluster_error.copy()
        errors[removed] = -1
        split = int(np.argmax(errors))
        members = np.flatnonzero(labels == split)
        if members.size < 2 or squared[members].sum() <= 0:
            break
        chosen = rng.choice(members, p=squared[members] / squared[members].sum())
        trial = centres.copy()
        trial[removed] = points[chosen]
        trial_centres, trial_inertia, n_iter, trial_labels = _fit_once(
            points, weights, n_clusters, trial, max_iter, tol, None
        )
        total_iter += n_iter
        if trial_inertia < inertia:
            centres, inertia, labels = trial_centres, trial_inertia, trial_labels
            failures = 0
        else:
            failures += 1
    return centres, total_iter


def nearest_centre(points: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre (Euclidean) of every point; ties go to the lower index."""
    if centres.shape[1] == 1:
        # In 1-D the nearest centre is found by bisection between midpoints.
        order = np.argsort(centres[:, 0], kind="stable")
        sorted_centres = centres[order, 0]
        midpoints = (sorted_centres[1:] + sorted_centres[:-1]) / 2
        return order[np.searchsorted(midpoints, points[:, 0], side="left")]
    if points.shape[0] * centres.shape[0] <= 2**20:
        # scikit-learn's chunked search costs ~40 ms of setup even for 4 points.
        squared = ((points[:, np.newaxis, :] - centres[np.newaxis, :, :]) ** 2).sum(axis=2)
        return np.argmin(squared, axis=1)
    from sklearn.metrics import pairwise_distances_argmin

    return pairwise_distances_argmin(points, centres)
