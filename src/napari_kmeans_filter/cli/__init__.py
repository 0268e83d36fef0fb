"""Command-line entry point: ``napari-kmeans-filter`` / ``python -m napari_kmeans_filter``.

Two commands share the program name:

* ``napari-kmeans-filter INPUT... -k K [-o OUTPUT | --out-dir DIR]`` quantises images
  (or repaints them with ``--apply-palette``);
* ``napari-kmeans-filter demo [--out-dir DIR]`` writes the k-means gallery of the cat.

This module holds :func:`main`: the exit statuses and the one error line.
Everything that can be checked before work starts (files exist, outputs can be written,
nothing would be overwritten, the core accepts every parameter for every input) is checked for
the whole batch first. Every problem ends the run with one line
``napari-kmeans-filter: error: ...`` on stderr and exit status 2; set
``NAPARI_KMEANS_FILTER_DEBUG=1`` to see the traceback instead. Ctrl-C (exit 130), SIGTERM (143)
and SIGHUP (129) stop a run the same way: the file being written is removed and nothing is left
half-written.

The submodules, one topic each: :mod:`.parse` (options, from the parameter contract),
:mod:`.plan` (the batch checked before any work), :mod:`.run` (the core on each input, outputs
written), :mod:`.demo` (the gallery), :mod:`.progress` (what is shown on stderr),
:mod:`.errors` (the core's errors in the shell's words) and :mod:`.signals` (stop signals as
exceptions). They are imported only when needed, so that ``--help`` costs little.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from .errors import DEBUG_VARIABLE, PROG, CliError, error_line
from .signals import Stopped, signals_received, stop_signals_raise

DEMO_COMMAND = "demo"

EXIT_OK, EXIT_ERROR, EXIT_INTERRUPTED = 0, 2, 130
#: Names kept importable from ``napari_kmeans_filter.cli`` (docs/make_gallery.py and the tests
#: use them), each loaded from its submodule on first use.
_LAZY = {
    "build_parser": "parse",
    "build_demo_parser": "parse",
    "DEMO_K_VALUES": "parse",
    "DEMO_DITHER_K_VALUES": "parse",
    "DEMO_TARGETS_PSNR": "parse",
    "Job": "plan",
    "plan_jobs": "plan",
    "run": "run",
    "DemoImage": "demo",
    "demo_images": "demo",
    "demo_header": "demo",
    "demo_line": "demo",
    "run_demo": "demo",
    "write_demo_image": "demo",
    "contact_sheet": "demo",
    "contact_sheet_boxes": "demo",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status: 0 success, 2 error, 130 Ctrl-C,
    128 + the signal number for SIGTERM (143) and SIGHUP (129).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    """
    status = _main(list(sys.argv[1:] if argv is None else argv))
    if argv is None and _started_as_program():
        _end_process(status)
    return status


def _main(argv: list[str]) -> int:
    from .. import _jit  # imports nothing heavy (numba only when a kernel first runs)

    try:
        return _run_command(argv)
    finally:
        _jit.stop_alongside()  # a first-ever run's second compiling process


def _run_command(argv: list[str]) -> int:
    try:
        with stop_signals_raise():
            # 'demo' is a command only as the first word, so a file called 'demo' can
            # still be quantised as './demo'.
            if argv[:1] == [DEMO_COMMAND]:
                from .demo import run_demo
                from .parse import parse_demo_args

                return run_demo(parse_demo_args(argv[1:]))
            from .parse import parse_args
            from .run import run

            return run(parse_args(argv))
    except KeyboardInterrupt:
        return _interrupted()
    except Stopped as stopped:
        return _stopped_by(stopped.signum)
    except Exception as exc:
        if signals_received:
            # The signal's exception was lost in a callback from C (numba's compiler swallows
            # it and fails later): the run stopped because of the signal, not of the input.
            signum = signals_received[0]
            return _interrupted() if signum == signal.SIGINT else _stopped_by(signum)
        if os.environ.get(DEBUG_VARIABLE):
            raise
        _clear_display()
        print(f"{PROG}: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_ERROR


def _interrupted() -> int:
    _clear_display()
    print(f"{PROG}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


def _stopped_by(signum: int) -> int:
    _clear_display()
    print(f"{PROG}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
    return 128 + signum  # the shell's status for a process ended by a signal


def _started_as_program() -> bool:
    """Whether this process is the command itself: the console script or ``python -m``."""
    main_module = sys.modules.get("__main__")
    spec = getattr(main_module, "__spec__", None)
    if getattr(spec, "name", None) == f"{__package__.rpartition('.')[0]}.__main__":
        return True
    path = getattr(main_module, "__file__", None) or ""
    # The console script (on Windows, __main__.py inside the launcher napari-kmeans-filter.exe).
    return any(part.startswith(PROG) for part in Path(path).parts[-2:])


def _end_process(status: int) -> NoReturn:
    """End the process once the command is done, without the interpreter's teardown.

    Freeing numba's and LLVM's objects and every module at exit costs ~0.15 s of CPU (a sixth
    of a small file's whole call); every output is already complete and closed, the worker
    threads are idle (a kernel preloading thread may still be reading numba's cache: it
    writes nothing), and nothing registered at exit is ours. Only the streams are flushed.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (| head) or stream
            pass
    os._exit(status)


def _clear_display() -> None:
    progress = sys.modules.get(f"{__name__}.progress")
    if progress is not None:
        progress.DISPLAY.clear()


__all__ = ["DEBUG_VARIABLE", "EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "CliError", "main"]
