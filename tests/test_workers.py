"""The worker threads the fit's passes and the repaint run their parts on."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from napari_kmeans_filter import _workers, quantize


def test_every_part_runs_once_on_at_most_n_threads():
    seen: list[int] = []
    threads: set[int] = set()
    lock = threading.Lock()

    def work(part):
        with lock:
            seen.append(part)
            threads.add(threading.get_ident())

    _workers.run_parts(work, list(range(7)), 2)
    assert sorted(seen) == list(range(7))
    assert threading.get_ident() in threads  # the caller takes a share
    assert len(threads) <= 2


def test_an_error_in_a_part_propagates_once_no_part_runs():
    running = []
    still_running_at_raise = []

    def work(part):
        running.append(part)
        if part == 1:
            raise ValueError("part 1")
        threading.Event().wait(0.05)
        running.remove(part)

    with pytest.raises(ValueError, match="part 1"):
        try:
            _workers.run_parts(work, [0, 1, 2, 3], 2)
        finally:
            still_running_at_raise.extend(p for p in running if p != 1)
    assert still_running_at_raise == []


def test_a_part_that_runs_parts_itself_runs_them_in_its_own_thread():
    """No worker waits for the pool it is part of (which could deadlock it)."""
    inner_threads = []

    def inner(part):
        inner_threads.append(threading.get_ident())

    def outer(part):
        _workers.run_parts(inner, [0, 1], 2)
        return part

    _workers.run_parts(outer, [0, 1, 2, 3], 2)
    assert len(inner_threads) == 8


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_starts_its_own_threads():
    """The pool's threads do not exist in a forked child: it must not wait on them."""
    _workers.run_parts(lambda part: None, [0, 1], 2)  # the parent's pool exists
    image = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            _workers.run_parts(lambda part: None, [0, 1, 2], 2)
            quantize(image, 4, random_state=0)
        finally:
            os._exit(0)
    for _ in range(600):  # a child waiting on threads that do not exist never ends
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        threading.Event().wait(0.1)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the parent's worker threads")
    assert os.waitstatus_to_exitcode(status) == 0
