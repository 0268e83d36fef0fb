"""Choosing k by looking: the error against k, measured on the preview's slice, in the dock.

A small plot of the PSNR (dB) — and, for the perceptual color spaces lab and oklab, the mean
CIEDE2000 difference — of the fit at every k from 2 to :data:`KPLOT_MAX_K` (and on to the
current k when it is larger), with the current k marked; clicking a point sets k.

It measures what the preview measures: the preview's slice of the input (the current slice,
downsampled to at most ``PREVIEW_MAX_PIXELS``), at the preview's fastest setting, with the
dock's color space, fixed colors, seed and region; never dithered (the error of the fit, as
auto k judges it). The fits run on a worker thread, one k after the other, and the plot fills
in as they come (powers of two first, so its shape shows at once). A change of the input or
the settings asks for a new curve after :data:`KPLOT_DEBOUNCE_MS`; a curve being measured is
then stopped at the core's next progress report and dropped, as a superseded preview is; a
change of k alone only moves the mark. A Run takes precedence: the curve waits for it.

matplotlib (its Qt canvas) is imported in the background only: by the dock's warm-up thread
once the kernels are warm (:func:`preload_matplotlib`, if it is installed), or when the plot is
first shown; importing the dock's modules, the command line and scripts never import it.
"""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox
from napari.qt.threading import create_worker
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from napari_kmeans_filter._quantize import error_curve

from ._controls import user_message

if TYPE_CHECKING:
    import napari

    from ._controls import Controls
    from ._read import LayerSource

#: The curve always covers k = 2 ... KPLOT_MAX_K (beyond it, up to the current k).
KPLOT_MAX_K = 64
#: Beyond KPLOT_MAX_K, each k measured is this factor above the one before.
KPLOT_STEP_BEYOND = 1.25
#: A new curve is asked for this long after the last change.
KPLOT_DEBOUNCE_MS = 300
#: The plot is redrawn at most this often while the points come in.
KPLOT_REDRAW_MS = 150
#: Height of the plot in the dock, in pixels.
KPLOT_HEIGHT = 180
#: Colors of the PSNR curve, the mean ΔE curve, and the current k's mark (and auto's target).
PSNR_COLOR = "#4fa3e0"
DELTA_E_COLOR = "#e0a04f"
MARK_COLOR = "#ff5050"
#: Color spaces whose curve also shows the mean CIEDE2000 difference.
PERCEPTUAL = ("lab", "oklab")
#: Keywords of the preview's job that do not change the curve.
_NOT_IN_CURVE = ("dither", "target_psnr", "n_colors")


def curve_ks(current_k: int, lowest: int = 2) -> list[int]:
    """The ks a curve measures, in the order they are shown (see :func:`curve_batches`).

    Every k from ``lowest`` to :data:`KPLOT_MAX_K`, then steps of :data:`KPLOT_STEP_BEYOND`
    up to ``current_k`` (the current k itself included). Powers of two (and the largest k)
    come first, so that the curve's shape shows while the rest fills in.
    """
    ks = set(range(max(2, lowest), KPLOT_MAX_K + 1))
    k = KPLOT_MAX_K
    while k < current_k:
        k = min(current_k, math.ceil(k * KPLOT_STEP_BEYOND))
        ks.add(k)
    ordered = sorted(ks)
    first = [k for k in ordered if k & (k - 1) == 0 or k == ordered[-1]]
    return first + [k for k in ordered if k not in first]


@dataclass(frozen=True)
class CurvePoint:
    """One fit of the curve.

    Attributes
    ----------
    k : int
        The number of colors asked for.
    n_colors : int
        The number of colors fitted (k: the core leaves out the ks beyond the slice's
        distinct colors).
    psnr : float
        In dB (infinite when nothing was lost).
    delta_e : float or None
        Mean CIEDE2000 difference (lab and oklab only).
    """

    k: int
    n_colors: int
    psnr: float
    delta_e: float | None = None


