"""Command-line progress: a tqdm bar on a terminal, one line per finished file, warnings.

The bar (``[2/5] cat.png |######    |  41%, counting colors``) is drawn by tqdm, and only when
stderr is a terminal, so that logs and pipes get just the finished lines. The core reports its
own progress through its ``progress(fraction, message)`` callback; the share of a file's bar
given to each stage is mapped by the core's :func:`~napari_kmeans_filter._progress.stage`, and
lazy (dask) writing reports finished tasks through the core's
:class:`~napari_kmeans_filter._progress.DaskProgress`. tqdm is imported only when a bar is drawn.
"""

from __future__ import annotations

import contextlib
import sys

from .errors import PROG

#: Share of a file's bar given to the core's work; the rest is for writing the outputs.
FIT_SHARE = 0.8


def _arrow() -> str:
    encoding = getattr(sys.stderr, "encoding", None) or "ascii"
    try:
        "→".encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return "->"  # e.g. a Windows console in cp1252
    return "→"


class Display:
    """What a run shows on stderr: the live bar, the finished lines and the warnings."""

    def __init__(self) -> None:
        self.enabled = True
        self.live = False
        self._bar = None
        self._number = self._total = 0
        self._name = self._message = ""

    def configure(self, *, enabled: bool) -> Display:
        """Show finished lines when ``enabled``; draw a bar when also on a terminal."""
        self.enabled = enabled
        self.live = enabled and sys.stderr.isatty()
        return self

    @property
    def arrow(self) -> str:
        """ "→" where stderr can print it, else "->"."""
        return _arrow()

    # -- the bar ---------------------------------------------------------------------------

    def begin(self, number: int, total: int, name: str) -> None:
        """Start file ``number`` of ``total``."""
        self._number, self._total, self._name = number, total, name
        if self.live and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                file=sys.stderr,
                leave=False,
                dynamic_ncols=True,
                bar_format="{desc} |{bar:24}| {percentage:3.0f}%{postfix}",
            )
        self.show(0.0, "reading")

    def show(self, fraction: float, message: str = "") -> None:
        """Draw the current file at ``fraction`` of its work (tqdm limits the redraws)."""
        if self._bar is None:
            return
        self._message = message or self._message
        self._bar.set_description_str(f"[{self._number}/{self._total}] {self._name}", refresh=False)
        self._bar.set_postfix_str(self._message, refresh=False)
        self._bar.update(self._number - 1 + fraction - self._bar.n)

    def core_progress(self):
        """The core's ``progress=`` callback for one file's work (None when no bar)."""
        if not self.live:
            return None
        from .._progress import stage

        report = stage(self.show, 0.0, FIT_SHARE)

        def progress(fraction: float, message: str) -> None:
            self._message = message
            report(fraction)

        return progress

    def writing(self, message: str):
        """A ``report(fraction)`` for the writing stage of a file (None when no bar)."""
        if not self.live:
            return None
        from .._progress import stage

        return stage(self.show, FIT_SHARE, 1.0, message)

    def dask_writing(self, message: str):
        """Context manager showing the fraction of finished dask tasks while writing."""
        if not self.live:
            return contextlib.nullcontext()
        from .._progress import DaskProgress

        return DaskProgress(self.writing(message))

    def clear(self) -> None:
        """Remove the bar (before a line is printed, or at the end)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    # -- lines -----------------------------------------------------------------------------

    def finish(self, line: str) -> None:
        """Print a finished line (unless quiet); the bar goes on below it."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """Print ``napari-kmeans-filter: message`` (unless quiet); safe from any thread."""
        if self.enabled:
            self._always(f"{PROG}: {message}")

    def warn(self, message: str) -> None:
        """Print ``napari-kmeans-filter: warning: message`` (also when quiet)."""
        self._always(f"{PROG}: warning: {message}")

    def error(self, message: str) -> None:
        """Print ``napari-kmeans-filter: error: message`` (also when quiet); the run goes on
        (``--keep-going``)."""
        self._always(f"{PROG}: error: {message}")

    def _always(self, line: str) -> None:
        if self._bar is not None:
            self._bar.write(line, file=sys.stderr)
        else:
            print(line, file=sys.stderr, flush=True)


#: The display of the current run (one process runs one command at a time).
DISPLAY = Display()


def start_numba(display: Display) -> None:
    """Before the first kernel of a command: numba starts without what the kernels never use
    (:func:`napari_kmeans_filter._jit.lean_start`), a first-ever run compiles in two
    processes when a core is idle (:func:`napari_kmeans_filter._jit.compile_alongside`), and
    on a terminal a first-ever run that compiles for more than a second says so once (like
    the bar, not in logs and pipes)."""
    from .. import _jit

    _jit.lean_start()
    _jit.compile_alongside()
    if display.live:
        _jit.on_slow_compile("cli", lambda: display.note(COMPILING))


#: Said once on a terminal when the kernels compile for more than a second (an empty numba
#: cache).
COMPILING = "compiling (first run only)"
