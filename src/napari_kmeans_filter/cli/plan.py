"""Command-line planning: the whole batch checked before any work (inputs, outputs, parameters).

Every input is opened (its header), every output named, and every check that needs no pixels
made for the whole batch before the first image is processed.

The parameters are checked by the core itself, on each input's header (shape and dtype, no
pixels): :func:`~napari_kmeans_filter._layout.layout_of` on a zero-stride stand-in of the image
checks the channel axis, alpha and mask, :func:`~napari_kmeans_filter._options.fit_options` every
fit parameter, :func:`~napari_kmeans_filter._validation.check_palette_for_image` a palette. Their
errors are said once in the shell's words (:func:`~.errors.in_shell_words`). What is checked
here is the command line's own business: files, names, patterns and option combinations.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io
from .._contract import InvalidParameterError, default
from .._io import ImageIOError
from .errors import CliError, in_shell_words, one_line
from .progress import DISPLAY

#: Formats that keep every label exactly (JPEG would blur them).
LABEL_FORMATS = ("png", "tiff", "zarr", "npy")

#: Options that only matter when a palette is fitted (not with --apply-palette).
_FIT_OPTIONS = (
    ("target_psnr", "--target-psnr"),
    ("target_delta_e", "--target-delta-e"),
    ("speed", "--speed"),
    ("fixed_color", "--fixed-color"),
    ("fixed_colors_from", "--fixed-colors-from"),
    ("mask", "--mask"),
    ("color_space", "--color-space"),
    ("seed", "--seed"),
)


@dataclass
class Job:
    """One input and the files written for it."""

    source: _io.InputImage
    #: The colour axis as the core normalised it (non-negative), or None.
    channel_axis: int | None
    #: Whether the last colour channel is alpha (None: the core's rule).
    alpha: bool | None
    #: The quantised image's file; None with --no-image.
    output: Path | None
    labels: Path | None
    palette: Path | None
    stats: Path | None = None
    #: The --mask as the core's ``mask``: boolean, of the input's spatial shape.
    mask: Any = None
    #: The --fixed-color and --fixed-colors-from colours in the input's units, (m, C).
    fixed_colors: np.ndarray | None = None
    #: The input's shape without its channel axis (the labels' shape).
    spatial_shape: tuple[int, ...] = ()
    #: The name of the OME-NGFF label image written under ``labels/`` of the OME-Zarr input
    #: (``--labels`` at the input or into its ``labels`` group), else None.
    ome_labels: str | None = None
    #: The input's place among the command's inputs (1 for the first): with ``--keep-going``
    #: a file left out keeps its number, so the counter matches "N of M files failed".
    number: int = 1

    @property
    def ome_labels_path(self) -> Path | None:
        """Where the OME-NGFF label image goes, if there is one."""
        if self.ome_labels is None:
            return None
        return self.source.path / "labels" / self.ome_labels


def plan_jobs(
    args: argparse.Namespace, palette: Any | None, failed: Callable | None = None
) -> list[Job]:
    """Open every input, name every output and check the whole batch before any work.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed arguments.
    palette : Palette or None
        The palette of ``--apply-palette``.
    failed : callable, optional
        ``failed(path, exc)`` for an input that cannot be processed (``--keep-going``): it
        is left out of the batch and the others are planned. Without it the first such
        problem is raised. Problems with the options themselves are always raised.

    Raises
    ------
    CliError, ImageIOError
        Bad option combination, unreadable input, a parameter the core refuses for an input,
        an output that would replace an input or an existing file (without ``--overwrite``),
        or a format that cannot hold the result.
    """
    _check_combinations(args, palette)
    k = len(palette) if palette is not None else args.n_colors
    fixed_from = _fixed_colors_file(args.fixed_colors_from)
    masks: dict[Path, Any] = {}
    if args.mask is not None and not _is_pattern(args.mask):
        # One mask for every input: a missing or unreadable one is the option's problem.
        mask_path = Path(args.mask)
        masks[mask_path] = _read_mask(mask_path)

    jobs = []
    for number, path in enumerate(args.inputs, start=1):
        try:
            jobs.append(_plan_job(path, args, palette, k, fixed_from, masks))
            jobs[-1].number = number
        except Exception as exc:
            if failed is None or not _is_per_input(exc):
                raise
            failed(path, exc)
    _check_outputs(jobs, args, k, failed)
    return jobs


def _is_per_input(exc: Exception) -> bool:
    """Whether ``exc`` is about one input (skipped by ``--keep-going``), not the options."""
    return not isinstance(exc, (MemoryError, _OptionError))


def _is_pattern(text: str) -> bool:
    return "{" in text


class _OptionError(CliError):
    """A problem with an option itself, the same for every input: never skipped."""


def _plan_job(path: Path, args, palette, k, fixed_from, masks: dict) -> Job:
    """One input opened and checked by the core on its header, its outputs named."""
    source = _io.open_image(path, chunked=args.chunked)
    if args.chunked and not source.lazy:
        # Said on the input's line: a batch may mix TIFFs (read in chunks) with others.
        source.notes.append("--chunked reads TIFF files only; this picture is read whole")
    try:
        return _plan_opened(source, path, args, palette, k, fixed_from, masks)
    except BaseException:
        source.close()
        raise


def _plan_opened(source, path: Path, args, palette, k, fixed_from, masks: dict) -> Job:
    fields = {"stem": _stem(path), "k": k}
    mask_path = _expand(args.mask, fields, "--mask")
    mask = None
    if mask_path is not None:
        if mask_path not in masks:
            masks[mask_path] = _read_mask(mask_path)
        mask = masks[mask_path]
    layout, mask = _header_layout(source, args.channel_axis, mask, mask_path)
    job = Job(
        source,
        layout.channel_axis,
        _alpha(source, args.channel_axis, layout),
        None if args.no_image else args.output or _default_output(path, source, args, k),
        labels=_expand(args.labels, fields, "--labels"),
        palette=_expand(args.palette, fields, "--palette"),
        stats=_expand(args.stats, fields, "--stats"),
        mask=mask,
        spatial_shape=layout.spatial_shape,
    )
    job.ome_labels = _ome_label_name(source, job.labels, layout)
    if palette is not None:
        _check_palette(
            palette.colors,
            layout,
            source.path,
            "--apply-palette",
            palette_path=args.apply_palette,
        )
    else:
        job.fixed_colors = _fixed_colors(args.fixed_color, fixed_from, args, layout, source)
        _check_fit(args, layout, job, source.path)
    return job


# --------------------------------------------------------------------------------------
# The core's checks on each input's header
# --------------------------------------------------------------------------------------


def _stand_in(source: _io.InputImage) -> np.ndarray:
    """An array of the input's shape and dtype that holds no pixels (every stride 0)."""
    return np.broadcast_to(np.zeros((), np.dtype(source.dtype).newbyteorder("=")), source.shape)


