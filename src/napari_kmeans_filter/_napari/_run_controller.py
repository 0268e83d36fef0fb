"""The run controller: Run and Cancel, the progress bar and the status line.

A run quantizes (or repaints) on a worker thread (:func:`~._run.run_job`), then adds its
layers one per turn of the event loop (:func:`~._show.show_result_steps`). Progress
reaches the GUI through a queued Qt signal. A run stops at the core's next progress report
once it is cancelled (Cancel, the dock closed).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QSizePolicy, QVBoxLayout, QWidget

from ._console import announce_result, describe_result
from ._controls import user_message
from ._run import Job, Outcome, run_job
from ._show import show_result_steps

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ._prepare import PreparedResult

#: The progress bar counts in thousandths so that small steps still move it.
PROGRESS_STEPS = 1000
#: Share of the bar reached when the layers start going in (the rest: adding them).
PREPARE_SHARE = 0.97

#: Longest layer name shown whole in the status line; longer names are shortened in the
#: middle (the full text is in the tooltip) so that the dock never widens.
STATUS_NAME_CHARS = 28


def shorten(name: str, limit: int = STATUS_NAME_CHARS) -> str:
    """``name`` shortened in the middle to at most ``limit`` characters."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2 :]


class Lifetime:
    """State the worker callbacks need after the widget itself may be gone.

    Worker signals can arrive after the dock was closed (and the Qt widget deleted), so
    they check ``closed`` here, in a plain Python object, before touching the widget.
    """

    def __init__(self) -> None:
        self.closed = False
        self.cancel = threading.Event()
        self.preview_generation = 0


class _ProgressRelay(QObject):
    """Carries progress reports from the worker thread to the GUI thread.

    Emitting a Qt signal from another thread queues the call in the receiver's thread, so
    the widgets are only ever touched by the GUI thread.
    """

    progressed = Signal(float, str)


