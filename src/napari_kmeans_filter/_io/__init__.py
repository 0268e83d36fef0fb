"""Image files in and out for the command line and the widget (no napari, no Qt).

The contract is what an image viewer shows: an input is read as the pixels, frames and
transparency a viewer displays, and the outputs show the same picture.  An ICC colour
profile of the input is kept in :attr:`InputImage.icc_profile` when it describes the
pixels read, and written into PNG, JPEG and TIFF outputs.  Arrays come back in native
byte order.

One module per topic:

* :mod:`.read` -- :func:`open_image` (the reader chosen by content) and :func:`read_mask`;
* :mod:`.source` -- :class:`InputImage`, an opened input and how it loads;
* :mod:`.pillow` -- pictures read by Pillow (PNG, JPEG, JPEG 2000, GIF, WebP, BMP...);
* :mod:`.netpbm` -- PGM, PPM, PAM and colour PFM;
* :mod:`.tiff` -- TIFF read by tifffile (whole or chunk by chunk) and written band by band;
* :mod:`.zarr` -- ``.zarr`` arrays and OME-Zarr images read lazily;
* :mod:`.icc` -- whether an input's ICC profile describes the pixels read;
* :mod:`.png` -- PNG outputs (indexed, 16-bit colour, iCCP);
* :mod:`.write` -- output formats, checks before any work, atomic replacement,
  :func:`write_array`;
* :mod:`.errors` -- :class:`ImageIOError` and what the decoding libraries say.
"""

from .errors import ImageIOError
from .read import open_image, read_mask
from .source import InputImage
from .tiff import CHUNK_BYTES, LAZY_TIFF_BYTES, can_stream_tiff, write_tiff_from_dask
from .write import (
    FORMATS_BY_SUFFIX,
    atomic_output,
    check_writable,
    create_lazy_target,
    icc_profile_note,
    output_axes,
    output_format,
    output_metadata,
    pixel_size_note,
    write_array,
    zarr_output_chunks,
)

__all__ = [
    "CHUNK_BYTES",
    "FORMATS_BY_SUFFIX",
    "LAZY_TIFF_BYTES",
    "ImageIOError",
    "InputImage",
    "atomic_output",
    "can_stream_tiff",
    "check_writable",
    "create_lazy_target",
    "icc_profile_note",
    "open_image",
    "output_axes",
    "output_format",
    "output_metadata",
    "pixel_size_note",
    "read_mask",
    "write_array",
    "write_tiff_from_dask",
    "zarr_output_chunks",
]