def _header_layout(source: _io.InputImage, channel_axis, mask, mask_path):
    """The core's view of the input (channel axis, alpha, spatial shape), checked by the core.

    A mask of one frame's shape is given to every frame of a stack (the command line's own
    convenience); any other shape is the core's to refuse.
    """
    axis = source.channel_axis if channel_axis == "auto" else channel_axis
    alpha = source.alpha if channel_axis == "auto" else None
    try:
        layout = _layout(source, axis, alpha, None)
        if mask is not None:
            spatial = layout.spatial_shape
            if len(spatial) > mask.ndim >= 2 and mask.shape == spatial[-mask.ndim :]:
                mask = np.broadcast_to(mask, spatial)  # the same region in every frame
            layout = _layout(source, axis, alpha, mask)
    except InvalidParameterError as error:
        value = mask_path if error.parameter == "mask" else axis if channel_axis != "auto" else None
        raise CliError(in_shell_words(error, where=source.path, value=value)) from None
    return layout, mask


def _layout(source, axis, alpha, mask):
    from .._layout import layout_of

    return layout_of(_stand_in(source), axis, alpha, mask=mask)


def _ome_label_name(source: _io.InputImage, labels: Path | None, layout) -> str | None:
    """The label image's name when ``--labels`` names the OME-Zarr input itself (``kmeans``),
    its ``labels`` group (``kmeans``) or ``labels/NAME`` in it (``NAME``); else None."""
    image = getattr(source, "ome_zarr", None)
    if image is None or labels is None:
        return None
    from .._omezarr import DEFAULT_LABEL_NAME

    root, target = source.path.resolve(), labels.resolve()
    if target in (root, root / "labels"):
        name = DEFAULT_LABEL_NAME
    elif target.parent == root / "labels":
        name = target.name
    else:
        return None
    if image.channel_axis != layout.channel_axis:
        axes = "".join(image.axis_names)
        raise CliError(
            f"--labels {labels}: an OME-NGFF label image has the image's axes ({axes}) less "
            "its channel axis; leave --channel-axis out (the image says which axis it is)"
        )
    return name