@dataclass(frozen=True)
class CurveRequest:
    """What a curve measures: the preview's slice and settings, and the ks."""

    source: LayerSource
    keywords: dict
    ks: tuple[int, ...]
    key: tuple
    #: The (axis, index) of every axis of a stack held at the current slice.
    fixed: tuple[tuple[int, int], ...] = ()

    @property
    def color_space(self) -> str:
        return self.keywords.get("color_space", "rgb")

    @property
    def with_delta_e(self) -> bool:
        return self.source.rgb and self.color_space in PERCEPTUAL

    def describe(self) -> str:
        """Which data the curve measured, in a sentence."""
        held = {axis for axis, _index in self.fixed}
        shape = self.source.spatial_shape()
        pixels = " × ".join(str(n) for axis, n in enumerate(shape) if axis not in held)
        where = "".join(f"axis {axis} at {index}, " for axis, index in self.fixed)
        step = max(self.source.window.step[-2:], default=1.0)
        sampled = f", one pixel in {step:g} along each axis" if step > 1 else ""
        return (
            f"Measured on the preview's slice of {self.source.name!r} ({where}{pixels} "
            f"pixels{sampled}), fastest fit, no dithering."
        )


class _Stopped(Exception):
    """Raised from the core's progress callback when the curve must stop."""


class _Failed:
    """What the worker yields when the core refuses the settings: the user's message."""

    def __init__(self, message: str) -> None:
        self.message = message


def measure_curve(request: CurveRequest, should_stop: Callable[[], bool]) -> Iterator[Any]:
    """The worker's job: fit every k of ``request`` and yield a :class:`CurvePoint` for each.

    The core's :func:`~napari_kmeans_filter._quantize.error_curve` fits the ks on one count of
    the slice's colors, as ``quantize`` fits them, and measures them as auto k does; it is
    asked for a few ks at a time (:func:`curve_batches`) so that the plot fills in. Stops
    (without a word) when ``should_stop()`` says so, at the core's next progress report;
    yields one ``_Failed`` and stops when the core refuses the settings.
    """

    def progress(_fraction: float, _message: str) -> None:
        if should_stop():
            raise _Stopped

    source = request.source
    try:
        data = np.asarray(source.levels[0])  # once: a lazy slice is read once, not per k
        keywords = {**source.core_keywords(), **request.keywords}
        if source.mask_factory is not None:
            keywords["mask"] = np.asarray(source.mask)
        for batch in curve_batches(request.ks):
            if should_stop():
                return
            curve = error_curve(
                data, batch, delta_e=request.with_delta_e, progress=progress, **keywords
            )
            delta_e = curve.get("delta_e", [None] * len(curve["n_colors"]))
            for k, psnr, mean_delta_e in zip(
                curve["n_colors"], curve["psnr"], delta_e, strict=True
            ):
                yield CurvePoint(int(k), int(k), float(psnr), mean_delta_e)
            if len(curve["n_colors"]) < len(batch):
                return  # the larger ks would keep every color: nothing more to see
    except _Stopped:
        return
    except (TypeError, ValueError, MemoryError) as exc:
        yield _Failed(user_message(exc))


def curve_batches(ks: tuple[int, ...], size: int = 16) -> list[list[int]]:
    """``ks`` (in :func:`curve_ks`'s order) in the groups the core is asked for at a time.

    The first group is the powers of two (and the largest k), so the curve's shape shows
    after one count of the colors; the rest follow in increasing groups of ``size``: each
    group counts the slice's colors again (a few tens of milliseconds for the preview's
    slice) and the plot fills in between groups.
    """
    first = [k for k in ks if k & (k - 1) == 0 or k == max(ks)]
    rest = sorted(k for k in ks if k not in first)
    return [first] + [rest[i : i + size] for i in range(0, len(rest), size)]


# --------------------------------------------------------------------------------------
# The plot in the dock
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Picture:
    """What the plot shows now: drawn in the background, then painted on the GUI thread."""

    points: tuple[CurvePoint, ...]
    k: int
    target_psnr: float | None
    width: int
    height: int


