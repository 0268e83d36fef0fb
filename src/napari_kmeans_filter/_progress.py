"""Progress reporting: one way to map a stage's fraction into the whole call's, numpy or dask.

The public functions take ``progress(fraction, message)``. Each stage of the work reports its own
fraction in [0, 1] through a :func:`stage` callback that maps it into the stage's share of the
whole; lazy (dask) work reports the fraction of finished tasks through :class:`DaskProgress`, a
dask scheduler callback. How progress is *shown* is the shells' business (the command line draws
it with tqdm, the widget with a progress bar).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

ProgressCallback = Callable[[float, str], Any]
Report = Callable[[float], None]


def _ignore(fraction: float) -> None:
    return None


_ignore._is_stage = True  # a stage nested on "no progress" reports nothing either


def stage(
    progress: ProgressCallback | None, start: float, stop: float, message: str = ""
) -> Report:
    """A ``fraction -> None`` callback that maps a stage's progress into ``[start, stop]``.

    ``progress`` may be a public ``progress(fraction, message)`` callback, None (nothing is
    reported), or another stage's ``report(fraction)`` (then ``message`` is not passed on), so
    stages nest.
    """
    if progress is None:
        return _ignore
    nested = getattr(progress, "_is_stage", False)

    def report(fraction: float) -> None:
        value = start + (stop - start) * min(max(float(fraction), 0.0), 1.0)
        if nested:
            progress(value)
        else:
            progress(value, message)

    report._is_stage = True
    return report


class DaskProgress:
    """Report the fraction of finished dask tasks (local schedulers only).

    A context manager around ``dask.compute``; ``report(fraction)`` is a :func:`stage` callback.
    """

    def __init__(self, report: Report):
        self._report = report
        self._callback = None

    def __enter__(self):
        from dask.callbacks import Callback

        report = self._report
        state = {"done": 0, "total": 1}

        def start(dsk):
            state["total"] = max(len(dsk), 1)

        def posttask(key, result, dsk, task_state, worker_id):
            state["done"] += 1
            report(state["done"] / state["total"])

        self._callback = Callback(start=start, posttask=posttask)
        self._callback.__enter__()
        return self

    def __exit__(self, *exc):
        self._callback.__exit__(*exc)
        return False
