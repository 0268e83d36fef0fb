"""Worker threads: how many cores this process may use, and running parts on them.

The compiled kernels release the GIL (:mod:`._jit`), so plain threads run
them on every core; the fit's passes and the repaint of a large numpy image
both split their work into parts and run one thread per part here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor


def n_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_parts(work: Callable, parts: Sequence, n_threads: int) -> None:
    """Call ``work(part)`` for every part, on up to ``n_threads`` threads.

    One part, or one thread, runs in the calling thread: no pool is started.
    Exceptions raised by ``work`` propagate.
    """
    if n_threads <= 1 or len(parts) <= 1:
        for part in parts:
            work(part)
        return
    with ThreadPoolExecutor(min(n_threads, len(parts))) as pool:
        list(pool.map(work, parts))
