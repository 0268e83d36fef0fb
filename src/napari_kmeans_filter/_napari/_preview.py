"""The live preview: a quick result of the current slice that follows every change of settings.

A change starts a timer (:data:`PREVIEW_DEBOUNCE_MS`), so a spin box held down starts one
preview, not one per step. Each preview is a :class:`~._task.Task`; a newer change supersedes
it (it ends at once, its worker stops at its next progress report and its result is dropped),
and the next one starts when that worker is done, so two previews never compute at once. A
Run takes precedence: a preview asked for meanwhile starts when the run has ended.

The preview owns the layers it shows: turning it off, a failed preview, the input changing to
other layers or the source being removed take exactly those layers away (unless a Run took
one over: then it is the Run's result and stays).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from magicgui.widgets import CheckBox
from qtpy.QtCore import QObject, QTimer, Signal

from ._controls import user_message
from ._prepare import METADATA_KEY
from ._task import CLOSED, DONE, FAILED, SOURCE_REMOVED, SUPERSEDED, Ending, Task

if TYPE_CHECKING:
    import napari

    from ._controls import Controls

#: A preview starts this long after the last change.
PREVIEW_DEBOUNCE_MS = 40


def _is_preview(layer: Any) -> bool:
    return bool(layer.metadata.get(METADATA_KEY, {}).get("preview"))


class Preview(QObject):
    """The 'live preview' checkbox and the previews it asks for.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the preview layer goes.
    controls : Controls
        The settings a preview is made of.
    is_running : callable
        Whether a Run is going on (previews wait for it).
    parent : QObject, optional
        The dock.
    """

    #: A preview was shown: the prepared result and its job.
    shown = Signal(object, object)
    #: The preview's layers were taken away (preview off, failed, source removed).
    cleared = Signal()
    #: A line for the status: why a preview could not be made.
    failed = Signal(str)

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        controls: Controls,
        is_running: Callable[[], bool],
        parent: QObject | None = None,
    ) -> None:
        # Parented to the dock, so that its timer goes with the dock's widgets.
        super().__init__(parent)
        self._viewer = viewer
        self._controls = controls
        self._is_running = is_running
        self._closed = False
        self._task: Task | None = None
        self._computing = 0  # preview workers still running (a superseded one drains)
        self._pending = False
        self._layers: list[Any] = []  # the preview layers shown now
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
        return bool(self.check.value) and not self._closed

    @property
    def is_busy(self) -> bool:
        """Whether a preview is waiting or being computed."""
        return self._task is not None or self._computing > 0 or self._timer.isActive()

    @property
    def task(self) -> Task | None:
        return self._task

    @property
    def layers(self) -> list[Any]:
        """The preview layers shown now."""
        return list(self._layers)

    # ----------------------------------------------------------------------------------
    # Asking for previews
    # ----------------------------------------------------------------------------------

    def schedule(self) -> None:
        """Ask for a preview of the current settings (if preview is on)."""
        if not self.on:
            return
        self.requested_at = time.perf_counter()
        self._stop_task(SUPERSEDED)
        if self._is_running():
            self._pending = True  # after the run
            return
        self._timer.start()

    def run_started(self) -> None:
        """A Run starts: any preview stops and is dropped; one is made after the run."""
        if self._timer.isActive() or self._task is not None:
            self._pending = True
        self._timer.stop()
        self._stop_task(SUPERSEDED)

    def run_ended(self, ending: Ending) -> None:
        """A Run ended: a preview layer it took over is its result now; pending previews go."""
        self._layers = [layer for layer in self._layers if _is_preview(layer)]
        if self._pending and self.on:
            self._pending = False
            self.schedule()

    def sources_removed(self) -> None:
        """Layers were removed: a preview of a removed source goes with it."""
        task = self._task
        if task is not None and any(layer not in self._viewer.layers for layer in task.job.layers):
            task.stop(SOURCE_REMOVED)
        if self._layers and not self._sources_present():
            self.clear()

    def stop(self) -> None:
        """Stop for good (the dock or the viewer is closing)."""
        self._closed = True
        self._timer.stop()
        self._stop_task(CLOSED)

    def clear(self) -> None:
        """Take the preview layers away (those still previews) and say so."""
        layers, self._layers = self._layers, []
        for layer in layers:
            if layer in self._viewer.layers and _is_preview(layer):
                self._viewer.layers.remove(layer)
        self.cleared.emit()

    # ----------------------------------------------------------------------------------
    # Running one
    # ----------------------------------------------------------------------------------

    def _on_toggled(self, on: bool) -> None:
        if on:
            self.schedule()
            return
        self._timer.stop()
        self._pending = False
        self._stop_task(SUPERSEDED)
        self.clear()

    def _stop_task(self, reason: str) -> None:
        if self._task is not None:
            self._task.stop(reason)

    def _start(self) -> None:
        if not self.on:
            return
        if not self._controls.layers:
            self.clear()  # nothing to preview (the input was removed): nothing to say
            return
        if self._is_running() or self._computing > 0:
            # A superseded preview's worker stops at its next progress report; this one
            # starts when it is done.
            self._pending = True
            return
        try:
            job = self._controls.make_job(preview=True)
        except (TypeError, ValueError) as exc:
            self.clear()
            self.failed.emit(f"preview failed: {user_message(exc)}")
            return
        task = Task(self._viewer, job, report_progress=False)
        task.ended.connect(lambda ending, task=task: self._on_ended(task, ending))
        task.worker_done.connect(self._on_worker_done)
        self._task = task
        self._computing += 1
        task.start()

    def _on_ended(self, task: Task, ending: Ending) -> None:
        if task is self._task:
            self._task = None
        if ending.kind == DONE:
            shown = [*ending.shown.images, *filter(None, [ending.shown.clusters])]
            # A preview of other layers (the input changed) replaces the old one.
            for layer in self._layers:
                if layer not in shown and layer in self._viewer.layers and _is_preview(layer):
                    self._viewer.layers.remove(layer)
            self._layers = shown
            self.shown_at = time.perf_counter()
            self.shown.emit(ending.prepared, ending.job)
        elif ending.kind == FAILED:
            self.clear()
            self.failed.emit(f"preview failed: {ending.message}")
        elif ending.kind == SOURCE_REMOVED:
            self.clear()

    def _on_worker_done(self) -> None:
        self._computing -= 1
        if self._pending and self._computing == 0 and not self._is_running():
            self._pending = False
            self._start()

    def _sources_present(self) -> bool:
        ids = {str(layer.unique_id) for layer in self._viewer.layers}
        for layer in self._layers:
            group = layer.metadata.get(METADATA_KEY, {}).get("source_id", "")
            if not set(group.split("+")) <= ids:
                return False
        return True
