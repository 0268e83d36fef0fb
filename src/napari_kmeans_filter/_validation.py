"""Checks of parameters against the image: shapes, axes, and colours in the image's units.

The rules that need no image (types, ranges, options) are declared in :mod:`._contract`; the
checks here need the image (its dimensions, channels, dtype or values) and raise the contract's
:class:`~._contract.InvalidParameterError`, so every message has the contract's one shape.
"""

from __future__ import annotations

import math

import numpy as np

from ._contract import MAX_CHANNELS, MAX_N_COLORS, invalid, validate

__all__ = [
    "MAX_CHANNELS",
    "MAX_N_COLORS",
    "check_alpha",
    "check_channel_axis",
    "check_color_space",
    "check_colors_in_data_range",
    "check_image",
    "check_init",
    "check_mask",
    "check_not_empty",
    "check_palette_for_image",
    "check_sample_weight",
    "check_targets",
    "check_votes",
    "checked_weights",
    "colors_array",
    "is_dask_array",
]


def is_dask_array(obj) -> bool:
    """Whether ``obj`` is a dask array (without importing dask)."""
    return type(obj).__module__.split(".")[0] == "dask" and hasattr(obj, "chunks")


def check_image(image):
    """``image`` as a numpy or dask array of a supported dtype and shape."""
    validate("image", image)
    if not is_dask_array(image):
        try:
            image = np.asarray(image)
        except (TypeError, ValueError) as error:
            raise invalid("image", "be an array", image, str(error)) from error
    dtype = image.dtype
    requirement = "have an integer or floating-point dtype"
    if dtype.kind == "b":
        raise invalid(
            "image",
            requirement,
            None,
            "Convert it first, e.g. image.astype(np.uint8).",
            got="a boolean image",
        )
    if dtype.kind not in "uif":
        raise invalid("image", requirement, None, got=f"dtype {dtype}")
    if image.ndim < 2:
        raise invalid(
            "image",
            "have at least 2 dimensions (an image)",
            None,
            got=f"an array of shape {tuple(image.shape)}",
        )
    check_not_empty(image.size, f"an array of shape {image.shape}")
    return image


def check_not_empty(n_values: int, got: str) -> None:
    """Refuse an image without a pixel (one pixel is an image: a 1-colour result);
    ``got`` describes what was given (an array, a layer)."""
    if n_values == 0:
        raise invalid("image", "not be empty", None, got=got)


def check_channel_axis(channel_axis, ndim):
    """Normalise ``channel_axis`` to a non-negative int or None (2-D is greyscale)."""
    validate("channel_axis", channel_axis)
    if channel_axis is None:
        return None
    if not -ndim <= channel_axis < ndim:
        raise invalid(
            "channel_axis",
            f"be None or an int in the range [{-ndim}, {ndim - 1}] for an image with "
            f"{ndim} dimensions",
            channel_axis,
        )
    if ndim == 2:
        return None
    return int(channel_axis) % ndim


def check_n_channels(n_channels: int, channel_axis) -> None:
    if n_channels > MAX_CHANNELS:
        raise invalid(
            "channel_axis",
            f"select an axis with at most {MAX_CHANNELS} entries (colour channels)",
            None,
            "For a greyscale stack or volume pass channel_axis=None.",
            got=f"axis {channel_axis} with {n_channels} entries",
        )


def check_color_space(color_space, n_color_channels):
    """``color_space`` in lower case; a perceptual space needs 3 colour channels."""
    validate("color_space", color_space)
    color_space = color_space.lower()
    if color_space != "rgb" and n_color_channels != 3:
        raise invalid(
            "color_space",
            "be 'rgb' for an image without 3 colour channels",
            color_space,
            f"The image has {n_color_channels}; 'lab' and 'oklab' are for RGB images.",
        )
    return color_space


def check_alpha(alpha, n_channels, channel_axis, ndim):
    """Whether the last channel is alpha; None means: 4 channels on the last axis."""
    validate("alpha", alpha)
    if alpha is None:
        return channel_axis is not None and channel_axis == ndim - 1 and n_channels == 4
    if alpha and n_channels < 2:
        raise invalid(
            "alpha",
            "be False for an image with no channel besides alpha",
            alpha,
            f"The image has {n_channels} channel(s); pass channel_axis and at least 2 channels.",
        )
    return bool(alpha)


