"""Up-front checks of every public parameter, with messages that name the parameter."""

from __future__ import annotations

import numbers

import numpy as np

from ._colorspace import COLOR_SPACES

MAX_N_COLORS = 4096
# More entries than this on the channel axis is almost always a spatial axis
# of a greyscale stack passed without channel_axis=None.
MAX_CHANNELS = 16


def is_dask_array(obj) -> bool:
    return type(obj).__module__.split(".")[0] == "dask" and hasattr(obj, "chunks")


def _range_error(name, kind, low, high, value):
    high_text = "inf" if high is None else str(high)
    return ValueError(
        f"The '{name}' parameter must be {kind} in the range [{low}, {high_text}]. "
        f"Got {value!r} instead."
    )


def check_int(value, name, low, high=None):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"The '{name}' parameter must be an int in the range "
            f"[{low}, {'inf' if high is None else high}]. Got {value!r} of type "
            f"{type(value).__name__} instead."
        )
    if value < low or (high is not None and value > high):
        raise _range_error(name, "an int", low, high, value)
    return int(value)


def check_n_colors(n_colors, *, allow_auto=False):
    if allow_auto and isinstance(n_colors, str) and n_colors == "auto":
        return "auto"
    if isinstance(n_colors, str):
        raise ValueError(
            f"The 'n_colors' parameter must be an int in the range [1, {MAX_N_COLORS}]"
            + (" or 'auto'" if allow_auto else "")
            + f". Got {n_colors!r} instead."
        )
    return check_int(n_colors, "n_colors", 1, MAX_N_COLORS)


def check_targets(n_colors, target_psnr, target_delta_e, n_color_channels, init):
    """``(target_psnr, target_delta_e)``: required with n_colors='auto', refused without."""
    given = [name for name, value in (("target_psnr", target_psnr), ("target_delta_e", target_delta_e)) if value is not None]
    if n_colors != "auto":
        if given:
            raise ValueError(
                f"The '{given[0]}' parameter needs n_colors='auto' (the fewest colours that "
                f"reach it); with n_colors={n_colors!r} leave it out."
            )
        return None, None
    if not given:
        raise ValueError(
            "n_colors='auto' needs a target: 'target_psnr' (dB) and/or 'target_delta_e' "
            "(mean CIEDE2000)."
        )
    if not isinstance(init, str):
        raise ValueError("The 'init' parameter cannot be an array with n_colors='auto'.")
    checked = []
    for name, value, low, high in (
        ("target_psnr", target_psnr, 0.0, 200.0),
        ("target_delta_e", target_delta_e, 0.0, 100.0),
    ):
        if value is None:
            checked.append(None)
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low < value <= high:
            raise ValueError(
                f"The '{name}' parameter must be a number in the range ({low:g}, {high:g}]. "
                f"Got {value!r} instead."
            )
        checked.append(float(value))
    if target_delta_e is not None and n_color_channels != 3:
        raise ValueError(
            "The 'target_delta_e' parameter needs 3 colour channels (RGB); the image has "
            f"{n_color_channels}. Use target_psnr."
        )
    return tuple(checked)


def check_image(image):
    """Return ``image`` as a numpy or dask array with a supported dtype and shape."""
    if not is_dask_array(image):
        if image is None:
            raise TypeError("The 'image' parameter must be an array. Got None instead.")
        image = np.asarray(image)
    dtype = image.dtype
    if dtype.kind == "b":
        raise TypeError(
            "The 'image' parameter must have an integer or floating-point dtype. Got a "
            "boolean image; convert it first, e.g. image.astype(np.uint8)."
        )
    if dtype.kind not in "uif":
        raise TypeError(
            "The 'image' parameter must have an integer or floating-point dtype. "
            f"Got dtype {dtype} instead."
        )
    if image.ndim < 2:
        raise ValueError(
            "The 'image' parameter must have at least 2 dimensions (an image). "
            f"Got an array of shape {image.shape} instead."
        )
    if image.size == 0:
        raise ValueError(
            f"The 'image' parameter must not be empty. Got an array of shape {image.shape}."
        )
    return image


def check_channel_axis(channel_axis, ndim):
    """Normalise ``channel_axis`` to a non-negative int or None (2-D is greyscale)."""
    if channel_axis is None:
        return None
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise TypeError(
            f"The 'channel_axis' parameter must be an int or None. Got {channel_axis!r} instead."
        )
    if not -ndim <= channel_axis < ndim:
        raise ValueError(
            f"The 'channel_axis' parameter must be None or an int in the range "
            f"[{-ndim}, {ndim - 1}] for an image with {ndim} dimensions. "
            f"Got {channel_axis} instead."
        )
    if ndim == 2:
        return None
    return int(channel_axis) % ndim


