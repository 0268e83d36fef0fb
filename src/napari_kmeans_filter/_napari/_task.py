"""The lifetime of one run or preview, from its worker to its last layer, ended in one place.

A :class:`Task` owns everything a run (or a preview) starts: its worker thread, its progress
reports and the layers it adds. However it ends — finished, cancelled, failed in the core,
napari raising while a layer goes in, its source removed, the dock or the viewer closed — it
ends through :meth:`Task._end`, exactly once, and announces how in one :class:`Ending`; after
that nothing of the task reaches the dock (a late worker result, a progress report or a
queued step is dropped by the task itself). The dock's pieces therefore never need to ask
whether a widget still exists.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QTimer, Signal

from ._controls import user_message
from ._run import Job, Outcome, run_job
from ._show import ResultLayers, result_layers_of, show_result_steps

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer
    from napari.qt.threading import FunctionWorker

    from ._prepare import PreparedResult

#: How a task ended (:attr:`Ending.kind`).
DONE = "done"
CANCELLED = "cancelled"
FAILED = "failed"
SOURCE_REMOVED = "source removed"
CLOSED = "closed"
SUPERSEDED = "superseded"


@dataclass(frozen=True)
class Ending:
    """How a task ended, and what it left.

    Attributes
    ----------
    kind : str
        :data:`DONE`, :data:`CANCELLED`, :data:`FAILED`, :data:`SOURCE_REMOVED`,
        :data:`CLOSED` or :data:`SUPERSEDED`.
    job : Job
        What the task ran.
    prepared : PreparedResult or None
        The result, when it was computed.
    shown : ResultLayers or None
        The layers showing the result, when all went in.
    added : list of napari.layers.Layer
        Every layer the task added or updated (whole layers: a layer goes in at once).
    message : str
        For FAILED: what went wrong, in the dock's words.
    """

    kind: str
    job: Job
    prepared: PreparedResult | None = None
    shown: ResultLayers | None = None
    added: list = field(default_factory=list)
    message: str = ""


#: Tasks that have not ended or whose worker still runs. A task is kept alive here, not by
#: whoever started it: a task is often ended from inside one of its own slots (its worker's
#: result, its next layer), and dropping the last reference there would delete the Qt object
#: under the running slot.
_LIVE: set[Task] = set()


class Task(QObject):
    """One run or preview: a worker computes the result, then its layers go in one per turn.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the result goes.
    job : Job
        What to compute.
    report_progress : bool
        Relay the worker's progress reports (:attr:`progressed`); previews do not.
    """

    #: ``(fraction, message)`` of the run, on the GUI thread.
    progressed = Signal(float, str)
    #: The result is computed and its layers start going in.
    adding = Signal()
    #: The task ended (emitted once): an :class:`Ending`.
    ended = Signal(object)
    #: The worker thread is done (after :attr:`ended` for a task stopped early).
    worker_done = Signal()

    def __init__(self, viewer: napari.viewer.Viewer, job: Job, *, report_progress: bool) -> None:
        super().__init__()
        self.job = job
        self._viewer = viewer
        self._stop = threading.Event()
        self._stop_reason = CANCELLED
        self._ended = False
        self._worker_done = False
        self._steps: Any = None
        self._prepared: PreparedResult | None = None
        self.added: list[Layer] = []
        stop = self._stop

        def should_stop() -> bool:
            return stop.is_set()

        relay = self._relay_progress if report_progress else None
        self.worker: FunctionWorker = create_worker(
            run_job, job, should_stop, relay, _start_thread=False
        )
        self.worker.returned.connect(self._on_returned)
        self.worker.errored.connect(self._on_errored)
        self.worker.finished.connect(self._on_worker_finished)

    @property
    def is_adding(self) -> bool:
        """Whether the result's layers are going in now (cancelling would leave half)."""
        return self._steps is not None and not self._ended

    def start(self) -> None:
        _LIVE.add(self)
        self.worker.start()

    def stop(self, reason: str = CANCELLED) -> None:
        """Ask the task to stop.

        ``CANCELLED`` lets the worker give up at its next progress report and ends then
        (so a new run never overlaps it); while layers go in, a cancel is refused (they
        all go in). Any other reason (the source removed, the dock or viewer closed, a
        newer preview) ends the task now; the worker stops on its own and its result is
        dropped.
        """
        if self._ended:
            return
        if reason == CANCELLED and self._steps is not None:
            return
        self._stop_reason = reason
        self._stop.set()
        if reason != CANCELLED:
            self._end(reason)

    def abandon(self) -> None:
        """Stop without a word: whoever listened is gone (the dock was deleted)."""
        self._ended = True
        self._stop.set()
        self._release_when_done()

    def _relay_progress(self, fraction: float, message: str) -> None:
        # Called on the worker thread: a signal of this GUI-thread object is queued.
        self.progressed.emit(float(fraction), str(message))

    # ----------------------------------------------------------------------------------
    # The worker's result, then the layers
    # ----------------------------------------------------------------------------------

    def _on_returned(self, outcome: Outcome) -> None:
        if self._ended:
            return
        job = self.job
        if outcome.cancelled or self._stop.is_set():
            self._end(self._stop_reason)
        elif outcome.error is not None:
            self._end(FAILED, message=user_message(outcome.error))
        elif any(layer not in self._viewer.layers for layer in job.layers):
            self._end(SOURCE_REMOVED)
        else:
            self._prepared = outcome.prepared
            # Named after the sources as they are called now (they may have been renamed).
            names = tuple(layer.name for layer in job.layers)
            self._steps = show_result_steps(self._viewer, outcome.prepared, job.layers, names)
            self.adding.emit()
            # One layer per turn of the event loop, so the GUI never waits for all of them.
            QTimer.singleShot(0, self._add_next)

    def _add_next(self) -> None:
        if self._ended:
            return
        try:
            layer = next(self._steps)
        except StopIteration as done:
            self._end(DONE, shown=done.value)
        except Exception as exc:  # whatever napari raises, the run must end
            # napari raised while a layer went in (e.g. its 3-D status code on a new
            # layer with features): what went in stays, whole; the rest is not added.
            kept = result_layers_of(self._viewer, self._prepared.group)
            self._end(FAILED, message=_napari_failure(exc, kept))
        else:
            if layer is not None and layer not in self.added:
                self.added.append(layer)
            QTimer.singleShot(0, self._add_next)

    def _on_errored(self, exc: BaseException) -> None:
        # A bug in the work (not a refusal, which comes back as an Outcome): say so.
        self._end(FAILED, message=f"{type(exc).__name__}: {exc}")

    def _on_worker_finished(self) -> None:
        self._worker_done = True
        self.worker_done.emit()
        self._release_when_done()

    def _release_when_done(self) -> None:
        if self._ended and self._worker_done:
            # On a later turn of the event loop: never inside one of this task's slots.
            QTimer.singleShot(0, partial(_LIVE.discard, self))

    # ----------------------------------------------------------------------------------
    # The one way out
    # ----------------------------------------------------------------------------------

    def _end(self, kind: str, *, shown: ResultLayers | None = None, message: str = "") -> None:
        if self._ended:
            return
        self._ended = True
        self._stop.set()  # a worker still computing gives up at its next report
        self._steps = None
        self.ended.emit(
            Ending(
                kind=kind,
                job=self.job,
                prepared=self._prepared,
                shown=shown,
                added=list(self.added),
                message=message,
            )
        )
        self._release_when_done()


def _napari_failure(exc: BaseException, kept_layers: list) -> str:
    kept = ", ".join(repr(layer.name) for layer in kept_layers) or "nothing"
    return (
        f"napari raised {type(exc).__name__} ({exc}) while the result layers were added; "
        f"kept: {kept}."
    )
