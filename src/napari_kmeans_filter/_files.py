"""Outputs put in place safely: a finished temporary moved over the old output, and the
removal of an unfinished one once nothing writes into it any more.

Every output is written under a temporary name beside its destination and moved there
when complete (:func:`._io.atomic_output`, :func:`._omezarr.write_labels`), so that a run
that fails or is stopped leaves the destination as it was.  Two things make that harder
for directories (zarr stores):

* a directory cannot be replaced in one step: the old one is moved aside first, and put
  back if the new one could not be moved in (:func:`move_into_place`);
* a stopped dask computation does not stop the threads running its tasks: each finishes
  the chunks it writes, and a chunk written after the temporary directory was removed
  creates it again (a new user found such leftovers after Ctrl-C while a 2048² OME-Zarr
  was written).  A program that owns its process (the command line) runs its dask work
  on :func:`writer_threads`, whose tasks :func:`remove_output` lets settle (running ones
  finish, queued ones are dropped) before it removes anything; for other schedulers it removes
  the output until it stays gone.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path

#: How long a removed temporary must stay gone before the writers count as stopped, and
#: how long to keep removing it at most (a task writes a block of storage chunks: tens of
#: milliseconds, on a slow disk seconds).
SETTLE_S = 0.3
GIVE_UP_S = 20.0


def _remove_once(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


class _WriterPool(ThreadPoolExecutor):
    """A thread pool that knows its unfinished tasks, so that they can be let finish (or
    dropped, if not started) while the pool stays usable for the next computation."""

    def __init__(self, n_threads: int) -> None:
        super().__init__(n_threads, thread_name_prefix="napari-kmeans-filter-dask")
        self._unfinished: set[Future] = set()
        self._unfinished_lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = super().submit(fn, *args, **kwargs)
        with self._unfinished_lock:
            self._unfinished.add(future)
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: Future) -> None:
        with self._unfinished_lock:
            self._unfinished.discard(future)

    def settle(self) -> None:
        """Drop the tasks not started and wait for the running ones."""
        with self._unfinished_lock:
            unfinished = list(self._unfinished)
        for future in unfinished:
            future.cancel()
        wait(unfinished)


_writer_pools: list[_WriterPool] = []


@contextlib.contextmanager
def writer_threads(n_threads: int) -> Iterator[ThreadPoolExecutor]:
    """A pool of threads for the computations that write outputs (give it to dask as its
    ``pool``): an unfinished output is removed only once their tasks have stopped, and the
    pool stays usable for the next output (``--keep-going``)."""
    pool = _WriterPool(n_threads)
    _writer_pools.append(pool)
    try:
        yield pool
    finally:
        _writer_pools.remove(pool)
        pool.shutdown(wait=True, cancel_futures=True)


def remove_output(path: str | os.PathLike, *, writers: bool = True) -> None:
    """Remove an unfinished output (a file or a directory tree), if it exists.

    With ``writers`` (threads may still be writing into it) the :func:`writer_threads`
    settle first (their running tasks finish, those not started are dropped), and the
    output is removed again whenever it reappears, until it has stayed gone for
    :data:`SETTLE_S` seconds (at most :data:`GIVE_UP_S`).  Nothing is waited for when it
    does not exist.
    """
    path = Path(path)
    if not _exists(path):
        return
    if writers:
        for pool in list(_writer_pools):
            pool.settle()
    deadline = time.monotonic() + GIVE_UP_S
    while True:
        _remove_once(path)
        if not writers:
            return
        quiet_until = time.monotonic() + SETTLE_S
        while time.monotonic() < quiet_until and not _exists(path):
            time.sleep(0.02)
        if not _exists(path) or time.monotonic() > deadline:
            return


def move_into_place(temporary: str | os.PathLike, destination: str | os.PathLike) -> None:
    """Move the finished ``temporary`` to ``destination``, replacing what is there.

    A file is replaced in one step (``os.replace``).  A directory is moved aside first
    and removed once the new one is in place; if the new one cannot be moved in (an
    error, a stop signal in between), the old one is put back.  A stop signal while the
    old one is removed lets the removal finish before it stops the run, and old ones a
    killed run left beside ``destination`` (``.<name>.old-*``) are removed first.
    """
    temporary, destination = Path(temporary), Path(destination)
    if not (destination.is_dir() and not destination.is_symlink()):
        os.replace(temporary, destination)
        return
    prefix = f".{destination.name}.old-"
    for stale in [p for p in destination.parent.iterdir() if p.name.startswith(prefix)]:
        remove_output(stale, writers=False)
    aside = destination.with_name(f"{prefix}{uuid.uuid4().hex[:8]}")
    os.rename(destination, aside)
    try:
        os.rename(temporary, destination)
    except BaseException:
        if not _exists(destination):
            os.rename(aside, destination)
        raise
    try:
        remove_output(aside, writers=False)
    except BaseException:
        # The new output is in place: the old one must not stay, half removed, beside it
        # (a Ctrl-C in the last instant of a run left one; further signals are ignored
        # by then in the command line).
        remove_output(aside, writers=False)
        raise
