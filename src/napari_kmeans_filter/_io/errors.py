"""Errors of image files, and what the decoding libraries say while they read them.

:class:`ImageIOError` carries a message fit for one line of stderr.  The libraries' own
talk (libtiff on the process's stderr, the tifffile logger, Pillow's warnings) is
collected while a file is read, to become a note or to complete an error message.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path


class ImageIOError(Exception):
    """A problem with an input or output file, with a message fit for one line of stderr."""


@contextlib.contextmanager
def _library_messages() -> Iterator[list[str]]:
    """Collect what the decoders say while a file is read, instead of printing it.

    libtiff (under Pillow) and other C libraries write warnings and errors straight to
    the process's stderr, tifffile logs them, Pillow warns: on a damaged file the user
    saw several lines of the libraries' talk before the one error line.  Here the
    stderr file descriptor is pointed at a temporary file for the duration (the
    command line reads its inputs in one thread), the "tifffile" logger and Python
    warnings are recorded, and all of it is returned as lines.
    """
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler, propagate = Collect(logging.WARNING), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    with contextlib.ExitStack() as stack:
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        sink = stack.enter_context(tempfile.TemporaryFile())
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all (a GUI process): nothing to collect
            saved = None
        else:
            os.dup2(sink.fileno(), 2)
        try:
            yield messages
        finally:
            if saved is not None:
                os.dup2(saved, 2)
                os.close(saved)
            logger.removeHandler(handler)
            logger.propagate = propagate
            sink.seek(0)
            text = sink.read().decode("utf-8", "replace")
            messages.extend(line.strip() for line in text.splitlines() if line.strip())
            # Warnings about the file (Pillow's UserWarnings, DecompressionBombWarning);
            # deprecations speak to developers, not about the file.
            about_the_file = [w for w in caught if issubclass(w.category, _FILE_WARNINGS)]
            messages.extend(str(warning.message) for warning in about_the_file)


#: Warning categories that speak about a file being read (not DeprecationWarning,
#: FutureWarning and the like, which speak to developers).
_FILE_WARNINGS = (UserWarning, RuntimeWarning)


def _as_notes(messages: list[str]) -> list[str]:
    """The decoders' messages as at most one note (the first, and how many more)."""
    if not messages:
        return []
    more = f" (and {len(messages) - 1} more)" if len(messages) > 1 else ""
    return [f"the decoder reported: {_shorten(messages[0])}{more}; the file may be damaged"]


def _with_messages(message: str, messages: list[str]) -> str:
    """An error message with the decoder's first message, which often says more."""
    if not messages or messages[0] in message:
        return message
    return f"{message} (decoder: {_shorten(messages[0])})"


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _missing(path: Path) -> str:
    """Why ``path`` cannot be found: a loop of symbolic links, a link to nothing, or no
    file at all (``Path.exists`` is False for all three)."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"cannot read {path}: a loop of symbolic links (they lead back to each other)"
        if os.path.islink(path):
            target = os.readlink(path)
            return f"cannot read {path}: a symbolic link to {target}, which does not exist"
    return f"no such file: {path}"


def _require_zarr(purpose: str):
    try:
        import zarr
    except ImportError:
        raise ImageIOError(f"{purpose} needs the 'zarr' package (pip install zarr)") from None
    return zarr


def _describe(exc: BaseException) -> str:
    """One-line description of an exception from a reader or writer."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
