"""Compiled loops: numba, imported and compiled on first use.

The hot loops of the project (counting colours, Lloyd iterations, painting,
error diffusion) are written as plain Python functions over numpy arrays and
compiled by numba in nopython mode.  Importing numba costs ~0.45 s, so
``import napari_kmeans_filter`` does not: each kernel is compiled (or loaded
from numba's on-disk cache) the first time it is called
(:func:`._warmup.warm_up` does all of it ahead of time).

Kernels release the GIL (``nogil``), so dask's threaded scheduler runs them on
every core.  A loop that several kernels share is a :func:`helper`: plain
Python until the first kernel that calls it compiles, then compiled too and
inlined into the kernels (the nearest-colour searches of :mod:`._nearest`
serve the fit's kernels there and the dithering kernels of :mod:`._paint`).
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import threading
import types

_lock = threading.Lock()
_KERNELS = []
_HELPERS = {}  # helper's Python function -> its compiled version (None until compiled)
_OPTIONS = {"cache": True, "nogil": True, "error_model": "numpy"}


def helper(func):
    """Mark ``func`` as called from kernels: compiled with them, and inlined.

    Kernels resolve the names they call when they compile, so before a kernel
    compiles every helper it names (directly or through other helpers) is
    rebound, in the calling module, to its compiled version.  A kernel may
    call helpers of another module: its on-disk cache is then keyed on that
    module's source too (see :func:`kernel`).
    """
    _HELPERS[func] = None
    return func


def _bind_helpers(numba, module_globals, files) -> None:
    """Rebind the helpers named in ``module_globals`` to compiled versions.

    Adds the source files of the helpers to ``files``; recurses into the
    helpers' own modules so that helpers calling helpers compile too.
    """
    for name, value in list(module_globals.items()):
        func = getattr(value, "py_func", value)
        if not isinstance(func, types.FunctionType) or func not in _HELPERS:
            continue
        if _HELPERS[func] is None:
            # Inlined at numba's IR level: a helper in a hot loop costs no call.
            _HELPERS[func] = numba.njit(inline="always", **_OPTIONS)(func)
            func.__globals__[func.__name__] = _HELPERS[func]
            _bind_helpers(numba, func.__globals__, files)
        module_globals[name] = _HELPERS[func]
        files.add(inspect.getfile(func))


@functools.cache
def _file_stamp(path: str) -> str:
    with open(path, "rb") as source:
        return hashlib.sha256(source.read()).hexdigest()


def _key_cache_on(compiled, files) -> None:
    """Make ``compiled``'s cache stale when any of ``files`` changes.

    numba keys a kernel's cache on its own source file only; a helper from
    another module inlined into it would otherwise be read back stale after
    that module changed.  This sets numba's index stamp (a private attribute,
    stable since numba 0.49); where it is missing, the kernel is not cached
    rather than risk stale code.
    """
    try:
        cache_file = compiled._cache._cache_file
        stamp = cache_file._source_stamp
    except AttributeError:
        from numba.core.caching import NullCache

        compiled._cache = NullCache()
        return
    cache_file._source_stamp = (stamp, *(_file_stamp(path) for path in sorted(files)))


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

                    files = set()
                    _bind_helpers(numba, func.__globals__, files)
                    files.discard(inspect.getfile(func))
                    ready = numba.njit(**_OPTIONS)(func)
                    if files:
                        _key_cache_on(ready, files)
                    compiled = ready
        return compiled(*args)

    call.py_func = func
    _KERNELS.append(call)
    return call