def _alpha(source: _io.InputImage, channel_axis, layout) -> bool | None:
    """The file's word on alpha, for its own channel axis; None (the core's rule) otherwise."""
    if channel_axis == "auto":
        return source.alpha
    from .._validation import check_channel_axis

    files_axis = check_channel_axis(source.channel_axis, len(source.shape))
    return source.alpha if files_axis == layout.channel_axis else None


def _check_fit(args, layout, job: Job, path: Path) -> None:
    """Every fit parameter checked by the core against this input, as ``quantize`` will."""
    from .._options import fit_options

    try:
        fit_options(
            layout,
            n_colors=args.n_colors,
            color_space=args.color_space or default("color_space"),
            speed=default("speed") if args.speed is None else args.speed,
            init=default("init"),
            fixed_colors=job.fixed_colors,
            n_init=default("n_init"),
            max_iter=default("max_iter"),
            tol=default("tol"),
            random_state=args.seed,
            dither=args.dither or default("dither"),
            target_psnr=args.target_psnr,
            target_delta_e=args.target_delta_e,
        )
    except InvalidParameterError as error:
        raise CliError(in_shell_words(error, args, where=path)) from None


def _check_palette(colors, layout, where, option: str, *, palette_path) -> np.ndarray:
    """A palette's colours for this input, checked by the core (channels, units)."""
    from .._validation import check_palette_for_image

    try:
        return check_palette_for_image(colors, layout.n_color_channels, layout.dtype)
    except InvalidParameterError as error:
        raise CliError(
            in_shell_words(error, where=where, option=option, value=palette_path)
        ) from None


# --------------------------------------------------------------------------------------
# Fixed colours and masks: files and texts read into the core's parameters
# --------------------------------------------------------------------------------------


def _fixed_colors_file(path: Path | None):
    """The colours of the --fixed-colors-from palette file, or None."""
    if path is None:
        return None
    from .._palette_files import PaletteFileError, read_palette

    try:
        return read_palette(path).colors
    except PaletteFileError as exc:
        raise CliError(f"--fixed-colors-from: {exc}") from None


def _fixed_colors(texts, from_file, args, layout, source) -> np.ndarray | None:
    """The fixed colours of one input in its units: the palette file's colours first, then
    each --fixed-color in the given order (the palette's first entries, in that order).

    Their count, range and repeats are the core's to check (:func:`_check_fit`).
    """
    from .._color_text import parse_color

    rows = []
    if from_file is not None:
        colors = _check_palette(
            from_file,
            layout,
            source.path,
            "--fixed-colors-from",
            palette_path=args.fixed_colors_from,
        )
        rows.extend(colors.astype(np.float64).tolist())
    for text in texts or ():
        try:
            rows.append(parse_color(text, layout.dtype, layout.n_color_channels))
        except InvalidParameterError as error:
            raise CliError(
                in_shell_words(error, where=source.path, option="--fixed-color", value=text)
            ) from None
    return np.array(rows, dtype=np.float64) if rows else None


def _read_mask(path: Path):
    try:
        return _io.read_mask(path)
    except ImageIOError as exc:
        raise CliError(f"--mask: {exc}") from None


# --------------------------------------------------------------------------------------
# Options that contradict each other
# --------------------------------------------------------------------------------------


def _check_combinations(args: argparse.Namespace, palette: Any | None) -> None:
    """Refuse options that contradict each other, naming the option (no pixels needed)."""
    several = len(args.inputs) > 1
    if args.output is not None and several:
        raise CliError(
            f"-o/--output names one file but there are {len(args.inputs)} inputs; "
            "use --out-dir DIR instead"
        )
    if args.output is not None and args.format is not None:
        raise CliError("--format names the outputs of --out-dir; with -o the suffix decides")
    if args.no_image:
        if args.format is not None:
            raise CliError("--format names the quantised images, which --no-image leaves out")
        if args.labels is None and args.palette is None and args.stats is None:
            raise CliError(
                "--no-image leaves nothing to write: name --labels, --palette or --stats"
            )
    patterns = (("--labels", args.labels), ("--palette", args.palette), ("--stats", args.stats))
    for option, pattern in patterns:
        if pattern is not None and several and "{stem}" not in pattern:
            raise CliError(
                f"{option} {pattern!r} would be written once per input; with several inputs "
                "give a pattern containing {stem}, e.g. 'out/{stem}_labels.png'"
            )
    if palette is not None:
        for attribute, option in _FIT_OPTIONS:
            if getattr(args, attribute) is not None:
                extra = ""
                if option == "--color-space":
                    extra = f": the palette's own colour space ({palette.color_space}) is used"
                raise CliError(
                    f"{option} has no effect with --apply-palette (nothing is fitted){extra}"
                )


