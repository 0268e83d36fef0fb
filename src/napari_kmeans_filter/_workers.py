"""Worker threads: how many cores this process may use, and running parts on them.

The compiled kernels release the GIL (:mod:`._jit`), so plain threads run
them on every core; the fit's passes, its starts and swap moves, and the
repaint of a large numpy image split their work into parts and run them on
these threads (:func:`run_parts`), and dithering, whose pixels must be done one after the
other, paints and counts finished rows on a second core while it goes on
(:func:`run_in_step`).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


def n_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_inside = threading.local()


def _forget_pool() -> None:
    """In a forked child the pool's threads do not exist: start a new pool when needed."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _mark_inside() -> None:
    _inside.active = True


def _shared_pool() -> ThreadPoolExecutor:
    """One pool of worker threads per process, started on first use and kept: the fit's
    passes call :func:`run_parts` hundreds of times a fit, and starting threads for each
    call cost ~0.1-0.2 ms, as much as a pass over 50 000 colours."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(
                max(1, n_workers() - 1),
                thread_name_prefix="napari-kmeans-filter",
                initializer=_mark_inside,
            )
        return _pool


_NO_PART = object()


def run_parts(work: Callable, parts: Sequence, n_threads: int) -> None:
    """Call ``work(part)`` for every part, on up to ``n_threads`` threads.

    The calling thread takes the first part; it and the process's shared worker threads
    then each take the next part not yet started whenever they are free, so that parts of
    uneven cost (the fit's starts converge in 5-60 iterations) keep every thread busy. A
    part's result must therefore not depend on the thread that runs it. One part or one
    thread, or a call from a worker thread itself, runs every part in the calling thread.
    An exception raised by ``work`` propagates once no part runs any more; no part starts
    once it is raised (if parts raise in several threads, the calling thread's propagates).
    """
    if n_threads <= 1 or len(parts) <= 1 or getattr(_inside, "active", False):
        for part in parts:
            work(part)
        return
    pool = _shared_pool()
    # At most n_threads parts run at once from this call: the caller's lane and
    # n_threads - 1 lanes in the pool.
    n_lanes = min(n_threads, len(parts))
    waiting = iter(parts)
    lock = threading.Lock()
    failed = threading.Event()

    def lane_work(part=_NO_PART):
        while True:
            if part is _NO_PART:
                if failed.is_set():
                    return
                with lock:
                    part = next(waiting, _NO_PART)
                if part is _NO_PART:
                    return
            try:
                work(part)
            except BaseException:
                failed.set()
                raise
            part = _NO_PART

    first = next(waiting)  # the caller's: it reports progress, and its thread is running
    futures = [pool.submit(lane_work) for _ in range(n_lanes - 1)]
    _inside.active = True  # parts run parts of their own in their thread, here too
    try:
        lane_work(first)
    finally:
        _inside.active = False
        for future in futures:
            # A lane not started holds no part (the caller ran them all): dropped, so that a
            # pool thread busy waiting on this caller (run_in_step's second stage) is no hang.
            future.cancel()
        for future in futures:
            if not future.cancelled():
                future.exception()  # wait for every lane before raising anything
    for future in futures:
        if not future.cancelled():
            future.result()


def run_in_step(first: Callable, then: Callable, parts: Sequence) -> None:
    """Call ``first(part)`` for the parts in order in the calling thread and, as each
    is done, ``then(part)`` in order on one of the shared worker threads: a two-stage
    pipeline whose second stage reads what the first wrote.

    One part, one core, or a call from a worker thread itself runs both stages part by
    part in the calling thread. The first exception raised by either stage propagates
    once neither runs any more; ``then`` is not called after one.
    """
    if len(parts) <= 1 or n_workers() <= 1 or getattr(_inside, "active", False):
        for part in parts:
            first(part)
            then(part)
        return
    done = [threading.Event() for _ in parts]
    stopped = threading.Event()

    def second():
        try:
            for event, part in zip(done, parts, strict=True):
                event.wait()
                if stopped.is_set():
                    return
                then(part)
        except BaseException:
            stopped.set()  # the first stage stops too
            raise

    future = _shared_pool().submit(second)
    try:
        for event, part in zip(done, parts, strict=True):
            if stopped.is_set():
                break
            first(part)
            event.set()
    except BaseException:
        stopped.set()
        for event in done:
            event.set()
        future.exception()  # wait for the second stage before raising
        raise
    future.result()
