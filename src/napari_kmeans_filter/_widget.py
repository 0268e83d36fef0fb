"""The "K-means color filter" dock widget.

The widget gathers parameters, reads the chosen layers (:mod:`napari_kmeans_filter._layers`,
the same code as ``quantize_layer`` in the console), runs the core on a worker thread and
shows what came back. It holds no algorithm.

Threads: the GUI thread reads layers and hands finished arrays to layers; the worker
quantizes and prepares the layer data (label shifting, colors, the per-cluster table), so
that adding the result layers is short. Progress reaches the GUI through a queued Qt
signal. A run stops at the core's next progress report once it is cancelled (Cancel, the
dock closed, or a newer preview).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSlider,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels, Shapes
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QEvent, QObject, QSize, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QIcon, QPixmap
from qtpy.QtWidgets import (
    QColorDialog,
    QDockWidget,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListView,
    QListWidget,
    QListWidgetItem,
    QScrollArea,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from napari_kmeans_filter import COLOR_SPACES, MAX_N_COLORS, Palette
from napari_kmeans_filter._io import ImageIOError, atomic_output
from napari_kmeans_filter._jit import warm_up
from napari_kmeans_filter._layers import (
    BOTH,
    CLUSTERS,
    IMAGE,
    LayerSource,
    PreparedResult,
    SliceRequest,
    announce_result,
    apply_palette_source,
    describe_result,
    find_clusters_layer,
    is_result_layer,
    prepare_result,
    quantize_source,
    read_layer_source,
    remove_previews,
    result_palette,
    show_result,
    show_result_steps,
)

if TYPE_CHECKING:
    import napari
    from napari.qt.threading import FunctionWorker

#: The progress bar counts in thousandths so that small steps still move it.
PROGRESS_STEPS = 1000
#: Share of the bar for the core's work; then preparing layers (worker), then adding them.
WORK_SHARE = 0.9
PREPARE_SHARE = 0.97

#: A preview starts this long after the last change, so a spin box held down or a slider
#: dragged starts one preview, not one per step.
PREVIEW_DEBOUNCE_MS = 40
#: Previews quantize at most about this many pixels of the current slice (a coarser
#: pyramid level or a regular stride beyond): 512 x 512, which the core's fastest setting
#: fits in a few tens of milliseconds, so that a preview follows the controls.
PREVIEW_MAX_PIXELS = 262_144
#: The core's fastest setting (pngquant's convention: 1 = most thorough, 10 = fastest).
PREVIEW_SPEED = 10

#: Longest layer name shown whole in the status line; longer names are shortened in the
#: middle (the full text is in the tooltip) so that the dock never widens.
STATUS_NAME_CHARS = 28

SCOPE_WHOLE = "whole layer"
SCOPE_SLICE = "current slice"
SCOPE_REGION = "region"
OUTPUT_CHOICES = {
    "clusters + image": BOTH,
    "clusters": (CLUSTERS,),
    "image": (IMAGE,),
}


class RunCancelled(Exception):
    """Raised inside the worker (from the progress callback) when the run must stop."""


@dataclass(frozen=True)
class _RunOutcome:
    """What the worker hands back: a prepared result, a user-facing error, or a cancellation.

    The worker returns expected failures instead of raising them: napari turns a raised
    exception into an error notification with a traceback, which is right for bugs but not
    for "this layer has no colors".
    """

    prepared: PreparedResult | None = None
    error: str | None = None
    cancelled: bool = False


@dataclass(frozen=True)
class _Job:
    """One quantization (or palette application) to run, fully described."""

    source: LayerSource
    layers: tuple[Image, ...]
    n_colors: int | str = 8
    keywords: dict = field(default_factory=dict)
    palette: Palette | None = None
    outputs: tuple[str, ...] = BOTH
    preview: bool = False


class _ProgressRelay(QObject):
    """Carries progress reports from the worker thread to the GUI thread.

    Emitting a Qt signal from another thread queues the call in the receiver's thread, so
    the widgets are only ever touched by the GUI thread.
    """

    progressed = Signal(float, str)


class _Lifetime:
    """State the worker callbacks need after the widget itself may be gone.

    Worker signals can arrive after the dock was closed (and the Qt widget deleted), so
    they check ``closed`` here, in a plain Python object, before touching the widget.
    """

    def __init__(self) -> None:
        self.closed = False
        self.cancel = threading.Event()
        self.preview_generation = 0


def _shorten(name: str, limit: int = STATUS_NAME_CHARS) -> str:
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: (keep + 1) // 2] + "…" + name[len(name) - keep // 2 :]


class PalettePanel(QWidget):
    """Swatches of a palette in label order, each with its share of the pixels.

    Clicking a swatch selects its label in the clusters layer (``layer.selected_label``),
    so painting, "show selected" and the features table follow.
    """

    label_clicked = Signal(int)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.palette: Palette | None = None
        self.shares = np.zeros(0)
        self.title = QLabel("no result yet")
        self.title.setWordWrap(True)
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.swatches = QListWidget()
        self.swatches.setViewMode(QListView.ViewMode.IconMode)
        self.swatches.setFlow(QListView.Flow.LeftToRight)
        self.swatches.setWrapping(True)
        self.swatches.setResizeMode(QListView.ResizeMode.Adjust)
        self.swatches.setMovement(QListView.Movement.Static)
        self.swatches.setUniformItemSizes(True)
        self.swatches.setIconSize(QSize(24, 24))
        # Wide enough for "100.0%" under every swatch.
        width = self.swatches.fontMetrics().horizontalAdvance("100.0%") + 10
        self.swatches.setGridSize(QSize(max(50, width), 44))
        self.swatches.setTextElideMode(Qt.TextElideMode.ElideNone)
        self.swatches.setSpacing(0)
        self.swatches.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.swatches.setFixedHeight(3 * 44 + 8)
        self.swatches.setToolTip(
            "The palette in label order (label 1 first), with each color's share of the "
            "pixels. Click a color to select its label in the clusters layer."
        )
        self.swatches.itemClicked.connect(self._on_item_clicked)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.title)
        layout.addWidget(self.swatches)

    def show_palette(self, palette: Palette, swatches: np.ndarray, title: str) -> None:
        """Show ``palette`` with the display colors ``swatches`` (RGBA in [0, 1])."""
        self.palette = palette
        counts = np.asarray(palette.counts, dtype=float)
        self.shares = counts / counts.sum() if counts.sum() > 0 else counts
        self.title.setText(title)
        self.title.setToolTip(title)
        self.swatches.clear()
        self.swatches.setUpdatesEnabled(False)
        for index, (rgba, share) in enumerate(zip(swatches, self.shares, strict=True)):
            pixmap = QPixmap(24, 24)
            pixmap.fill(QColor.fromRgbF(*(float(c) for c in rgba[:3])))
            item = QListWidgetItem(QIcon(pixmap), f"{100 * share:.1f}%")
            values = ", ".join(_format_value(v) for v in palette.colors[index])
            item.setToolTip(
                f"label {index + 1}: ({values}), {100 * share:.2f} % of the pixels "
                f"({int(palette.counts[index])})"
            )
            item.setData(Qt.ItemDataRole.UserRole, index + 1)
            self.swatches.addItem(item)
        self.swatches.setUpdatesEnabled(True)

    def clear_palette(self, title: str = "no result yet") -> None:
        self.palette = None
        self.shares = np.zeros(0)
        self.swatches.clear()
        self.title.setText(title)

    def click_label(self, label: int) -> None:
        """Act as if the swatch of ``label`` (1-based) were clicked."""
        item = self.swatches.item(label - 1)
        self.swatches.setCurrentItem(item)
        self._on_item_clicked(item)

    def _on_item_clicked(self, item: QListWidgetItem) -> None:
        self.label_clicked.emit(int(item.data(Qt.ItemDataRole.UserRole)))


def _format_value(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float | np.floating) else str(value)


class KMeansColourWidget(QWidget):
    """Dock widget: quantize the colors of image layers with k-means.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose image layers are offered and where results are shown.
    """

    #: Emitted with every new text of the status line (the phase, then the result).
    status_changed = Signal(str)

    def __init__(self, viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        # napari hands plugins a proxy of the viewer; layers taken from it are proxies too,
        # and proxies compare unequal to the real layers inside Qt models.
        self._viewer = getattr(viewer, "__wrapped__", viewer)
        self._life = _Lifetime()
        self._worker: FunctionWorker | None = None
        self._run_job: _Job | None = None
        self._preview_worker: FunctionWorker | None = None
        self._preview_pending = False
        self._preview_timer = QTimer(self)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.setInterval(PREVIEW_DEBOUNCE_MS)
        self._preview_timer.timeout.connect(self._start_preview)
        #: perf_counter() of the last settings change and of the last preview shown.
        self.preview_requested_at = 0.0
        self.preview_shown_at = 0.0
        self._progress_relay = _ProgressRelay()
        self._progress_relay.progressed.connect(self._show_progress)
        self._docked = False
        self._outcome_handled = False
        #: The source layers of the palette shown in the panel (for selecting labels).
        self._panel_layers: tuple[Image, ...] = ()

        self._build_controls()
        self._build_layout()
        self._connect()
        self._refresh_choices()
        self._follow_layer_selection()
        # Load numba and the compiled kernels while the user looks at the dock, so the
        # first Run or preview does not pay for them (~1 s from numba's cache; the very
        # first time after installing, the kernels are compiled: several seconds).
        threading.Thread(target=warm_up, name="napari-kmeans-filter warm-up", daemon=True).start()

    # ----------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------

    def _build_controls(self) -> None:
        self.image_layers = Select(
            choices=self._image_layer_choices,
            allow_multiple=True,
            tooltip="The Image layer(s) to quantize; follows the layers selected in the "
            "layer list. Select several greyscale layers of the same shape (e.g. DAPI and "
            "GFP) to cluster them together: every pixel is one point with a value per layer.",
        )
        self.image_layers.native.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.image_layers.native.setFixedHeight(76)
        self.scope_choice = ComboBox(
            choices=[SCOPE_WHOLE, SCOPE_SLICE, SCOPE_REGION],
            value=SCOPE_WHOLE,
            tooltip="What to quantize: the whole layer (every frame and slice shares one "
            "palette), only the slice shown now (its other axes at the current position), "
            "or the whole layer with only the pixels of a region voting for the palette.",
        )
        self.region_choice = ComboBox(
            choices=self._region_layer_choices,
            nullable=True,
            tooltip="A Shapes layer (pixels inside its shapes) or Labels layer (pixels "
            "labelled > 0): only these pixels vote for the palette; every pixel is painted.",
        )
        self.outputs_choice = ComboBox(
            choices=list(OUTPUT_CHOICES),
            value="clusters + image",
            tooltip="Layers to create: the clusters (a Labels layer, label i = palette "
            "color i, with a per-cluster features table) and/or the quantized image.",
        )
        self.n_colors_input = SpinBox(
            min=2,
            max=MAX_N_COLORS,
            value=8,
            tooltip=f"k: how many colors to keep (2 to {MAX_N_COLORS}). The result line says "
            "'N → k colors': N distinct colors in the input, k kept.",
        )
        self.auto_k_check = CheckBox(
            text="auto",
            value=False,
            tooltip="Find the fewest colors whose result reaches the target PSNR.",
        )
        self.target_psnr_input = FloatSpinBox(
            min=10.0,
            max=80.0,
            step=0.5,
            value=35.0,
            enabled=False,
            tooltip="Target quality for auto k, as PSNR in dB (higher = closer to the "
            "original; 30-40 dB is typical for photos).",
        )
        self.color_space_choice = ComboBox(
            choices=list(COLOR_SPACES),
            value="rgb",
            tooltip="Where color differences are measured (RGB layers only): rgb uses the "
            "image's own values (least squared error); lab and oklab follow how different "
            "colors look. Greyscale layers are clustered by intensity.",
        )
        self.dither_input = FloatSlider(
            min=0.0,
            max=1.0,
            step=0.05,
            value=0.0,
            tooltip="Dithering level: 0 = none (flat areas), 1 = full Floyd-Steinberg error "
            "diffusion (smoother gradients, grainier texture).",
        )
        self.fixed_colors_input = LineEdit(
            value="",
            tooltip="Colors the palette must contain exactly, separated by ';': '#ff0000' "
            "for 8-bit RGB, or values in the image's units ('0, 1200'). Pick one with "
            "'pick…', or fix a palette color with 'fix color' under the swatches.",
        )
        self.pick_color_button = PushButton(
            text="pick…", tooltip="Add a fixed color chosen in a color dialog."
        )
        self.seed_input = SpinBox(
            min=0,
            max=2**31 - 1,
            value=0,
            tooltip="Seed of the random starts: the same seed gives the same palette.",
        )
        self.preview_check = CheckBox(
            text="live preview",
            value=False,
            tooltip="While on, every change of the settings updates the image result "
            "within moments: computed quickly on the current slice (downsampled if large). "
            "Press Run for the full result.",
        )
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
        self.palette_panel = PalettePanel()
        self.export_button = PushButton(
            text="Export…",
            enabled=False,
            tooltip="Save the palette shown as JSON (the command line's --palette format; "
            "--apply-palette and 'Load…' read it).",
        )
        self.fix_color_button = PushButton(
            text="fix color",
            enabled=False,
            tooltip="Add the selected swatch's color to the fixed colors.",
        )
        self.palette_source_choice = ComboBox(
            choices=self._palette_layer_choices,
            nullable=True,
            tooltip="A result layer whose palette to apply to the selected image layer(s).",
        )
        self.apply_button = PushButton(
            text="Apply",
            tooltip="Repaint the selected image layer(s) with the palette of the chosen "
            "result layer (nearest color, no new fit).",
        )
        self.load_button = PushButton(
            text="Load…",
            tooltip="Repaint the selected image layer(s) with a palette JSON file.",
        )
        for control in (self.dither_input, self.target_psnr_input, self.n_colors_input):
            # Composite controls (a slider with its readout box) carry the tooltip on
            # every part, not only the first.
            for part in control.native.findChildren(QWidget):
                if not part.toolTip():
                    part.setToolTip(control.tooltip)
        for combo in (self.region_choice, self.palette_source_choice):
            # A long layer name must not widen the dock: the box shows it shortened.
            combo.native.setSizeAdjustPolicy(
                combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
            )
            combo.native.setMinimumContentsLength(8)

    def _build_layout(self) -> None:
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

        def row(text: str, *widgets: Any) -> QLabel:
            label = QLabel(text)
            label.setToolTip(widgets[0].tooltip)
            if len(widgets) == 1:
                form.addRow(label, widgets[0].native)
            else:
                box = QWidget()
                line = QHBoxLayout(box)
                line.setContentsMargins(0, 0, 0, 0)
                for widget in widgets:
                    line.addWidget(widget.native)
                form.addRow(label, box)
            return label

        def heading(text: str) -> None:
            title = QLabel(f"<b>{text}</b>")
            form.addRow(title)

        heading("Input")
        row("image layers", self.image_layers)
        row("scope", self.scope_choice)
        self._region_label = row("region", self.region_choice)
        row("outputs", self.outputs_choice)
        heading("Colors")
        row("colors (k)", self.n_colors_input, self.auto_k_check)
        row("target PSNR", self.target_psnr_input)
        row("color space", self.color_space_choice)
        row("dither", self.dither_input)
        row("fixed colors", self.fixed_colors_input, self.pick_color_button)
        row("random seed", self.seed_input)
        row("preview", self.preview_check)
        buttons = QWidget()
        line = QHBoxLayout(buttons)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.run_button.native)
        line.addWidget(self.cancel_button.native)
        form.addRow(buttons)
        row("progress", self.progress_bar)
        form.addRow(self.status_label.native)
        heading("Palette")
        form.addRow(self.palette_panel)
        palette_buttons = QWidget()
        line = QHBoxLayout(palette_buttons)
        line.setContentsMargins(0, 0, 0, 0)
        line.addWidget(self.export_button.native)
        line.addWidget(self.fix_color_button.native)
        line.addWidget(self.load_button.native)
        form.addRow(palette_buttons)
        row("apply from", self.palette_source_choice, self.apply_button)

        inner = QWidget()
        inner.setLayout(form)
        scroll = QScrollArea()
        scroll.setWidget(inner)
        scroll.setWidgetResizable(True)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(scroll)

    def sizeHint(self) -> QSize:
        # Wide enough for every control and for the dock's whole title; the content never
        # asks for more (long names are shortened), so the dock keeps this width.
        hint = QSize(340, 640)
        dock = self.parentWidget()
        title_bar = dock.titleBarWidget() if isinstance(dock, QDockWidget) else None
        if title_bar is not None and title_bar.layout() is not None:
            hint.setWidth(max(hint.width(), title_bar.layout().sizeHint().width()))
        return hint

    def _connect(self) -> None:
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.export_button.changed.connect(self._ask_export_palette)
        self.load_button.changed.connect(self._ask_load_palette)
        self.apply_button.changed.connect(self._apply_chosen_layer_palette)
        self.pick_color_button.changed.connect(self._ask_fixed_color)
        self.fix_color_button.changed.connect(self._fix_selected_swatch)
        self.palette_panel.label_clicked.connect(self._select_label)
        self.palette_panel.swatches.itemSelectionChanged.connect(self._update_enabled)
        self.image_layers.changed.connect(self._on_inputs_changed)
        self.scope_choice.changed.connect(self._on_inputs_changed)
        self.region_choice.changed.connect(self._on_inputs_changed)
        for widget in (
            self.n_colors_input,
            self.target_psnr_input,
            self.color_space_choice,
            self.dither_input,
            self.fixed_colors_input,
            self.seed_input,
            self.auto_k_check,
        ):
            widget.changed.connect(self._on_settings_changed)
        self.preview_check.changed.connect(self._on_preview_toggled)

        layer_events = self._viewer.layers.events
        layer_events.inserted.connect(self._on_layers_changed)
        layer_events.removed.connect(self._on_layers_changed)
        layer_events.moved.connect(self._on_layers_changed)
        self._viewer.layers.selection.events.changed.connect(self._follow_layer_selection)
        self._viewer.dims.events.current_step.connect(self._on_dims_changed)
        for layer in self._viewer.layers:
            layer.events.name.connect(self._refresh_choices)

    def _disconnect(self) -> None:
        layer_events = self._viewer.layers.events
        for emitter in (layer_events.inserted, layer_events.removed, layer_events.moved):
            emitter.disconnect(self._on_layers_changed)
        self._viewer.layers.selection.events.changed.disconnect(self._follow_layer_selection)
        self._viewer.dims.events.current_step.disconnect(self._on_dims_changed)
        for layer in self._viewer.layers:
            layer.events.name.disconnect(self._refresh_choices)

    # ----------------------------------------------------------------------------------
    # Closing the dock
    # ----------------------------------------------------------------------------------

    def event(self, event: QEvent) -> bool:
        # napari takes a closed plugin dock's widget out with setParent(None): that is the
        # moment to stop, so a run of a closed dock adds no layers afterwards.
        if event.type() == QEvent.Type.ParentChange:
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.shut_down()
        return super().event(event)

    def shut_down(self) -> None:
        """Cancel any run or preview and stop following the viewer (the dock was closed)."""
        if self._life.closed:
            return
        self._life.closed = True
        self._life.cancel.set()
        self._life.preview_generation += 1
        self._preview_timer.stop()
        self._disconnect()

    @property
    def is_closed(self) -> bool:
        return self._life.closed

    # ----------------------------------------------------------------------------------
    # Running
    # ----------------------------------------------------------------------------------

    @property
    def is_running(self) -> bool:
        """Whether a run is going on (then Run is disabled and Cancel enabled)."""
        return self._worker is not None

    @property
    def is_previewing(self) -> bool:
        """Whether a preview is waiting or being computed."""
        return self._preview_worker is not None or self._preview_timer.isActive()

    @property
    def worker(self) -> FunctionWorker | None:
        """The worker of the current run, or None when nothing runs."""
        return self._worker

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUT_CHOICES[self.outputs_choice.value]

    def run(self) -> FunctionWorker | None:
        """Quantize the selected layer(s) on a worker thread with the chosen settings.

        Returns
        -------
        FunctionWorker or None
            The started worker, or None if nothing was started (a run is already going on,
            or the input is not usable: then an error notification says why).
        """
        if self._worker is not None or self._life.closed:
            return None
        try:
            job = self._make_job(preview=False)
        except (TypeError, ValueError) as exc:
            show_error(str(exc))
            return None
        return self._start_run(job, f"quantizing {_shorten(job.source.name)!r}…")

    def apply_palette(self, palette: Palette, palette_name: str = "palette") -> Any:
        """Repaint the selected image layer(s) with ``palette`` on a worker thread.

        Parameters
        ----------
        palette : Palette
            The colors to use (nearest color in ``palette.color_space``; no fit).
        palette_name : str
            Where the palette came from, for the status line.

        Returns
        -------
        FunctionWorker or None
            As :meth:`run`.
        """
        if self._worker is not None or self._life.closed:
            return None
        try:
            job = self._make_job(preview=False, palette=palette)
        except (TypeError, ValueError) as exc:
            show_error(str(exc))
            return None
        return self._start_run(
            job, f"repainting {_shorten(job.source.name)!r} with {_shorten(palette_name)}…"
        )

    def apply_palette_file(self, path: str | Path) -> Any:
        """Read a palette JSON (as written by Export or the CLI's --palette) and apply it."""
        from napari_kmeans_filter.cli import CliError, load_palette

        try:
            palette = load_palette(Path(path))
        except CliError as exc:
            show_error(f"K-means color filter: {exc}")
            return None
        return self.apply_palette(palette, Path(path).name)

    def export_palette(self, path: str | Path) -> Path:
        """Write the palette shown in the panel as JSON (the CLI's ``--palette`` format).

        Raises
        ------
        ValueError
            If no palette is shown yet.
        """
        from napari_kmeans_filter.cli import palette_json

        palette = self.palette_panel.palette
        if palette is None:
            raise ValueError("There is no palette to export yet: press Run first.")
        path = Path(path)
        # The file dialog has asked before replacing a file; never leave half a file.
        with atomic_output(path, overwrite=True) as temporary:
            temporary.write_text(palette_json(palette), encoding="utf-8")
        return path

    def cancel(self) -> None:
        """Ask the running quantization to stop; it adds no layer."""
        if self._worker is None:
            return
        self._life.cancel.set()
        self.cancel_button.enabled = False
        self._set_status("cancelling…")

    def _make_job(self, *, preview: bool, palette: Palette | None = None) -> _Job:
        layers = tuple(self.image_layers.value)
        scope = self.scope_choice.value
        region = None
        if scope == SCOPE_REGION and palette is None:
            region = self.region_choice.value
            if region is None:
                raise ValueError(
                    "Scope 'region' needs a Shapes or Labels layer: draw one and choose it "
                    "under 'region'."
                )
        current_slice = SliceRequest.of(self._viewer) if preview or scope == SCOPE_SLICE else None
        source = read_layer_source(
            layers or None,
            current_slice=current_slice,
            max_pixels=PREVIEW_MAX_PIXELS if preview else None,
            region=region,
        )
        return _Job(
            source=source,
            layers=layers,
            n_colors=self._n_colors(),
            keywords=self._core_keywords(source, preview=preview, palette=palette),
            palette=palette,
            outputs=self.outputs,
            preview=preview,
        )

    def _n_colors(self) -> int | str:
        if self.auto_k_check.value:
            return "auto"
        return int(self.n_colors_input.value)

    def _core_keywords(
        self, source: LayerSource, *, preview: bool, palette: Palette | None
    ) -> dict[str, Any]:
        keywords: dict[str, Any] = {}
        dither = float(self.dither_input.value)
        if dither > 0:
            keywords["dither"] = True if dither >= 1 else dither
        if palette is not None:
            return keywords
        keywords["color_space"] = self.color_space_choice.value if source.rgb else "rgb"
        keywords["random_state"] = int(self.seed_input.value)
        if self._n_colors() == "auto":
            keywords["target_psnr"] = float(self.target_psnr_input.value)
        fixed = self._fixed_colors(source)
        if fixed is not None:
            keywords["fixed_colors"] = fixed
        if preview:
            keywords["speed"] = PREVIEW_SPEED
        return keywords

    def _fixed_colors(self, source: LayerSource) -> np.ndarray | None:
        text = str(self.fixed_colors_input.value).strip()
        if not text:
            return None
        rows = []
        for entry in (part.strip() for part in text.split(";")):
            if not entry:
                continue
            if entry.startswith("#"):
                color = QColor(entry)
                if not color.isValid():
                    raise ValueError(f"Fixed color {entry!r} is not a color like '#ff8000'.")
                if not (source.rgb and np.dtype(source.dtype) == np.uint8):
                    raise ValueError(
                        f"Fixed color {entry!r}: '#rrggbb' colors are for 8-bit RGB layers; "
                        f"give {source.name!r}'s values in its own units, e.g. '0, 1200'."
                    )
                rows.append([color.red(), color.green(), color.blue()])
            else:
                try:
                    rows.append([float(v) for v in entry.split(",")])
                except ValueError:
                    raise ValueError(
                        f"Fixed color {entry!r}: use '#rrggbb' or numbers separated by ','."
                    ) from None
        if not rows:
            return None
        if len({len(r) for r in rows}) > 1:
            raise ValueError("Every fixed color must have the same number of values.")
        return np.asarray(rows, dtype=np.float64)

    def _start_run(self, job: _Job, message: str) -> Any:
        self._preview_timer.stop()
        self._life.preview_generation += 1  # a running preview stops and is dropped
        self._life.cancel.clear()
        life = self._life
        relay = self._progress_relay

        def should_stop() -> bool:
            return life.cancel.is_set() or life.closed

        def report(fraction: float, text: str) -> None:
            relay.progressed.emit(float(fraction), str(text))

        worker = create_worker(_do_job, job, should_stop, report, _start_thread=False)
        worker.returned.connect(lambda outcome: self._on_run_returned(outcome, job, life))
        worker.finished.connect(lambda: self._on_run_finished(life))
        self._worker = worker
        self._run_job = job
        self._outcome_handled = False
        self._set_running(True)
        self._set_status(message)
        worker.start()
        return worker

    def _set_running(self, running: bool) -> None:
        self.cancel_button.enabled = running
        self.progress_bar.value = 0
        self._update_enabled()

    def _show_progress(self, fraction: float, message: str) -> None:
        if self._worker is None or self._life.closed:
            return
        self.progress_bar.value = round(min(max(fraction, 0.0), 1.0) * PROGRESS_STEPS)
        if message and not self._life.cancel.is_set():
            self._set_status(message)

    def _on_run_returned(self, outcome: _RunOutcome, job: _Job, life: _Lifetime) -> None:
        if life.closed:
            return
        self._outcome_handled = True
        if not self._start_showing(outcome, job):
            self._end_run()

    def _start_showing(self, outcome: _RunOutcome, job: _Job) -> bool:
        """Begin adding the result's layers; False if there is nothing to add."""
        name = job.source.name
        # A cancel that arrives after the last progress report still wins: nothing is added.
        if outcome.cancelled or self._life.cancel.is_set():
            self._set_status("cancelled")
            show_info(f"K-means color filter: cancelled, {name!r} left as it was.")
            return False
        if outcome.error is not None:
            self._set_status("failed")
            show_error(outcome.error)
            return False
        if any(layer not in self._viewer.layers for layer in job.layers):
            self._set_status("source removed")
            show_info(f"K-means color filter: {name!r} was removed; result dropped.")
            return False
        # From here on the layers go in; cancelling now would leave half a result.
        self.cancel_button.enabled = False
        self.progress_bar.value = round(PREPARE_SHARE * PROGRESS_STEPS)
        self._set_status("adding layers…")
        steps = show_result_steps(self._viewer, outcome.prepared, job.layers)
        # One layer per turn of the event loop, so the GUI never waits for all of them.
        QTimer.singleShot(0, lambda: self._show_next_layer(steps, outcome.prepared, job))
        return True

    def _show_next_layer(self, steps: Any, prepared: PreparedResult, job: _Job) -> None:
        if self._life.closed:
            return
        try:
            next(steps)
        except StopIteration as done:
            self._finish_showing(prepared, done.value, job)
        except ValueError as error:
            self._set_status("failed")
            show_error(f"K-means color filter: {error}")
            self._end_run()
        else:
            QTimer.singleShot(0, lambda: self._show_next_layer(steps, prepared, job))

    def _finish_showing(self, prepared: PreparedResult, shown: Any, job: _Job) -> None:
        self.progress_bar.value = PROGRESS_STEPS
        self._set_status(describe_result(prepared.result))
        self._show_palette(prepared, job)
        if job.palette is None:
            announce_result(prepared.result, job.n_colors, job.source.name)
        self._end_run()

    def _on_run_finished(self, life: _Lifetime) -> None:
        # Also reached after an unexpected exception, which napari reports by itself.
        if life.closed:
            return
        if self._worker is not None and not self._outcome_handled:
            self._set_status("failed")
            self._end_run()

    def _end_run(self) -> None:
        self._worker = None
        self._run_job = None
        self.cancel_button.enabled = False
        if self.status_label.value in ("cancelled", "failed", "source removed"):
            self.progress_bar.value = 0
        self._update_enabled()
        if self._preview_pending and self.preview_check.value:
            self._preview_pending = False
            self._schedule_preview()

    def _set_status(self, text: str) -> None:
        if text != self.status_label.value:
            self.status_label.value = text
            self.status_changed.emit(text)

    # ----------------------------------------------------------------------------------
    # Live preview
    # ----------------------------------------------------------------------------------

    def _on_settings_changed(self, _value: Any = None) -> None:
        self.target_psnr_input.enabled = bool(self.auto_k_check.value)
        self.n_colors_input.enabled = not self.auto_k_check.value
        self._schedule_preview()

    def _on_preview_toggled(self, on: bool) -> None:
        if on:
            self._schedule_preview()
            return
        self._preview_timer.stop()
        self._life.preview_generation += 1
        layers = tuple(self.image_layers.value)
        if layers:
            remove_previews(self._viewer, layers)

    def _on_dims_changed(self, _event: Any = None) -> None:
        layers = self.image_layers.value
        if not layers:
            return
        # Only a stack's preview depends on the slice shown.
        ndim = max(layer.ndim for layer in layers)
        if ndim > len(self._viewer.dims.displayed):
            self._schedule_preview()

    def _schedule_preview(self) -> None:
        if not self.preview_check.value or self._life.closed:
            return
        self.preview_requested_at = time.perf_counter()
        self._life.preview_generation += 1
        if self._worker is not None:
            self._preview_pending = True  # after the run
            return
        self._preview_timer.start()

    def _start_preview(self) -> None:
        if self._life.closed or not self.preview_check.value:
            return
        if self._worker is not None:
            self._preview_pending = True
            return
        if self._preview_worker is not None:
            # The running preview sees the new generation at its next progress report and
            # stops; this one starts when it has finished.
            self._preview_pending = True
            return
        try:
            job = self._make_job(preview=True)
        except (TypeError, ValueError) as exc:
            self._set_status(f"preview: {exc}")
            return
        life = self._life
        generation = life.preview_generation

        def should_stop() -> bool:
            return life.closed or life.preview_generation != generation

        worker = create_worker(_do_job, job, should_stop, _ignore_progress, _start_thread=False)
        worker.returned.connect(
            lambda outcome: self._on_preview_returned(outcome, job, generation, life)
        )
        worker.finished.connect(lambda: self._on_preview_finished(life))
        self._preview_worker = worker
        worker.start()

    def _on_preview_returned(
        self, outcome: _RunOutcome, job: _Job, generation: int, life: _Lifetime
    ) -> None:
        stale = life.closed or generation != life.preview_generation or self._worker is not None
        if stale or outcome.cancelled or not self.preview_check.value:
            return
        if outcome.error is not None:
            self._set_status(f"preview failed: {outcome.error}")
            return
        if any(layer not in self._viewer.layers for layer in job.layers):
            return
        prepared = outcome.prepared
        show_result(self._viewer, prepared, job.layers)
        self.preview_shown_at = time.perf_counter()
        self._set_status("preview: " + describe_result(prepared.result))
        self._show_palette(prepared, job)

    def _on_preview_finished(self, life: _Lifetime) -> None:
        if life.closed:
            return
        self._preview_worker = None
        if self._preview_pending:
            self._preview_pending = False
            if self._worker is None:
                self._start_preview()

    # ----------------------------------------------------------------------------------
    # Palette panel
    # ----------------------------------------------------------------------------------

    def _show_palette(self, prepared: PreparedResult, job: _Job) -> None:
        kind = "preview of " if job.preview else ""
        title = f"{kind}{_shorten(job.source.name)}: {prepared.n_colors} colors"
        self.palette_panel.show_palette(prepared.palette, prepared.swatches, title)
        self._panel_layers = job.layers
        self._update_enabled()
        self.palette_source_choice.reset_choices()

    def _select_label(self, label: int) -> None:
        layers = self._panel_layers
        clusters = find_clusters_layer(self._viewer, layers) if layers else None
        if clusters is None:
            show_info("K-means color filter: there is no clusters layer for this palette yet.")
            return
        clusters.selected_label = label

    def _ask_export_palette(self) -> None:
        path, _ = QFileDialog.getSaveFileName(
            self, "Export palette", "palette.json", "Palette JSON (*.json)"
        )
        if path:
            try:
                self.export_palette(path)
            except (OSError, ValueError, ImageIOError) as exc:
                show_error(f"K-means color filter: could not export the palette: {exc}")

    def _ask_load_palette(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Apply palette", "", "Palette JSON (*.json)")
        if path:
            self.apply_palette_file(path)

    def _apply_chosen_layer_palette(self) -> None:
        layer = self.palette_source_choice.value
        palette = result_palette(layer) if layer is not None else None
        if palette is None:
            show_error("K-means color filter: choose a result layer whose palette to apply.")
            return
        self.apply_palette(palette, f"the palette of {layer.name!r}")

    def _ask_fixed_color(self) -> None:
        color = QColorDialog.getColor(parent=self, title="Fixed color")
        if color.isValid():
            self._add_fixed_color(color.name())

    def _fix_selected_swatch(self) -> None:
        palette = self.palette_panel.palette
        items = self.palette_panel.swatches.selectedItems()
        if palette is None or not items:
            return
        for item in items:
            values = palette.colors[int(item.data(Qt.ItemDataRole.UserRole)) - 1]
            self._add_fixed_color(", ".join(_format_value(v) for v in values))

    def _add_fixed_color(self, text: str) -> None:
        current = str(self.fixed_colors_input.value).strip()
        self.fixed_colors_input.value = f"{current}; {text}" if current else text

    # ----------------------------------------------------------------------------------
    # Layers and choices
    # ----------------------------------------------------------------------------------

    def _image_layer_choices(self, _widget: Any = None) -> list[tuple[str, Image]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Image) and not is_result_layer(layer)
        ]

    def _region_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        return [
            (layer.name, layer)
            for layer in self._viewer.layers
            if isinstance(layer, Shapes | Labels) and not is_result_layer(layer)
        ]

    def _palette_layer_choices(self, _widget: Any = None) -> list[tuple[str, Any]]:
        choices, groups = [], set()
        # Clusters layers first, so each result is offered once, by its clusters if any.
        ordered = sorted(self._viewer.layers, key=lambda layer: not isinstance(layer, Labels))
        for layer in ordered:
            info = layer.metadata.get("napari_kmeans_filter") if is_result_layer(layer) else None
            if info is None or info.get("preview") or "palette" not in layer.metadata:
                continue
            if info.get("source_id") in groups:
                continue
            groups.add(info.get("source_id"))
            choices.append((layer.name, layer))
        return choices

    def _refresh_choices(self, _event: Any = None) -> None:
        if self._life.closed:
            return
        self.image_layers.reset_choices()
        self.region_choice.reset_choices()
        self.palette_source_choice.reset_choices()
        if not self.image_layers.value:
            self._follow_layer_selection()
        self._update_enabled()

    def _on_layers_changed(self, event: Any = None) -> None:
        if event is not None and getattr(event, "type", None) == "inserted":
            event.value.events.name.connect(self._refresh_choices)
        self._refresh_choices()

    def _follow_layer_selection(self, _event: Any = None) -> None:
        # The widget follows the image layers selected in the layer list; selecting only
        # Labels layers or results keeps the current input, so Run updates its results.
        if self._life.closed:
            return
        choices = [layer for _, layer in self._image_layer_choices()]
        if tuple(choices) != tuple(self.image_layers.choices):
            # A new layer is selected before the layer list announces it.
            self.image_layers.reset_choices()
        chosen = [layer for layer in choices if layer in self._viewer.layers.selection]
        if not chosen and not self.image_layers.value and choices:
            # Like a combo box, the input is never empty while there is an image layer.
            chosen = [choices[-1]]
        if chosen and chosen != list(self.image_layers.value):
            self.image_layers.value = chosen

    def _on_inputs_changed(self, _value: Any = None) -> None:
        self._update_enabled()
        self._schedule_preview()

    def _update_enabled(self) -> None:
        layers = list(self.image_layers.value)
        has_input = bool(layers)
        running = self._worker is not None
        self.run_button.enabled = has_input and not running
        self.apply_button.enabled = has_input and not running
        self.load_button.enabled = has_input and not running
        self.color_space_choice.enabled = len(layers) == 1 and bool(layers[0].rgb)
        is_region = self.scope_choice.value == SCOPE_REGION
        self.region_choice.enabled = is_region
        self.export_button.enabled = self.palette_panel.palette is not None
        self.fix_color_button.enabled = bool(self.palette_panel.swatches.selectedItems())
        self.target_psnr_input.enabled = bool(self.auto_k_check.value)
        self.n_colors_input.enabled = not self.auto_k_check.value


def _ignore_progress(_fraction: float, _message: str) -> None:
    """Previews report no progress: they are short and superseded often."""


def _do_job(job: _Job, should_stop: Any, report: Any) -> _RunOutcome:
    """The worker's job: quantize (or repaint), then prepare the layer data.

    ``should_stop()`` is checked at every progress report of the core; when it says so, the
    run ends there (the core aborts when its progress callback raises).
    """

    def progress(fraction: float, message: str) -> None:
        if should_stop():
            raise RunCancelled
        report(WORK_SHARE * float(fraction), message)

    source = job.source
    try:
        if job.palette is not None:
            result = apply_palette_source(source, job.palette, progress=progress, **job.keywords)
        else:
            result = quantize_source(source, job.n_colors, progress=progress, **job.keywords)
        if should_stop():
            raise RunCancelled
        report(WORK_SHARE, "preparing layers")
        prepared = prepare_result(
            result, source, outputs=job.outputs, preview=job.preview, build_layers=True
        )
    except RunCancelled:
        return _RunOutcome(cancelled=True)
    except (TypeError, ValueError, MemoryError) as exc:
        return _RunOutcome(error=f"K-means color filter on {source.name!r} failed: {exc}")
    if should_stop():
        return _RunOutcome(cancelled=True)
    return _RunOutcome(prepared=prepared)
