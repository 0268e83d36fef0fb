"""ICC colour profiles of inputs: whether a file's profile describes the pixels read."""

from __future__ import annotations

#: ICC colour spaces (header bytes 16-20) that describe grey and RGB pixels.
_ICC_SPACES = {1: b"GRAY", 3: b"RGB "}


def _matching_profile(
    profile: bytes | None, n_colour: int, stored: str
) -> tuple[bytes | None, list[str]]:
    """The ICC profile if it describes the pixels read (``n_colour`` colour channels),
    else None and a note: a CMYK file is read as RGB, and its CMYK profile says nothing
    about those RGB values."""
    if not profile:
        return None, []
    space = bytes(profile[16:20])
    if space == _ICC_SPACES[n_colour]:
        return bytes(profile), []
    name = space.decode("latin-1", "replace").strip() or "unknown"
    read = "RGB" if n_colour == 3 else "grey"
    return None, [
        f"its ICC profile (colour space {name}) describes the stored {stored} samples, "
        f"not the {read} pixels read: it is not kept in the outputs"
    ]
