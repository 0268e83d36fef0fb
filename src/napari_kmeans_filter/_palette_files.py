"""Palette and cluster-table files: a palette as JSON, the per-cluster statistics as CSV.

The command line (``--palette``, ``--apply-palette``, ``--fixed-colors-from``, ``--stats``) and
the napari widget (export / load a palette) read and write the same files through these
functions.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np


class PaletteFileError(ValueError):
    """A palette file that cannot be read: the message names the file and what is wrong."""


def read_palette(path: str | Path):
    """Read a palette JSON written by :func:`palette_json` (``Palette.to_dict()``).

    Parameters
    ----------
    path : str or Path
        The JSON file.

    Returns
    -------
    Palette

    Raises
    ------
    PaletteFileError
        When the file is missing, unreadable, not JSON or not a palette; one line naming it.
    """
    from ._quantize import Palette

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PaletteFileError(f"no such palette file: {path}") from None
    except UnicodeDecodeError:
        raise PaletteFileError(
            f"bad palette file {path}: not a palette JSON (it is not text)"
        ) from None
    except OSError as exc:
        raise PaletteFileError(f"cannot read palette file {path}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PaletteFileError(f"bad palette file {path}: not valid JSON ({exc})") from None
    try:
        return Palette.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        message = " ".join(str(exc).split())
        raise PaletteFileError(f"bad palette file {path}: {message}") from None


def palette_json(palette) -> str:
    """``palette.to_dict()`` as JSON with one colour per line, for people to read too."""
    entries = []
    for key, value in palette.to_dict().items():
        if isinstance(value, list) and value and isinstance(value[0], list):
            rows = ",\n".join(f"    {json.dumps(row)}" for row in value)
            entries.append(f"  {json.dumps(key)}: [\n{rows}\n  ]")
        else:
            entries.append(f"  {json.dumps(key)}: {json.dumps(value)}")
    return "{\n" + ",\n".join(entries) + "\n}\n"


def stats_columns(result, *, frame_axis: int | None = None) -> dict[str, np.ndarray]:
    """The per-cluster table: ``label``, the palette colour, then ``cluster_stats()``.

    Columns: ``label``, ``color_0``, ``color_1``, ... (the palette colour in the image's units),
    ``count``, ``fraction``, ``mean_0``, ..., ``rms_error`` and, with ``frame_axis``,
    ``count_frame_0``, ``count_frame_1``, ...: each cluster's visible pixels per frame.
    """
    stats = result.cluster_stats(frame_axis=frame_axis)
    frame_counts = stats.pop("frame_counts", None)
    colors = result.palette.colors
    columns = {"label": stats.pop("label")}
    columns |= {f"color_{channel}": colors[:, channel] for channel in range(colors.shape[1])}
    columns |= stats
    if frame_counts is not None:
        columns |= {f"count_frame_{t}": frame_counts[:, t] for t in range(frame_counts.shape[1])}
    return columns


def stats_csv(result) -> str:
    """:func:`stats_columns` as CSV text, one row per palette entry in label order.

    For a stack (labels of 3 or more dimensions) the frames are the first axis. Empty cells
    stand for NaN (a cluster without pixels has no mean colour).
    """
    columns = stats_columns(result, frame_axis=0 if result.labels.ndim >= 3 else None)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in zip(*columns.values(), strict=True):
        writer.writerow(_csv_value(value) for value in row)
    return text.getvalue()


def _csv_value(value) -> str:
    if isinstance(value, np.integer | int):
        return str(int(value))
    value = float(value)
    return "" if math.isnan(value) else repr(value)
