"""The dock's settings: which layers, and how to quantize them.

Every control that stands for a core parameter takes its range, default and the range its
tooltip quotes from the parameter contract (:mod:`napari_kmeans_filter._contract`), using
the narrower range a user interface offers on purpose where one is declared
(``Parameter.ui``). :data:`CONTROL_LABELS` maps each parameter to its control's label, so
that an error the core raises about a parameter is told in the control's words
(:func:`user_message`). :meth:`Controls.make_job` turns the controls' values into a
:class:`~._run.Job`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FloatSlider,
    FloatSpinBox,
    LineEdit,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image, Labels, Shapes
from qtpy.QtCore import Qt, Signal
from qtpy.QtWidgets import (
    QColorDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QWidget,
)

from napari_kmeans_filter import Palette
from napari_kmeans_filter._color_text import parse_color
from napari_kmeans_filter._contract import (
    PARAMETERS,
    InvalidParameterError,
    default,
    describe_range,
    dither_level,
)

from ._prepare import BOTH, CLUSTERS, IMAGE
from ._read import LayerSource, SliceRequest, read_layer_source
from ._run import Job
from ._show import is_result_layer

if TYPE_CHECKING:
    import napari

#: Previews quantize at most about this many pixels of the current slice (a coarser
#: pyramid level or a regular stride beyond): 512 x 512, which the core's fastest setting
#: fits in a few tens of milliseconds, so that a preview follows the controls.
PREVIEW_MAX_PIXELS = 262_144
#: The core's fastest setting (pngquant's convention: 1 = most thorough, 10 = fastest).
PREVIEW_SPEED = PARAMETERS["speed"].interval.high
#: Where the target PSNR box starts: the core has no default target (it is only used with
#: auto k); 35 dB is the middle of the 30-40 dB typical for photos.
TARGET_PSNR_START = 35.0

SCOPE_WHOLE = "whole layer"
SCOPE_SLICE = "current slice"
SCOPE_REGION = "region"
OUTPUT_CHOICES = {
    "clusters + image": BOTH,
    "clusters": (CLUSTERS,),
    "image": (IMAGE,),
}

#: The label of the control that sets each core parameter: errors the core raises about a
#: parameter are told with it (the core's words are the API's: 'n_colors', 'random_state').
CONTROL_LABELS = {
    "n_colors": "colors (k)",
    "target_psnr": "target PSNR",
    "color_space": "color space",
    "dither": "dither",
    "fixed_colors": "fixed colors",
    "random_state": "random seed",
    "mask": "region",
    "image": "image layers",
    # A palette applied from another result or a file: the palette panel's heading.
    "palette": "palette",
}


def user_message(error: BaseException) -> str:
    """The message of ``error`` in the dock's words: a parameter named by its control's label.

    Parameters
    ----------
    error : Exception
        An :class:`~napari_kmeans_filter._contract.InvalidParameterError` (translated) or any
        other error (its message as it is).

    Returns
    -------
    str
    """
    if isinstance(error, InvalidParameterError) and error.parameter in CONTROL_LABELS:
        label = CONTROL_LABELS[error.parameter]
        text = f"{label!r} must {error.requirement}. Got {error.got} instead."
        return f"{text} {error.hint}" if error.hint else text
    return str(error)


def _range_tip(name: str) -> str:
    return describe_range(name, ui=True)


class Controls(QWidget):
    """The settings form: input layers, scope, outputs, and the quantization parameters.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Whose layers the layer choices offer.
    """

    #: Emitted when an input (layers, scope, region) changes.
    inputs_changed = Signal()
    #: Emitted when a quantization setting changes (a preview follows).
    settings_changed = Signal()

    def __init__(self, viewer: napari.viewer.Viewer, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._viewer = viewer
        self._build()
        self._lay_out()
        for widget in (self.image_layers, self.scope_choice, self.region_choice):
            widget.changed.connect(self._on_inputs_changed)
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
        self.pick_color_button.changed.connect(self._ask_fixed_color)
        self.update_enabled()

    # ----------------------------------------------------------------------------------
    # Building
    # ----------------------------------------------------------------------------------

    def _build(self) -> None:
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
        k = PARAMETERS["n_colors"].ui_interval()
        self.n_colors_input = SpinBox(
            min=int(k.low),
            max=int(k.high),
            value=default("n_colors"),
            tooltip=f"k: how many colors to keep ({_range_tip('n_colors')}). The result line "
            "says 'N → k colors': N distinct colors in the input, k kept.",
        )
        self.auto_k_check = CheckBox(
            text="auto",
            value=False,
            tooltip="Find the fewest colors whose result reaches the target PSNR.",
        )
        psnr = PARAMETERS["target_psnr"].ui_interval()
        self.target_psnr_input = FloatSpinBox(
            min=float(psnr.low),
            max=float(psnr.high),
            step=0.5,
            value=TARGET_PSNR_START,
            enabled=False,
            tooltip=f"Target quality for auto k, as PSNR in dB ({_range_tip('target_psnr')}; "
            "higher = closer to the original; 30-40 dB is typical for photos).",
        )
        self.color_space_choice = ComboBox(
            choices=list(PARAMETERS["color_space"].options),
            value=default("color_space"),
            tooltip="Where color differences are measured (RGB layers only): rgb uses the "
            "image's own values (least squared error); lab and oklab follow how different "
            "colors look. Greyscale layers are clustered by intensity.",
        )
        dither = PARAMETERS["dither"].ui_interval()
        self.dither_input = FloatSlider(
            min=float(dither.low),
            max=float(dither.high),
            step=0.05,
            value=dither_level(default("dither")),
            tooltip=f"Dithering level ({_range_tip('dither')}): 0 = none (flat areas), "
            "1 = full Floyd-Steinberg error diffusion (smoother gradients, grainier texture).",
        )
        self.fixed_colors_input = LineEdit(
            value="",
            tooltip="Colors the palette must contain exactly, separated by ';': '#ff0000' or "
            "a color name for 8- and 16-bit RGB (a grey such as '#808080' for greyscale), or "
            "values in the image's units ('0, 1200'). "
            "Pick one with 'pick…', or fix a palette color with 'fix color' under the swatches.",
        )
        self.pick_color_button = PushButton(
            text="pick…", tooltip="Add a fixed color chosen in a color dialog."
        )
        seed = PARAMETERS["random_state"].ui_interval()
        self.seed_input = SpinBox(
            min=int(seed.low),
            max=int(seed.high),
            value=default("random_state"),
            tooltip=f"Seed of the random starts ({_range_tip('random_state')}): the same seed "
            "gives the same palette.",
        )
        for control in (self.dither_input, self.target_psnr_input, self.n_colors_input):
            # Composite controls (a slider with its readout box) carry the tooltip on
            # every part, not only the first.
            for part in control.native.findChildren(QWidget):
                if not part.toolTip():
                    part.setToolTip(control.tooltip)
        # A long layer name must not widen the dock: the box shows it shortened.
        self.region_choice.native.setSizeAdjustPolicy(
            self.region_choice.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon
        )
        self.region_choice.native.setMinimumContentsLength(8)

    def _lay_out(self) -> None:
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)

        def row(text: str, *widgets: Any) -> None:
            label = QLabel(text)
            label.setToolTip(widgets[0].tooltip)
            if len(widgets) == 1:
                form.addRow(label, widgets[0].native)
                return
            box = QWidget()
            line = QHBoxLayout(box)
            line.setContentsMargins(0, 0, 0, 0)
            for widget in widgets:
                line.addWidget(widget.native)
            form.addRow(label, box)

        form.addRow(QLabel("<b>Input</b>"))
        row("image layers", self.image_layers)
        row("scope", self.scope_choice)
        row(CONTROL_LABELS["mask"], self.region_choice)
        row("outputs", self.outputs_choice)
        form.addRow(QLabel("<b>Colors</b>"))
        row(CONTROL_LABELS["n_colors"], self.n_colors_input, self.auto_k_check)
        row(CONTROL_LABELS["target_psnr"], self.target_psnr_input)
        row(CONTROL_LABELS["color_space"], self.color_space_choice)
        row(CONTROL_LABELS["dither"], self.dither_input)
        row(CONTROL_LABELS["fixed_colors"], self.fixed_colors_input, self.pick_color_button)
        row(CONTROL_LABELS["random_state"], self.seed_input)

    # ----------------------------------------------------------------------------------
    # Layer choices
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

    def refresh_choices(self) -> None:
        """Offer the viewer's current layers (after layers were added, removed or renamed)."""
        self.image_layers.reset_choices()
        self.region_choice.reset_choices()
        if self.region_choice.value is None:
            # Like a combo box that is never empty: the only Shapes layer (else the only
            # candidate) is the region, so 'region' works without choosing it.
            candidates = [layer for _, layer in self._region_layer_choices()]
            shapes = [layer for layer in candidates if isinstance(layer, Shapes)]
            only = shapes if len(shapes) == 1 else candidates if len(candidates) == 1 else []
            if only:
                self.region_choice.value = only[0]
        if not self.image_layers.value:
            self.follow_layer_selection()
        self.update_enabled()

    def follow_layer_selection(self) -> None:
        """Take the image layers selected in the layer list as the input.

        Selecting only Labels layers or results keeps the current input, so Run updates
        its results.
        """
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

    # ----------------------------------------------------------------------------------
    # State
    # ----------------------------------------------------------------------------------

    @property
    def layers(self) -> tuple[Image, ...]:
        """The chosen input layers."""
        return tuple(self.image_layers.value)

    @property
    def outputs(self) -> tuple[str, ...]:
        return OUTPUT_CHOICES[self.outputs_choice.value]

    def update_enabled(self) -> None:
        layers = self.layers
        self.color_space_choice.enabled = len(layers) == 1 and bool(layers[0].rgb)
        self.region_choice.enabled = self.scope_choice.value == SCOPE_REGION
        self.target_psnr_input.enabled = bool(self.auto_k_check.value)
        self.n_colors_input.enabled = not self.auto_k_check.value

    def show_k(self, k: int) -> None:
        """Put ``k`` (what auto k found) in the k box, without asking for a preview."""
        with self.n_colors_input.changed.blocked():
            self.n_colors_input.value = k

    def add_fixed_color(self, text: str) -> None:
        """Append ``text`` (one color) to the fixed colors."""
        current = str(self.fixed_colors_input.value).strip()
        self.fixed_colors_input.value = f"{current}; {text}" if current else text

    def _ask_fixed_color(self) -> None:
        color = QColorDialog.getColor(parent=self, title="Fixed color")
        if color.isValid():
            self.add_fixed_color(color.name())

    def _on_inputs_changed(self, _value: Any = None) -> None:
        self.update_enabled()
        self.inputs_changed.emit()

    def _on_settings_changed(self, _value: Any = None) -> None:
        self.update_enabled()
        self.settings_changed.emit()

    # ----------------------------------------------------------------------------------
    # The job these settings describe
    # ----------------------------------------------------------------------------------

    def make_job(
        self, *, preview: bool, palette: Palette | None = None, palette_origin: str = ""
    ) -> Job:
        """Read the chosen layers and describe the run these settings ask for.

        Parameters
        ----------
        preview : bool
            A quick preview: the current slice, downsampled, at the fastest setting.
        palette : Palette, optional
            Repaint with this palette instead of fitting one.
        palette_origin : str
            Where ``palette`` came from (a layer's or a file's name).

        Raises
        ------
        ValueError, TypeError
            With a message for the user (no layer, no region, a fixed color that cannot
            be read; an :class:`InvalidParameterError` names the parameter).
        """
        layers = self.layers
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
        return Job(
            source=source,
            layers=layers,
            n_colors=self.n_colors(),
            keywords=self._core_keywords(source, preview=preview, palette=palette),
            palette=palette,
            palette_origin=palette_origin,
            outputs=self.outputs,
            preview=preview,
        )

    def n_colors(self) -> int | str:
        """k, or ``"auto"``."""
        if self.auto_k_check.value:
            return "auto"
        return int(self.n_colors_input.value)

    def _core_keywords(
        self, source: LayerSource, *, preview: bool, palette: Palette | None
    ) -> dict[str, Any]:
        keywords: dict[str, Any] = {}
        dither = float(self.dither_input.value)
        if dither > 0:
            keywords["dither"] = dither
        if palette is not None:
            return keywords
        keywords["color_space"] = self.color_space_choice.value if source.rgb else "rgb"
        keywords["random_state"] = int(self.seed_input.value)
        if self.n_colors() == "auto":
            keywords["target_psnr"] = float(self.target_psnr_input.value)
        fixed = self._fixed_colors(source)
        if fixed is not None:
            keywords["fixed_colors"] = fixed
        if preview:
            keywords["speed"] = PREVIEW_SPEED
        return keywords

    def _fixed_colors(self, source: LayerSource) -> np.ndarray | None:
        entries = [part for part in str(self.fixed_colors_input.value).split(";") if part.strip()]
        if not entries:
            return None
        n_channels = 3 if source.rgb else len(source.channels)
        rows = [parse_color(entry, source.dtype, n_channels) for entry in entries]
        return np.asarray(rows, dtype=np.float64)