# --------------------------------------------------------------------------------------
# Naming the outputs
# --------------------------------------------------------------------------------------


def _zarr_store_root(path: Path) -> Path | None:
    """The outermost zarr directory that contains ``path`` (itself included), if any."""
    root = None
    for candidate in (path, *path.parents):
        if any((candidate / name).exists() for name in ("zarr.json", ".zgroup", ".zarray")):
            root = candidate
        elif root is not None:
            break
    return root


def input_name(path: Path) -> str:
    """How an input is named in messages and outputs: an array inside a zarr group is
    ``group.zarr/0``, not just ``0``."""
    root = _zarr_store_root(path)
    if root is not None and root != path:
        return path.relative_to(root.parent).as_posix()
    return path.name


def _stem(path: Path) -> str:
    name = input_name(path)
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    if "/" in name:  # group.zarr/0 -> group_0
        first, _, rest = name.partition("/")
        return f"{Path(first).stem}_{rest.replace('/', '_')}"
    return Path(name).stem


#: Input formats whose outputs named automatically keep the input's suffix (lossless, and
#: written with the input's dtype, channels and frames).
_KEPT_FORMATS = ("png", "tiff", "npy")
#: What a PNG holds (one frame).
_PNG_DTYPES = ("uint8", "uint16")


def _default_output(path: Path, source: _io.InputImage, args, k) -> Path:
    if args.format is not None:
        suffix = "." + args.format
    elif source.kind == "zarr":
        suffix = ".zarr"
    elif getattr(source, "ome_zarr", None) is not None:
        suffix = ".ome.zarr"  # a new OME-Zarr image, with the input's axes and pyramid
    else:
        suffix = path.suffix.lower()
        png = source.n_frames == 1 and np.dtype(source.dtype).name in _PNG_DTYPES
        kind = _io.FORMATS_BY_SUFFIX.get(suffix)
        if kind not in _KEPT_FORMATS or (kind == "png" and not png):
            # Not a format we write (WebP, BMP, GIF, Netpbm, ...), a lossy one (JPEG
            # would undo the quantisation) or a PNG of several frames (APNG): PNG,
            # lossless and indexed, where it holds the picture; else TIFF (frames,
            # other dtypes).
            suffix = ".png" if png else ".tif"
    if args.out_dir is not None:
        directory = args.out_dir
    else:  # beside the input, and outside a zarr group holding it
        root = _zarr_store_root(path)
        directory = (root if root is not None else path).parent
    name = f"{_stem(path)}_auto" if k == "auto" else f"{_stem(path)}_k{k}"
    if args.dither:  # as pngquant's -fs8 / -or8: a dithered output does not take the plain name
        name += "_dither"
    return directory / f"{name}{suffix}"


