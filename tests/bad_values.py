"""The table of bad values per public parameter, shared by the common checks of the Python
API (test_common_checks.py), the command line (the same file) and the dock
(test_widget_common_checks.py): wrong type, out of range, NaN, wrong units, wrong shape.
"""

from __future__ import annotations

import math

import numpy as np

from napari_kmeans_filter import Palette

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