class RunController(QWidget):
    """Run and Cancel buttons, the progress bar and the status line of one dock.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where results are shown.
    life : Lifetime
        The dock's lifetime (closed, cancel).
    """

    #: Emitted with every new text of the status line (the phase, then the result).
    status_changed = Signal(str)
    #: Emitted when a run starts or ends (True while running).
    running_changed = Signal(bool)
    #: Emitted when a run's layers are all shown: the prepared result and its job.
    result_shown = Signal(object, object)

    def __init__(
        self, viewer: napari.viewer.Viewer, life: Lifetime, parent: QWidget | None = None
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._life = life
        self._worker: FunctionWorker | None = None
        self._outcome_handled = False
        self._progress_relay = _ProgressRelay()
        self._progress_relay.progressed.connect(self._show_progress)
        self.run_button = PushButton(
            text="Run", tooltip="Quantize the selected layer(s) with these settings."
        )
        self.cancel_button = PushButton(
            text="Cancel",
            enabled=False,
            tooltip="Stop the run; no layer is added or changed.",
        )
        self.progress_bar = ProgressBar(
            min=0,
            max=PROGRESS_STEPS,
            value=0,
            tooltip="Progress of the run; the line below names the current step.",
        )
        self.status_label = Label(value="")
        status = self.status_label.native
        status.setWordWrap(True)
        status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        status.setToolTip(
            "What the last run found: 'N → k colors' (N distinct colors in the input, k "
            "kept) and the PSNR (peak signal-to-noise ratio, in dB: how close the result "
            "is to the original; ∞ = identical)."
        )
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button.native)
        buttons.addWidget(self.cancel_button.native)
        layout.addLayout(buttons)
        layout.addWidget(self.progress_bar.native)
        layout.addWidget(status)
        self.cancel_button.changed.connect(self.cancel)

    @property
    def is_running(self) -> bool:
        """Whether a run is going on (then Run is disabled and Cancel enabled)."""
        return self._worker is not None

    @property
    def worker(self) -> FunctionWorker | None:
        """The worker of the current run, or None when nothing runs."""
        return self._worker

    def set_status(self, text: str) -> None:
        if text != self.status_label.value:
            self.status_label.value = text
            self.status_changed.emit(text)

    def set_input_ready(self, ready: bool) -> None:
        self.run_button.enabled = ready and not self.is_running

    # ----------------------------------------------------------------------------------
    # Starting and stopping
    # ----------------------------------------------------------------------------------

    def start(self, job: Job, message: str) -> FunctionWorker:
        """Run ``job`` on a worker thread, then show its result."""
        self._life.cancel.clear()
        life = self._life
        relay = self._progress_relay

        def should_stop() -> bool:
            return life.cancel.is_set() or life.closed

        def report(fraction: float, text: str) -> None:
            relay.progressed.emit(float(fraction), str(text))

        worker = create_worker(run_job, job, should_stop, report, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_returned(outcome, job, life))
        worker.finished.connect(lambda: self._on_finished(life))
        self._worker = worker
        self._outcome_handled = False
        self.cancel_button.enabled = True
        self.progress_bar.value = 0
        self.running_changed.emit(True)
        self.set_status(message)
        worker.start()
        return worker

    def cancel(self) -> None:
        """Ask the running quantization to stop; it adds no layer."""
        if self._worker is None:
            return
        self._life.cancel.set()
        self.cancel_button.enabled = False
        self.set_status("cancelling…")

    def _show_progress(self, fraction: float, message: str) -> None:
        if self._worker is None or self._life.closed:
            return
        self.progress_bar.value = round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)
        if message and not self._life.cancel.is_set():
            self.set_status(message)

    # ----------------------------------------------------------------------------------
    # The result
    # ----------------------------------------------------------------------------------

    def _on_returned(self, outcome: Outcome, job: Job, life: Lifetime) -> None:
        if life.closed:
            return
        self._outcome_handled = True
        if not self._start_showing(outcome, job):
            self._end()

    def _start_showing(self, outcome: Outcome, job: Job) -> bool:
        """Begin adding the result's layers; False if there is nothing to add."""
        name = job.source.name
        # A cancel that arrives after the last progress report still wins: nothing is added.
        if outcome.cancelled or self._life.cancel.is_set():
            self.set_status("cancelled")
            show_info(f"K-means color filter: cancelled, {name!r} left as it was.")
            return False
        if outcome.error is not None:
            self.set_status("failed")
            show_error(f"K-means color filter on {name!r} failed: {user_message(outcome.error)}")
            return False
        if any(layer not in self._viewer.layers for layer in job.layers):
            self.set_status("source removed")
            show_info(f"K-means color filter: {name!r} was removed; result dropped.")
            return False
        # From here on the layers go in; cancelling now would leave half a result.
        self.cancel_button.enabled = False
        self.progress_bar.value = round(PREPARE_SHARE * PROGRESS_STEPS)
        self.set_status("adding layers…")
        steps = show_result_steps(self._viewer, outcome.prepared, job.layers)
        # One layer per turn of the event loop, so the GUI never waits for all of them.
        QTimer.singleShot(0, lambda: self._show_next_layer(steps, outcome.prepared, job))
        return True

    def _show_next_layer(self, steps: Any, prepared: PreparedResult, job: Job) -> None:
        if self._life.closed:
            return
        try:
            next(steps)
        except StopIteration:
            self._finish_showing(prepared, job)
        except ValueError as error:
            self.set_status("failed")
            show_error(f"K-means color filter: {error}")
            self._end()
        else:
            QTimer.singleShot(0, lambda: self._show_next_layer(steps, prepared, job))

    def _finish_showing(self, prepared: PreparedResult, job: Job) -> None:
        self.progress_bar.value = PROGRESS_STEPS
        self.set_status(describe_result(prepared.result))
        if job.palette is None:
            announce_result(prepared.result, job.n_colors, job.source.name)
        self._end()
        self.result_shown.emit(prepared, job)

    def _on_finished(self, life: Lifetime) -> None:
        # Also reached after an unexpected exception, which napari reports by itself.
        if life.closed:
            return
        if self._worker is not None and not self._outcome_handled:
            self.set_status("failed")
            self._end()

    def _end(self) -> None:
        self._worker = None
        self.cancel_button.enabled = False
        if self.status_label.value in ("cancelled", "failed", "source removed"):
            self.progress_bar.value = 0
        self.running_changed.emit(False)
