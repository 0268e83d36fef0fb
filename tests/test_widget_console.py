"""The console helpers quantize_layer and add_result_layers (a real viewer where shown)."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from napari.layers import Image, Labels

import napari_kmeans_filter
from napari_kmeans_filter import quantize


@pytest.mark.viewer
def test_console_helpers_for_a_time_series_stack(make_napari_viewer, result_layers):
    viewer = make_napari_viewer()
    frames = np.stack([skimage.data.camera()[:32, :48] // (t + 1) for t in range(3)])
    stack = viewer.add_image(frames, name="movie", scale=(2.0, 0.5, 0.5))

    result = napari_kmeans_filter.quantize_layer(stack, 4, viewer=viewer, random_state=1)

    labels, image = result_layers(viewer, "movie")
    assert labels.data.shape == frames.shape
    # One palette for all three frames.
    assert len(result.palette) == 4
    assert set(np.unique(labels.data)) == {1, 2, 3, 4}
    np.testing.assert_allclose(labels.scale, (2.0, 0.5, 0.5))
    np.testing.assert_array_equal(image.data, result.image)

    again = napari_kmeans_filter.add_result_layers(viewer, result, stack)
    assert again == (labels, image)
    assert len(viewer.layers) == 3


@pytest.mark.parametrize(
    ("make_layer", "keywords", "message"),
    [
        pytest.param(lambda: None, {}, "no image layer", id="no-layer"),
        pytest.param(
            lambda: Labels(np.zeros((4, 4), np.uint8)), {}, "Image layers only", id="labels"
        ),
        pytest.param(lambda: Image(np.full((4, 4), np.nan)), {}, "only NaN", id="all-nan"),
        pytest.param(
            lambda: Image(np.zeros((4, 4), np.uint8)),
            {"color_space": "lab"},
            "needs an RGB layer",
            id="color-space-on-grey",
        ),
    ],
)
def test_quantize_layer_refuses_bad_input_with_a_readable_error(make_layer, keywords, message):
    with pytest.raises((TypeError, ValueError), match=message):
        napari_kmeans_filter.quantize_layer(make_layer(), 4, **keywords)


@pytest.mark.viewer
def test_add_result_layers_refuses_a_result_of_another_shape_and_adds_nothing(
    make_napari_viewer,
    cat_crop,
):
    viewer = make_napari_viewer()
    cat = cat_crop()
    source = viewer.add_image(cat, rgb=True, name="cat")
    other = quantize(cat[::2, ::2], 4)
    with pytest.raises(ValueError, match="shape"):
        napari_kmeans_filter.add_result_layers(viewer, other, source)
    assert [layer.name for layer in viewer.layers] == ["cat"]


@pytest.mark.viewer
def test_a_single_result_for_a_multiscale_layer_is_refused(make_napari_viewer, cat_crop):
    viewer = make_napari_viewer()
    cat = cat_crop()
    source = viewer.add_image([cat, cat[::2, ::2]], rgb=True, multiscale=True, name="ms")
    with pytest.raises(ValueError, match="level"):
        napari_kmeans_filter.add_result_layers(viewer, quantize(cat, 4), source)
    assert [layer.name for layer in viewer.layers] == ["ms"]