def check_targets(n_colors, target_psnr, target_delta_e, n_color_channels, init):
    """``(target_psnr, target_delta_e)`` as floats: required with ``n_colors='auto'`` only."""
    validate("target_psnr", target_psnr)
    validate("target_delta_e", target_delta_e)
    given = [
        (name, value)
        for name, value in (("target_psnr", target_psnr), ("target_delta_e", target_delta_e))
        if value is not None
    ]
    if n_colors != "auto":
        if given:
            name, value = given[0]
            raise invalid(
                name,
                "be None unless n_colors='auto' (the fewest colours that reach it)",
                value,
                f"With n_colors={n_colors!r} leave it out.",
            )
        return None, None
    if not given:
        raise invalid(
            "n_colors",
            "be a number of colours unless a target is given",
            "auto",
            "n_colors='auto' needs 'target_psnr' (dB) and/or 'target_delta_e' (mean CIEDE2000).",
        )
    if not isinstance(init, str):
        raise invalid("init", "be 'k-means++' with n_colors='auto'", init)
    if target_delta_e is not None and n_color_channels != 3:
        raise invalid(
            "target_delta_e",
            "be None for an image without 3 colour channels",
            target_delta_e,
            f"The image has {n_color_channels}; use target_psnr.",
        )
    return (
        None if target_psnr is None else float(target_psnr),
        None if target_delta_e is None else float(target_delta_e),
    )


def _spatial(array, name, spatial_shape):
    if is_dask_array(array):
        shape = tuple(array.shape)
    else:
        try:
            array = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise invalid(name, "be an array", array, str(error)) from error
        shape = array.shape
    _check_known_sizes(name, shape, tuple(spatial_shape))
    if shape != tuple(spatial_shape):
        raise invalid(
            name,
            f"have the image's spatial shape {tuple(spatial_shape)} (the image without its "
            "channel axis)",
            None,
            got=f"shape {shape}",
        )
    return array


def _has_unknown_size(shape) -> bool:
    return any(isinstance(size, float) and math.isnan(size) for size in shape)


def _check_known_sizes(name: str, shape: tuple, spatial_shape: tuple) -> None:
    """Refuse a per-pixel array when its or the image's dask chunk sizes are unknown (NaN).

    Its pixels cannot be matched to the image's without the sizes: refused before any work, as
    ``cluster_stats(frame_axis=...)`` refuses labels of unknown shape.
    """
    own, image = _has_unknown_size(shape), _has_unknown_size(spatial_shape)
    if not (own or image):
        return
    if own and image:
        got = f"a {name} of shape {shape} and an image of spatial shape {spatial_shape}"
        which = f"both the image and the {name}"
    elif own:
        got = f"a {name} of shape {shape}"
        which = f"the {name}"
    else:
        got = f"a {name} for an image of spatial shape {spatial_shape}"
        which = "the image"
    raise invalid(
        name,
        "be given with the image in arrays of known chunk sizes",
        None,
        f"Unknown (NaN) chunk sizes come e.g. from boolean indexing; call "
        f"compute_chunk_sizes() on {which} first.",
        got=f"{got} (unknown chunk sizes)",
    )


def check_mask(mask, spatial_shape):
    """A boolean array of the spatial shape, or None."""
    validate("mask", mask)
    if mask is None:
        return None
    mask = _spatial(mask, "mask", spatial_shape)
    if mask.dtype.kind != "b":
        raise invalid(
            "mask",
            "be a boolean array (True where pixels vote)",
            None,
            "Use e.g. labels > 0.",
            got=f"dtype {mask.dtype}",
        )
    if not is_dask_array(mask) and not mask.any():
        raise invalid("mask", "be True somewhere", None, got="False everywhere (no pixel to fit)")
    return mask


_WEIGHT_RULE = "hold finite values in the range [0, inf), not all 0"
#: The fit sums weight x squared distance over up to 2**40 pixels: weights within 2**-32 to 2**32
#: keep that within float64's normal numbers for every accepted image (values within +-1e140,
#: spread over at least 1e-140).  Numpy weights beyond are rescaled (only their ratios matter),
#: larger lazy ones refused, since their maximum is known only once every block is computed.
MAX_PLAIN_WEIGHT = 2.0**32
MIN_PLAIN_WEIGHT = 2.0**-32


