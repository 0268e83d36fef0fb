"""Common checks: every public parameter's bad values get the contract's one message, before work.

In the manner of scikit-learn's ``utils/estimator_checks.py``: one table of bad values per
parameter (wrong type, out of range, NaN, wrong units, wrong shape) runs through every public
function that takes the parameter. Each must raise the contract's ``InvalidParameterError``
naming the parameter, in the one message shape, before any work: the progress callback is never
called and a lazy input is never computed.
"""

from __future__ import annotations

import inspect
import math
import re

import dask
import dask.array as da
import numpy as np
import pytest

from napari_kmeans_filter import Palette, apply_palette, fit_palette, quantize
from napari_kmeans_filter._contract import PARAMETERS, InvalidParameterError

RGB = np.random.default_rng(0).integers(0, 256, (24, 32, 3)).astype(np.uint8)
UNIT = RGB.astype(np.float32) / 255
PALETTE = Palette(np.array([[0, 0, 0], [255, 255, 255]], np.uint8))

# Bad values per parameter; each entry: (value, extra keyword arguments it needs, image).
# The image defaults to RGB (uint8, 24 x 32 x 3).
BAD_VALUES: dict[str, list] = {
    "image": [
        (None, {}, None),
        ("a string", {}, None),
        (np.zeros((4, 4), bool), {}, None),
        (np.zeros(5, np.uint8), {}, None),
        (np.zeros((0, 4, 3), np.uint8), {}, None),
        (np.array([[1, 2], [3, 4]], dtype=object), {}, None),
    ],
    "n_colors": [
        (0, {}, RGB),
        (4097, {}, RGB),
        (2.5, {}, RGB),
        ("many", {}, RGB),
        (True, {}, RGB),
        (math.nan, {}, RGB),
    ],
    "channel_axis": [(3, {}, RGB), (-4, {}, RGB), (1.0, {}, RGB), ("last", {}, RGB)],
    "color_space": [
        ("hsv", {}, RGB),
        (1, {}, RGB),
        ("lab", {}, RGB[..., 0:2]),
        ("lab", {}, RGB.astype(np.float32)),
    ],
    "alpha": [("yes", {}, RGB), (1, {}, RGB)],
    "speed": [(0, {}, RGB), (11, {}, RGB), (4.5, {}, RGB), ("fast", {}, RGB)],
    "mask": [
        (np.ones((5, 5), bool), {}, RGB),
        (np.ones((24, 32), np.uint8), {}, RGB),
        (np.zeros((24, 32), bool), {}, RGB),
    ],
    "sample_weight": [
        (np.ones((5, 5)), {}, RGB),
        (-np.ones((24, 32)), {}, RGB),
        (np.full((24, 32), np.nan), {}, RGB),
        (np.full((24, 32), np.inf), {}, RGB),
        (np.zeros((24, 32)), {}, RGB),
        (np.array([["a"] * 32] * 24), {}, RGB),
    ],
    "fixed_colors": [
        ([[300, 0, 0]], {}, RGB),
        ([[0.5, 0, 0]], {}, RGB),
        ([[0, 0]], {}, RGB),
        ([[math.nan, 0, 0]], {}, RGB),
        ([[0, 0, 0]] * 9, {}, RGB),
        ([[0, 0, 0], [0, 0, 0]], {}, RGB),
        ([[255, 255, 255]], {}, UNIT),  # 0-255 colour for [0, 1] data: wrong units
        ("white", {}, RGB),
    ],
    "dither": [(-0.1, {}, RGB), (1.5, {}, RGB), ("yes", {}, RGB), (math.nan, {}, RGB)],
    "target_psnr": [
        (0, {"n_colors": "auto"}, RGB),
        (201, {"n_colors": "auto"}, RGB),
        (math.nan, {"n_colors": "auto"}, RGB),
        ("35", {"n_colors": "auto"}, RGB),
        (35, {"n_colors": 8}, RGB),  # a target without n_colors='auto'
    ],
    "target_delta_e": [
        (0, {"n_colors": "auto"}, RGB),
        (101, {"n_colors": "auto"}, RGB),
        (2, {"n_colors": "auto"}, RGB[..., :1]),  # not RGB
        (3, {"n_colors": "auto"}, RGB.astype(np.float64)),  # 0-255 floats: wrong units
    ],
    "n_init": [(0, {}, RGB), (1.5, {}, RGB), ("many", {}, RGB)],
    "init": [
        ("random", {}, RGB),
        (np.zeros((3, 3)), {"n_colors": 4}, RGB),
        (np.full((4, 3), 300.0), {"n_colors": 4}, RGB),  # 16-bit values for uint8
        (np.full((4, 3), 200.0), {"n_colors": 4}, UNIT),  # 0-255 for [0, 1] data
        (np.full((4, 3), math.nan), {"n_colors": 4}, RGB),
    ],
    "max_iter": [(0, {}, RGB), (1.5, {}, RGB)],
    "tol": [(-1, {}, RGB), (math.inf, {}, RGB), ("small", {}, RGB)],
    "random_state": [(-1, {}, RGB), (2**32, {}, RGB), (1.5, {}, RGB), ("seed", {}, RGB)],
    "progress": [("bar", {}, RGB), (1, {}, RGB)],
    "palette": [
        (None, {}, RGB),
        ([[0, 0, 0]], {}, RGB),
        (Palette(np.array([[0], [255]], np.uint8)), {}, RGB),  # 1 channel for RGB
        (Palette(np.array([[0, 0, 0], [65535] * 3], np.uint16)), {}, RGB),  # 16-bit units
        (PALETTE, {}, UNIT),  # integer colours for a float image
        (Palette(np.array([[0.0, 0, 0], [255.0, 255, 255]])), {}, UNIT),  # 0-255 floats
    ],
}

