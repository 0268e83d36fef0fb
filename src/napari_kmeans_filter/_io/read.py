"""Opening image files: the reader chosen by the file's content, and masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ImageIOError, _as_notes, _describe, _library_messages, _missing, _with_messages
from .netpbm import _NETPBM_MAGIC, _open_netpbm
from .pillow import _open_pillow
from .source import InputImage
from .tiff import _open_tiff
from .zarr import _open_zarr


def open_image(path: str | os.PathLike, *, chunked: bool = False) -> InputImage:
    """Open ``path`` and find out what :meth:`InputImage.load` will return.

    Picture files are decoded here once (and again by ``load``), so that a corrupt file
    fails while a batch is checked, and the shape is exact; TIFF and zarr headers are
    read without the pixels.

    Parameters
    ----------
    path : str or path-like
        An image file, a ``.zarr`` array or an OME-Zarr image group (read at full
        resolution, with its axes: :attr:`InputImage.axes`).
    chunked : bool
        Read a grey or RGB TIFF lazily even when it would fit in memory.  zarr and
        OME-Zarr input is always lazy, each task reading several storage chunks; other
        files are always read whole.

    Raises
    ------
    ImageIOError
        Missing, unreadable, unsupported or corrupt file.
    """
    path = Path(path)
    if not path.exists():
        raise ImageIOError(_missing(path))
    try:
        with _library_messages() as messages:
            source = _open(path, chunked, messages)
    except ImageIOError as exc:
        raise ImageIOError(_with_messages(str(exc), messages)) from exc
    source.notes.extend(_as_notes(messages))
    return source


def _open(path: Path, chunked: bool, messages: list[str]) -> InputImage:
    if path.is_dir():
        if path.suffix.lower() == ".zarr" or any(
            (path / name).exists() for name in ("zarr.json", ".zarray", ".zgroup")
        ):
            return _open_zarr(path)
        raise ImageIOError(
            f"{path} is a directory, not an image (or a .zarr array, or an OME-Zarr image)"
        )
    if not os.access(path, os.R_OK):
        raise ImageIOError(f"cannot read {path}: permission denied")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise ImageIOError(f"cannot read {path}: {_describe(exc)}") from exc
    # Decide by content: a PNG called .tif is still a PNG.
    if magic[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return _open_tiff(path, chunked=chunked, messages=messages)
    if _NETPBM_MAGIC.match(magic):
        return _open_netpbm(path)
    return _open_pillow(path)


def read_mask(path: str | os.PathLike) -> np.ndarray:
    """Read a mask image as a boolean array of its spatial shape (channels removed).

    A pixel is True where it is nonzero in any colour channel.  A mask with
    transparency (an alpha channel, a tRNS colour key or palette transparency) in which
    some pixel is fully transparent is read by its alpha instead: True where alpha > 0,
    whatever the colour, as in a layer painted over a transparent background.  The mask
    is read into memory whole.

    Raises
    ------
    ImageIOError
        Missing, unreadable, unsupported or corrupt file.
    """
    with open_image(path) as source:
        values = np.asarray(source.load())
    if source.channel_axis is None:
        return values != 0
    values = np.moveaxis(values, source.channel_axis, -1)
    if source.alpha:
        alpha = values[..., -1]
        if np.any(alpha == 0):
            return alpha > 0
        values = values[..., :-1]
    return np.any(values != 0, axis=-1)