def _expand(pattern: str | None, fields: dict, option: str) -> Path | None:
    if pattern is None:
        return None
    try:
        return Path(pattern.format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise _OptionError(
            f"{option} {pattern!r}: only {{stem}} and {{k}} can be used in the pattern ({exc})"
        ) from None


# --------------------------------------------------------------------------------------
# Checking the outputs
# --------------------------------------------------------------------------------------


def _check_outputs(jobs: list[Job], args, k, failed: Callable | None = None) -> None:
    """Check every job's outputs; with ``failed`` a job whose outputs cannot be written is
    reported and removed from ``jobs`` (``--keep-going``) instead of ending the run."""
    # A zarr array is protected with the whole store (group) around it.
    inputs = [(_zarr_store_root(path) or path).resolve() for path in args.inputs]
    seen: dict[Path, str] = {}
    warned_jpeg = False
    for job in list(jobs):
        try:
            outputs = _check_job_outputs(job, args, k, inputs, seen)
        except (CliError, ImageIOError, OSError) as exc:
            if failed is None:
                raise
            failed(job.source.path, exc)
            job.source.close()
            jobs.remove(job)
            continue
        seen |= outputs
        if job.output is not None and _io.output_format(job.output) == "jpeg" and not warned_jpeg:
            warned_jpeg = True
            DISPLAY.warn(
                "JPEG compression re-introduces colours: the JPEG will have many more "
                "than the quantised colours (write .png for an exact result)"
            )


def _check_job_outputs(job: Job, args, k, inputs: list[Path], seen: dict) -> dict[Path, str]:
    """One job's outputs checked against the inputs, ``seen`` outputs and the disk; returns
    them (resolved path -> description) to add to ``seen``."""
    own: dict[Path, str] = {}
    outputs = [
        ("output", job.output),
        ("labels", job.labels),
        ("palette", job.palette),
        ("stats", job.stats),
    ]
    for role, path in outputs:
        if path is None:
            continue
        if role == "labels" and job.ome_labels is not None:
            # Inside the input on purpose: the image's own labels group.
            path = job.ome_labels_path
            resolved = path.resolve()
            if path.exists() and not args.overwrite:
                raise CliError(f"{path} already exists (use --overwrite to replace it)")
            own[resolved] = f"the labels of {job.source.path}"
            continue
        resolved = path.resolve()
        inside = [p for p in inputs if resolved.is_relative_to(p)]  # e.g. image.ome.zarr/0
        # A zarr store is a directory; a directory inside an input is refused below.
        if path.is_dir() and path.suffix.lower() != ".zarr" and not inside:
            # -o naming a directory: writing into one is what --out-dir does.
            into = role == "output" and getattr(args, "output", None) is not None
            where = f" (or --out-dir {path} to write into it)" if into else ""
            raise CliError(f"{path} is a directory: name a file for the {role}{where}")
        for input_path in inputs:
            if _same_or_nested(resolved, input_path):
                hint = "choose another name"
                if role == "labels" and input_path in inside and job.source.ome_zarr:
                    hint = f"--labels {job.source.path} writes its OME-NGFF label image"
                raise CliError(
                    f"refusing to write {role} {path}: that would change the input "
                    f"{input_path} ({hint})"
                )
        described = f"the {role} of {job.source.path}"
        earlier = seen.get(resolved) or own.get(resolved)
        if earlier is not None:
            raise CliError(
                f"{earlier} and {described} would both be written to {path}; choose other names"
            )
        own[resolved] = described
        if path.exists() and not args.overwrite:
            raise CliError(f"{path} already exists (use --overwrite to replace it)")
        if role == "palette":
            if path.suffix.lower() != ".json":
                raise CliError(f"--palette {path}: the palette is written as .json")
            continue
        if role == "stats":
            if path.suffix.lower() != ".csv":
                raise CliError(f"--stats {path}: the statistics are written as .csv")
            continue
        if role == "labels" and _io.output_format(path) not in LABEL_FORMATS:
            raise CliError(
                f"--labels {path}: labels must be stored exactly; use .png, .tif, .zarr or .npy"
            )
    _check_formats(job, k)
    return own


def _check_formats(job: Job, k) -> None:
    """Whether the output (and label) formats can hold this job's results."""
    from .._contract import MAX_N_COLORS
    from .._paint import label_dtype

    if job.output is not None:
        _io.check_writable(
            job.output, job.source.shape, job.source.dtype, job.channel_axis, job.alpha
        )
    if job.labels is not None and job.ome_labels is None:
        # -k auto may choose up to the most colours there are: the labels' dtype for those.
        dtype = label_dtype(MAX_N_COLORS if k == "auto" else k)
        _io.check_writable(job.labels, job.spatial_shape, dtype, None)


def _same_or_nested(output: Path, input_path: Path) -> bool:
    """Whether writing ``output`` could touch ``input_path`` (same file, or inside a
    .zarr directory being replaced, or the output placed inside an input directory)."""
    if output == input_path:
        return True
    if output.is_relative_to(input_path) and input_path.is_dir():
        return True
    if input_path.is_relative_to(output):
        return True
    try:
        return output.exists() and os.path.samefile(output, input_path)  # hard links
    except OSError:
        return False


def prepare_directories(paths: Sequence[Path | None]) -> None:
    """Create the directories of the output ``paths`` and check that they are writable."""
    for directory in sorted({path.parent for path in paths if path is not None}):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create output directory {directory}: {one_line(exc)}") from None
        if not directory.is_dir():
            raise CliError(f"output directory {directory} is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CliError(f"cannot write to output directory {directory}: permission denied")
