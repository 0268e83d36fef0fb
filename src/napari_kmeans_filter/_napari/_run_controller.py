"""The run controller: Run and Cancel, the progress bar and the status line.

A run is a :class:`~._task.Task`: a worker computes the result, then its layers go in one per
turn of the event loop. However the run ends, its one :class:`~._task.Ending` comes to
:meth:`RunController._on_ended`, which puts the buttons, the bar and the status line right.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from magicgui.widgets import Label, ProgressBar, PushButton
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QHBoxLayout, QSizePolicy, QVBoxLayout, QWidget

from ._console import announce_result, describe_result
from ._task import CANCELLED, CLOSED, DONE, SOURCE_REMOVED, Ending, Task

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ._run import Job

#: The progress bar counts in thousandths so that small steps still move it.
PROGRESS_STEPS = 1000
#: Share of the bar reached when the layers start going in (the rest: adding them).
PREPARE_SHARE = 0.97

#: A phase whose bar has not moved for this many seconds says how long it has run
#: ("finding the fewest colors (7 s)"): one fit of auto k's search at thousands of colors
#: reports nothing for seconds.
STALL_SECONDS = 2.0

#: Longest layer name shown whole in the status line; longer names are shortened in the
#: middle (the full text is in the tooltip) so that the dock never widens.
STATUS_NAME_CHARS = 28


def shorten(name: str, limit: int = STATUS_NAME_CHARS) -> str:
    """``name`` shortened in the middle to at most ``limit`` characters."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2 :]


class RunController(QWidget):
    """Run and Cancel buttons, the progress bar and the status line of one dock.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where results are shown.
    """

    #: Emitted with every new text of the status line (the phase, then the result).
    status_changed = Signal(str)
    #: Emitted when a run starts or ends (True while running).
    running_changed = Signal(bool)
    #: Emitted when a run starts, with its :class:`~._task.Task` (before its worker starts).
    started = Signal(object)
    #: Emitted when a run has ended, however it ended: an :class:`~._task.Ending`.
    ended = Signal(object)

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._task: Task | None = None
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
        self._phase = ""
        self._phase_started = self._moved_at = 0.0
        self._ticker = QTimer(self)
        self._ticker.setInterval(1000)
        self._ticker.timeout.connect(self._show_phase)

    @property
    def is_running(self) -> bool:
        """Whether a run is going on (then Run is disabled and Cancel enabled)."""
        return self._task is not None

    @property
    def worker(self) -> FunctionWorker | None:
        """The worker of the current run, or None when nothing runs."""
        return self._task.worker if self._task is not None else None

    @property
    def task(self) -> Task | None:
        """The current run, or None."""
        return self._task

    def show_refused(self) -> None:
        """A Run refused before it started: the bar at 0 and "failed", as a failed run."""
        self._set_bar(0)
        self.set_status("failed")

    def set_status(self, text: str) -> None:
        if text != self.status_label.value:
            self.status_label.value = text
            self.status_changed.emit(text)

    def _set_bar(self, value: int) -> None:
        """Move the bar, painted with the next repaint of the window instead of now.

        QProgressBar.setValue repaints at once, and a repaint of one widget paints whatever
        else in the window is waiting (the canvas with layers just added, napari's layer
        controls): 40-60 ms inside the slot that ends a run on the cat. With updates off
        meanwhile, turning them back on asks for an ordinary, coalesced repaint.
        """
        if value == self.progress_bar.value:
            return
        bar = self.progress_bar.native
        bar.setUpdatesEnabled(False)
        try:
            self.progress_bar.value = value
        finally:
            bar.setUpdatesEnabled(True)

    def set_input_ready(self, ready: bool) -> None:
        self.run_button.enabled = ready and not self.is_running

    # ----------------------------------------------------------------------------------
    # Starting and stopping
    # ----------------------------------------------------------------------------------

    def start(self, job: Job, message: str) -> FunctionWorker:
        """Run ``job`` on a worker thread, then show its result."""
        task = Task(self._viewer, job, report_progress=True)
        task.progressed.connect(self._show_progress)
        task.adding.connect(self._on_adding)
        task.ended.connect(self._on_ended)
        self._task = task
        self.cancel_button.enabled = True
        self._set_bar(0)
        self.running_changed.emit(True)
        self._new_phase(message)
        self._ticker.start()
        self.started.emit(task)
        task.start()
        return task.worker

    def cancel(self) -> None:
        """Ask the running quantization to stop; it adds no layer."""
        if self._task is None or self._task.is_adding:
            return
        self._task.stop(CANCELLED)
        self.cancel_button.enabled = False
        self.set_status("cancelling…")

    def stop(self, reason: str) -> None:
        """End the run now (the source removed, the dock or the viewer closed)."""
        if self._task is not None:
            self._task.stop(reason)

    def _show_progress(self, fraction: float, message: str) -> None:
        if self._task is None or self.status_label.value == "cancelling…":
            return
        value = round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)
        if value != self.progress_bar.value:
            self._moved_at = time.monotonic()
            self._set_bar(value)
        if message and message != self._phase:
            self._new_phase(message)
        else:
            self._show_phase()

    def _new_phase(self, message: str) -> None:
        self._phase = message
        self._phase_started = self._moved_at = time.monotonic()
        self.set_status(message)

    def _show_phase(self) -> None:
        """The phase's name, and how long it has run once the bar stands still."""
        if self._task is None or self._task.is_adding:
            return
        if self.status_label.value == "cancelling…":
            return
        now = time.monotonic()
        text = self._phase
        if now - self._moved_at >= STALL_SECONDS:
            text = f"{text} ({now - self._phase_started:.0f} s)"
        self.set_status(text)

    def _on_adding(self) -> None:
        # From here on the layers go in; cancelling now would leave half a result.
        self.cancel_button.enabled = False
        self._ticker.stop()
        self._set_bar(round(PREPARE_SHARE * PROGRESS_STEPS))
        self.set_status("adding layers…")

    # ----------------------------------------------------------------------------------
    # The one end of every run
    # ----------------------------------------------------------------------------------

    def _on_ended(self, ending: Ending) -> None:
        self._task = None
        self._ticker.stop()
        self.cancel_button.enabled = False
        name = ending.job.source.name
        if ending.kind == DONE:
            self._set_bar(PROGRESS_STEPS)
            self.set_status(describe_result(ending.prepared.result))
            if ending.job.palette is None:
                announce_result(ending.prepared.result, ending.job.n_colors, name)
        elif ending.kind == CLOSED:
            pass  # the dock is going away: nothing to tell
        elif ending.kind == SOURCE_REMOVED:
            # Said on the status line only: the user removed the layer (or closed the viewer,
            # whose layers go before its docks), and a notification popping up as a large
            # layer goes has crashed napari's canvas under Mesa's software renderer.
            self._set_bar(0)
            self.set_status(f"{shorten(name)!r} was removed; result dropped")
        else:
            self._set_bar(0)
            self.set_status(ending.kind)
            if ending.kind == CANCELLED:
                show_info(f"K-means color filter: cancelled, {name!r} left as it was.")
            else:
                show_error(f"K-means color filter on {name!r} failed: {ending.message}")
        self.running_changed.emit(False)
        self.ended.emit(ending)
