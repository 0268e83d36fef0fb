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


def test_a_thread_free_first_takes_the_next_part():
    """Parts of uneven cost (the fit's starts) keep both threads busy: while part 0 runs,
    the other thread takes parts 1, 2 and 3 (in fixed shares, part 2 would wait for part
    0's thread, which waits for part 3 here: the call would hang)."""
    last_done = threading.Event()
    threads: dict[int, int] = {}

    def work(part):
        threads[part] = threading.get_ident()
        if part == 0:
            assert last_done.wait(10), "part 3 did not run while part 0 ran"
        if part == 3:
            last_done.set()

    _workers.run_parts(work, [0, 1, 2, 3], 2)
    assert threads[1] == threads[2] == threads[3] != threads[0]


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


def test_parts_run_from_a_first_stage_while_the_pool_waits_on_it():
    """run_in_step's second stage holds a pool thread waiting for the first stage; parts
    the first stage runs are then all run by its own thread, not left queued for the
    busy pool (on 2 cores the pool has that one thread: the call hung)."""
    inner = []

    def first(part):
        _workers.run_parts(inner.append, [0, 1, 2], 2)

    done = threading.Event()

    def call():
        _workers.run_in_step(first, lambda part: None, [0, 1, 2])
        done.set()

    threading.Thread(target=call, daemon=True).start()
    assert done.wait(20), "run_parts in a first stage waited for the busy pool"
    assert sorted(inner) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_in_step_the_second_stage_follows_the_first_part_by_part_on_another_thread():
    """Each part's second stage starts after its first is done, in order, and the two
    stages overlap (on one core everything runs in the caller instead)."""
    events: list[tuple[str, int]] = []
    threads: dict[str, set[int]] = {"first": set(), "then": set()}
    lock = threading.Lock()

    def stage(name):
        def run(part):
            with lock:
                events.append((name, part))
                threads[name].add(threading.get_ident())
            threading.Event().wait(0.01)

        return run

    _workers.run_in_step(stage("first"), stage("then"), list(range(6)))
    for part in range(6):
        assert events.index(("first", part)) < events.index(("then", part))
    assert [p for name, p in events if name == "then"] == list(range(6))
    assert threads["first"] == {threading.get_ident()}
    if _workers.n_workers() > 1:
        assert threading.get_ident() not in threads["then"]
        # The second stage of part 0 ran while the first stage went on.
        assert events.index(("then", 0)) < events.index(("first", 5))


@pytest.mark.parametrize("failing", ["first", "then"])
def test_in_step_an_error_in_either_stage_propagates_once_neither_runs(failing):
    running = []
    started = []
    after = []

    def stage(name):
        def run(part):
            started.append((name, part))
            running.append((name, part))
            if name == failing and part == 2:
                raise ValueError(f"{name} 2")
            threading.Event().wait(0.02)
            running.remove((name, part))

        return run

    with pytest.raises(ValueError, match=f"{failing} 2"):
        try:
            _workers.run_in_step(stage("first"), stage("then"), list(range(8)))
        finally:
            after.extend(r for r in running if r != (failing, 2))
    assert after == []
    # No second stage runs for a part whose first stage failed, nor after a failure.
    seconds = [p for name, p in started if name == "then"]
    if failing == "then":
        assert seconds == [0, 1, 2]
    else:
        assert seconds == [0, 1][: len(seconds)]


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