PUBLIC = (quantize, fit_palette, apply_palette)


def _cases():
    for function in PUBLIC:
        accepted = inspect.signature(function).parameters
        for name, entries in BAD_VALUES.items():
            if name not in accepted:
                continue
            for number, (value, extra, image) in enumerate(entries):
                if not set(extra) <= set(accepted):
                    continue
                yield pytest.param(
                    function, name, value, extra, image, id=f"{function.__name__}-{name}-{number}"
                )


def test_every_public_parameter_is_declared_and_has_bad_values():
    for function in PUBLIC:
        for name in inspect.signature(function).parameters:
            assert name in PARAMETERS, f"{function.__name__}({name}) is not in the contract"
            assert name in BAD_VALUES, f"{name} has no bad values in the common checks"


def test_public_defaults_are_the_contract_defaults():
    for function in PUBLIC:
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                assert parameter.default == PARAMETERS[name].default, (function, name)


_SHAPE = re.compile(r"^The '(\w+)' parameter must .+\. Got .+ instead\.")


@pytest.mark.parametrize("function, name, value, extra, image", list(_cases()))
def test_bad_value_gets_the_one_message_before_any_work(function, name, value, extra, image):
    calls = []
    arguments = {"progress": lambda fraction, message: calls.append(fraction)}
    if function is apply_palette:
        arguments["palette"] = PALETTE
    arguments |= extra
    arguments[name] = value
    if name == "image":
        image = value
    arguments.pop("image", None)
    with pytest.raises(InvalidParameterError) as caught:
        function(image, **arguments)
    error = caught.value
    assert error.parameter == name, str(error)
    assert _SHAPE.match(str(error)), str(error)
    assert "\n" not in str(error)
    assert calls == [], "work started before the parameter was refused"


@pytest.mark.parametrize(
    "name, value, extra",
    [
        ("n_colors", 0, {}),
        ("sample_weight", -np.ones((24, 32)), {}),
        ("fixed_colors", [[300, 0, 0]], {}),
        ("speed", 11, {}),
    ],
)
def test_bad_values_with_lazy_input_compute_no_image_chunk(name, value, extra):
    computed = []

    def counted(block):
        if block.size:  # dask calls it on an empty block to infer its output's type
            computed.append(block.shape)
        return block

    lazy = da.from_array(RGB, chunks=(12, 16, 3)).map_blocks(counted, dtype=RGB.dtype)
    with dask.config.set(scheduler="synchronous"), pytest.raises(InvalidParameterError):
        quantize(lazy, **({name: value} | extra))
    if name != "sample_weight":
        # A lazy weight is checked as it is computed, with the histogram (no output yet).
        assert computed == []


def test_lazy_bad_weights_give_the_numpy_message():
    weights = np.ones((24, 32))
    weights[3, 4] = -2
    with pytest.raises(InvalidParameterError) as eager:
        quantize(RGB, 4, sample_weight=weights)
    lazy_weights = da.from_array(weights, chunks=(12, 16))
    with pytest.raises(InvalidParameterError) as lazy:
        quantize(da.from_array(RGB, chunks=(12, 16, 3)), 4, sample_weight=lazy_weights)
    assert str(lazy.value) == str(eager.value)
