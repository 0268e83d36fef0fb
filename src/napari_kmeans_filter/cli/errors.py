"""Command-line errors: every problem as one line in the shell's words (options, not parameters).

The core raises :class:`~napari_kmeans_filter._contract.InvalidParameterError` with its parts
kept (parameter, requirement, value received, hint); :func:`in_shell_words` is the one place
that turns such an error into a line naming the option a user typed, e.g.
``--apply-palette grey.json: must have as many colour channels as the image (3); got a palette
of 1 channel(s)``. :data:`OPTION_OF_PARAMETER` is the one map from the core's parameters to
the options that set them.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

PROG = "napari-kmeans-filter"
#: Environment variable that makes errors show their traceback (for bug reports).
DEBUG_VARIABLE = "NAPARI_KMEANS_FILTER_DEBUG"


class CliError(Exception):
    """A user-facing problem: printed as one line, exit status 2."""


#: The option that sets each parameter of the core, and the attribute of the parsed
#: arguments that holds what the user typed for it (None: no single value to show).
OPTION_OF_PARAMETER: dict[str, tuple[str, str | None]] = {
    "image": ("INPUT", None),
    "n_colors": ("-k/--n-colors", "n_colors"),
    "palette": ("--apply-palette", "apply_palette"),
    "fixed_colors": ("--fixed-color/--fixed-colors-from", None),
    "random_state": ("--seed", "seed"),
    "target_psnr": ("--target-psnr", "target_psnr"),
    "target_delta_e": ("--target-delta-e", "target_delta_e"),
    "mask": ("--mask", None),  # a pattern: the plan names the file of each input
    "speed": ("--speed", "speed"),
    "dither": ("--dither", "dither"),
    "color_space": ("--color-space", "color_space"),
    "channel_axis": ("--channel-axis", "channel_axis"),
    # Whether a channel is alpha is the file's word; it changes with the channel axis.
    "alpha": ("--channel-axis", "channel_axis"),
}

_NAMES = "|".join(sorted(OPTION_OF_PARAMETER, key=len, reverse=True))
# n_colors='auto', n_colors=8, channel_axis=None: the option with its value.
_ASSIGNMENT = re.compile(rf"\b({_NAMES})=('[^']*'|[\w+-]+(?:\.\d+)?)")
# 'target_psnr', or a bare target_psnr in a sentence, is the option; a bare "image" or "palette"
# is an English word.
_SNAKE_NAMES = "|".join(name for name in _NAMES.split("|") if "_" in name)
_NAME = re.compile(rf"'({_NAMES})'|\b({_SNAKE_NAMES})\b")


def option_of(parameter: str) -> str:
    """The option that sets ``parameter`` (``-k/--n-colors``), or the name itself."""
    return OPTION_OF_PARAMETER.get(parameter, (parameter, None))[0]


def _short(parameter: str) -> str:
    """The option as written in a sentence: its first spelling (``-k``)."""
    return option_of(parameter).split("/")[0]


def _value_text(value: Any) -> str:
    if value is None or value == "None":
        return "none"  # how --channel-axis spells Python's None
    if isinstance(value, float):
        return f"{value:g}"
    return str(value).strip("'")


def shell_words(text: str) -> str:
    """A sentence of the core with its parameter names replaced by their options."""
    text = _ASSIGNMENT.sub(
        lambda match: f"{_short(match.group(1))} {_value_text(match.group(2))}", text
    )
    text = _NAME.sub(lambda match: _short(match.group(1) or match.group(2)), text)
    # "None" is how Python leaves a parameter out; on the command line the option is left out.
    text = re.sub(r"\bbe None (unless|for)\b", r"be left out \1", text)
    return re.sub(r"\bNone\b", "'none'", text)


def _same(got: str, value: str | None) -> bool:
    """Whether the core's ``got`` only repeats the value already shown beside the option."""
    if value is None:
        return False
    got, value = got.strip("'\""), value.strip("'\"")
    if got == value:
        return True
    try:
        return float(got) == float(value)
    except ValueError:
        return False


def in_shell_words(
    error,
    args=None,
    *,
    where: str | Path | None = None,
    option: str | None = None,
    value: Any = None,
) -> str:
    """One line for an :class:`InvalidParameterError`, naming the option and what was typed.

    Parameters
    ----------
    error : InvalidParameterError
        Raised by the core (or by reading an option's text against the contract).
    args : argparse.Namespace, optional
        The parsed arguments: the value typed for the parameter's option is shown from them.
    where : str or Path, optional
        The input the error is about, put first.
    option, value : optional
        The option and value to name instead of the parameter's own (``--fixed-colors-from``
        for a palette file read as fixed colours).

    Returns
    -------
    str
        ``[INPUT: ]OPTION [VALUE]: must REQUIREMENT[; got GOT][. HINT]``.
    """
    parameter = error.parameter
    if option is None and parameter == "fixed_colors" and args is not None:
        option, value = _fixed_colors_option(args)
    if option is None:
        option = option_of(parameter)
        attribute = OPTION_OF_PARAMETER.get(parameter, (None, None))[1]
        if value is None and args is not None and attribute is not None:
            value = getattr(args, attribute, None)
    shown = None if value is None else shlex.quote(_value_text(value))
    line = f"{option} {shown}" if shown is not None else option
    if parameter == "image" and where is not None:
        line = ""  # the input is named first: "cat.zarr: must have at least 2 dimensions"
    line += f"{': ' if line else ''}must {shell_words(error.requirement)}"
    if error.got and not _same(error.got, shown):
        line += f"; got {shell_words(error.got)}"
    if error.hint:
        line += f". {shell_words(error.hint).rstrip('.')}"
    return f"{where}: {line}" if where is not None else line


def _fixed_colors_option(args) -> tuple[str | None, Any]:
    """The option(s) that gave the fixed colours, and the one value typed if there is one."""
    texts = getattr(args, "fixed_color", None) or []
    path = getattr(args, "fixed_colors_from", None)
    if path is not None:
        return ("--fixed-colors-from", path) if not texts else (None, None)
    if texts:
        return "--fixed-color", texts[0] if len(texts) == 1 else None
    return None, None


def one_line(exc: BaseException) -> str:
    """Any exception's message on one line, in the shell's words where it is the core's."""
    from .._contract import InvalidParameterError

    if isinstance(exc, InvalidParameterError):
        return in_shell_words(exc)
    if isinstance(exc, MemoryError):
        return "not enough memory; try a .zarr output or --chunked for a TIFF input"
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror[:1].lower()}{exc.strerror[1:]}{where}"
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def error_line(exc: Exception) -> str:
    """The one line of an error: its own words for the problems the program names (files,
    options, the core's parameters); a pointer to the traceback for anything else."""
    from .._io import ImageIOError
    from .._palette_files import PaletteFileError

    # ValueError/TypeError come from the core's checks, whose messages name the problem;
    # OSError from the file system (permissions, full disk).
    known = (CliError, ImageIOError, PaletteFileError, ValueError, TypeError, OSError, MemoryError)
    if isinstance(exc, known):
        return one_line(exc)
    # Lazy (.zarr, chunked TIFF) inputs are only read while quantising, so a corrupt chunk
    # surfaces here, from the codec, as any exception type.
    return (
        f"{type(exc).__name__}: {one_line(exc)} "
        f"(a corrupt or unreadable input?; {DEBUG_VARIABLE}=1 shows the traceback)"
    )


def input_error_line(path: Path, exc: Exception) -> str:
    """:func:`error_line` for a problem with one input, naming it first if it does not."""
    line = error_line(exc)
    return line if str(path) in line else f"{path}: {line}"
