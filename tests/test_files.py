"""Outputs put in place safely: nothing unfinished left behind, nothing old lost."""

from __future__ import annotations

import os
import threading
import time

import pytest

from napari_kmeans_filter import _files
from napari_kmeans_filter._io import atomic_output


def _late_writer(folder, stop_after: float):
    """A thread that keeps writing chunks into ``folder`` (creating it again if removed),
    as a dask task still running after its computation was stopped."""

    def write():
        end = time.monotonic() + stop_after
        n = 0
        while time.monotonic() < end:
            try:
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"c{n}").write_bytes(b"x")
            except FileNotFoundError:  # removed between the two: write again
                continue
            n += 1
            time.sleep(0.01)

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_stopped_output_is_removed_after_its_last_writer(tmp_path, monkeypatch):
    # A settle time well above the writer's life, so that a busy machine cannot starve the
    # writer for longer (the command line's own writer threads are waited for instead).
    monkeypatch.setattr(_files, "SETTLE_S", 1.0)
    destination = tmp_path / "out.zarr"
    writer = None
    with pytest.raises(KeyboardInterrupt), atomic_output(destination, overwrite=False) as temp:
        temp.mkdir()
        writer = _late_writer(temp, 0.15)
        raise KeyboardInterrupt
    writer.join()
    time.sleep(0.05)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_removing_without_writers_does_not_wait(tmp_path):
    (tmp_path / "d").mkdir()
    started = time.monotonic()
    _files.remove_output(tmp_path / "d", writers=False)
    _files.remove_output(tmp_path / "absent")  # nothing to remove: no wait either
    assert time.monotonic() - started < _files.SETTLE_S
    assert not (tmp_path / "d").exists()


def test_a_directory_that_cannot_be_moved_in_puts_the_old_one_back(tmp_path, monkeypatch):
    old, new = tmp_path / "labels.zarr", tmp_path / ".labels.zarr.partial"
    old.mkdir()
    (old / "chunk").write_text("old")
    new.mkdir()
    (new / "chunk").write_text("new")
    real_rename = os.rename

    def rename(source, target):
        if str(source) == str(new):
            raise KeyboardInterrupt  # a stop signal between the two moves
        real_rename(source, target)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(KeyboardInterrupt):
        _files.move_into_place(new, old)
    monkeypatch.undo()
    assert (old / "chunk").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".labels.zarr.partial", "labels.zarr"]
    _files.move_into_place(new, old)
    assert (old / "chunk").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.zarr"]


def test_a_stop_while_the_old_directory_is_removed_still_removes_it(tmp_path, monkeypatch):
    """A Ctrl-C in the last instant of a run, once the new output is in place, landed while
    the old one was being removed and left it half removed beside the new one (a new
    user's trial). The removal now finishes before the stop goes on; and old directories
    a killed run left are removed by the next replacement."""
    old, new = tmp_path / "out.zarr", tmp_path / ".out.zarr.partial"
    for folder, text in ((old, "old"), (new, "new")):
        (folder / "0").mkdir(parents=True)
        (folder / "0" / "chunk").write_text(text)
    (tmp_path / ".out.zarr.old-0badc0de" / "0").mkdir(parents=True)  # a killed run's
    (tmp_path / ".other.zarr.old-1").mkdir()
    real = _files._remove_once
    calls = []

    def interrupted_once(path):
        calls.append(path.name)
        if len(calls) == 2:  # the first call removes the killed run's leftover
            real(path / "0")  # half removed when the stop signal comes
            raise KeyboardInterrupt
        real(path)

    monkeypatch.setattr(_files, "_remove_once", interrupted_once)
    with pytest.raises(KeyboardInterrupt):
        _files.move_into_place(new, old)
    assert (old / "0" / "chunk").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.zarr.old-1", "out.zarr"]


def test_a_writer_pool_is_stopped_before_its_output_is_removed(tmp_path):
    """A task of the run's writer threads that writes long after the stop (computing its
    block first) still finds nothing to recreate: the pool is stopped before removing."""
    temp = tmp_path / ".out.zarr.partial"
    temp.mkdir()
    with _files.writer_threads(2) as pool:

        def slow_task():
            time.sleep(3 * _files.SETTLE_S)  # longer than the settle time
            temp.mkdir(exist_ok=True)
            (temp / "late-chunk").write_bytes(b"x")

        pool.submit(slow_task)
        time.sleep(0.05)
        _files.remove_output(temp)
        assert not temp.exists()
        # The pool still runs the next output's work (--keep-going goes on to the next input).
        assert pool.submit(lambda: 42).result(timeout=10) == 42
    assert not temp.exists()