def check_sample_weight(sample_weight, spatial_shape):
    """Non-negative finite float64 weights of the spatial shape, or None.

    Dask weights are checked as they are computed (see :func:`checked_weights`).
    """
    validate("sample_weight", sample_weight)
    if sample_weight is None:
        return None
    weights = _spatial(sample_weight, "sample_weight", spatial_shape)
    if weights.dtype.kind not in "uifb":
        raise invalid("sample_weight", "be numeric", None, got=f"dtype {weights.dtype}")
    weights = weights.astype(np.float64)
    if not is_dask_array(weights):
        check_weights(weights)
        weights = rescaled_weights(weights)
    return weights


def rescaled_weights(weights: np.ndarray) -> np.ndarray:
    """Non-negative ``weights`` multiplied by a power of two (exactly) to a maximum in [0.5, 1)
    when it lies outside [:data:`MIN_PLAIN_WEIGHT`, :data:`MAX_PLAIN_WEIGHT`], else unchanged.

    Only their ratios matter to the fit; products with squared distances then neither
    overflow nor lose their precision as subnormal numbers.  Positive weights stay positive
    (they vote).
    """
    largest = float(weights.max()) if weights.size else 0.0
    if largest == 0 or MIN_PLAIN_WEIGHT <= largest <= MAX_PLAIN_WEIGHT:
        return weights
    with np.errstate(under="ignore"):
        scaled = np.ldexp(weights, -math.frexp(largest)[1])
    return np.where(weights > 0, np.maximum(scaled, np.nextafter(0.0, 1.0)), 0.0)


def check_weights(weights: np.ndarray) -> None:
    """Refuse negative, NaN, infinite or all-zero numpy weights (``sample_weight``)."""
    if not np.all(np.isfinite(weights)) or np.any(weights < 0):
        finite = weights[np.isfinite(weights)]
        if not finite.size:
            got = "only NaN or infinite values"
        else:
            got = f"values in [{finite.min():g}, {finite.max():g}]"
            if finite.size < weights.size:
                got += " and NaN or infinite ones"
        raise invalid("sample_weight", _WEIGHT_RULE, None, got=got)
    if not np.any(weights > 0):
        raise invalid("sample_weight", _WEIGHT_RULE, None, got="0 everywhere (nothing to fit)")


def checked_weights(block: np.ndarray) -> np.ndarray:
    """One computed block of lazy ``sample_weight``: refused as numpy weights would be.

    Whether any weight is positive is a property of the whole array; the fit checks it on the
    histogram's total votes.
    """
    if block.size and (not np.all(np.isfinite(block)) or np.any(block < 0)):
        check_weights(block)
    if block.size and block.max() > MAX_PLAIN_WEIGHT:
        raise invalid(
            "sample_weight",
            f"hold values of at most {MAX_PLAIN_WEIGHT:g} (2**32) in a dask array",
            None,
            "Only the weights' ratios matter: divide them by their maximum (numpy weights are "
            "rescaled so automatically).",
            got=f"values up to {block.max():g}",
        )
    return block


def check_votes(total_votes: float, has_mask: bool, has_weights: bool) -> None:
    """Refuse a fit with no vote left (all masked out, weighted 0 or transparent)."""
    if total_votes > 0:
        return
    if has_weights:
        raise invalid("sample_weight", _WEIGHT_RULE, None, got="0 on every visible pixel")
    if has_mask:
        raise invalid("mask", "be True somewhere", None, got="no visible pixel inside the mask")