def check_color_space(color_space, n_color_channels):
    if not isinstance(color_space, str) or color_space.lower() not in COLOR_SPACES:
        raise ValueError(
            f"The 'color_space' parameter must be one of {', '.join(map(repr, COLOR_SPACES))}. "
            f"Got {color_space!r} instead."
        )
    color_space = color_space.lower()
    if color_space != "rgb" and n_color_channels != 3:
        raise ValueError(
            f"The 'color_space' parameter {color_space!r} needs 3 colour channels (RGB); "
            f"the image has {n_color_channels}. Use color_space='rgb'."
        )
    return color_space


def check_alpha(alpha, n_channels, channel_axis, ndim):
    """Whether the last channel is alpha; None means: 4 channels on the last axis."""
    if alpha is None:
        return channel_axis is not None and channel_axis == ndim - 1 and n_channels == 4
    if not isinstance(alpha, (bool, np.bool_)):
        raise TypeError(f"The 'alpha' parameter must be True, False or None. Got {alpha!r}.")
    if alpha and n_channels < 2:
        raise ValueError(
            "The 'alpha' parameter is True but the image has no channel besides alpha "
            f"({n_channels} channel(s)); pass channel_axis and at least 2 channels."
        )
    return bool(alpha)


def check_dither(dither):
    """False, or the dithering level in (0, 1] (True means 1)."""
    if isinstance(dither, (bool, np.bool_)):
        return 1.0 if dither else False
    if not isinstance(dither, numbers.Real) or not 0 <= dither <= 1:
        raise ValueError(
            "The 'dither' parameter must be True, False or a level in the range [0, 1]. "
            f"Got {dither!r} instead."
        )
    return float(dither) if dither > 0 else False


def check_speed(speed):
    return check_int(speed, "speed", 1, 10)


def _check_spatial(array, name, spatial_shape):
    if is_dask_array(array):
        shape = tuple(array.shape)
    else:
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise TypeError(f"The '{name}' parameter must be an array. {error}") from error
        shape = array.shape
    if shape != tuple(spatial_shape):
        raise ValueError(
            f"The '{name}' parameter must have the image's spatial shape {tuple(spatial_shape)} "
            f"(the image without its channel axis). Got shape {shape} instead."
        )
    return array


def check_mask(mask, spatial_shape):
    """A boolean array of the spatial shape, or None."""
    if mask is None:
        return None
    mask = _check_spatial(mask, "mask", spatial_shape)
    if mask.dtype.kind != "b":
        raise TypeError(
            f"The 'mask' parameter must be a boolean array (True where pixels vote). "
            f"Got dtype {mask.dtype}; use e.g. labels > 0."
        )
    if not is_dask_array(mask) and not mask.any():
        raise ValueError("The 'mask' parameter is False everywhere: no pixel is left to fit.")
    return mask


def check_sample_weight(sample_weight, spatial_shape):
    """Non-negative finite float64 weights of the spatial shape, or None."""
    if sample_weight is None:
        return None
    weights = _check_spatial(sample_weight, "sample_weight", spatial_shape)
    if weights.dtype.kind not in "uifb":
        raise TypeError(
            f"The 'sample_weight' parameter must be numeric. Got dtype {weights.dtype} instead."
        )
    weights = weights.astype(np.float64)
    if not is_dask_array(weights):
        if not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError(
                "The 'sample_weight' parameter must hold finite values in the range [0, inf)."
            )
        if not np.any(weights > 0):
            raise ValueError("The 'sample_weight' parameter is 0 everywhere: nothing to fit.")
    return weights


def check_n_init(n_init):
    if isinstance(n_init, str) and n_init == "auto":
        return None
    return check_int(n_init, "n_init", 1, None)


def check_max_iter(max_iter):
    return check_int(max_iter, "max_iter", 1, None)


def check_tol(tol):
    if (
        isinstance(tol, bool)
        or not isinstance(tol, numbers.Real)
        or not np.isfinite(tol)
        or tol < 0
    ):
        raise ValueError(f"The 'tol' parameter must be a float in the range [0, inf). Got {tol!r}.")
    return float(tol)