@dataclass(frozen=True)
class _Rendered:
    """A rendered picture: the pixels and where each k's point lies (for clicks)."""

    picture: _Picture
    image: Any  # QImage
    ks: np.ndarray
    x: np.ndarray  # display x (physical pixels from the left) of each k's point
    y: np.ndarray  # display y (from the bottom), NaN where PSNR is infinite
    axes_x: tuple[float, float]  # the axes' extent in display x


def preload_matplotlib() -> None:
    """Import what the plot's first show imports, if matplotlib is installed (any thread).

    The dock's warm-up calls this after the core's kernels and napari's layer costs:
    matplotlib's import grows the heap enough that Python's garbage collector then makes
    a full pass (0.25-0.65 s, holding the interpreter lock), which froze the GUI when the
    plot was first shown; while the user is still looking at a dock just opened, nothing
    waits for it.
    """
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        return
    try:
        from matplotlib.backends import backend_agg, backend_qtagg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except Exception:  # the plot says why when it is shown
        return


class _Painter(QObject):
    """The plot's figure, drawn by matplotlib's Agg renderer on a thread of its own.

    Importing matplotlib, laying out text and rendering take tens to hundreds of
    milliseconds; on the GUI thread they would freeze the viewer (a full draw of this small
    figure took 70-90 ms, and 150-650 ms while a curve was being measured, load 6 on 2
    cores). So the figure lives on this thread: it is made, changed and rendered here only,
    and the GUI thread paints the finished pixels (:class:`_Canvas`).
    """

    #: matplotlib is imported and the figure made: the figure (queued to the GUI thread).
    loaded = Signal(object)
    #: A picture was rendered: a :class:`_Rendered`.
    rendered = Signal(object)
    #: matplotlib cannot be imported: why.
    unavailable = Signal(str)

    def __init__(self, ink: str, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._ink = ink
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stopped = False
        self.figure: Any = None

    def start(self) -> None:
        threading.Thread(target=self._loop, name="napari-kmeans-filter k plot", daemon=True).start()

    def draw(self, picture: _Picture) -> None:
        """Render ``picture`` (superseding any not yet started)."""
        self._queue.put(picture)

    def stop(self) -> None:
        self._stopped = True
        self._queue.put(None)

    def _loop(self) -> None:
        try:
            self._make_figure()
            if self._stopped:
                return
        except ImportError as exc:
            self.unavailable.emit(f"The k plot needs matplotlib ({exc}): pip install matplotlib")
            return
        self.loaded.emit(self.figure)
        while True:
            picture = self._queue.get()
            while not self._queue.empty():  # only the latest picture matters
                picture = self._queue.get()
            if picture is None:
                return
            try:
                rendered = self._render(picture)
            except Exception as exc:  # a plot must never take the dock down
                print(f"napari-kmeans-filter: the k plot could not be drawn: {exc!r}")
                continue
            if self._stopped:
                return
            self.rendered.emit(rendered)

    def _make_figure(self) -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg  # noqa: F401
        from matplotlib.figure import Figure

        figure = Figure(figsize=(3.2, 1.9), dpi=100, facecolor="none")
        figure.subplots_adjust(left=0.16, right=0.85, bottom=0.22, top=0.95)
        axes = figure.add_subplot()
        twin = axes.twinx()
        ink = self._ink
        for each in (axes, twin):
            each.set_facecolor("none")
            each.tick_params(colors=ink, labelsize=7)
            for spine in each.spines.values():
                spine.set_color(ink)
        axes.set_xlabel("k (colors)", color=ink, fontsize=7, labelpad=1)
        axes.set_ylabel("PSNR (dB)", color=PSNR_COLOR, fontsize=7, labelpad=1)
        twin.set_ylabel("mean ΔE", color=DELTA_E_COLOR, fontsize=7, labelpad=1)
        (self._psnr,) = axes.plot([], [], ".-", color=PSNR_COLOR, markersize=3, lw=1)
        (self._delta_e,) = twin.plot([], [], ".-", color=DELTA_E_COLOR, markersize=3, lw=1)
        self._mark = axes.axvline(2, color=MARK_COLOR, lw=1)
        (self._mark_point,) = axes.plot([], [], "o", color=MARK_COLOR, markersize=5)
        self._target = axes.axhline(0, color=MARK_COLOR, lw=0.8, ls="--")
        self.figure, self.axes, self.twin = figure, axes, twin

    def _render(self, picture: _Picture) -> _Rendered:
        from matplotlib.backends.backend_agg import RendererAgg
        from qtpy.QtGui import QImage

        figure, axes, twin = self.figure, self.axes, self.twin
        figure.set_size_inches(picture.width / figure.dpi, picture.height / figure.dpi)
        points = [p for p in picture.points if math.isfinite(p.psnr)]
        ks = np.array([p.k for p in points], dtype=float)
        psnr = np.array([p.psnr for p in points])
        self._psnr.set_data(ks, psnr)
        with_delta_e = bool(points) and points[0].delta_e is not None
        twin.set_visible(with_delta_e)
        if with_delta_e:
            self._delta_e.set_data(ks, [p.delta_e for p in points])
            twin.relim(visible_only=True)
            twin.autoscale_view()
        axes.set_xscale("log" if len(ks) and ks.max() > KPLOT_MAX_K else "linear")
        if axes.get_xscale() == "log":
            axes.xaxis.set_major_formatter("{x:g}")
        self._mark.set_xdata([picture.k, picture.k])
        at_k = [p.psnr for p in points if p.k == picture.k]
        self._mark_point.set_data([picture.k] * len(at_k), at_k)
        self._target.set_visible(picture.target_psnr is not None)
        if picture.target_psnr is not None:
            self._target.set_ydata([picture.target_psnr] * 2)
        axes.relim(visible_only=True)
        axes.autoscale_view()
        # A renderer of its own: Qt's canvas (whose draw would ask Qt to repaint) is not used.
        width, height = int(picture.width), int(picture.height)
        renderer = RendererAgg(width, height, figure.dpi)
        figure.draw(renderer)
        image = QImage(
            bytes(renderer.buffer_rgba()), width, height, QImage.Format.Format_RGBA8888
        ).copy()
        xy = axes.transData.transform(np.column_stack([ks, psnr])) if len(ks) else np.zeros((0, 2))
        box = axes.get_window_extent()
        return _Rendered(picture, image, ks.astype(int), xy[:, 0], xy[:, 1], (box.x0, box.x1))


def _canvas_class() -> type:
    """matplotlib's Qt canvas, painting what :class:`_Painter` rendered (imported lazily)."""
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from qtpy.QtGui import QPainter

    class _Canvas(FigureCanvasQTAgg):
        """The figure's Qt canvas: its mouse events are matplotlib's, its pixels are drawn on
        the painter's thread (asking it to draw never renders on the GUI thread)."""

        def __init__(self, figure: Any, ask_render: Callable[[], None]) -> None:
            self._ask_render = ask_render
            self._image = None
            super().__init__(figure)
            figure.set_canvas(self)

        def draw(self) -> None:
            self._ask_render()

        def draw_idle(self) -> None:
            self._ask_render()

        def resizeEvent(self, event: Any) -> None:
            # The figure's size is set on the painter's thread, with the next picture.
            QWidget.resizeEvent(self, event)
            self._ask_render()

        def show_image(self, image: Any) -> None:
            self._image = image
            self.update()

        def paintEvent(self, event: Any) -> None:
            painter = QPainter(self)
            if self._image is not None:
                ratio = self.device_pixel_ratio or 1
                self._image.setDevicePixelRatio(ratio)
                painter.drawImage(0, 0, self._image)
            painter.end()

    return _Canvas


class KPlot(QWidget):
    """The 'k plot' checkbox and, while it is on, the plot of the error against k.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose slice the curve measures.
    controls : Controls
        The settings the curve is measured with; clicking a point sets their k.
    is_running : callable
        Whether a Run is going on (the curve waits for it).
    parent : QWidget, optional
    """

    #: A curve has been measured in full and drawn (for tests and the screenshots).
    finished = Signal()

    def __init__(
        self,
        viewer: napari.viewer.Viewer,
        controls: Controls,
        is_running: Callable[[], bool],
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._controls = controls
        self._is_running = is_running
        self._closed = False
        self._request: CurveRequest | None = None  # of the curve shown (or being measured)
        self._points: dict[int, CurvePoint] = {}
        self._complete = False
        self._announce = False  # emit `finished` when the complete curve is drawn
        self._stop: threading.Event | None = None
        self._worker: Any = None
        self._computing = 0  # workers still running (a stopped one drains)
        self._pending = False
        self._painter: _Painter | None = None
        self._canvas: Any = None
        self._asked: _Picture | None = None  # the last picture asked for
        self._rendered: _Rendered | None = None  # the last picture painted
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(KPLOT_DEBOUNCE_MS)
        self._timer.timeout.connect(self._start)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(KPLOT_REDRAW_MS)
        self._redraw_timer.timeout.connect(self._draw)

        self.check = CheckBox(
            text="k plot: error against k",
            value=False,
            tooltip="Plot the PSNR (and for lab/oklab the mean ΔE) of the fit at k = 2 to "
            f"{KPLOT_MAX_K} (and up to the current k), measured on the preview's slice with "
            "these settings; click a point to set k.",
        )
        self.check.changed.connect(self._on_toggled)
        self.caption = QLabel("")
        self.caption.setWordWrap(True)
        self.caption.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self._plot_box = QWidget()
        self._plot_layout = QVBoxLayout(self._plot_box)
        self._plot_layout.setContentsMargins(0, 0, 0, 0)
        self._plot_layout.addWidget(self.caption)
        self._plot_box.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.check.native)
        layout.addWidget(self._plot_box)

    # ----------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------

    @property
    def on(self) -> bool:
        # Closed first: after the dock is gone its checkbox may be deleted.
        return not self._closed and bool(self.check.value)

    @property
    def is_busy(self) -> bool:
        """Whether a curve is asked for, loading, being measured or being drawn."""
        return (
            self._timer.isActive()
            or self._computing > 0
            or (self._pending and self.on)
            or (self.on and self._canvas is None)
            or self._redraw_timer.isActive()
            or self._drawing
        )

    @property
    def _drawing(self) -> bool:
        """Whether a picture asked for has not been painted yet."""
        if self._asked is None:
            return False
        return self._rendered is None or self._rendered.picture is not self._asked

    @property
    def points(self) -> list[CurvePoint]:
        """The points measured so far, by k."""
        return [self._points[k] for k in sorted(self._points)]

    @property
    def request(self) -> CurveRequest | None:
        return self._request

    @property
    def canvas(self) -> Any:
        """matplotlib's Qt canvas (None until the plot was first shown)."""
        return self._canvas

    @property
    def axes(self) -> Any:
        """The PSNR axes (drawn on the painter's thread: read them only when idle)."""
        return self._painter.axes if self._canvas is not None else None

    @property
    def twin(self) -> Any:
        """The mean ΔE axes."""
        return self._painter.twin if self._canvas is not None else None

    @property
    def marked_k(self) -> int | None:
        """The k marked in the plot on screen."""
        return self._rendered.picture.k if self._rendered is not None else None

    def point_position(self, k: int) -> tuple[float, float]:
        """Where k's point is on screen, in matplotlib's display coordinates."""
        rendered = self._rendered
        (index,) = np.flatnonzero(rendered.ks == k)
        return float(rendered.x[index]), float(rendered.y[index])

    def current_k(self) -> int:
        return int(self._controls.n_colors_input.value)

    # ----------------------------------------------------------------------------------
    # Asking for a curve
    # ----------------------------------------------------------------------------------

    def schedule(self) -> None:
        """The input or the settings changed: a new curve (or only a new mark) is due."""
        if not self.on:
            return
        if self._is_running():
            self._pending = True
            return
        self._timer.start()

    def run_started(self) -> None:
        """A Run starts: the curve being measured stops; a new one follows the run."""
        if self._timer.isActive() or self._worker is not None:
            self._pending = True
        self._timer.stop()
        if self._worker is not None:
            self._stop_worker()
            self._request = None  # measured in part: measure it again after the run

    def run_ended(self) -> None:
        """A Run ended: a curve asked for meanwhile is measured; the mark follows auto's k."""
        self._pending = False
        self.schedule()

    def abandon(self) -> None:
        """Stop without touching Qt (the dock was deleted): the worker gives up, unheard."""
        self._closed = True
        self._pending = False
        self._stop_worker()
        if self._painter is not None:
            self._painter.stop()

    def stop(self) -> None:
        """Stop for good (the dock or the viewer is closing)."""
        self._closed = True
        self._pending = False
        self._timer.stop()
        self._redraw_timer.stop()
        self._stop_worker()
        if self._painter is not None:
            self._painter.stop()

    def _on_toggled(self, on: bool) -> None:
        self._plot_box.setVisible(on)
        if not on:
            self._timer.stop()
            self._pending = False
            self._stop_worker()
            self._request = None
            return
        if self._canvas is None:
            self.caption.setText("loading the plot…")
            if self._painter is None:
                ink = self.palette().windowText().color().name()
                self._painter = _Painter(ink, self)
                self._painter.loaded.connect(self._on_loaded)
                self._painter.rendered.connect(self._on_rendered)
                self._painter.unavailable.connect(self.caption.setText)
                self._painter.start()
            return
        self.schedule()

    def _on_loaded(self, figure: Any) -> None:
        if self._closed:
            return
        canvas = _canvas_class()(figure, self._draw)
        canvas.setFixedHeight(KPLOT_HEIGHT)
        canvas.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        canvas.setStyleSheet("background: transparent")
        canvas.mpl_connect("button_press_event", self._on_click)
        canvas.setToolTip("Click a point to set k.")
        self._canvas = canvas
        self._plot_layout.insertWidget(0, canvas)
        if self.on:
            self.caption.setText("")
            self.schedule()

    def _stop_worker(self) -> None:
        if self._stop is not None:
            self._stop.set()
        self._stop = None
        self._worker = None

    # ----------------------------------------------------------------------------------
    # Measuring one
    # ----------------------------------------------------------------------------------

    def _make_request(self) -> CurveRequest:
        job = self._controls.make_job(preview=True)
        keywords = {k: v for k, v in job.keywords.items() if k not in _NOT_IN_CURVE}
        fixed = keywords.get("fixed_colors")
        n_fixed = 0 if fixed is None else len(fixed)
        source = job.source
        key = (
            source.layer_ids,
            tuple(id(layer.data) for layer in job.layers),  # the data replaced: a new curve
            source.window.start,
            source.window.step,
            source.spatial_shape(),
            tuple(sorted((k, _hashable(v)) for k, v in keywords.items())),
            self._controls.scope_choice.value,
            id(self._controls.region_choice.value) if source.mask_factory else None,
        )
        ks = tuple(curve_ks(self.current_k(), lowest=max(2, n_fixed)))
        return CurveRequest(source, keywords, ks, key, _held_axes(job.layers[0], source))

    def _start(self) -> None:
        if not self.on or self._canvas is None:
            return
        if not self._controls.layers:
            self._stop_worker()
            self._request = None
            self._show_message("no image layer to measure")
            return
        if self._is_running():
            self._pending = True
            return
        try:
            request = self._make_request()
        except (TypeError, ValueError) as exc:
            self._stop_worker()
            self._request = None
            self._show_message(f"no k plot: {user_message(exc)}")
            return
        current = self._request
        if (
            current is not None
            and current.key == request.key
            and (self._worker is not None or self._complete)
            and max(current.ks) >= self.current_k()
        ):
            self._draw()  # the same curve: only the mark moves
            return
        self._stop_worker()
        self._request = None
        if self._computing > 0:
            self._pending = True  # the superseded curve's worker drains first
            return
        self._request = request
        self._points = {}
        self._complete = False
        stop = threading.Event()
        worker = create_worker(measure_curve, request, stop.is_set, _start_thread=False)
        worker.yielded.connect(lambda item, w=worker: self._on_yielded(w, item))
        worker.finished.connect(lambda w=worker: self._on_worker_finished(w))
        self._stop = stop
        self._worker = worker
        self._computing += 1
        self.caption.setText(f"measuring k = {min(request.ks)} to {max(request.ks)}…")
        worker.start()

    def _on_yielded(self, worker: Any, item: Any) -> None:
        if worker is not self._worker:
            return  # superseded: dropped
        if isinstance(item, _Failed):
            self._stop_worker()
            self._request = None
            self._show_message(f"no k plot: {item.message}")
            return
        self._points[item.k] = item
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _on_worker_finished(self, worker: Any) -> None:
        self._computing -= 1
        if worker is self._worker:
            self._worker = None
            self._stop = None
            self._complete = True
            self._announce = True
            self._redraw_timer.stop()
            self._draw()
        if self._pending and self._computing == 0 and not self._is_running() and self.on:
            self._pending = False
            self._start()

    def _show_message(self, text: str) -> None:
        self._points = {}
        self._complete = False
        self._draw()
        self.caption.setText(text)

    # ----------------------------------------------------------------------------------
    # Drawing (on the painter's thread), and clicking a point
    # ----------------------------------------------------------------------------------

    def _draw(self) -> None:
        """Ask the painter for a picture of the points so far and the current k."""
        if self._canvas is None or self._closed:
            return
        ratio = self._canvas.device_pixel_ratio or 1
        target = None
        if self._controls.auto_k_check.value:
            target = float(self._controls.target_psnr_input.value)
        picture = _Picture(
            points=tuple(self.points),
            k=self.current_k(),
            target_psnr=target,
            width=max(int(self._canvas.width() * ratio), 50),
            height=max(int(self._canvas.height() * ratio), 50),
        )
        if picture == self._asked:
            return
        self._asked = picture
        self._painter.draw(picture)
        request = self._request
        if request is not None and self._points:
            lossless = any(not math.isfinite(p.psnr) for p in self._points.values())
            note = " The last k keeps every color (no error)." if lossless else ""
            done = "" if self._complete else f" Measured {len(self._points)}/{len(request.ks)}…"
            self.caption.setText(f"{request.describe()} Click a point to set k.{note}{done}")

    def _on_rendered(self, rendered: _Rendered) -> None:
        if self._closed or self._canvas is None:
            return
        self._rendered = rendered
        self._canvas.show_image(rendered.image)
        if self._announce and rendered.picture is self._asked and self._complete:
            self._announce = False
            self.finished.emit()

    def _on_click(self, event: Any) -> None:
        rendered = self._rendered
        if rendered is None or not len(rendered.ks) or event.x is None:
            return
        low, high = rendered.axes_x
        if not low - 8 <= event.x <= high + 8:
            return  # on a tick label or beside the plot
        nearest = rendered.ks[np.argmin(np.abs(rendered.x - event.x))]
        self.choose_k(int(nearest))

    def choose_k(self, k: int) -> None:
        """Set k (as a click on its point does): auto k goes off, the k box takes ``k``."""
        if self._controls.auto_k_check.value:
            self._controls.auto_k_check.value = False
        self._controls.n_colors_input.value = k


def _held_axes(layer: Any, source: LayerSource) -> tuple[tuple[int, int], ...]:
    """The axes of a stack that the slice holds at one index: (axis, index) pairs."""
    data = layer.data[0] if layer.multiscale else layer.data
    full = tuple(data.shape[:-1] if source.rgb else data.shape)
    shape = source.spatial_shape()
    if len(full) != len(shape):
        return ()
    return tuple(
        (axis, int(source.window.start[axis]))
        for axis, (n, total) in enumerate(zip(shape, full, strict=True))
        if n == 1 and total > 1
    )


def _hashable(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return (value.shape, tuple(value.ravel().tolist()))
    return value
