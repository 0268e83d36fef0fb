"""The error curve (the dock's k plot): one histogram, each k fitted as quantize fits it."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from napari_kmeans_filter import quantize
from napari_kmeans_filter._contract import InvalidParameterError
from napari_kmeans_filter._quantize import error_curve

CAT = data.chelsea()[::2, ::2]


def test_each_point_is_quantizes_fit_at_that_k():
    ks = [9, 2, 4, 4, 16]
    curve = error_curve(CAT, ks, speed=10, random_state=3)
    assert curve["n_colors"] == [2, 4, 9, 16]
    expected = [quantize(CAT, k, speed=10, random_state=3).psnr for k in curve["n_colors"]]
    assert curve["psnr"] == expected  # the same fits, exactly


def test_delta_e_is_the_auto_searchs_measure():
    auto = quantize(CAT, "auto", target_delta_e=4.0, color_space="lab")
    tried = auto.error_curve
    curve = error_curve(CAT, tried["n_colors"], delta_e=True, color_space="lab")
    np.testing.assert_allclose(curve["delta_e"], tried["delta_e"], rtol=1e-12)
    np.testing.assert_allclose(curve["psnr"], tried["psnr"], rtol=1e-12)


def test_ks_beyond_the_distinct_colours_are_left_out():
    few = np.zeros((10, 10, 3), np.uint8)
    few[:5] = 200
    few[:, :3] = 90  # 3 distinct colours
    curve = error_curve(few, range(2, 9))
    assert curve["n_colors"] == [2, 3]
    assert curve["psnr"][-1] == np.inf


@pytest.mark.parametrize(
    ("ks", "name"),
    [([0, 4], "n_colors"), ([4, 5000], "n_colors"), ([], "ks"), ([4, "auto"], "ks")],
)
def test_bad_ks_are_refused_before_any_work(ks, name):
    calls = []
    with pytest.raises(InvalidParameterError) as info:
        error_curve(CAT, ks, progress=lambda *args: calls.append(args))
    assert info.value.parameter == name
    assert calls == []


def test_delta_e_needs_colour():
    with pytest.raises(InvalidParameterError, match="delta_e"):
        error_curve(data.camera(), [2, 4], delta_e=True)


def test_progress_can_stop_between_fits():
    class Stop(Exception):
        pass

    seen = []

    def progress(fraction, message):
        seen.append(message)
        if message.startswith("fitted"):
            raise Stop

    with pytest.raises(Stop):
        error_curve(CAT, [2, 3, 4, 5], progress=progress)
    assert [m for m in seen if m.startswith("fitted")] == ["fitted 2 colors"]
