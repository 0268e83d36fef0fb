"""Common checks through the dock: the core's table of bad values, met by the widget's run.

``tests/test_common_checks.py`` runs every public function through one table of bad values per
parameter. Here the same table goes through the dock (a real viewer, one for the module):

* where a control can hold the bad value (the fixed-colors text, the region layer, the image
  layer, a float layer with 0-255 values for a perceptual color space, a palette handed to
  ``apply_palette``), the run is refused before any work (no progress reported) with one error
  in the contract's message shape naming the control's label, and no layer is added or
  changed;
* where a control cannot hold it (a spin box, a slider, a combo box), the control's range or
  choices are the contract's UI range or options, and setting the bad value leaves a value
  the contract accepts;
* every parameter of the table is either exposed by the dock (and checked above) or listed
  here with the reason it is not.
"""

from __future__ import annotations

import contextlib
import math
import re

import numpy as np
import pytest

# The core's table of bad values per parameter (pytest puts tests/ on the import path).
from bad_values import BAD_VALUES
from napari_kmeans_filter import Palette
from napari_kmeans_filter._contract import PARAMETERS

pytestmark = pytest.mark.viewer

PLUGIN_NAME = "napari-kmeans-filter"
WIDGET_NAME = "K-means color filter"

#: Parameters the dock does not expose (it sets them itself, or they have no control).
NOT_EXPOSED = {
    "channel_axis": "read from the layer (RGB layers: -1; greyscale: None)",
    "alpha": "read from the layer (RGBA layers)",
    "speed": "the dock's runs use the default, previews the fastest",
    "sample_weight": "no control",
    "target_delta_e": "no control (auto k targets a PSNR)",
    "n_init": "no control",
    "init": "no control",
    "max_iter": "no control",
    "tol": "no control",
    "progress": "the dock's own progress bar",
}
#: Numeric controls: the parameter and the control's attribute on ``widget.controls``.
NUMERIC_CONTROLS = {
    "n_colors": "n_colors_input",
    "target_psnr": "target_psnr_input",
    "dither": "dither_input",
    "random_state": "seed_input",
}
#: The one message shape, in the dock's words: ``'<label>' must ... Got ... instead.``
_SHAPE = re.compile(r"^'([^']+)' must .+\. Got .+ instead\.")


@pytest.fixture(scope="module")
def dock(qapp):
    """One viewer with the dock for the whole module (each test resets its layers)."""
    import napari

    viewer = napari.Viewer(show=False)
    _dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN_NAME, WIDGET_NAME)
    yield viewer, widget
    viewer.layers.clear()
    viewer.close()


@pytest.fixture
def fresh(dock, qtbot):
    """The module's viewer and dock with no layers and the controls at their defaults."""
    viewer, widget = dock
    qtbot.waitUntil(lambda: not widget.is_running, timeout=60_000)
    viewer.layers.clear()
    controls = widget.controls
    controls.fixed_colors_input.value = ""
    controls.auto_k_check.value = False
    controls.n_colors_input.value = 4
    controls.color_space_choice.value = "rgb"
    controls.scope_choice.value = "whole layer"
    controls.dither_input.value = 0.0
    return viewer, widget


def _text(value) -> str:
    """A fixed-colors table value as typed in the text field (rows separated by ';')."""
    if isinstance(value, str):
        return value
    return "; ".join(", ".join(f"{v:g}" for v in row) for row in np.asarray(value, float))


def _data_key(layer):
    """What identifies a layer's data: the array itself, or a Shapes layer's vertices
    (its ``data`` is a new list at every access)."""
    data = layer.data
    if isinstance(data, list):
        return [np.asarray(item).tobytes() for item in data]
    return id(data)


def _refused(qtbot, viewer, widget, start, label: str) -> None:
    """Start a run with ``start()`` and check it is refused before any work, naming ``label``."""
    from napari.utils.notifications import notification_manager

    before = [(layer, layer.name, _data_key(layer)) for layer in viewer.layers]
    received: list[tuple[str, str]] = []
    progress: list[float] = []

    def collect(notification):
        received.append((str(notification.severity), str(notification.message)))

    def watch(task):
        task.progressed.connect(lambda fraction, _message: progress.append(fraction))

    notification_manager.notification_ready.connect(collect)
    widget.runs.started.connect(watch)
    widget.runs.set_status("cat: 8 colors")  # what a last success left there
    widget.runs.progress_bar.value = widget.runs.progress_bar.max
    try:
        start()
        qtbot.waitUntil(lambda: not widget.is_running, timeout=60_000)
    finally:
        widget.runs.started.disconnect(watch)
        notification_manager.notification_ready.disconnect(collect)
    errors = [message for severity, message in received if severity == "error"]
    assert len(errors) == 1, received
    message = re.sub(r"^K-means color filter(?: on .+? failed)?: ", "", errors[0])
    match = _SHAPE.match(message)
    assert match and match.group(1) == label, errors[0]
    assert "\n" not in errors[0]
    assert progress == [], "work started before the value was refused"
    after = [(layer, layer.name, _data_key(layer)) for layer in viewer.layers]
    assert after == before, "a layer was added or changed"
    assert not widget.palette_panel.export_button.enabled
    # the status line says so too, whatever it said before (a refused Run once kept the
    # last success there)
    assert widget.runs.status_label.value == "failed"
    assert widget.runs.progress_bar.value == 0


