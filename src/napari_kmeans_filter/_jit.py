"""Compiled loops: numba, imported and compiled on first use.

The hot loops of the project (counting colours, Lloyd iterations, painting,
error diffusion) are written as plain Python functions over numpy arrays and
compiled by numba in nopython mode.  Importing numba costs ~0.45 s, so
``import napari_kmeans_filter`` does not: each kernel is compiled (or loaded
from numba's on-disk cache) the first time it is called, and
:func:`._warmup.warm_up` does all of it ahead of time (the napari widget calls
it in a background thread when it opens).  This module imports nothing of the
package, so every core module may use it.

Kernels release the GIL (``nogil``), so dask's threaded scheduler runs them on
every core.  A loop that several kernels share is a :func:`helper`: plain
Python until the first kernel compiles, then compiled too and inlined into
the kernels.

Two things a process that starts for one call (the command line) asks for:
:func:`lean_start` (numba's CPU target starts without the libraries the kernels
never use) and :func:`on_slow_compile` (a note when the first-ever run compiles
for longer than a second).
"""

from __future__ import annotations

import functools
import sys
import threading
import time

_lock = threading.Lock()
_KERNELS = []
_HELPERS = []
#: ``no_cfunc_wrapper``: kernels are called from Python only, never through a C function
#: pointer, so numba need not build (and cache) that second entry point: ~3-4 % less CPU
#: when compiling. Left out by :func:`_start` for a numba that does not know it.
_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy", "no_cfunc_wrapper": True}

#: Modules numba's CPU target imports when it first starts and the kernels never use:
#: ``numba.np.arraymath`` checks for a BLAS with ``import scipy.linalg.cython_blas``
#: (scipy.linalg, scipy's array API layer and numpy.f2py: ~0.2 s), and numba's typing of cffi
#: functions imports cffi and pycparser (~0.03 s). No kernel calls BLAS (no np.dot, no
#: linalg) nor a cffi function.
UNUSED_AT_START = ("scipy.linalg", "cffi")
_lean = False
_started = False
_slow_compile_callbacks: dict = {}


def helper(func):
    """Mark ``func`` as called from kernels: compiled with them, in its module.

    Kernels resolve the names they call when they compile, so before the
    first kernel compiles every helper's module-level name is rebound to its
    compiled version.  Helpers must be defined in the module of the kernels
    that call them (numba's cache checks that file's contents only).
    """
    _HELPERS.append(func)
    return func


def _compile_helpers(numba) -> None:
    for func in _HELPERS:
        if func.__globals__.get(func.__name__) is func:
            # Inlined at numba's IR level: a helper in a hot loop costs no call.
            func.__globals__[func.__name__] = numba.njit(inline="always", **_OPTIONS)(func)


def kernel(func):
    """Compile ``func`` with ``numba.njit(cache=True, nogil=True)`` when first called."""
    compiled = None

    @functools.wraps(func)
    def call(*args):
        nonlocal compiled
        if compiled is None:
            with _lock:
                if compiled is None:
                    import numba

                    _start(numba)
                    _compile_helpers(numba)
                    compiled = numba.njit(**_OPTIONS)(func)
        return compiled(*args)

    call.py_func = func
    _KERNELS.append(call)
    return call


# -- starting numba ---------------------------------------------------------------------------


def lean_start() -> None:
    """Let numba's CPU target start without :data:`UNUSED_AT_START` in this process.

    For a process that runs this package's kernels and little else numba-compiled (the
    command line): when the first kernel starts numba's CPU target, those modules cannot be
    imported *by that thread, while the target loads its registries*; afterwards everything
    imports as usual (``import scipy.linalg`` works, skimage's colour conversions too). In
    that process numba then has no BLAS for its own ``np.vdot``/``np.correlate`` (they use
    numba's plain loops; ``np.dot`` still finds scipy when compiled) and no cffi support.
    Does nothing if called after the first kernel, or when those modules are loaded already.
    """
    global _lean
    _lean = True