def colors_array(values, name: str, n_channels: int) -> np.ndarray:
    """``values`` as a float64 ``(m, n_channels)`` array of finite colours (m >= 1)."""
    try:
        colors = np.array(values, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise invalid(name, f"be a numeric (m, {n_channels}) array of colours", values) from error
    if colors.ndim == 1 and n_channels == 1:
        colors = colors[:, np.newaxis]
    if colors.ndim != 2 or colors.shape[1] != n_channels or colors.shape[0] == 0:
        raise invalid(
            name,
            f"have shape (m, {n_channels}): one row per colour, one column per colour channel "
            "of the image",
            None,
            got=f"shape {colors.shape}",
        )
    if not np.all(np.isfinite(colors)):
        raise invalid(name, "contain only finite values", None, got="NaN or inf")
    return colors


def check_init(init, n_colors, n_color_channels, dtype):
    """'k-means++', or the ``(n_colors, C)`` starting colours in the image's units."""
    validate("init", init)
    if isinstance(init, str):
        if init.lower() != "k-means++":
            raise invalid("init", "be 'k-means++' or an array of starting colours", init)
        return "k-means++"
    centres = colors_array(init, "init", n_color_channels)
    if centres.shape[0] != n_colors:
        raise invalid(
            "init",
            f"have shape (n_colors, channels) = ({n_colors}, {n_color_channels})",
            None,
            got=f"shape {centres.shape}",
        )
    _check_integer_units(centres, np.dtype(dtype), "init")
    return centres


def check_fixed_colors(fixed_colors, n_colors, n_color_channels, dtype):
    """An ``(m, C)`` array of colours exactly representable in ``dtype``, m <= n_colors, or None."""
    validate("fixed_colors", fixed_colors)
    if fixed_colors is None:
        return None
    colors = colors_array(fixed_colors, "fixed_colors", n_color_channels)
    if colors.shape[0] > n_colors:
        raise invalid(
            "fixed_colors",
            f"hold no more colours than n_colors={n_colors} (the palette they are part of)",
            None,
            got=f"{colors.shape[0]} colours",
        )
    _check_integer_units(colors, np.dtype(dtype), "fixed_colors")
    unique, first, counts = np.unique(colors, axis=0, return_index=True, return_counts=True)
    if len(unique) != len(colors):
        repeated = colors[np.sort(first[counts > 1])[0]]
        values = ", ".join(f"{v:g}" for v in repeated.tolist())
        raise invalid("fixed_colors", "not repeat a colour", None, got=f"({values}) more than once")
    return colors


def _check_integer_units(values: np.ndarray, dtype: np.dtype, name: str) -> None:
    """Colours for an integer image lie in its dtype's range and are whole numbers."""
    if dtype.kind not in "ui":
        return
    info = np.iinfo(dtype)
    if values.min() < info.min or values.max() > info.max:
        raise invalid(
            name,
            f"hold colours in the image's units: [{info.min}, {info.max}] for a {dtype} image",
            None,
            got=f"values in [{values.min():g}, {values.max():g}]",
        )
    if not np.array_equal(values, np.round(values)):
        raise invalid(
            name, f"hold whole numbers for a {dtype} image", None, got="fractional values"
        )


def float_units_span(low: float, high: float) -> tuple[float, float]:
    """The colours a float image with values in ``[low, high]`` can be meant to hold.

    A colour within one data span (at least 1: the [0, 1] convention) of the data's own range is
    in its units; 0-255 colours for data in [0, 1], or 16-bit values for data in [0, 255], are not.
    """
    span = max(high - low, abs(low), abs(high), 1.0)
    return low - span, high + span


#: Squared distances (x - c)**2 summed over 16 channels and 2**40 pixels stay below float64's
#: 1.8e308 for values within +-1e140.
MAX_FLOAT_MAGNITUDE = 1e140
#: Values closer than this square to subnormal numbers or 0 in float64 (its smallest normal
#: number is 2.2e-308): k-means could not tell them apart, and would silently merge every
#: colour of an image spread over less into one.  Symmetric to the largest magnitude.
MIN_FLOAT_SPREAD = 1e-140


def check_float_values(low: float, high: float, name: str = "image") -> None:
    """Refuse float values whose squared distances overflow or underflow float64.

    ``low``/``high`` are the smallest and largest (visible) value.  Values beyond
    +-:data:`MAX_FLOAT_MAGNITUDE` overflow; values all within less than
    :data:`MIN_FLOAT_SPREAD` of each other (but not all equal) underflow.  Both are refused
    naming the range: a rescaled image quantises correctly.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return
    got = f"values in [{low:g}, {high:g}]"
    what = "the image" if name == "image" else name
    if max(abs(low), abs(high)) > MAX_FLOAT_MAGNITUDE:
        raise invalid(
            name,
            f"hold values in the range [{-MAX_FLOAT_MAGNITUDE:g}, {MAX_FLOAT_MAGNITUDE:g}]",
            None,
            f"Squared colour distances of larger values overflow float64; rescale {what}.",
            got=got,
        )
    spread = high - low
    if 0 < spread < MIN_FLOAT_SPREAD:
        factor = -math.floor(math.log10(spread))
        raise invalid(
            name,
            f"hold values spread over at least {MIN_FLOAT_SPREAD:g} (max - min), or all equal",
            None,
            "Squared colour distances of closer values underflow float64 and every colour "
            f"would merge into one; rescale {what} (e.g. multiply it by 1e{factor}).",
            got=got,
        )


def checked_float_block(block: np.ndarray, name: str = "X") -> np.ndarray:
    """One computed block of a lazy float array: refused beyond +-:data:`MAX_FLOAT_MAGNITUDE`.

    For inputs measured against fitted colours (not fitted themselves), where only overflow
    matters: values close together are as near to a centre as they are to each other.
    """
    if block.size and block.dtype.kind == "f":
        finite = block[np.isfinite(block)]
        if finite.size:
            low, high = float(finite.min()), float(finite.max())
            if max(abs(low), abs(high)) > MAX_FLOAT_MAGNITUDE:
                check_float_values(low, high, name)
    return block


def check_colors_in_data_range(colors, name: str, dtype, low: float, high: float) -> None:
    """Refuse float colours far outside a float image's own values (wrong units).

    ``low``/``high`` are the visible colour values' minimum and maximum, read from the colour
    histogram (no extra pass over the pixels).
    """
    if colors is None or isinstance(colors, str) or np.dtype(dtype).kind != "f":
        return
    values = np.asarray(colors, dtype=np.float64)
    if not values.size or not (math.isfinite(low) and math.isfinite(high)):
        return
    lowest, highest = float_units_span(low, high)
    if values.min() < lowest or values.max() > highest:
        scale = " (e.g. colours / 255)" if high <= 1.0 and values.max() > 1.0 else ""
        raise invalid(
            name,
            f"hold colours in the image's units: within [{lowest:g}, {highest:g}] for an image "
            f"with values in [{low:g}, {high:g}]",
            None,
            f"Scale the colours to the image's units{scale}.",
            got=f"colours in [{values.min():g}, {values.max():g}]",
        )


def check_rgb_unit_range(name: str, value, dtype, low: float, high: float) -> None:
    """Perceptual spaces and CIEDE2000 read float RGB as [0, 1]: refuse other float data.

    Clipping would silently merge every brighter colour into white (a 1-colour result).
    """
    if np.dtype(dtype).kind != "f" or (low >= 0 and high <= 1.0 + 1e-6):
        return
    other = "use target_psnr" if name == "target_delta_e" else "use color_space='rgb'"
    raise invalid(
        name,
        "be used only on float RGB images with values in [0, 1] (sRGB at full intensity 1.0)",
        None,
        f"Scale the image to [0, 1] first, or {other}.",
        got=f"{value!r} on an image with values in [{low:g}, {high:g}]",
    )


def check_palette_for_image(colors, n_color_channels, dtype):
    """The palette's colours in the image's dtype, or an error when their units differ."""
    dtype = np.dtype(dtype)
    if colors.shape[1] != n_color_channels:
        raise invalid(
            "palette",
            f"have as many colour channels as the image ({n_color_channels})",
            None,
            got=f"a palette of {colors.shape[1]} channel(s)",
        )
    palette_dtype = colors.dtype.newbyteorder("=")
    hint = ""
    if dtype.kind == "f" and palette_dtype.kind != "f":
        hint = "Scale the palette to the image's float units (e.g. colors / 255)."
    elif dtype.kind in "ui" and palette_dtype.kind == "f":
        hint = "Fit the palette on an integer image of the same dtype, or scale the image."
    elif dtype.kind in "ui" and palette_dtype.itemsize not in (dtype.itemsize, 8):
        # A uint8 palette on a uint16 image would paint everything near black, and a
        # uint16 one on a uint8 image (values <= 255: a dark 16-bit image's) nearly white.
        # int64, numpy's dtype for a list of Python ints, states no units: range-checked.
        hint = "Fit the palette on an image of the same dtype (its colours are in other units)."
    if hint:
        raise invalid(
            "palette",
            f"hold colours in the image's units ({dtype})",
            None,
            hint,
            got=f"a palette of dtype {palette_dtype}",
        )
    _check_integer_units(colors.astype(np.float64), dtype, "palette")
    return colors.astype(dtype)
