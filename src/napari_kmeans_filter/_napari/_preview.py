"""The live preview: a quick result of the current slice that follows every change of settings.

A change starts a timer (:data:`PREVIEW_DEBOUNCE_MS`), so a spin box held down starts one
preview, not one per step. Each change also bumps a generation number; a preview computed for
an older generation stops at its next progress report and is dropped. A Run takes precedence:
a preview asked for meanwhile starts when the run has ended.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from magicgui.widgets import CheckBox
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QTimer, Signal

from ._run import Job, Outcome, run_job
from ._show import remove_previews, show_result

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

    from ._controls import Controls
    from ._run_controller import Lifetime

#: A preview starts this long after the last change.
PREVIEW_DEBOUNCE_MS = 40


class Preview(QObject):
    """The 'live preview' checkbox and the previews it asks for.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the preview layer goes.
    life : Lifetime
        The dock's lifetime (closed, preview generation).
    controls : Controls
        The settings a preview is made of.
    is_running : callable
        Whether a Run is going on (previews wait for it).
    parent : QObject, optional
        The dock.
    """

    #: A preview was shown: the prepared result and its job.
    shown = Signal(object, object)
    #: A line for the status: why a preview could not be made.
    failed = Signal(str)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        life: Lifetime,
        controls: Controls,
        is_running: Callable[[], bool],
        parent: QObject | None = None,
    ) -> None:
        # Parented to the dock, so that its timer goes with the dock's widgets.
        super().__init__(parent)
        self._viewer = viewer
        self._life = life
        self._controls = controls
        self._is_running = is_running
        self._worker: FunctionWorker | None = None
        self._pending = False
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(PREVIEW_DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)
        #: perf_counter() of the last settings change and of the last preview shown.
        self.requested_at = 0.0
        self.shown_at = 0.0
        self.check = CheckBox(
            text="live preview",
            value=False,
            tooltip="While on, every change of the settings updates the image result "
            "within moments: computed quickly on the current slice (downsampled if large). "
            "Press Run for the full result.",
        )
        self.check.changed.connect(self._on_toggled)

    @property
    def on(self) -> bool:
        return bool(self.check.value)

    @property
    def is_busy(self) -> bool:
        """Whether a preview is waiting or being computed."""
        return self._worker is not None or self._timer.isActive()

    def schedule(self) -> None:
        """Ask for a preview of the current settings (if preview is on)."""
        if not self.on or self._life.closed:
            return
        self.requested_at = time.perf_counter()
        self._life.preview_generation += 1
        if self._is_running():
            self._pending = True  # after the run
            return
        self._timer.start()

    def supersede(self) -> None:
        """Stop any preview: a Run starts (a running preview stops and is dropped)."""
        self._timer.stop()
        self._life.preview_generation += 1

    def run_ended(self) -> None:
        """Start the preview asked for during a Run."""
        if self._pending and self.on:
            self._pending = False
            self.schedule()

    def stop(self) -> None:
        """Stop for good (the dock was closed)."""
        self._timer.stop()
        self._life.preview_generation += 1

    def _on_toggled(self, on: bool) -> None:
        if on:
            self.schedule()
            return
        self._timer.stop()
        self._life.preview_generation += 1
        if self._controls.layers:
            remove_previews(self._viewer, self._controls.layers)

    def _start(self) -> None:
        if self._life.closed or not self.on:
            return
        if self._is_running() or self._worker is not None:
            # A running preview sees the new generation at its next progress report and
            # stops; this one starts when it has finished.
            self._pending = True
            return
        try:
            job = self._controls.make_job(preview=True)
        except (TypeError, ValueError) as exc:
            self.failed.emit(f"preview: {exc}")
            return
        life = self._life
        generation = life.preview_generation

        def should_stop() -> bool:
            return life.closed or life.preview_generation != generation

        worker = create_worker(run_job, job, should_stop, None, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_returned(outcome, job, generation, life))
        worker.finished.connect(lambda: self._on_finished(life))
        self._worker = worker
        worker.start()

    def _on_returned(self, outcome: Outcome, job: Job, generation: int, life: Lifetime) -> None:
        stale = life.closed or generation != life.preview_generation or self._is_running()
        if stale or outcome.cancelled or not self.on:
            return
        if outcome.error is not None:
            self.failed.emit(f"preview failed: {outcome.error}")
            return
        if any(layer not in self._viewer.layers for layer in job.layers):
            return
        show_result(self._viewer, outcome.prepared, job.layers)
        self.shown_at = time.perf_counter()
        self.shown.emit(outcome.prepared, job)

    def _on_finished(self, life: Lifetime) -> None:
        if life.closed:
            return
        self._worker = None
        if self._pending:
            self._pending = False
            if not self._is_running():
                self._start()