def test_every_parameter_of_the_table_is_checked_here_or_said_not_exposed():
    from napari_kmeans_filter._napari._controls import CONTROL_LABELS

    exposed = set(CONTROL_LABELS) | {"palette"}
    assert set() <= exposed | set(NOT_EXPOSED), set() - exposed
    assert not exposed & set(NOT_EXPOSED)
    for name in exposed:
        assert name in PARAMETERS, name


@pytest.mark.parametrize("name", sorted(NUMERIC_CONTROLS))
def test_numeric_controls_offer_the_contract_ui_range_and_hold_no_bad_value(fresh, name):
    _viewer, widget = fresh
    control = getattr(widget.controls, NUMERIC_CONTROLS[name])
    parameter = PARAMETERS[name]
    ui = parameter.ui_interval()
    assert (control.min, control.max) == (ui.low, ui.high)
    # The UI range narrows the rule, never widens it.
    assert parameter.interval.contains(ui.low) and parameter.interval.contains(ui.high)
    start = control.value
    for value, _extra, _image in BAD_VALUES[name]:
        with contextlib.suppress(TypeError, ValueError, OverflowError):
            control.value = value
        held = control.value
        assert isinstance(held, int | float) and not math.isnan(held), (value, held)
        assert ui.contains(held), (value, held)
        control.value = start


def test_color_space_control_offers_the_contract_options_only(fresh):
    _viewer, widget = fresh
    choice = widget.controls.color_space_choice
    assert tuple(choice.choices) == PARAMETERS["color_space"].options
    for value, _extra, _image in BAD_VALUES["color_space"]:
        if value in PARAMETERS["color_space"].options:
            continue  # a valid name for an image it does not fit: the run checks below
        with contextlib.suppress(TypeError, ValueError):
            choice.value = value
        assert choice.value in PARAMETERS["color_space"].options


def test_color_space_on_a_float_layer_of_0_255_values_is_refused(fresh, qtbot):
    # The table's ("lab", RGB as float32): 0-255 floats are no [0, 1] colours.
    viewer, widget = fresh
    rgb = np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.float32)
    viewer.add_image(rgb, rgb=True, name="floats")
    widget.controls.color_space_choice.value = "lab"
    _refused(qtbot, viewer, widget, widget.run, "color space")


def test_color_space_is_not_offered_for_a_layer_that_is_not_rgb(fresh):
    # The table's ("lab", a 2-channel image): the dock clusters it by intensity (rgb).
    viewer, widget = fresh
    viewer.add_image(np.zeros((24, 32), np.uint8), name="grey")
    widget.controls.color_space_choice.value = "lab"
    assert not widget.controls.color_space_choice.enabled
    job = widget.controls.make_job(preview=True)
    assert job.keywords["color_space"] == "rgb"


def test_bad_fixed_colors_are_refused_before_any_work(fresh, qtbot):
    viewer, widget = fresh
    rgb = viewer.add_image(
        np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8),
        rgb=True,
        name="rgb",
    )
    unit = viewer.add_image(rgb.data.astype(np.float32) / 255, rgb=True, name="unit")
    checked = 0
    for value, _extra, image in BAD_VALUES["fixed_colors"]:
        if isinstance(value, str):
            continue  # color names are the text field's own syntax ("white" is one)
        widget.controls.image_layers.value = [unit if image.dtype.kind == "f" else rgb]
        widget.controls.fixed_colors_input.value = _text(value)
        _refused(qtbot, viewer, widget, widget.run, "fixed colors")
        checked += 1
    assert checked >= 6


@pytest.mark.parametrize("kind", ["labels", "shapes"])
def test_an_empty_region_is_refused_before_any_work(fresh, qtbot, kind):
    # The table's all-False mask: a Labels region with no label, a Shapes region off the image.
    viewer, widget = fresh
    viewer.add_image(
        np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8),
        rgb=True,
        name="rgb",
    )
    if kind == "labels":
        region = viewer.add_labels(np.zeros((24, 32), np.uint8), name="no labels")
    else:
        square = np.array([[100, 100], [100, 120], [120, 120], [120, 100]])
        region = viewer.add_shapes([square], name="outside")
    widget.controls.image_layers.value = [viewer.layers["rgb"]]
    widget.controls.scope_choice.value = "region"
    widget.controls.region_choice.value = region
    _refused(qtbot, viewer, widget, widget.run, "region")


@pytest.mark.parametrize("number", range(len(BAD_VALUES["image"])))
def test_bad_image_layers_are_refused_before_any_work(fresh, qtbot, number):
    from napari.layers import Image

    viewer, widget = fresh
    value = BAD_VALUES["image"][number][0]
    try:
        layer = Image(value, name="bad")
    except Exception:
        return  # napari holds no such Image layer: the dock never meets it
    viewer.add_layer(layer)
    widget.controls.image_layers.value = [layer]
    _refused(qtbot, viewer, widget, widget.run, "image layers")


def test_bad_palettes_handed_to_apply_palette_are_refused_before_any_work(fresh, qtbot):
    viewer, widget = fresh
    rgb = viewer.add_image(
        np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8),
        rgb=True,
        name="rgb",
    )
    unit = viewer.add_image(rgb.data.astype(np.float32) / 255, rgb=True, name="unit")
    checked = 0
    for value, _extra, image in BAD_VALUES["palette"]:
        if not isinstance(value, Palette):
            continue  # apply_palette(palette: Palette): the dock only ever hands it one
        layer = unit if image.dtype.kind == "f" else rgb
        widget.controls.image_layers.value = [layer]
        _refused(qtbot, viewer, widget, lambda v=value: widget.apply_palette(v, "bad"), "palette")
        checked += 1
    assert checked >= 4
