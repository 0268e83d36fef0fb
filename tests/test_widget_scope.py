"""What a run covers (whole layer, current slice, a region) and which layers it creates
(a real viewer; one viewer per test)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data

from napari_kmeans_filter import quantize

pytestmark = pytest.mark.viewer


def movie() -> np.ndarray:
    return np.stack([skimage.data.camera()[:40, :60] // (t + 1) for t in range(3)])


def test_current_slice_quantizes_only_the_frame_shown(
    make_napari_viewer, qtbot, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    frames = movie()
    layer = viewer.add_image(frames, name="movie", scale=(2.0, 0.5, 0.5), translate=(1, 0, 0))
    viewer.dims.set_current_step(0, 1)
    widget = open_widget(viewer)
    widget.controls.scope_choice.value = "current slice"
    widget.controls.n_colors_input.value = 4

    run_and_wait(widget)

    clusters, image = result_layers(viewer, "movie")
    expected = quantize(frames[1], 4, channel_axis=None)
    assert clusters.data.shape == (1, 40, 60)
    np.testing.assert_array_equal(clusters.data[0], expected.labels + 1)
    np.testing.assert_array_equal(image.data[0], expected.image)
    # The one-frame result sits on frame 1 in world coordinates ...
    np.testing.assert_allclose(clusters.translate, (1 + 2.0 * 1, 0, 0))
    np.testing.assert_allclose(clusters.scale, layer.scale)
    np.testing.assert_allclose(clusters.data_to_world((0, 5, 7)), layer.data_to_world((1, 5, 7)))
    assert clusters.metadata["window"]["start"] == [1, 0, 0]
    # ... and shows there only.
    assert image.metadata["napari_kmeans_filter"]["preview"] is False


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [("clusters", {"clusters"}), ("image", {"k="}), ("clusters + image", {"clusters", "k="})],
)
def test_outputs_choose_the_result_layers(
    make_napari_viewer, qtbot, outputs, expected, cat_crop, open_widget, run_and_wait
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="cat")
    widget = open_widget(viewer)
    widget.controls.outputs_choice.value = outputs
    widget.controls.n_colors_input.value = 3
    run_and_wait(widget)
    names = [layer.name for layer in viewer.layers][1:]
    assert len(names) == len(expected)
    assert all(any(part in name for name in names) for part in expected), names
    assert widget.palette_panel.swatches.count() == 3


def test_region_masks_are_made_with_napari_and_line_up_through_world_coordinates(
    make_napari_viewer,
    cat_crop,
):
    from napari_kmeans_filter._napari._read import region_mask

    viewer = make_napari_viewer()
    image = viewer.add_image(cat_crop(), rgb=True, name="cat", scale=(2, 2))
    square = np.array([[10, 20], [10, 60], [50, 60], [50, 20]], float)  # world coordinates
    same_scale = viewer.add_shapes([square / 2], shape_type="polygon", scale=(2, 2))
    unscaled = viewer.add_shapes([square], shape_type="polygon")
    expected = same_scale.to_masks(mask_shape=(60, 80))[0]
    assert 100 < expected.sum() < expected.size
    np.testing.assert_array_equal(region_mask(same_scale, image, (60, 80)), expected)
    np.testing.assert_array_equal(region_mask(unscaled, image, (60, 80)), expected)

    painted = np.zeros((60, 80), np.uint8)
    painted[5:25, 10:30] = 3
    labels = viewer.add_labels(painted)
    np.testing.assert_array_equal(region_mask(labels, image, (60, 80)), painted > 0)
    # A 2-D region over a stack selects the same pixels in every frame.
    stack = viewer.add_image(movie(), name="movie")
    region = viewer.add_labels(np.pad(painted, ((0, 0), (0, 0)))[:40, :60])
    mask = region_mask(region, stack, (3, 40, 60))
    assert mask.shape == (3, 40, 60)
    assert all((mask[t] == (painted[:40, :60] > 0)).all() for t in range(3))


def test_only_the_region_votes_for_the_palette(
    make_napari_viewer, qtbot, cat_crop, open_widget, run_and_wait, result_layers
):
    viewer = make_napari_viewer()
    data = cat_crop()
    viewer.add_image(data, rgb=True, name="cat")
    region = viewer.add_shapes(
        [[[5, 5], [5, 40], [30, 40], [30, 5]]], shape_type="rectangle", name="region"
    )
    widget = open_widget(viewer)
    widget.controls.scope_choice.value = "region"
    widget.controls.region_choice.value = region
    widget.controls.n_colors_input.value = 3

    run_and_wait(widget)

    clusters, image = result_layers(viewer, "cat")
    mask = region.to_masks(mask_shape=data.shape[:2])[0]
    expected = quantize(data, 3, mask=mask)
    np.testing.assert_array_equal(image.data, expected.image)  # every pixel is painted
    assert clusters.metadata["palette"] == expected.palette.to_dict()
    assert clusters.metadata["masked"] is True
    unmasked = quantize(data, 3)
    assert not np.array_equal(expected.palette.colors, unmasked.palette.colors)


def test_region_scope_needs_a_region_with_pixels(
    make_napari_viewer, qtbot, cat_crop, collect_notifications, open_widget, wait_until_idle
):
    viewer = make_napari_viewer()
    viewer.add_image(cat_crop(), rgb=True, name="cat")
    widget = open_widget(viewer)
    widget.controls.scope_choice.value = "region"
    assert widget.controls.region_choice.enabled
    with collect_notifications() as notifications:
        assert widget.run() is None
    assert "Shapes or Labels" in notifications[-1][1]
    empty = viewer.add_labels(np.zeros((60, 80), np.uint8), name="empty")
    widget.controls.region_choice.value = empty
    with collect_notifications() as notifications:
        widget.run()  # the region is rasterized on the worker, before the core's work
        wait_until_idle(widget)
    assert notifications[-1][0] == "error"
    assert "cover at least one pixel" in notifications[-1][1]
    assert "'empty', which covers none" in notifications[-1][1]
    assert len(viewer.layers) == 2
