"""Colours written as text ('#ff8000', 'white', '65535,0,0') read into an image's units.

One reader for the command line's ``--fixed-color`` and the napari widget's fixed-colour field.
Names and 8-bit hexadecimal forms (``#rgb``, ``#rrggbb``) are read by Pillow's
``ImageColor.getrgb`` (CSS colour names and forms); 16-bit hexadecimal (``#rrrrggggbbbb``, as
ImageMagick writes it) and numbers in the image's own units are read here.
"""

from __future__ import annotations

import numpy as np

from ._contract import invalid

_FORMS = (
    "'#rgb', '#rrggbb' or a colour name (8-bit), '#rrrrggggbbbb' (16-bit), or numbers in the "
    "image's units separated by commas, e.g. '255,0,0'"
)


def parse_color(text: str, dtype, n_channels: int) -> list[float]:
    """One colour written as text, in the units of an image of ``dtype``.

    Parameters
    ----------
    text : str
        ``'#rgb'``, ``'#rrggbb'``, a CSS colour name (8-bit RGB; scaled by 257 for 16-bit
        images), ``'#rrrrggggbbbb'`` (16-bit RGB), or ``n_channels`` numbers in the image's
        units separated by commas (``'128'`` for greyscale).  For a greyscale image
        (``n_channels`` 1) a colour written as RGB must be a grey (``'#808080'``,
        ``'white'``): its level.
    dtype : numpy dtype
        The image's dtype: hexadecimal forms are for 8- and 16-bit unsigned images.
    n_channels : int
        The image's colour channels (without alpha).

    Returns
    -------
    list of float
        ``n_channels`` values.

    Raises
    ------
    InvalidParameterError
        For ``fixed_colors``, naming the accepted forms.
    """
    stripped = text.strip()
    dtype = np.dtype(dtype)
    if not stripped:
        raise invalid("fixed_colors", f"be written as {_FORMS}", text)
    if stripped[0].isalpha() or stripped.startswith("#"):
        return _rgb_text(stripped, text, dtype, n_channels)
    try:
        values = [float(part) for part in stripped.split(",")]
    except ValueError:
        raise invalid("fixed_colors", f"be written as {_FORMS}", text) from None
    if len(values) != n_channels:
        raise invalid(
            "fixed_colors",
            f"have {n_channels} value(s), one per colour channel of the image",
            text,
        )
    return values


def _rgb_text(stripped: str, text: str, dtype: np.dtype, n_channels: int) -> list[float]:
    digits = stripped[1:] if stripped.startswith("#") else ""
    sixteen_bit = len(digits) == 12 and all(c in "0123456789abcdefABCDEF" for c in digits)
    if sixteen_bit:
        values = [int(digits[i * 4 : (i + 1) * 4], 16) for i in range(3)]
    else:
        from PIL import ImageColor

        try:
            values = list(ImageColor.getrgb(stripped))
        except ValueError:
            raise invalid("fixed_colors", f"be written as {_FORMS}", text) from None
    if dtype not in (np.uint8, np.uint16):
        raise invalid(
            "fixed_colors",
            f"be numbers in the image's units separated by commas for a {dtype} image",
            text,
            "Hexadecimal colours and names are for 8- and 16-bit images.",
        )
    if len(values) == 4:
        if values[3] != 255:
            # '#rrggbbaa': a palette's colours are opaque (alpha is kept from the image),
            # and dropping the alpha written would give another colour than asked for.
            raise invalid(
                "fixed_colors",
                "be opaque: a palette holds colours, and the image keeps its own alpha",
                text,
                "Write the colour without its alpha ('#rrggbb').",
            )
        values = values[:3]
    if n_channels == 1 and values[0] == values[1] == values[2]:
        values = values[:1]  # a grey ('#808080', 'white') is a level of a greyscale image
    elif n_channels == 1:
        raise invalid(
            "fixed_colors",
            "be a grey level for a greyscale image: a number, or a grey written as a colour "
            "(equal red, green and blue: '#808080', 'white')",
            text,
        )
    elif n_channels != 3:
        raise invalid(
            "fixed_colors",
            f"be {n_channels} numbers separated by commas for an image with {n_channels} "
            "colour channels",
            text,
            "Hexadecimal colours and names are RGB.",
        )
    if dtype == np.uint16:
        return [float(v) for v in values] if sixteen_bit else [float(v * 257) for v in values]
    if sixteen_bit:
        raise invalid("fixed_colors", "be an 8-bit colour ('#rrggbb') for an 8-bit image", text)
    return [float(v) for v in values]