def on_slow_compile(key: str, callback, after: float = 1.0) -> None:
    """Call ``callback()`` once, from a timer thread, when numba has spent ``after`` seconds
    compiling kernels in this process (a first-ever run, or after an upgrade: loading them
    from numba's cache does not count). For the command line's and the widget's
    "compiling (first run only)" note. ``key`` names the caller: a second callback under the
    same key replaces the first, and each key is called at most once per process."""
    _slow_compile_callbacks[key] = (callback, after)
    if _started:
        _watch_compiles()


def _start(numba) -> None:
    """Once per process, before the first kernel: numba's target (lean if asked for) and
    the compile watch. Called with ``_lock`` held."""
    global _started
    if _started:
        return
    _started = True
    try:
        from numba.core.cpu import CPUTargetOptions

        known = hasattr(CPUTargetOptions, "no_cfunc_wrapper")
    except ImportError:
        known = False
    if not known:
        _OPTIONS.pop("no_cfunc_wrapper", None)
    if _lean:
        _start_target_without(UNUSED_AT_START)
    if _slow_compile_callbacks:
        _watch_compiles()


class _Unavailable:
    """A meta path finder: ``names`` (and their submodules) cannot be imported by one thread."""

    def __init__(self, names, thread: int) -> None:
        self.names = names
        self.thread = thread

    def find_spec(self, name, path=None, target=None):
        if threading.get_ident() == self.thread and any(
            name == blocked or name.startswith(blocked + ".") for blocked in self.names
        ):
            raise ModuleNotFoundError(f"{name} left out while numba starts", name=name)
        return None


def _start_target_without(names) -> None:
    names = tuple(name for name in names if name not in sys.modules)
    if not names:
        return
    finder = _Unavailable(names, threading.get_ident())
    sys.meta_path.insert(0, finder)
    try:
        # What numba's first compile or cache load does: load the target's registries.
        from numba.core.registry import cpu_target

        cpu_target.target_context.refresh()
    except Exception:
        # A numba that needs them after all: the first kernel starts it as usual.
        pass
    finally:
        sys.meta_path.remove(finder)


_watch = None
_lock_fired = threading.Lock()


def _watch_compiles() -> None:
    """Listen to numba's compile events (cache misses only); time the compiling."""
    global _watch
    with _lock_fired:
        if _watch is not None:
            return
        _watch = _make_watch()


def _is_ours(event_) -> bool:
    """Whether a numba compile event is of one of this package's kernels."""
    data = getattr(event_, "data", None) or {}
    function = getattr(data.get("dispatcher"), "py_func", None)
    return getattr(function, "__module__", "").startswith(__name__.rpartition(".")[0])


def _make_watch():
    from numba.core import event

    class CompileWatch(event.Listener):
        def __init__(self) -> None:
            self.depth = 0
            self.counting = False
            self.spent = 0.0
            self.since = 0.0
            self.timers = []
            self.lock = threading.Lock()

        def on_start(self, event_) -> None:
            with self.lock:
                self.depth += 1
                if self.depth > 1:
                    return
                # Only our kernels' compiles count: napari compiles its own (uncached)
                # colormap kernels in every session, and those are not a first run.
                self.counting = _is_ours(event_)
                if not self.counting:
                    return
                self.since = time.perf_counter()
                for key, after in _pending():
                    timer = threading.Timer(max(after - self.spent, 0.0), _fire, (key,))
                    timer.daemon = True
                    timer.start()
                    self.timers.append(timer)

        def on_end(self, event_) -> None:
            with self.lock:
                self.depth -= 1
                if self.depth > 0 or not self.counting:
                    return
                self.spent += time.perf_counter() - self.since
                for timer in self.timers:
                    timer.cancel()
                self.timers.clear()

    watch = CompileWatch()
    event.register("numba:compile", watch)
    return watch


_fired: set = set()


def _pending():
    waiting = _slow_compile_callbacks.items()
    return [(key, after) for key, (_, after) in waiting if key not in _fired]


def _fire(key) -> None:
    with _lock_fired:
        if key in _fired:
            return
        _fired.add(key)
    try:
        _slow_compile_callbacks[key][0]()
    except Exception:
        pass  # a note that cannot be shown must not stop the work
