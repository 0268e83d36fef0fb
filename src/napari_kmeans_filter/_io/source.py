"""An opened input image: its shape, dtype and axes, and how its pixels are loaded."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ImageIOError, _as_notes, _describe, _library_messages, _with_messages

#: Length units as OME-XML writes them (its ``UnitsLength`` symbols), from the names
#: ImageJ, OME-XML and OME-NGFF (UDUNITS-2) give them.  A size in another unit (ImageJ's
#: "pixel", no unit at all) is no physical size and is not kept.
LENGTH_UNITS = {
    **dict.fromkeys(("µm", "\u03bcm", "\\u00B5m", "um", "micron", "microns", "micrometer"), "µm"),
    **dict.fromkeys(("nm", "nanometer"), "nm"),
    **dict.fromkeys(("mm", "millimeter"), "mm"),
    **dict.fromkeys(("cm", "centimeter"), "cm"),
    **dict.fromkeys(("m", "meter"), "m"),
    **dict.fromkeys(("pm", "picometer"), "pm"),
    **dict.fromkeys(("Å", "angstrom"), "Å"),
    **dict.fromkeys(("in", "inch"), "in"),
}

#: Metres in one of each unit of :data:`LENGTH_UNITS`.
METRES = {"pm": 1e-12, "Å": 1e-10, "nm": 1e-9, "µm": 1e-6, "mm": 1e-3, "cm": 1e-2, "m": 1.0}
METRES["in"] = 0.0254  # exactly, by definition


def resolution_sizes(resolution, unit: str) -> dict[str, tuple[float, str]] | None:
    """:attr:`InputImage.pixel_sizes` from a picture's resolution: ``(x, y)`` pixels per
    ``unit`` (one of :data:`LENGTH_UNITS`' values), or None unless both are positive and
    finite."""
    try:
        x, y = (float(value) for value in resolution)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    if not all(math.isfinite(value) and value > 0 for value in (x, y)):
        return None
    return {"X": (1.0 / x, unit), "Y": (1.0 / y, unit)}


def resolution_in(pixel_sizes, unit: str) -> tuple[float, float] | None:
    """Pixels per ``unit`` along X and Y of ``pixel_sizes`` (:attr:`InputImage.pixel_sizes`),
    for a picture file's resolution (PNG's pHYs, JPEG's density, TIFF's X/YResolution);
    None without both sizes."""
    if not pixel_sizes or "X" not in pixel_sizes or "Y" not in pixel_sizes:
        return None
    x, y = (METRES[unit] / (size * METRES[of]) for size, of in (pixel_sizes["X"], pixel_sizes["Y"]))
    return x, y


@dataclass
class InputImage:
    """An opened input: what :meth:`load` returns, and how to load it.

    Attributes
    ----------
    path : pathlib.Path
        The file (or ``.zarr`` directory) as given on the command line.
    kind : {"pillow", "tiff", "zarr"}
        Which library reads it.
    shape, dtype
        Shape and (native) dtype of the array :meth:`load` returns.
    lazy : bool
        Whether :meth:`load` returns a dask array (processed chunk by chunk).
    channel_axis : int or None
        Negative index of the colour axis, or None for an intensity image.
    alpha : bool or None
        Whether the last colour channel is alpha; None when the file does not say (a
        zarr array: the core's rule, 4 channels on the last axis are RGBA, applies).
    n_frames : int
        Frames of a picture file; when more than one they form the leading axis.
    notes : list of str
        What a user should know about how the file was read (e.g. a preview page left
        out), one line each, without the file's name: the command line prints them.
    icc_profile : bytes or None
        The file's ICC colour profile, when it describes the pixels :meth:`load`
        returns (a CMYK profile of a CMYK file read as RGB does not; a note says so).
    axes : tuple of str or None
        The name of each axis of what :meth:`load` returns, when the file names them:
        an OME-Zarr image's axis names (``("t", "c", "z", "y", "x")``), an ImageJ
        hyperstack's or OME-TIFF's tifffile axes (``("T", "Z", "C", "Y", "X")``); None
        when the file does not say.
    storage_chunks : tuple of int or None
        Chunk shape of the zarr array :meth:`load` reads (a ``.zarr`` array, an
        OME-Zarr image's full-resolution level), one entry per axis: what zarr outputs
        keep.  The dask tasks of :meth:`load` are blocks of several such chunks.
    zarr_format : int or None
        2 or 3 for zarr and OME-Zarr input: what zarr outputs follow (v2 in, v2 out).
    ome_zarr : OmeZarrImage or None
        The OME-Zarr image group read (:func:`napari_kmeans_filter._omezarr.read_image`),
        the place for OME-NGFF label images of the result.
    imagej : dict or None
        The ImageJ metadata of an ImageJ hyperstack (tifffile's ``imagej_metadata``),
        to write the outputs as hyperstacks again.
    pixel_sizes : dict or None
        The physical size of a pixel along the axes ``"X"``, ``"Y"`` (and ``"Z"``) as
        ``(value, unit)``, the unit an OME-XML length symbol (``"µm"``...): an OME-TIFF's
        ``PhysicalSizeX/Y/Z``, an ImageJ file's resolution and ``spacing``, an OME-Zarr
        image's ``scale``, a picture file's resolution (a PNG's pHYs, a JPEG's density,
        a TIFF's X/YResolution in inches or centimetres: ``(1 / dpi, "in")``).  TIFF
        outputs keep them, and PNG and JPEG outputs as their resolution.  None when the
        file gives none (a resolution without a unit is an aspect ratio, not a size).
    """

    path: Path
    kind: str
    shape: tuple[int, ...]
    dtype: np.dtype
    lazy: bool
    channel_axis: int | None
    alpha: bool | None
    read: Callable[[InputImage], Any] = field(repr=False)
    n_frames: int = 1
    notes: list[str] = field(default_factory=list)
    icc_profile: bytes | None = field(default=None, repr=False)
    axes: tuple[str, ...] | None = None
    storage_chunks: tuple[int, ...] | None = None
    zarr_format: int | None = None
    ome_zarr: Any = field(default=None, repr=False)
    imagej: dict | None = field(default=None, repr=False)
    pixel_sizes: dict[str, tuple[float, str]] | None = field(default=None, repr=False)
    _closers: list[Any] = field(default_factory=list, repr=False)

    def load(self):
        """Return the pixels: a numpy array, or a dask array when :attr:`lazy`.

        What the decoding libraries report on the way is appended to :attr:`notes`
        (the reading of a lazy input happens later, chunk by chunk, and reports errors
        only).
        """
        try:
            with _library_messages() as messages:
                array = self.read(self)
        except ImageIOError as exc:
            raise ImageIOError(_with_messages(str(exc), messages)) from exc
        except MemoryError:
            raise ImageIOError(
                f"not enough memory to read {self.path}; try --chunked (TIFF) or a .zarr input"
            ) from None
        except Exception as exc:  # readers raise many types for corrupt data
            message = f"cannot read image {self.path}: {_describe(exc)}"
            raise ImageIOError(_with_messages(message, messages)) from exc
        self.notes.extend(note for note in _as_notes(messages) if note not in self.notes)
        if not array.dtype.isnative:  # Pillow's I;16B, big-endian TIFF and zarr data
            array = array.astype(array.dtype.newbyteorder("="))
        return array

    def close(self) -> None:
        """Release file handles held by a lazy reader."""
        for closer in reversed(self._closers):  # a store before the file it reads
            with contextlib.suppress(Exception):
                closer.close()
        self._closers.clear()

    def __enter__(self) -> InputImage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
