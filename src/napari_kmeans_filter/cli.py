"""Command line interface: ``napari-kmeans-filter`` / ``python -m napari_kmeans_filter``.

Two commands share the program name:

* ``napari-kmeans-filter INPUT... -k K [-o OUTPUT | --out-dir DIR]`` quantises images
  (or repaints them with ``--apply-palette``);
* ``napari-kmeans-filter demo [--out-dir DIR]`` writes the k-means gallery of the cat.

Everything that can be checked before work starts (files exist, outputs can be
written, nothing would be overwritten) is checked for the whole batch first.  Every
problem ends the run with one line ``napari-kmeans-filter: error: ...`` on stderr and
exit status 2; set ``NAPARI_KMEANS_FILTER_DEBUG=1`` to see the traceback instead.
Ctrl-C (exit 130), SIGTERM (143) and SIGHUP (129) stop a run the same way: the file
being written is removed and nothing is left half-written.

One overwrite rule for both commands: an existing output is replaced only with
``--overwrite``, and an input is never replaced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _io
from ._io import ImageIOError

PROG = "napari-kmeans-filter"
DEMO_COMMAND = "demo"
DEMO_DEFAULT_DIR = "kmeans-demo"
#: The k values of the demo's contact sheet.
DEMO_K_VALUES = (2, 5, 10, 15, 24)
#: The k values the demo shows without and with dithering.
DEMO_DITHER_K_VALUES = (4, 8, 16)
#: The PSNR targets (dB) the demo reaches with -k auto.
DEMO_TARGETS_PSNR = (30.0, 35.0, 40.0)
#: Environment variable that makes errors show their traceback (for bug reports).
DEBUG_VARIABLE = "NAPARI_KMEANS_FILTER_DEBUG"
#: Formats that keep every label exactly (JPEG would blur them).
LABEL_FORMATS = ("png", "tiff", "zarr", "npy")

#: Share of a file's progress bar given to the fit; the rest is for writing the outputs.
FIT_SHARE = 0.8

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130
#: Signals that stop a run like Ctrl-C does (SIGHUP: the terminal was closed).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)

_EXAMPLES = f"""\
examples:
  {PROG} cat.png -k 16 -o cat16.png
  {PROG} cat.png -k 16 --palette cat16.json   # cat_k16.png + palette
  {PROG} dog.png --apply-palette cat16.json    # dog in the cat's colours
  {PROG} photos/*.jpg -k 8 --out-dir small --labels 'small/{{stem}}_labels.png'
  {PROG} big.tif -k 32 -o big_k32.zarr --labels big_labels.zarr
  {PROG} cat.png -k auto --target-psnr 35      # the fewest colours reaching 35 dB
  {PROG} cat.png -k 8 --dither                  # smooth gradients by error diffusion
  {PROG} logo.png -k 8 --fixed-color '#ffffff' --fixed-color '#d40000'
  {PROG} cells.tif -k 4 --mask roi.png --stats cells_k4.csv
  {PROG} {DEMO_COMMAND}                                 # the gallery of the cat

Outputs never replace an input, and replace existing files only with --overwrite
(the same rule for '{DEMO_COMMAND}').
In --labels, --palette, --stats and --mask paths, {{stem}} is the input's name without
its suffix and {{k}} the number of colours ('auto' with -k auto); {{stem}} is required
in output paths when there are several inputs.
Run '{PROG} {DEMO_COMMAND} --help' for the gallery options."""


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are raised, to be printed as one line by :func:`main`."""

    def error(self, message: str):  # type: ignore[override]
        raise CliError(f"{message} (see '{self.prog} --help')")


class _Stopped(BaseException):
    """Raised in the main thread by a stop signal; unwinds like KeyboardInterrupt, so
    every ``finally`` runs and the temporary outputs are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# --------------------------------------------------------------------------------------
# Argument parsing
# --------------------------------------------------------------------------------------


def _n_colors(text: str) -> int:
    """argparse type of the demo's ``-k``: a whole number of colours in [1, MAX_N_COLORS]."""
    from . import MAX_N_COLORS

    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of colours (1 to {MAX_N_COLORS}), got {text!r}"
        ) from None
    if not 1 <= value <= MAX_N_COLORS:
        raise argparse.ArgumentTypeError(
            f"must be between 1 and {MAX_N_COLORS} colours, got {value}"
        )
    return value


def _n_colors_or_auto(text: str) -> int | str:
    """argparse type of ``-k``: a number of colours, or 'auto' (the fewest reaching a target)."""
    if text.strip().lower() == "auto":
        return "auto"
    from . import MAX_N_COLORS

    try:
        int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number of colours (1 to {MAX_N_COLORS}) or 'auto', got {text!r}"
        ) from None
    return _n_colors(text)


def _speed(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = 0
    if not 1 <= value <= 10:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 (most thorough) to 10 (fastest), got {text!r}"
        )
    return value


def _dither_level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"must be a level from 0 to 1 (or nothing, for 1), got {text!r}; a bare --dither "
            "takes the next word as its level, so put it after the input files"
        )
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _channel_axis(text: str) -> int | str | None:
    """argparse type of ``--channel-axis``: an int, 'none' or 'auto'."""
    lowered = text.strip().lower()
    if lowered in ("none", "auto"):
        return None if lowered == "none" else "auto"
    try:
        return int(lowered, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an axis number (e.g. -1), 'none' or 'auto', got {text!r}"
        ) from None


def _seed(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        value = -1
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must be a whole number from 0 to 2**32-1, got {text!r}")
    return value


def _core_default(parameter: str):
    """The default of a parameter of :func:`quantize`: the help states the core's own."""
    import inspect

    from . import quantize

    return inspect.signature(quantize).parameters[parameter].default


def _version() -> str:
    from . import __version__

    return f"{PROG} {__version__}"


def build_parser() -> argparse.ArgumentParser:
    """The parser of the main (quantise) command."""
    from . import COLOR_SPACES

    parser = _Parser(
        prog=PROG,
        description=(
            "Reduce images to K colours with exact k-means (colour quantisation).\n"
            "Reads PNG, JPEG, GIF, WebP, BMP, PPM, TIFF (any dtype, stacks, multichannel)\n"
            "and .zarr arrays as viewers show them: every frame of an animation (one\n"
            "palette for all), transparency, EXIF orientation, CMYK and palettes as RGB.\n"
            "Writes PNG (indexed when it has at most 256 colours), TIFF, .zarr, .npy or\n"
            "JPEG, keeping the dtype; frames need TIFF, .zarr or .npy. Large TIFF and\n"
            ".zarr inputs are processed chunk by chunk."
        ),
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUT", type=Path, help="image file(s) or .zarr array(s)"
    )
    colours = parser.add_mutually_exclusive_group(required=True)
    colours.add_argument(
        "-k",
        "--n-colors",
        type=_n_colors_or_auto,
        metavar="K",
        help="number of colours to fit (1 to 4096), or 'auto': the fewest colours whose "
        "result reaches --target-psnr and/or --target-delta-e",
    )
    colours.add_argument(
        "--apply-palette",
        type=Path,
        metavar="JSON",
        help="repaint with the colours of a palette saved earlier with --palette",
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "-o", "--output", type=Path, metavar="OUTPUT", help="output file (one input only)"
    )
    where.add_argument(
        "--out-dir",
        type=Path,
        metavar="DIR",
        help="directory for the outputs, named <stem>_k<K>.<ext> (<stem>_auto.<ext> with "
        "-k auto; created if needed); default: beside each input",
    )
    parser.add_argument(
        "--format",
        choices=("png", "tif", "tiff", "zarr", "npy", "jpg", "jpeg"),
        help="suffix of the outputs named automatically; default: png for PNG/JPEG/... "
        "inputs (tif for animations, which PNG cannot hold), the input's own suffix for "
        "TIFF and .zarr (keeps dtype, channels and frames)",
    )
    parser.add_argument(
        "--labels",
        metavar="PATH",
        help="also write the label image (palette index of every pixel) as .png, .tif, "
        ".zarr or .npy; a pattern with {stem} for several inputs",
    )
    parser.add_argument(
        "--palette",
        metavar="JSON",
        help="also write the palette as JSON (for --apply-palette); a pattern with "
        "{stem} for several inputs",
    )
    quality = parser.add_argument_group(
        "how many colours and how good",
        "pngquant's --quality MIN-MAX is a 0-100 score of its own, with no exact equivalent\n"
        "here: ask for a PSNR instead (-k auto --target-psnr 35). About 30 dB is visibly\n"
        "posterised, 35 dB close, 40 dB hard to tell from the original.",
    )
    quality.add_argument(
        "--target-psnr",
        type=_positive,
        metavar="DB",
        help="with -k auto: the PSNR (dB, up to 200) the result must reach",
    )
    quality.add_argument(
        "--target-delta-e",
        type=_positive,
        metavar="DE",
        help="with -k auto, RGB images: the mean CIEDE2000 colour difference the result may "
        "have at most (up to 100; about 1 is the smallest difference people see side by side)",
    )
    quality.add_argument(
        "--quality",
        metavar="MIN-MAX",
        help="pngquant's option; refused with a hint: use -k auto --target-psnr DB",
    )
    quality.add_argument(
        "--speed",
        type=_speed,
        metavar="N",
        help="1 (most thorough) to 10 (fastest), pngquant's convention: a lower speed "
        "searches harder for the best colours and takes longer; 10 is for previews "
        f"(default: {_core_default('speed')})",
    )
    quality.add_argument(
        "--dither",
        type=_dither_level,
        nargs="?",
        const=1.0,
        metavar="LEVEL",
        help="Floyd-Steinberg error diffusion when painting (also with --apply-palette): "
        "trades a lower PSNR for smooth-looking gradients; LEVEL from 0 to 1 is the share of "
        "each pixel's error passed on (default without LEVEL: 1, full strength)",
    )
    fit = parser.add_argument_group("what the fit must respect")
    fit.add_argument(
        "--fixed-color",
        action="append",
        metavar="COLOR",
        help="a colour the palette must contain exactly, as its first entries (repeatable): "
        "'#rgb' or '#rrggbb' (8-bit; scaled to 16 bits for 16-bit images), '#rrrrggggbbbb' "
        "(16-bit), "
        "or numbers in the image's units, e.g. '255,255,255' or '65535,0,0' ('128' for "
        "greyscale)",
    )
    fit.add_argument(
        "--fixed-colors-from",
        type=Path,
        metavar="JSON",
        help="every colour of a palette file (as written by --palette) is a fixed colour",
    )
    fit.add_argument(
        "--mask",
        metavar="PATH",
        help="an image of the input's height and width (or of its frames' shape): only "
        "pixels where it is nonzero take part in the fit, every pixel is painted; a mask with "
        "transparent pixels counts its visible (alpha > 0) pixels instead; a pattern with "
        "{stem} for several inputs",
    )
    parser.add_argument(
        "--color-space",
        choices=COLOR_SPACES,
        default=None,
        help="where colour distances are measured (default rgb; lab and oklab are "
        "perceptual, for RGB images)",
    )
    parser.add_argument(
        "--seed",
        type=_seed,
        default=0,
        help="random seed of the fit (default: 0); the same seed gives the same result",
    )
    parser.add_argument(
        "--stats",
        metavar="CSV",
        help="also write per-cluster statistics as CSV: one row per palette entry (label, "
        "palette colour, pixel count, fraction, mean input colour, RMS error) and, for "
        "stacks, the count in each frame; a pattern with {stem} for several inputs",
    )
    parser.add_argument(
        "--channel-axis",
        type=_channel_axis,
        default="auto",
        metavar="AXIS",
        help="axis of the colour channels, or 'none' for intensity images; default "
        "'auto': a TIFF's samples axis, else the last axis when it has 3 or 4 entries",
    )
    parser.add_argument(
        "--chunked",
        action="store_true",
        help="read TIFF input chunk by chunk even when it fits in memory "
        f"(automatic above {_io.LAZY_TIFF_BYTES // 2**30} GiB; .zarr input always is)",
    )
    parser.add_argument(
        "--no-indexed-png",
        dest="indexed_png",
        action="store_false",
        help="write plain greyscale/RGB(A) PNGs instead of indexed (palette) PNGs",
    )
    _add_common_options(parser)
    return parser


def _add_common_options(parser: argparse.ArgumentParser) -> None:
    """Options both commands take, with the same meaning."""
    parser.add_argument(
        "--optimize",
        action="store_true",
        help="compress PNGs harder (Pillow's optimize=True): a few per cent smaller, "
        "several times slower to write",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs that already exist (never an input)",
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print nothing but warnings and errors"
    )
    parser.add_argument("--version", action="version", version=_version())


def build_demo_parser() -> argparse.ArgumentParser:
    """The parser of ``napari-kmeans-filter demo``."""
    from . import COLOR_SPACES

    parser = _Parser(
        prog=f"{PROG} {DEMO_COMMAND}",
        description=(
            "Write the k-means gallery of the cat (skimage.data.chelsea): the original,\n"
            f"the cat at k = {', '.join(map(str, DEMO_K_VALUES))} and a contact sheet "
            "captioned with the PSNR of each;\n"
            f"at k = {', '.join(map(str, DEMO_DITHER_K_VALUES))} without and with "
            "dithering; and with the fewest colours\nreaching a PSNR of "
            f"{', '.join(f'{t:g}' for t in DEMO_TARGETS_PSNR)} dB (-k auto), named "
            "after the k chosen. Needs no input."
        ),
        epilog=(
            f"example:\n  {PROG} {DEMO_COMMAND} --out-dir kmeans-demo\n\n"
            "Give --dither-k or --target-psnr without values to leave that part out.\n"
            "Existing files are replaced only with --overwrite, as for quantising."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        default=Path(DEMO_DEFAULT_DIR),
        metavar="DIR",
        help=f"where to write the images (default: ./{DEMO_DEFAULT_DIR})",
    )
    parser.add_argument(
        "-k",
        "--n-colors",
        type=_n_colors,
        nargs="+",
        default=list(DEMO_K_VALUES),
        metavar="K",
        help=f"the k values of the contact sheet (default: {' '.join(map(str, DEMO_K_VALUES))})",
    )
    parser.add_argument(
        "--dither-k",
        type=_n_colors,
        nargs="*",
        default=list(DEMO_DITHER_K_VALUES),
        metavar="K",
        help="the k values shown without and with dithering "
        f"(default: {' '.join(map(str, DEMO_DITHER_K_VALUES))})",
    )
    parser.add_argument(
        "--target-psnr",
        type=_positive,
        nargs="*",
        default=list(DEMO_TARGETS_PSNR),
        metavar="DB",
        help="the PSNR targets of -k auto "
        f"(default: {' '.join(f'{t:g}' for t in DEMO_TARGETS_PSNR)})",
    )
    parser.add_argument(
        "--color-space", choices=COLOR_SPACES, default="rgb", help="as for quantising"
    )
    parser.add_argument("--seed", type=_seed, default=0, help="as for quantising (default: 0)")
    _add_common_options(parser)
    return parser


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status: 0 success, 2 error, 130 Ctrl-C,
    128 + the signal number for SIGTERM (143) and SIGHUP (129).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _stop_signals_raise():
            # 'demo' is a command only as the first word, so a file called 'demo' can
            # still be quantised as './demo'.
            if argv[:1] == [DEMO_COMMAND]:
                return run_demo(build_demo_parser().parse_args(argv[1:]))
            return run(build_parser().parse_args(argv))
    except KeyboardInterrupt:
        _status.clear()
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except _Stopped as stopped:
        _status.clear()
        print(f"{PROG}: stopped by {signal.Signals(stopped.signum).name}", file=sys.stderr)
        return 128 + stopped.signum  # the shell's status for a process ended by a signal
    except (CliError, ImageIOError, ValueError, TypeError, OSError, MemoryError) as exc:
        # ValueError/TypeError come from the core's parameter checks, whose messages
        # name the problem; OSError from the file system (permissions, full disk).
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _status.clear()
        print(f"{PROG}: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as exc:
        # Lazy (.zarr, chunked TIFF) inputs are only read while quantising, so a
        # corrupt chunk surfaces here, from the codec, as any exception type.
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _status.clear()
        print(
            f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)} "
            f"(a corrupt or unreadable input?; {DEBUG_VARIABLE}=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_ERROR


@contextlib.contextmanager
def _stop_signals_raise():
    """Turn SIGTERM and SIGHUP into :class:`_Stopped` while the run lasts.

    Their default action kills the process at once, leaving the temporary file being
    written beside its destination.  Raised as an exception instead, they unwind
    through :func:`napari_kmeans_filter._io.atomic_output`, which removes it.  Only the
    main thread can install handlers; elsewhere (a caller's worker thread) nothing
    changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        for number in STOP_SIGNALS:  # a second signal must not interrupt the cleanup
            signal.signal(number, signal.SIG_IGN)
        raise _Stopped(signum)

    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, MemoryError):
        return "not enough memory; try a .zarr output or --chunked for a TIFF input"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror[:1].lower()}{exc.strerror[1:]}{where}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------
# Planning a batch: every check that needs no pixels
# --------------------------------------------------------------------------------------


@dataclass
class Job:
    """One input and the files written for it."""

    source: _io.InputImage
    channel_axis: int | None
    #: Whether the last colour channel is alpha (None: the core's rule).
    alpha: bool | None
    output: Path
    labels: Path | None
    palette: Path | None
    stats: Path | None = None
    #: The --mask as the core's ``mask``: boolean, of the input's spatial shape.
    mask: Any = None
    #: The --fixed-color and --fixed-colors-from colours in the input's units, (m, C).
    fixed_colors: np.ndarray | None = None


#: Options that only matter when a palette is fitted (not with --apply-palette).
_FIT_OPTIONS = (
    ("target_psnr", "--target-psnr"),
    ("target_delta_e", "--target-delta-e"),
    ("speed", "--speed"),
    ("fixed_color", "--fixed-color"),
    ("fixed_colors_from", "--fixed-colors-from"),
    ("mask", "--mask"),
    ("color_space", "--color-space"),
)

#: The option of the command line that sets each parameter of the core, to name it in
#: the core's error messages ("The 'target_psnr' parameter ..." -> "--target-psnr ...").
_OPTION_OF_PARAMETER = {
    "n_colors": "-k",
    "target_psnr": "--target-psnr",
    "target_delta_e": "--target-delta-e",
    "fixed_colors": "--fixed-color",
    "mask": "--mask",
    "speed": "--speed",
    "dither": "--dither",
    "color_space": "--color-space",
    "channel_axis": "--channel-axis",
}


def _in_option_terms(message: str) -> str:
    """A core error message with its parameter names replaced by their options."""
    return re.sub(
        r"The '(\w+)' parameter",
        lambda match: _OPTION_OF_PARAMETER.get(match.group(1), match.group(0)),
        message,
    )


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
    patterns = (("--labels", args.labels), ("--palette", args.palette), ("--stats", args.stats))
    for option, pattern in patterns:
        if pattern is not None and several and "{stem}" not in pattern:
            raise CliError(
                f"{option} {pattern!r} would be written once per input; with several inputs "
                "give a pattern containing {stem}, e.g. 'out/{stem}_labels.png'"
            )
    if args.quality is not None:
        raise CliError(
            f"--quality {args.quality}: pngquant's 0-100 quality score has no exact "
            "equivalent here; use -k auto --target-psnr DB instead (about 30 dB is visibly "
            "posterised, 35 dB close, 40 dB hard to tell from the original)"
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
        return
    targets = [
        option
        for option, value in (
            ("--target-psnr", args.target_psnr),
            ("--target-delta-e", args.target_delta_e),
        )
        if value is not None
    ]
    if args.n_colors == "auto" and not targets:
        raise CliError(
            "-k auto needs a target: --target-psnr DB and/or --target-delta-e DE "
            "(the fewest colours reaching it are fitted)"
        )
    if args.n_colors != "auto" and targets:
        raise CliError(
            f"{targets[0]} needs -k auto (the fewest colours reaching it); "
            f"with -k {args.n_colors} leave it out"
        )
    for option, value, high in (
        ("--target-psnr", args.target_psnr, 200),
        ("--target-delta-e", args.target_delta_e, 100),
    ):
        if value is not None and not 0 < value <= high:
            raise CliError(f"{option} must be above 0 and at most {high}, got {value:g}")


def plan_jobs(args: argparse.Namespace, palette: Any | None) -> list[Job]:
    """Open every input, name every output and check the whole batch before any work.

    Raises
    ------
    CliError, ImageIOError
        Bad option combination, unreadable input, an output that would replace an input
        or an existing file (without ``--overwrite``), or a format that cannot hold the
        result.
    """
    _check_combinations(args, palette)
    k = len(palette) if palette is not None else args.n_colors
    fixed_from = _fixed_colors_file(args.fixed_colors_from)
    masks: dict[Path, Any] = {}

    jobs = []
    for path in args.inputs:
        source = _io.open_image(path, chunked=args.chunked)
        channel_axis = _resolve_channel_axis(args.channel_axis, source)
        # The file says which channel is alpha only for its own channel axis.
        alpha = source.alpha if channel_axis == source.channel_axis else None
        n_colour_channels = _colour_channels(source.shape, channel_axis, alpha)
        color_space = palette.color_space if palette is not None else args.color_space or "rgb"
        if color_space != "rgb" and n_colour_channels != 3:
            raise CliError(
                f"{path}: --color-space {color_space} needs 3 colour channels (RGB) but the "
                f"image has {n_colour_channels}; use --color-space rgb"
            )
        if k == "auto":
            _check_targets(args, n_colour_channels, path)
        fields = {"stem": _stem(path), "k": k}
        output = args.output or _default_output(path, source, args, k)
        job = Job(
            source,
            channel_axis,
            alpha,
            output,
            labels=_expand(args.labels, fields, "--labels"),
            palette=_expand(args.palette, fields, "--palette"),
            stats=_expand(args.stats, fields, "--stats"),
            fixed_colors=_fixed_colors(args.fixed_color, fixed_from, k, source, n_colour_channels),
        )
        if args.mask is not None:
            mask_path = _expand(args.mask, fields, "--mask")
            if mask_path not in masks:
                masks[mask_path] = _read_mask(mask_path)
            job.mask = _fit_mask(masks[mask_path], mask_path, source, channel_axis)
        jobs.append(job)

    _check_outputs(jobs, args, k)
    return jobs


def _check_targets(args, n_colour_channels: int, path: Path | str) -> None:
    """The core's own check of the target values, before any work."""
    from . import _validation

    try:
        _validation.check_targets(
            "auto", args.target_psnr, args.target_delta_e, n_colour_channels, "k-means++"
        )
    except ValueError as exc:
        raise CliError(f"{path}: {_in_option_terms(_one_line(exc))}") from None


def _fixed_colors_file(path: Path | None):
    """The colours of the --fixed-colors-from palette file, or None."""
    if path is None:
        return None
    try:
        return load_palette(path).colors
    except CliError as exc:
        raise CliError(f"--fixed-colors-from: {exc}") from None


def _fixed_colors(
    texts: list[str] | None, from_file, k, source: _io.InputImage, n_channels: int
) -> np.ndarray | None:
    """The fixed colours of one input in its units, checked by the core's own rules.

    The palette file's colours come first, then each --fixed-color in the given order
    (the palette's first entries, in that order).
    """
    from . import MAX_N_COLORS, _validation

    rows = []
    if from_file is not None:
        if from_file.shape[1] != n_channels:
            raise CliError(
                f"--fixed-colors-from: the palette has {from_file.shape[1]} channel(s) but "
                f"{source.path} has {n_channels} colour channel(s)"
            )
        try:
            from_file = _validation.check_palette_for_image(from_file, n_channels, source.dtype)
        except ValueError as exc:
            message = _one_line(exc).replace("The 'palette' parameter", "the palette")
            raise CliError(f"--fixed-colors-from: {source.path}: {message}") from None
        rows.extend(from_file.astype(np.float64).tolist())
    for text in texts or ():
        rows.append(_parse_color(text, source, n_channels))
    if not rows:
        return None
    if k != "auto" and len(rows) > k:
        raise CliError(
            f"{len(rows)} fixed colours (--fixed-color, --fixed-colors-from) but -k {k}: "
            "-k must be at least the number of fixed colours"
        )
    try:
        return _validation.check_fixed_colors(
            rows, MAX_N_COLORS if k == "auto" else k, n_channels, source.dtype
        )
    except (ValueError, TypeError) as exc:
        raise CliError(f"{source.path}: {_in_option_terms(_one_line(exc))}") from None


def _parse_color(text: str, source: _io.InputImage, n_channels: int) -> list[float]:
    """One --fixed-color in the image's units: '#rrggbb', '#rrrrggggbbbb' or numbers."""
    stripped = text.strip()
    where = f"--fixed-color {text!r}"
    if stripped.startswith("#"):
        digits = stripped[1:]
        if len(digits) == 3:  # CSS's short form: '#fff' is '#ffffff'
            digits = "".join(c * 2 for c in digits)
        if len(digits) not in (6, 12) or any(c not in "0123456789abcdefABCDEF" for c in digits):
            raise CliError(
                f"{where}: write '#rgb' or '#rrggbb' (8-bit), '#rrrrggggbbbb' (16-bit) or "
                "numbers separated by commas, e.g. '255,0,0'"
            )
        if n_channels != 3:
            raise CliError(
                f"{where} is an RGB colour but {source.path} has {n_channels} colour "
                f"channel(s); give {n_channels} number(s) separated by commas"
            )
        width = len(digits) // 3
        values = [int(digits[i * width : (i + 1) * width], 16) for i in range(3)]
        dtype = np.dtype(source.dtype)
        if dtype == np.uint16 and width == 2:
            return [value * 257 for value in values]  # the same colour in 16 bits
        if dtype == np.uint16 or (dtype == np.uint8 and width == 2):
            return values
        if dtype == np.uint8:
            raise CliError(f"{where} is a 16-bit colour but {source.path} is 8-bit; use '#rrggbb'")
        raise CliError(
            f"{where}: hexadecimal colours are for 8- and 16-bit images and {source.path} is "
            f"{dtype}; give numbers in its units separated by commas"
        )
    try:
        values = [float(part) for part in stripped.split(",")]
    except ValueError:
        raise CliError(
            f"{where}: write '#rrggbb', '#rrrrggggbbbb' or numbers separated by commas, "
            "e.g. '255,0,0'"
        ) from None
    if len(values) != n_channels:
        raise CliError(
            f"{where} has {len(values)} value(s) but {source.path} has {n_channels} colour "
            f"channel(s)"
        )
    return values


def _read_mask(path: Path):
    try:
        mask = _io.read_mask(path)
    except ImageIOError as exc:
        raise CliError(f"--mask: {exc}") from None
    if not mask.any():
        raise CliError(f"--mask {path} has no nonzero (visible) pixel: nothing would be fitted")
    return mask


def _fit_mask(mask, mask_path: Path, source: _io.InputImage, channel_axis):
    """The mask for one input: its spatial shape, or one frame's shape for every frame."""
    spatial = _spatial_shape(source.shape, channel_axis)
    if mask.shape == spatial:
        return mask
    if len(spatial) > mask.ndim >= 2 and mask.shape == spatial[-mask.ndim :]:
        return np.broadcast_to(mask, spatial)  # the same region in every frame
    raise CliError(
        f"--mask {mask_path} has shape {mask.shape} but {source.path} has spatial shape "
        f"{spatial} (the image without its channels): the mask must match it, or match "
        "one frame"
    )


def _resolve_channel_axis(option: int | str | None, source: _io.InputImage) -> int | None:
    if option == "auto":
        return source.channel_axis
    if option is None or len(source.shape) == 2:  # a 2-D array is always greyscale
        return None
    ndim = len(source.shape)
    if not -ndim <= option < ndim:
        raise CliError(
            f"--channel-axis {option} does not exist in {source.path}, which has shape "
            f"{source.shape} (axes {-ndim} to {ndim - 1})"
        )
    return option - ndim if option >= 0 else option


def _colour_channels(shape: tuple[int, ...], channel_axis: int | None, alpha: bool | None) -> int:
    """Colour channels without alpha (alpha None: the core's rule, 4 on the last axis)."""
    if channel_axis is None:
        return 1
    channels = shape[channel_axis]
    if alpha is None:
        alpha = channel_axis % len(shape) == len(shape) - 1 and channels == 4
    return channels - bool(alpha)


def _zarr_store_root(path: Path) -> Path | None:
    """The outermost zarr directory that contains ``path`` (itself included), if any."""
    root = None
    for candidate in (path, *path.parents):
        if any((candidate / name).exists() for name in ("zarr.json", ".zgroup", ".zarray")):
            root = candidate
        elif root is not None:
            break
    return root


def _input_name(path: Path) -> str:
    """How an input is named in messages and outputs: an array inside a zarr group is
    ``group.zarr/0``, not just ``0``."""
    root = _zarr_store_root(path)
    if root is not None and root != path:
        return path.relative_to(root.parent).as_posix()
    return path.name


def _stem(path: Path) -> str:
    name = _input_name(path)
    for suffix in (".ome.tiff", ".ome.tif", ".ome.zarr"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    if "/" in name:  # group.zarr/0 -> group_0
        first, _, rest = name.partition("/")
        return f"{Path(first).stem}_{rest.replace('/', '_')}"
    return Path(name).stem


def _default_output(path: Path, source: _io.InputImage, args, k: int) -> Path:
    if args.format is not None:
        suffix = "." + args.format
    elif source.kind == "pillow" and source.n_frames > 1:
        suffix = ".tif"  # keeps every frame (PNG and JPEG hold one)
    elif source.kind == "pillow" and source.path.suffix.lower() not in (".tif", ".tiff"):
        suffix = ".png"  # lossless and indexed: JPEG would undo the quantisation
    elif source.kind == "zarr":
        suffix = ".zarr"
    else:
        suffix = path.suffix.lower() or ".tif"
    if args.out_dir is not None:
        directory = args.out_dir
    else:  # beside the input, and outside a zarr group holding it
        root = _zarr_store_root(path)
        directory = (root if root is not None else path).parent
    name = f"{_stem(path)}_auto" if k == "auto" else f"{_stem(path)}_k{k}"
    return directory / f"{name}{suffix}"


def _expand(pattern: str | None, fields: dict, option: str) -> Path | None:
    if pattern is None:
        return None
    try:
        return Path(pattern.format(**fields))
    except (KeyError, IndexError, ValueError) as exc:
        raise CliError(
            f"{option} {pattern!r}: only {{stem}} and {{k}} can be used in the pattern ({exc})"
        ) from None


def _check_outputs(jobs: list[Job], args, k: int) -> None:
    # A zarr array is protected with the whole store (group) around it.
    inputs = [(_zarr_store_root(job.source.path) or job.source.path).resolve() for job in jobs]
    seen: dict[Path, str] = {}
    warned_jpeg = False
    for job in jobs:
        outputs = [
            ("output", job.output),
            ("labels", job.labels),
            ("palette", job.palette),
            ("stats", job.stats),
        ]
        for role, path in outputs:
            if path is None:
                continue
            resolved = path.resolve()
            for input_path in inputs:
                if _same_or_nested(resolved, input_path):
                    raise CliError(
                        f"refusing to write {role} {path}: that would change the input "
                        f"{input_path} (choose another name)"
                    )
            described = f"the {role} of {job.source.path}"
            if resolved in seen:
                raise CliError(
                    f"{seen[resolved]} and {described} would both be written to {path}; "
                    "choose other names"
                )
            seen[resolved] = described
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
        if _io.output_format(job.output) == "jpeg" and not warned_jpeg:
            warned_jpeg = True
            _warn(
                "JPEG compression re-introduces colours: the JPEG will have many more "
                "than the quantised colours (write .png for an exact result)"
            )


def _check_formats(job: Job, k: int) -> None:
    """Whether the output (and label) formats can hold this job's results."""
    _io.check_writable(job.output, job.source.shape, job.source.dtype, job.channel_axis, job.alpha)
    if job.labels is not None:
        # -k auto may choose up to MAX_N_COLORS colours: uint16 labels.
        label_dtype = np.dtype(np.uint8 if k != "auto" and k <= 256 else np.uint16)
        spatial_shape = _spatial_shape(job.source.shape, job.channel_axis)
        _io.check_writable(job.labels, spatial_shape, label_dtype, None)


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


def _spatial_shape(shape: tuple[int, ...], channel_axis: int | None) -> tuple[int, ...]:
    if channel_axis is None:
        return tuple(shape)
    axis = channel_axis % len(shape)
    return tuple(size for i, size in enumerate(shape) if i != axis)


def _prepare_directories(paths: Sequence[Path | None]) -> None:
    """Create the directories of the output ``paths`` and check that they are writable."""
    for directory in sorted({path.parent for path in paths if path is not None}):
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(
                f"cannot create output directory {directory}: {_one_line(exc)}"
            ) from None
        if not directory.is_dir():
            raise CliError(f"output directory {directory} is not a directory")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise CliError(f"cannot write to output directory {directory}: permission denied")


# --------------------------------------------------------------------------------------
# Running a batch
# --------------------------------------------------------------------------------------


def load_palette(path: Path):
    """Read a palette JSON written by ``--palette`` (``Palette.to_dict()``)."""
    from . import Palette

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"no such palette file: {path}") from None
    except UnicodeDecodeError:
        raise CliError(
            f"bad palette file {path}: not a palette JSON written by --palette (it is not text)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot read palette file {path}: {_one_line(exc)}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CliError(f"bad palette file {path}: not valid JSON ({exc})") from None
    try:
        return Palette.from_dict(data)
    except (ValueError, TypeError, KeyError) as exc:
        raise CliError(f"bad palette file {path}: {_one_line(exc)}") from None


def run(args: argparse.Namespace) -> int:
    """Quantise (or repaint) every input as the parsed ``args`` say."""
    palette = load_palette(args.apply_palette) if args.apply_palette is not None else None
    jobs = plan_jobs(args, palette)
    _prepare_directories([path for job in jobs for path in (job.output, job.labels, job.palette)])
    status = _status.configure(enabled=not args.quiet)
    started = time.perf_counter()
    for number, job in enumerate(jobs, start=1):
        name = _input_name(job.source.path)
        status.begin(number, len(jobs), name)
        job_started = time.perf_counter()
        with job.source:
            result = _process(job, args, palette, status.progress)
            status.update(FIT_SHARE, "writing")
            _write_outputs(job, result, args, status)
        elapsed = time.perf_counter() - job_started
        status.finish(
            f"[{number}/{len(jobs)}] {name} {_ARROW} {job.output.name}  "
            f"{result.n_input_colors}{_ARROW}{_colours(len(result.palette))}"
            f"{' (auto)' if args.n_colors == 'auto' else ''}  "
            f"{_quality_text(result, args)}  {elapsed:.2f} s"
        )
    if len(jobs) > 1:
        status.finish(f"{len(jobs)} images in {time.perf_counter() - started:.1f} s")
    return EXIT_OK


def _process(job: Job, args, palette, progress):
    """Run the core on one input; its warnings become warning lines naming the input."""
    from . import apply_palette, quantize

    image = job.source.load()
    dither = args.dither or False
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            if palette is not None:
                result = apply_palette(
                    image,
                    palette,
                    channel_axis=job.channel_axis,
                    alpha=job.alpha,
                    dither=dither,
                    progress=progress,
                )
            else:
                optional = {} if args.speed is None else {"speed": args.speed}
                result = quantize(
                    image,
                    args.n_colors,
                    channel_axis=job.channel_axis,
                    alpha=job.alpha,
                    color_space=args.color_space or "rgb",
                    mask=job.mask,
                    fixed_colors=job.fixed_colors,
                    dither=dither,
                    target_psnr=args.target_psnr,
                    target_delta_e=args.target_delta_e,
                    random_state=args.seed,
                    progress=progress,
                    **optional,
                )
    except (ValueError, TypeError) as exc:
        raise CliError(f"{job.source.path}: {_in_option_terms(_one_line(exc))}") from None
    for warning in caught:
        _warn(f"{job.source.path}: {_in_option_terms(_one_line(warning.message))}")
    return result


def _quality_text(result, args) -> str:
    """PSNR of the written image; with -k auto and --target-delta-e also the mean
    CIEDE2000, and with --dither the figures of the fit before dithering it reached."""
    text = _format_psnr(result.psnr)
    curve = result.error_curve
    if curve is None:
        return text
    chosen = curve["n_colors"].index(len(result.palette))
    dithered = bool(args.dither)
    if dithered:
        text += f" ({curve['psnr'][chosen]:.1f} dB before dithering)"
    if "delta_e" in curve:
        text += f"  CIEDE2000 {curve['delta_e'][chosen]:.2f}"
        if dithered:
            text += " before dithering"
    return text


def _write_outputs(job: Job, result, args, status) -> None:
    """Write image, labels and palette of one job: all of them or none."""
    outputs = {"image": (job.output, result.image, job.channel_axis, job.alpha)}
    if job.labels is not None:
        outputs["labels"] = (job.labels, result.labels, None, None)
    indexed = args.indexed_png and _io.output_format(job.output) == "png"
    with contextlib.ExitStack() as stack:
        temporaries = {
            role: stack.enter_context(_io.atomic_output(path, overwrite=args.overwrite))
            for role, (path, *_) in outputs.items()
        }
        in_memory = _store_or_compute(
            outputs, temporaries, result.labels if indexed else None, status
        )
        for role, (path, _, channel_axis, alpha) in outputs.items():
            if role not in in_memory:
                continue  # already stored chunk by chunk
            is_image = role == "image"
            _io.write_array(
                temporaries[role],
                in_memory[role],
                fmt=_io.output_format(path),
                channel_axis=channel_axis,
                alpha=alpha,
                # The labels turn the image into an indexed PNG without a colour search;
                # the label image itself stays plain greyscale, never indexed.
                labels=in_memory.get("index") if is_image else None,
                colors=result.palette.colors if is_image else None,
                indexed=indexed and is_image,
                optimize=args.optimize,
            )
        if job.palette is not None:
            temporary = stack.enter_context(
                _io.atomic_output(job.palette, overwrite=args.overwrite)
            )
            temporary.write_text(palette_json(result.palette), encoding="utf-8")
        if job.stats is not None:
            temporary = stack.enter_context(_io.atomic_output(job.stats, overwrite=args.overwrite))
            temporary.write_text(stats_csv(result), encoding="utf-8", newline="")


def _store_or_compute(outputs: dict, temporaries: dict, index_labels, status) -> dict:
    """Store lazy results chunk by chunk; return in-memory arrays for everything else.

    Dask results going to zarr or TIFF are written without ever holding the whole image
    and are left out of the returned dict.  The other outputs (PNG, JPEG and npy need
    the whole array) are returned as numpy arrays, plus ``"index"``: ``index_labels``
    for an indexed PNG of the image.  The zarr stores and the in-memory arrays are
    computed in one ``dask.compute`` so that work they share is done once; TIFFs are
    then written band by band (tiles must reach the file in order).
    """
    wanted: dict[str, Any] = {}
    sources, targets, streamed = [], [], []
    for role, (path, array, channel_axis, alpha) in outputs.items():
        fmt = _io.output_format(path)
        if not _is_dask(array) or fmt not in ("tiff", "zarr"):
            wanted[role] = array
        elif fmt == "tiff" and _io.can_stream_tiff(array.ndim, channel_axis):
            streamed.append((temporaries[role], array, channel_axis, alpha))
        else:
            # The result keeps the input's chunks (a zarr input's own): the output is
            # chunked like the input.  Regular chunks, so that no two dask chunks write
            # into one zarr chunk.
            chunks = tuple(max(sizes) for sizes in array.chunks)
            sources.append(array.rechunk(chunks))
            targets.append(
                _io.create_lazy_target(
                    temporaries[role], fmt, array.shape, array.dtype, chunks, channel_axis, alpha
                )
            )
    if index_labels is not None and "image" in wanted:
        wanted["index"] = index_labels
    if not sources and not any(_is_dask(array) for array in wanted.values()):
        values = list(wanted.values())
    else:
        import dask
        import dask.array as da

        store = da.store(sources, targets, compute=False, lock=False) if sources else None
        with status.dask_progress("writing"):
            _, *values = dask.compute(store, *wanted.values())
        for target in targets:
            if hasattr(target, "flush"):  # TIFF memory map: push the pages to the file
                target.flush()
    for temporary, array, channel_axis, alpha in streamed:
        _io.write_tiff_from_dask(
            temporary, array, channel_axis, alpha, progress=status.stage_progress("writing TIFF")
        )
    return dict(zip(wanted, values, strict=True))


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


def stats_csv(result) -> str:
    """``result.cluster_stats()`` as CSV text, one row per palette entry in label order.

    Columns: ``label``, the palette colour ``color_0``, ``color_1``, ... (in the image's
    units), then the core's ``count``, ``fraction``, ``mean_0``, ... and ``rms_error``
    (empty for a cluster without pixels), and for a stack (labels of 3 or more
    dimensions) ``count_frame_0``, ``count_frame_1``, ...: each cluster's visible pixels
    in each index of the first axis.
    """
    import csv
    import io

    stacked = result.labels.ndim >= 3
    stats = result.cluster_stats(frame_axis=0 if stacked else None)
    frame_counts = stats.pop("frame_counts", None)
    colors = result.palette.colors
    columns = {"label": stats.pop("label")}
    columns |= {f"color_{channel}": colors[:, channel] for channel in range(colors.shape[1])}
    columns |= stats
    if frame_counts is not None:
        columns |= {f"count_frame_{t}": frame_counts[:, t] for t in range(frame_counts.shape[1])}
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


def _is_dask(array) -> bool:
    return type(array).__module__.split(".")[0] == "dask"


def _colours(count: int) -> str:
    return f"{count} colour" if count == 1 else f"{count} colours"


def _format_psnr(psnr: float) -> str:
    return "lossless" if math.isinf(psnr) else f"PSNR {psnr:.1f} dB"


# --------------------------------------------------------------------------------------
# Demo: the gallery of the cat
# --------------------------------------------------------------------------------------


@dataclass
class DemoImage:
    """One image of the demo's gallery, before it is written.

    ``kind`` is "original", "k" (quantised), "dither" (quantised with dithering), "auto"
    (``-k auto`` for ``target_psnr``) or "sheet" (the contact sheet); ``result`` is the
    core's result for the quantised ones; ``tiles`` the (image, caption) pairs of the
    sheet.
    """

    name: str
    kind: str
    image: np.ndarray
    result: Any = None
    target_psnr: float | None = None
    tiles: list = None

    @property
    def caption(self) -> str:
        if self.kind == "original":
            return f"original  {_distinct_colours(self.image)} colours"
        k = len(self.result.palette)
        if self.kind == "dither":
            return f"k={k} dithered  {_format_psnr(self.result.psnr)}"
        if self.kind == "auto":
            return f"auto >= {self.target_psnr:g} dB: k={k}  {_format_psnr(self.result.psnr)}"
        return f"k={k}  {_format_psnr(self.result.psnr)}"


def demo_images(
    k_values: Sequence[int] = DEMO_K_VALUES,
    dither_k_values: Sequence[int] = DEMO_DITHER_K_VALUES,
    targets_psnr: Sequence[float] = DEMO_TARGETS_PSNR,
    *,
    color_space: str = "rgb",
    seed: int = 0,
    progress=None,
) -> list[DemoImage]:
    """Compute every image of the demo's gallery, in the order they are written.

    The original cat; the cat at each of ``k_values`` and their contact sheet; at each
    of ``dither_k_values`` without and with dithering (full strength); with the fewest
    colours reaching each of ``targets_psnr`` (named ``chelsea_psnr<T>_k<K>.png`` after
    the k chosen).  ``progress(done, total, what)`` is called before each fit.
    """
    from skimage import data

    from . import quantize

    cat = data.chelsea()
    options = {"color_space": color_space, "random_state": seed}
    fits = [("k", k) for k in dict.fromkeys(k_values)]
    fits += [(kind, k) for k in dither_k_values for kind in ("k", "dither")]
    fits += [("auto", target) for target in targets_psnr]
    images = [DemoImage("chelsea.png", "original", cat)]
    done: set[tuple] = set()
    for number, (kind, value) in enumerate(fits, start=1):
        if (kind, value) in done:
            continue
        done.add((kind, value))
        if progress is not None:
            progress(number, len(fits), f"{value:g} dB" if kind == "auto" else f"k={value}")
        if kind == "auto":
            result = quantize(cat, "auto", target_psnr=value, **options)
            name = f"chelsea_psnr{value:g}_k{len(result.palette)}.png"
            images.append(DemoImage(name, kind, result.image, result, target_psnr=value))
        else:
            result = quantize(cat, value, dither=kind == "dither", **options)
            name = f"chelsea_k{value}{'_dither' * (kind == 'dither')}.png"
            images.append(DemoImage(name, kind, result.image, result))
    if k_values:
        swept = images[: 1 + len(dict.fromkeys(k_values))]
        tiles = [(image.image, image.caption) for image in swept]
        sheet = DemoImage("chelsea_contact_sheet.png", "sheet", contact_sheet(tiles), tiles=tiles)
        images.insert(len(swept), sheet)
    return images


def demo_header(original: np.ndarray) -> str:
    """The demo's first line: the cat's size and distinct colours."""
    height, width = original.shape[:2]
    return (
        f"chelsea (skimage.data.chelsea): {width} x {height} pixels, "
        f"{_distinct_colours(original)} distinct colours"
    )


def demo_line(path: Path, image: DemoImage, *, shown: str | None = None) -> str:
    """What the demo prints for one written file at ``path`` (named ``shown`` if given)."""
    shown = path if shown is None else shown
    if image.kind == "original":
        what = f"original, {_distinct_colours(image.image)} colours"
    elif image.kind == "sheet":
        height, width = image.image.shape[:2]
        return f"wrote {shown}  (contact sheet, {width} x {height} pixels)"
    else:
        result = image.result
        what = f"{_colours(len(result.palette))}, {_format_psnr(result.psnr)}"
        if image.kind == "dither":
            what = f"{_colours(len(result.palette))}, dithered, {_format_psnr(result.psnr)}"
        elif image.kind == "auto":
            what = f"fewest colours reaching {image.target_psnr:g} dB: {what}"
    return f"wrote {shown}  ({what}, {_size(path)})"


def run_demo(args: argparse.Namespace) -> int:
    """Write the demo's gallery (see :func:`demo_images`); print what was written."""
    out_dir: Path = args.out_dir
    k_values = sorted(dict.fromkeys(args.n_colors))
    dither_k_values = sorted(dict.fromkeys(args.dither_k))
    targets = sorted(dict.fromkeys(args.target_psnr))
    # The same rule as the main command, checked before any work for every name known
    # in advance, and for the names of -k auto (they hold the k chosen) before any write.
    known = ["chelsea.png", *(f"chelsea_k{k}.png" for k in [*k_values, *dither_k_values])]
    known += [f"chelsea_k{k}_dither.png" for k in dither_k_values]
    known += ["chelsea_contact_sheet.png"] if k_values else []
    _check_demo_outputs([out_dir / name for name in known], args.overwrite)
    for target in targets:
        _check_targets(argparse.Namespace(target_psnr=target, target_delta_e=None), 3, "demo")
    _prepare_directories([out_dir / "x"])

    def say(line: str) -> None:
        if not args.quiet:
            print(line, flush=True)

    status = _status.configure(enabled=not args.quiet)

    def progress(number: int, total: int, what: str) -> None:
        status.begin(number, total, f"chelsea {what}")
        status.update(0.0, "fitting")

    images = demo_images(
        k_values,
        dither_k_values,
        targets,
        color_space=args.color_space,
        seed=args.seed,
        progress=progress,
    )
    status.clear()
    _check_demo_outputs([out_dir / image.name for image in images], args.overwrite)
    say(demo_header(images[0].image))
    for image in images:
        write_demo_image(
            out_dir / image.name, image, overwrite=args.overwrite, optimize=args.optimize
        )
        say(demo_line(out_dir / image.name, image))
    return EXIT_OK


def _check_demo_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    for path in paths:
        if path.exists() and not overwrite:
            raise CliError(f"{path} already exists (use --overwrite to replace it)")


def write_demo_image(path: Path, image: DemoImage, *, overwrite: bool, optimize: bool) -> None:
    """Write one image of the gallery: quantised ones as indexed PNGs whose palette is
    the result's palette and whose indices are its labels."""
    result = image.result
    with _io.atomic_output(path, overwrite=overwrite) as temporary:
        _io.write_array(
            temporary,
            image.image,
            fmt="png",
            channel_axis=-1,
            labels=None if result is None else result.labels,
            colors=None if result is None else result.palette.colors,
            optimize=optimize,
        )


def _distinct_colours(image: np.ndarray) -> int:
    return len(np.unique(image.reshape(-1, image.shape[-1]), axis=0))


#: Pixels between the tiles of a contact sheet.
SHEET_GAP = 4


def contact_sheet_boxes(
    n_tiles: int, tile_shape: tuple[int, int], *, columns: int = 3, caption_height: int = 30
) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """The layout of :func:`contact_sheet`: ``(sheet height, width)`` and the
    ``(top, left)`` pixel of each tile (its caption is the band below it)."""
    height, width = tile_shape
    columns = min(columns, n_tiles)
    rows = math.ceil(n_tiles / columns)
    size = (
        rows * (height + caption_height) + (rows + 1) * SHEET_GAP,
        columns * width + (columns + 1) * SHEET_GAP,
    )
    origins = []
    for index in range(n_tiles):
        row, column = divmod(index, columns)
        origins.append(
            (
                SHEET_GAP + row * (height + caption_height + SHEET_GAP),
                SHEET_GAP + column * (width + SHEET_GAP),
            )
        )
    return size, origins


def contact_sheet(
    tiles: Sequence[tuple[np.ndarray, str]], *, columns: int = 3, caption_height: int = 30
) -> np.ndarray:
    """Arrange RGB images in a grid with a caption under each; return an RGB array.

    Parameters
    ----------
    tiles : sequence of (image, caption)
        uint8 RGB images of one size, and the text to write under each.
    columns : int
        Images per row.
    caption_height : int
        Height in pixels of the white band holding each caption.
    """
    from PIL import Image, ImageDraw, ImageFont

    height, width = tiles[0][0].shape[:2]
    (sheet_height, sheet_width), origins = contact_sheet_boxes(
        len(tiles), (height, width), columns=columns, caption_height=caption_height
    )
    sheet = Image.new("RGB", (sheet_width, sheet_height), "white")
    draw = ImageDraw.Draw(sheet)
    try:
        font = ImageFont.load_default(size=int(caption_height * 0.6))
    except TypeError:  # Pillow < 10.1 has only the small bitmap font
        font = ImageFont.load_default()
    for (image, caption), (top, left) in zip(tiles, origins, strict=True):
        sheet.paste(Image.fromarray(np.asarray(image)), (left, top))
        draw.text(
            (left + width / 2, top + height + caption_height / 2),
            caption,
            fill="black",
            font=font,
            anchor="mm",
        )
    return np.asarray(sheet)


def _size(path: Path) -> str:
    size = path.stat().st_size
    return f"{size / 1024:.1f} kB" if size < 1024**2 else f"{size / 1024**2:.2f} MB"


# --------------------------------------------------------------------------------------
# Messages on stderr
# --------------------------------------------------------------------------------------


def _arrow() -> str:
    encoding = getattr(sys.stderr, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"  # e.g. a Windows console in cp1252
    return "→"


_ARROW = _arrow()


def _warn(message: str) -> None:
    _status.clear()
    print(f"{PROG}: warning: {message}", file=sys.stderr)


class _Status:
    """Progress on stderr: one line per finished file, plus a live bar on a terminal.

    The live bar (``[2/5] ######------ 41%  cat.png  k-means``) is redrawn in place and
    only when stderr is a terminal, so logs and pipes get just the finished lines.
    """

    _WIDTH = 24

    def __init__(self) -> None:
        self.enabled = True
        self.live = False
        self._drawn = 0
        self._last_draw = 0.0
        self._number = self._total = 0
        self._name = ""

    def configure(self, *, enabled: bool) -> _Status:
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        return self

    @property
    def progress(self):
        """Callback for the core's ``progress=`` (None when nothing is displayed)."""
        if not self.live:
            return None
        return lambda fraction, message: self.update(FIT_SHARE * fraction, message)

    def begin(self, number: int, total: int, name: str) -> None:
        self._number, self._total, self._name = number, total, name
        self.update(0.0, "reading")

    def update(self, fraction: float, message: str) -> None:
        if not self.live:
            return
        now = time.monotonic()
        if now - self._last_draw < 0.1 and 0.0 < fraction < 1.0:
            return  # redrawing more often only costs time
        self._last_draw = now
        overall = (self._number - 1 + fraction) / max(self._total, 1)
        filled = round(overall * self._WIDTH)
        line = (
            f"[{self._number}/{self._total}] {'#' * filled}{'-' * (self._WIDTH - filled)} "
            f"{overall:4.0%}  {self._name}  {message}"
        )
        self.clear()
        sys.stderr.write(line)
        sys.stderr.flush()
        self._drawn = len(line)

    def clear(self) -> None:
        if self._drawn:
            sys.stderr.write("\r" + " " * self._drawn + "\r")
            sys.stderr.flush()
            self._drawn = 0

    def finish(self, line: str) -> None:
        if not self.enabled:
            return
        self.clear()
        print(line, file=sys.stderr, flush=True)

    def stage_progress(self, message: str):
        """A ``progress(fraction)`` callback for the writing stage (None when silent)."""
        if not self.live:
            return None
        return lambda fraction: self.update(FIT_SHARE + (1 - FIT_SHARE) * fraction, message)

    def dask_progress(self, message: str):
        """Context manager showing the fraction of finished dask tasks."""
        if not self.live:
            return contextlib.nullcontext()
        from dask.callbacks import Callback

        state = {"done": 0, "total": 1}

        def start(graph):
            state["total"] = max(len(graph), 1)

        def posttask(key, value, graph, task_state, worker_id):
            state["done"] += 1
            fraction = state["done"] / state["total"]
            self.update(FIT_SHARE + (1 - FIT_SHARE) * fraction, message)

        return Callback(start=start, posttask=posttask)


_status = _Status()
