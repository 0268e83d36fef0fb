"""Command-line stop signals: Ctrl-C, SIGTERM and SIGHUP as exceptions while a run lasts.

A run stopped by one unwinds like an error, so every ``finally`` runs and the file being
written is removed (:func:`stop_signals_raise`); :func:`raise_lost_stop` stops a run whose
signal's exception a callback from C swallowed.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

#: Signals that stop a run like Ctrl-C does (SIGHUP: the terminal was closed).
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class Stopped(BaseException):
    """Raised in the main thread by a stop signal; unwinds like KeyboardInterrupt, so
    every ``finally`` runs and the temporary outputs are removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


@contextlib.contextmanager
def stop_signals_raise():
    """Turn SIGTERM and SIGHUP into :class:`Stopped` while the run lasts.

    Their default action kills the process at once, leaving the temporary file being
    written beside its destination.  Raised as an exception instead, they unwind
    through :func:`napari_kmeans_filter._io.atomic_output`, which removes it.  After the
    first of them or of Ctrl-C, the others are ignored until the run has ended: a second
    one would stop the cleanup half-way (``timeout -s INT`` sends Ctrl-C twice, to the
    command and to its group, and it left an unfinished label image in an OME-Zarr
    input); the cleanup lets the running chunk writes finish, then removes what they
    wrote (giving up after :data:`napari_kmeans_filter._files.GIVE_UP_S`).
    Only the main thread can install handlers; elsewhere (a caller's worker thread)
    nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def ignore_more(handled) -> None:
        for number in handled:  # a second signal must not interrupt the cleanup
            signal.signal(number, signal.SIG_IGN)

    def stop(signum, frame):
        signals_received.append(signum)
        ignore_more(previous)
        raise Stopped(signum)

    def interrupt(signum, frame):
        signals_received.append(signum)
        ignore_more(previous)
        raise KeyboardInterrupt

    def lost(report) -> None:
        # Raised inside a callback from C (numba's compiler: llvmlite's object cache), the
        # stop's exception is reported as "Exception ignored" and the run goes on.
        if isinstance(report.exc_value, (KeyboardInterrupt, Stopped)) and signals_received:
            signals_lost.append(signals_received[-1])  # see raise_lost_stop
        else:
            unraisable_hook(report)

    signals_received.clear()
    signals_lost.clear()
    previous = {number: signal.signal(number, stop) for number in STOP_SIGNALS}
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        # Python's own Ctrl-C, remembered: see the command line's _run_command.
        previous[signal.SIGINT] = signal.signal(signal.SIGINT, interrupt)
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, lost
    try:
        yield
    finally:
        sys.unraisablehook = unraisable_hook
        for number, handler in previous.items():
            signal.signal(number, handler)


def raise_lost_stop() -> None:
    """Stop now for a stop signal (or Ctrl-C) whose exception a callback from C swallowed.

    The run went on after it (when the compile it interrupted succeeded). Called in the
    main thread before a file's outputs are written, so that the command still stops with
    the signal's status and writes nothing more.
    """
    if signals_lost:
        signum = signals_lost[0]
        raise KeyboardInterrupt if signum == signal.SIGINT else Stopped(signum)


#: The stop signals (and Ctrl-C) received during the current run.
signals_received: list[int] = []
#: Those whose exception a callback from C swallowed (:func:`raise_lost_stop`).
signals_lost: list[int] = []
