"""The issue-11 options in the widget: fixed colors, dithering, auto k (a real viewer)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_kmeans_filter import quantize

pytestmark = pytest.mark.viewer


def test_fixed_colors_from_the_text_field_and_from_a_swatch(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    data = cat_crop()
    viewer.add_image(data, rgb=True, name="cat")
    widget = open_widget(viewer)
    assert widget.controls.fixed_colors_input.native.isVisibleTo(widget)
    widget.controls.n_colors_input.value = 5
    widget.controls.fixed_colors_input.value = "#ff0000; #ffffff"

    run_and_wait(widget)

    expected = quantize(data, 5, fixed_colors=[[255, 0, 0], [255, 255, 255]])
    clusters, image = result_layers(viewer, "cat")
    palette = np.asarray(clusters.metadata["palette"]["colors"])
    np.testing.assert_array_equal(palette, expected.palette.colors)
    assert [255, 0, 0] in palette.tolist() and [255, 255, 255] in palette.tolist()
    np.testing.assert_array_equal(image.data, expected.image)

    # Fix a color found by the fit: select its swatch, press "fix color".
    swatches = widget.palette_panel.swatches
    swatches.setCurrentRow(3)
    assert widget.palette_panel.fix_color_button.enabled
    widget.palette_panel.fix_color_button.native.click()
    fourth = ", ".join(str(v) for v in palette[3])
    assert widget.controls.fixed_colors_input.value == f"#ff0000; #ffffff; {fourth}"


def test_bad_fixed_colors_are_refused_with_the_reason(
    make_napari_viewer, qtbot, cat_crop, collect_notifications, open_widget, wait_until_idle
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop()[..., 0].astype(np.uint16) * 16, name="grey")
    widget = open_widget(viewer)
    for text, reason in (
        ("#ff0000", "'fixed colors' must be a grey level for a greyscale image"),
        ("1, 2", "'fixed colors' must have 1 value(s)"),
        ("70000", "[0, 65535]"),
        ("red", "'#808080'"),
    ):
        widget.controls.fixed_colors_input.value = text
        with collect_notifications() as notifications:
            widget.run()
            wait_until_idle(widget)
        errors = [message for severity, message in notifications if severity == "error"]
        assert errors and reason in errors[-1], (text, notifications)
    assert len(viewer.layers) == 1


def test_dither_level_reaches_the_core(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    data = cat_crop()
    viewer.add_image(data, rgb=True, name="cat")
    widget = open_widget(viewer)
    assert widget.controls.dither_input.native.isVisibleTo(widget)
    widget.controls.n_colors_input.value = 4
    widget.controls.dither_input.value = 0.5
    run_and_wait(widget)
    _clusters, image = result_layers(viewer, "cat")
    np.testing.assert_array_equal(image.data, quantize(data, 4, dither=0.5).image)


def test_auto_k_finds_the_fewest_colors_for_the_target(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    data = cat_crop()
    viewer.add_image(data, rgb=True, name="cat")
    widget = open_widget(viewer)
    widget.controls.auto_k_check.value = True
    assert not widget.controls.n_colors_input.enabled and widget.controls.target_psnr_input.enabled
    widget.controls.target_psnr_input.value = 32.0
    run_and_wait(widget)
    clusters, _image = result_layers(viewer, "cat")
    expected = quantize(data, "auto", target_psnr=32.0)
    assert clusters.metadata["palette"] == expected.palette.to_dict()
    assert clusters.metadata["psnr"] >= 32.0
    k = len(expected.palette)
    assert widget.runs.status_label.value.startswith(f"{expected.n_input_colors} → {k} colors")
    assert widget.runs.status_label.value.endswith("(fewest for 32 dB)")


def test_auto_k_with_dithering_says_the_target_is_judged_before_dithering(cat_crop):
    """Dithering lowers the PSNR below the target the fit reached: the status line must not
    claim the dithered result reaches it."""
    from napari_kmeans_filter._napari._console import describe_result

    result = quantize(cat_crop(), "auto", target_psnr=32.0, dither=True)
    assert result.psnr < 32.0  # what made the old wording untrue
    assert describe_result(result).endswith("(fewest for 32 dB before dithering)")


def test_the_status_line_counts_one_colour_in_the_singular():
    """A flat layer keeps its one colour: "1 → 1 color", as the command line says "1 colour"
    (the line said "1 → 1 colors")."""
    from napari_kmeans_filter._napari._console import describe_result

    flat = np.full((4, 5, 3), 7, dtype=np.uint8)
    assert describe_result(quantize(flat, 4)).startswith("1 → 1 color, PSNR ∞ dB")
    two = np.zeros((4, 5, 3), dtype=np.uint8)
    two[:2] = 200
    assert describe_result(quantize(two, 4)).startswith("2 → 2 colors, ")
