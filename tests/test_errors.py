"""Bad input is refused up front, with an exception whose message names the parameter."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest

from napari_kmeans_filter import MAX_N_COLORS, Palette, apply_palette, fit_palette, quantize

RGB = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
GREY = RGB[..., 0].copy()


def _with(image, index, value, dtype=np.float64):
    """A float copy of `image` with one bad value at `index`."""
    out = (image / 255).astype(dtype)
    out[index] = value
    return out


def _never_called(fraction, message):
    raise AssertionError(f"work started before validation: progress({fraction}, {message!r})")


# (description, image, kwargs, exception, match)
PARAMETER_CASES = [
    ("n_colors=0", RGB, {"n_colors": 0}, ValueError, "n_colors"),
    ("n_colors=-3", RGB, {"n_colors": -3}, ValueError, "n_colors"),
    ("n_colors>max", RGB, {"n_colors": MAX_N_COLORS + 1}, ValueError, "n_colors"),
    ("n_colors=2.5", RGB, {"n_colors": 2.5}, (TypeError, ValueError), "n_colors"),
    ("n_colors=8.0", RGB, {"n_colors": 8.0}, (TypeError, ValueError), "n_colors"),
    ("n_colors='8'", RGB, {"n_colors": "8"}, (TypeError, ValueError), "n_colors"),
    # bool is an int subclass, but n_colors=True is always a mistake.
    ("n_colors=True", RGB, {"n_colors": True}, (TypeError, ValueError), "n_colors"),
    ("n_colors=None", RGB, {"n_colors": None}, (TypeError, ValueError), "n_colors"),
    ("channel_axis=3 of 3-D", RGB, {"channel_axis": 3}, ValueError, "channel_axis"),
    ("channel_axis=-4 of 3-D", RGB, {"channel_axis": -4}, ValueError, "channel_axis"),
    ("channel_axis='x'", RGB, {"channel_axis": "x"}, (TypeError, ValueError), "channel_axis"),
    ("channel_axis=1.0", RGB, {"channel_axis": 1.0}, (TypeError, ValueError), "channel_axis"),
    ("channel_axis=5 of 2-D", GREY, {"channel_axis": 5}, ValueError, "channel_axis"),
    ("color_space='hsv'", RGB, {"color_space": "hsv"}, ValueError, "color_space"),
    ("color_space=None", RGB, {"color_space": None}, (TypeError, ValueError), "color_space"),
    ("lab on greyscale", GREY, {"color_space": "lab"}, ValueError, "color_space"),
    ("oklab on 2 channels", RGB[..., :2], {"color_space": "oklab"}, ValueError, "color_space"),
    (
        "lab on 4 colour channels",
        np.dstack([RGB, GREY]),
        {"color_space": "lab", "alpha": False},
        ValueError,
        "color_space",
    ),
    ("random_state='abc'", RGB, {"random_state": "abc"}, (TypeError, ValueError), "random_state"),
    ("random_state=1.5", RGB, {"random_state": 1.5}, (TypeError, ValueError), "random_state"),
    ("random_state=-1", RGB, {"random_state": -1}, (TypeError, ValueError), "random_state"),
    ("init='random-ish'", RGB, {"init": "foo"}, ValueError, "init"),
    ("init too many rows", RGB, {"n_colors": 3, "init": np.zeros((4, 3))}, ValueError, "init"),
    ("init wrong channels", RGB, {"n_colors": 3, "init": np.zeros((3, 2))}, ValueError, "init"),
    ("init 1-D for RGB", RGB, {"n_colors": 3, "init": np.zeros(3)}, ValueError, "init"),
    (
        "init with NaN",
        RGB,
        {"n_colors": 2, "init": [[0, 0, 0], [np.nan, 0, 0]]},
        ValueError,
        "init",
    ),
    ("max_iter=0", RGB, {"max_iter": 0}, ValueError, "max_iter"),
    ("n_init=0", RGB, {"n_init": 0}, ValueError, "n_init"),
    ("tol=-1", RGB, {"tol": -1.0}, ValueError, "tol"),
    ("progress=1", RGB, {"progress": 1}, TypeError, "progress"),
]


@pytest.mark.parametrize("func", [quantize, fit_palette], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("image", "kwargs", "exc", "match"),
    [pytest.param(*case[1:], id=case[0]) for case in PARAMETER_CASES],
)
def test_bad_parameter_is_named(func, image, kwargs, exc, match):
    kwargs = {"progress": _never_called, **kwargs}
    with pytest.raises(exc, match=match):
        func(image, **kwargs)


IMAGE_CASES = [
    ("0-d", np.array(3, np.uint8), ValueError),
    ("1-d", np.arange(10, dtype=np.uint8), ValueError),
    ("empty rows", np.zeros((0, 5, 3), np.uint8), ValueError),
    ("empty 2-D", np.zeros((4, 0), np.float32), ValueError),
    ("NaN", _with(RGB, (2, 3, 1), np.nan), ValueError),
    ("+inf", _with(RGB, (5, 6, 2), np.inf), ValueError),
    ("-inf in float32 grey", _with(GREY, (0, 0), -np.inf, np.float32), ValueError),
    ("bool", RGB > 128, TypeError),
    ("complex", RGB.astype(np.complex128), TypeError),
    ("object", RGB.astype(object), TypeError),
    ("str", RGB.astype(str), TypeError),
    ("datetime", RGB.astype("datetime64[s]"), TypeError),
    ("None", None, TypeError),
]


@pytest.mark.parametrize("func", [quantize, fit_palette], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("image", "exc"), [pytest.param(*case[1:], id=case[0]) for case in IMAGE_CASES]
)
def test_bad_image_is_named(func, image, exc):
    with pytest.raises(exc, match="image"):
        func(image, 4, progress=_never_called)


def test_fully_transparent_image_has_nothing_to_fit():
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])
    with pytest.raises(ValueError, match="image"):
        quantize(rgba, 3)


def test_nan_only_under_transparent_alpha_is_still_refused():
    """A NaN has no colour whatever its alpha; refusing it is the documented rule."""
    rgba = np.dstack([RGB / 255.0, np.ones(RGB.shape[:2])])
    rgba[0, 0] = (np.nan, 0, 0, 0)
    with pytest.raises(ValueError, match="image"):
        quantize(rgba, 3)


@pytest.mark.parametrize(
    ("image", "kwargs", "exc", "match"),
    [
        pytest.param(RGB[..., :2], {}, ValueError, "palette", id="2-channel image, RGB palette"),
        pytest.param(GREY, {}, ValueError, "palette", id="greyscale image, RGB palette"),
        pytest.param(
            np.dstack([RGB, GREY]),
            {"alpha": False},
            ValueError,
            "palette",
            id="4 colour channels, RGB palette",
        ),
        pytest.param(RGB, {"channel_axis": 7}, ValueError, "channel_axis", id="channel_axis"),
        pytest.param(RGB > 0, {}, TypeError, "image", id="bool image"),
        pytest.param(np.zeros((0, 3), np.uint8), {}, ValueError, "image", id="empty image"),
    ],
)
def test_apply_palette_refuses_bad_input(image, kwargs, exc, match):
    palette = Palette(np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
    with pytest.raises(exc, match=match):
        apply_palette(image, palette, progress=_never_called, **kwargs)


@pytest.mark.parametrize(
    "palette",
    [np.array([[0, 0, 0], [255, 255, 255]], np.uint8), {"colors": [[0, 0, 0]]}, None],
    ids=["ndarray", "dict", "None"],
)
def test_apply_palette_wants_a_palette(palette):
    with pytest.raises(TypeError, match="palette"):
        apply_palette(RGB, palette)


def test_apply_palette_accepts_rgb_palette_on_rgba_image():
    """Counterpart of the mismatch errors: alpha is not a colour channel."""
    palette = Palette(np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 255, np.uint8)])
    assert apply_palette(rgba, palette).image.shape == rgba.shape


def test_valid_edge_values_are_accepted():
    """The other side of the range checks, so the error tests cannot pass by refusing all."""
    assert len(quantize(RGB, 1).palette) == 1
    assert len(quantize(RGB, MAX_N_COLORS).palette) == len(np.unique(RGB.reshape(-1, 3), axis=0))
    assert len(quantize(RGB, np.uint16(3)).palette) == 3  # numpy integers are ints
    assert quantize(RGB, 3, channel_axis=-1).labels.shape == RGB.shape[:2]
    assert quantize(RGB, 3, channel_axis=np.int64(2)).labels.shape == RGB.shape[:2]
    assert quantize(RGB, 3, init=RGB[0, :3].astype(float), n_init=1).palette.colors.shape == (3, 3)
    assert quantize(GREY, 3, init=[[10], [100], [200]]).palette.colors.shape == (3, 1)
    assert quantize(GREY, 3, channel_axis=1).labels.shape == GREY.shape  # 2-D is always grey


@pytest.mark.parametrize(
    "kwargs",
    [{"n_colors": 0}, {"color_space": "hsv"}, {"channel_axis": 9}, {"init": np.zeros((2, 3))}],
    ids=lambda kw: next(iter(kw)),
)
def test_errors_on_dask_input_compute_nothing(kwargs):
    """'Before any work': a bad parameter must not read a single chunk of a lazy image."""
    reads = []

    def load(block):
        reads.append(1)
        return block

    lazy = da.from_array(RGB, chunks=(3, 4, 3)).map_blocks(load, dtype=RGB.dtype)
    reads.clear()  # dask may probe the function while building the graph
    with pytest.raises((TypeError, ValueError), match=next(iter(kwargs))):
        quantize(lazy, **{"n_colors": 4, **kwargs})
    assert not reads
    # The same lazy image with valid parameters does read its chunks (the probe works).
    quantize(lazy, 4)
    assert reads


def test_greyscale_stack_without_channel_axis_none_is_refused_with_advice():
    stack = np.zeros((5, 64, 64), dtype=np.uint8)
    with pytest.raises(ValueError, match="channel_axis=None"):
        quantize(stack, 4)
    assert quantize(stack, 4, channel_axis=None).labels.shape == stack.shape


@pytest.mark.parametrize(
    "description, message",
    [
        ({"colors": [[300, 0, 0], [0, 0, 0]], "dtype": "uint8"}, r"\[0, 255\]"),
        ({"colors": [[0.5, 0, 0], [0, 0, 0]], "dtype": "uint8"}, "integers"),
        ({"colors": [[float("nan"), 0, 0], [0, 0, 0]], "dtype": "float64"}, "finite"),
        ({"colors": [[0, 0, 0]], "counts": [-1], "dtype": "uint8"}, "negative"),
        ({"colors": [[0, 0, 0]], "dtype": "str"}, "dtype"),
    ],
)
def test_palette_from_dict_rejects_bad_descriptions(description, message):
    with pytest.raises(ValueError, match=message):
        Palette.from_dict(description)


def test_cluster_stats_on_unknown_chunk_sizes_names_the_fix():
    image = np.random.default_rng(0).integers(0, 255, (6, 20, 20, 3)).astype(np.uint8)
    lazy = da.from_array(image, chunks=(2, 20, 20, 3))
    frames = lazy[lazy[:, 0, 0, 0] >= 0]  # boolean indexing: unknown (nan) chunk sizes
    result = quantize(frames, 4)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        result.cluster_stats(frame_axis=0)
    known = quantize(frames.compute_chunk_sizes(), 4)
    assert known.cluster_stats(frame_axis=0)["frame_counts"].shape == (4, 6)