def check_random_state(random_state) -> int:
    """The integer seed to use: recorded in ``params`` so that any result can be redone."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        if not 0 <= random_state <= 2**32 - 1:
            raise ValueError(
                "The 'random_state' parameter must be an int in the range [0, 4294967295], "
                f"a numpy RandomState or Generator, or None. Got {random_state!r} instead."
            )
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31 - 1))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**31 - 1))
    raise ValueError(
        "The 'random_state' parameter must be an int in the range [0, 4294967295], a numpy "
        f"RandomState or Generator, or None. Got {random_state!r} instead."
    )


def check_init(init, n_colors, n_color_channels):
    if isinstance(init, str):
        if init != "k-means++":
            raise ValueError(
                "The 'init' parameter must be 'k-means++' or an array of starting colours. "
                f"Got {init!r} instead."
            )
        return init
    try:
        centres = np.array(init, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "The 'init' parameter must be 'k-means++' or a numeric array of starting colours."
        ) from error
    if centres.ndim == 1 and n_color_channels == 1:
        centres = centres[:, np.newaxis]
    if centres.shape != (n_colors, n_color_channels):
        raise ValueError(
            f"The 'init' parameter must have shape (n_colors, channels) = "
            f"({n_colors}, {n_color_channels}). Got shape {centres.shape} instead."
        )
    if not np.all(np.isfinite(centres)):
        raise ValueError("The 'init' parameter must contain only finite values.")
    return centres


def check_fixed_colors(fixed_colors, n_colors, n_color_channels, dtype):
    """An (m, C) array of colours exactly representable in ``dtype``, m <= n_colors, or None."""
    if fixed_colors is None:
        return None
    try:
        colors = np.array(fixed_colors, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise TypeError(
            "The 'fixed_colors' parameter must be a numeric (m, channels) array of colours."
        ) from error
    if colors.ndim == 1 and n_color_channels == 1:
        colors = colors[:, np.newaxis]
    if colors.ndim != 2 or colors.shape[1] != n_color_channels or colors.shape[0] == 0:
        raise ValueError(
            f"The 'fixed_colors' parameter must have shape (m, {n_color_channels}) with "
            f"1 <= m <= n_colors. Got shape {colors.shape} instead."
        )
    if colors.shape[0] > n_colors:
        raise ValueError(
            f"The 'fixed_colors' parameter holds {colors.shape[0]} colours, more than "
            f"n_colors={n_colors}; it must hold between 1 and n_colors colours."
        )
    _check_in_units(colors, np.dtype(dtype), "fixed_colors")
    if len(np.unique(colors, axis=0)) != len(colors):
        raise ValueError("The 'fixed_colors' parameter must not repeat a colour.")
    return colors


def _check_in_units(values, dtype, name):
    if not np.all(np.isfinite(values)):
        raise ValueError(f"The '{name}' parameter must contain only finite values.")
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if values.min() < info.min or values.max() > info.max:
            raise ValueError(
                f"The '{name}' parameter must hold values in [{info.min}, {info.max}] for a "
                f"{dtype} image. Got values in [{values.min():g}, {values.max():g}]."
            )
        if not np.array_equal(values, np.round(values)):
            raise ValueError(f"The '{name}' parameter must hold integers for a {dtype} image.")


def check_palette_for_image(colors, n_color_channels, dtype):
    """The palette's colours in the image's dtype, or an error when their units differ."""
    dtype = np.dtype(dtype)
    if colors.shape[1] != n_color_channels:
        raise ValueError(
            f"The 'palette' parameter has {colors.shape[1]} channel(s) but the image "
            f"has {n_color_channels} colour channel(s)."
        )
    palette_dtype = colors.dtype.newbyteorder("=")
    hint = ""
    if dtype.kind == "f" and palette_dtype.kind != "f":
        hint = "scale the palette to the image's float units (e.g. colors / 255)"
    elif dtype.kind in "ui" and palette_dtype.kind == "f":
        hint = "fit the palette on an integer image of the same dtype, or scale the image"
    elif dtype.kind in "ui" and palette_dtype.itemsize < dtype.itemsize:
        # A uint8 palette on a uint16 image would paint everything near black.
        hint = "fit the palette on an image of the same dtype (its colours are in other units)"
    if hint:
        raise ValueError(
            f"The 'palette' parameter has dtype {palette_dtype} but the image has dtype "
            f"{dtype}; {hint}."
        )
    if dtype.kind in "ui":
        _check_in_units(colors.astype(np.float64), dtype, "palette")
    return colors.astype(dtype)


def check_progress(progress):
    if progress is not None and not callable(progress):
        raise TypeError(
            f"The 'progress' parameter must be a callable or None. Got {progress!r} instead."
        )
    return progress
