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

Three things a process that starts for one call (the command line) asks for:
:func:`lean_start` (kernels load from numba's cache without its CPU target's
registries, and the target starts without the libraries the kernels never
use), :func:`on_slow_compile` (a note when the first-ever run compiles for
longer than a second) and :func:`compile_alongside` (on a first-ever run --
the first kernel is not in numba's cache -- with an idle core, a second process
compiles the fit's kernels at the same time: :func:`compile_claimed`, the end
of this module).  A library call never starts a process: notebooks, napari and
dask workers compile in their own process only.
"""

from __future__ import annotations

import contextlib
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


_helpers_lock = threading.Lock()


def _compile_helpers(numba) -> None:
    """Every helper's module-level name bound to its compiled version (once).

    Before a kernel compiles: it resolves the helpers it calls then. A process started
    lean (:func:`lean_start`) does this only on a kernel's cache miss (or for a kernel
    loaded without :func:`_lean_cache`): kernels loaded from the cache need no helper,
    and making the helpers' dispatchers (14 then) took 2-6 ms of a small file's command line.
    There a helper called from Python too (``_exact1d._int_cost``) runs as Python
    until then, with the same integer results."""
    with _helpers_lock:
        for func in _HELPERS:
            if func.__globals__.get(func.__name__) is func:
                # Inlined at numba's IR level: a helper in a hot loop costs no call.
                func.__globals__[func.__name__] = _njit(numba, func, inline="always")


class NoCacheWarning(RuntimeWarning):
    """numba cannot keep the compiled kernels on disk: a warning about the process (its
    ``NUMBA_CACHE_DIR``), whatever the data."""


def _njit(numba, func, **options):
    """``numba.njit(**_OPTIONS, **options)(func)``; where numba can keep no cache (no
    writable directory for it: ``NUMBA_CACHE_DIR``), the kernels compile without one, in
    every process, and a warning says so once. After :func:`lean_start`, a kernel loads
    from the cache through :func:`_lean_cache`."""
    try:
        compiled = numba.njit(**_OPTIONS, **options)(func)
    except RuntimeError as raised:
        if not _OPTIONS.get("cache") or "cannot cache" not in str(raised):
            raise
        error = raised
    else:
        # With lean loading, a kernel the cache cannot hold lean compiles as numba would:
        # its helpers first (a helper itself needs none).
        if not _lean:
            _robust_cache(compiled)
        elif not _lean_cache(compiled) and "inline" not in options:
            _compile_helpers(numba)
        return compiled
    import warnings

    _OPTIONS["cache"] = False
    if _lean and "inline" not in options:
        _compile_helpers(numba)
    warnings.warn(
        f"numba cannot keep its compiled kernels on disk ({error}); they are compiled again "
        "in every process (~6 s). Set NUMBA_CACHE_DIR to a writable directory.",
        NoCacheWarning,
        stacklevel=2,
    )
    return numba.njit(**_OPTIONS, **options)(func)


def kernel(func):
    """Compile ``func`` with ``numba.njit(cache=True, nogil=True)`` when first called."""
    compiled = None

    def dispatcher():
        nonlocal compiled
        if compiled is None:
            with _lock:
                if compiled is None:
                    import numba

                    _start(numba, func)
                    if not _lean:
                        _compile_helpers(numba)
                    if _alongside is not None:
                        _alongside.take_or_wait(func)
                    compiled = _njit(numba, func)
        return compiled

    @functools.wraps(func)
    def call(*args):
        if compiled is None:
            dispatcher()
        return compiled(*args)

    call.py_func = func
    call.dispatcher = dispatcher
    _KERNELS.append(call)
    return call


# -- starting numba ---------------------------------------------------------------------------


def lean_start() -> None:
    """Start numba lean in this process: kernels load from its cache without the CPU
    target's registries (:func:`_lean_cache`), and the target starts, when a kernel must
    be compiled, without :data:`UNUSED_AT_START`.

    For a process that runs this package's kernels and little else numba-compiled (the
    command line). When a kernel is compiled, those modules cannot be imported *by that
    thread, while the target loads its registries*; afterwards everything imports as usual
    (``import scipy.linalg`` works, skimage's colour conversions too). In that process
    numba then has no BLAS for its own ``np.vdot``/``np.correlate`` (they use numba's plain
    loops; ``np.dot`` still finds scipy when compiled) and no cffi support. Kernels loaded
    from the cache there cannot be called from other numba-compiled code
    (:func:`_rebuild_lean`). Other code that numba compiles later in the process finds the
    registries loaded as usual. Affects the kernels made after the call; leaves out nothing
    already imported.
    """
    global _lean
    _lean = True


def compile_alongside() -> None:
    """On a first-ever run of this process (the first kernel is not in numba's cache) with an
    idle core, start a second process that compiles the fit's kernels at the same time.

    For the command line, a process that runs one command and ends: there a first-ever run
    on the cat went from a median of 6.46 s to 4.36 s (load 1.1-1.3, 2 cores). Library calls
    do not ask for it (a background Python process would be a surprise in a notebook or in
    napari). Does nothing if called after the first kernel.
    """
    global COMPILE_ALONGSIDE
    COMPILE_ALONGSIDE = True


def preload(plan) -> None:
    """In a lean process (:func:`lean_start`), load ``plan``'s kernels from numba's cache:
    the first in the calling thread, the others in a background thread.

    ``plan`` holds ``(kernel, example_args)`` pairs in the order the caller will need them
    (the examples give the argument types); the first is the one it runs next, for long,
    on one core while another idles (the fit's single k-means++ start at large k: ~25 ms
    of seeding on a small photo at k = 256), and the others load meanwhile (3-5 ms each)
    instead of one after the other as it reaches them.  The first is loaded before the
    thread starts, so that it never waits behind the others.  A kernel the caller reaches
    first it loads itself, or waits for (numba loads each signature once, under its
    compiler lock): the results never depend on which thread loaded what.

    The background thread only loads: at the first kernel missing from the cache it stops,
    and the caller compiles that one and the rest as usual (a first-ever run, a changed
    source, a signature never cached).  Nothing in a library process (kernels load once
    per process there), on a first-ever run with the second compiling process
    (:func:`compile_alongside`), or before the first kernel; a thread that cannot start
    is no error.
    """
    if not (_lean and _started and _alongside is None) or not plan:
        return
    import numba

    def types(args):
        return tuple(numba.typeof(arg) for arg in args)

    first, args = plan[0]
    first.dispatcher().compile(types(args))  # what its call would do, now

    def load() -> None:
        _preloading.active = True
        try:
            for call, args in plan[1:]:
                compiled = call.dispatcher()
                if not getattr(compiled._cache, "lean", False):
                    return  # a cache this cannot tell a miss of: the caller loads it
                compiled.compile(types(args))
        except BaseException:  # a miss (_NotCached), or an error the caller's own load raises
            return

    try:
        threading.Thread(target=load, name="napari-kmeans-filter-preload", daemon=True).start()
    except RuntimeError:  # no thread to spare: the caller loads them as it goes
        pass


#: Set in :func:`preload`'s thread: a kernel missing from the cache is not compiled there.
_preloading = threading.local()


class _NotCached(Exception):
    """A kernel :func:`preload`'s thread found missing from numba's cache."""


def on_slow_compile(key: str, callback, after: float = 1.0) -> None:
    """Call ``callback()`` once, from a timer thread, when numba has spent ``after`` seconds
    compiling kernels in this process (a first-ever run, or after an upgrade: loading them
    from numba's cache does not count). For the command line's and the widget's
    "compiling (first run only)" note. ``key`` names the caller: a second callback under the
    same key replaces the first, and each key is called at most once per process."""
    _slow_compile_callbacks[key] = (callback, after)
    if _started:
        _watch_compiles()


def _start(numba, func) -> None:
    """Once per process, before the first kernel (``func``): numba's target (lean if asked
    for), the compile watch, and on a first-ever run a second process compiling alongside.
    Called with ``_lock`` held."""
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
        _type_arrays_without_numpy_ma()
    if _slow_compile_callbacks:
        _watch_compiles()
    if _alongside_wanted(numba, func):
        _start_alongside()


def _type_arrays_without_numpy_ma() -> None:
    """In a lean process, type a kernel's plain ndarray arguments without importing numpy.ma.

    numba types an ndarray argument (once per array type a process meets) only after
    ``isinstance(value, np.ma.MaskedArray)``, and numpy imports ``numpy.ma`` on that first
    access: 23-29 ms (``python -X importtime -c "import numpy, numba; import numpy.ma"``),
    a tenth of a small file's command above the floor, for a check that cannot succeed
    while ``numpy.ma`` is not imported (no masked array exists then). So arrays of type
    exactly ``np.ndarray`` get numba's own type (its ``from_dtype``, ``map_layout`` and
    read-only flag, as its ``_typeof_ndarray``) while ``numpy.ma`` is not imported;
    anything else, or a numba without those parts, goes to numba's function.
    """
    import sys

    import numpy as np

    try:
        from numba.core import types
        from numba.core.typing.typeof import typeof_impl
        from numba.np import numpy_support

        numba_typeof = typeof_impl.dispatch(np.ndarray)
        from_dtype, map_layout, array_type = (
            numpy_support.from_dtype,
            numpy_support.map_layout,
            types.Array,
        )
    except (ImportError, AttributeError):
        return

    def typeof_plain_ndarray(value, context):
        if type(value) is not np.ndarray or "numpy.ma" in sys.modules:
            return numba_typeof(value, context)
        try:
            dtype = from_dtype(value.dtype)
        except Exception:  # numba's own errors for an unsupported dtype
            return numba_typeof(value, context)
        return array_type(dtype, value.ndim, map_layout(value), readonly=not value.flags.writeable)

    typeof_impl.register(np.ndarray, typeof_plain_ndarray)


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


def _lean_cache(compiled) -> bool:
    """Let ``compiled`` (a numba dispatcher) load from numba's cache without first loading
    the CPU target's registries; False if its cache is not one this knows.

    numba refreshes its target before every cache load. The first refresh imports and
    installs the typing and lowering registries of everything numba can compile (~70
    modules), and each later one installs them again: 0.1-0.2 s of a small file's command
    line. Code loaded from the cache needs none of it, nor numba's extensions, only
    numba's runtime (NRT: the allocation functions it links to). So here a load starts the
    runtime and loads; a miss (the kernel must be compiled) first loads the extensions and
    refreshes the target as numba would, without :data:`UNUSED_AT_START`. A numba whose
    cache is not the one this was written for keeps its own loading.
    """
    cache = getattr(compiled, "_cache", None)
    if _known_cache(cache):
        cache.__class__ = _lean_cache_class()
        if hasattr(compiled, "_compilation_chain_init_hook"):
            # numba loads every installed numba extension (``numba_extensions`` entry
            # points) before a dispatcher's first compile or cache load: reading every
            # installed distribution's metadata and importing the extensions, 39-42 ms with
            # pydata/sparse's (a dask-ml dependency). Code from the cache needs none of
            # them; a miss loads them (LeanCache) before numba compiles. Other dispatchers
            # of the process keep numba's hook.
            compiled._compilation_chain_init_hook = _extensions_on_miss
        return True
    return False


_CACHE_PARTS = (
    "_guard_against_spurious_io_errors",
    "_cache_file",
    "_enabled",
    "_index_key",
    "_impl",
    "_cache_path",
)


def _known_cache(cache) -> bool:
    """Whether ``cache`` is numba's cache of a function as this module knows it (what
    :func:`_load_cached` reads of it)."""
    from numba.core import caching

    return (
        type(cache) is caching.FunctionCache
        and all(hasattr(cache, name) for name in _CACHE_PARTS)
        and all(
            hasattr(cache._cache_file, name)
            for name in ("_load_index", "_load_data", "_index_path", "_data_path")
        )
    )


def _robust_cache(compiled) -> None:
    """Let ``compiled`` (a numba dispatcher) read a damaged cache file as a miss
    (:func:`_load_cached`), where its cache is one this knows."""
    cache = getattr(compiled, "_cache", None)
    if _known_cache(cache):
        cache.__class__ = _robust_cache_class()


def _load_cached(cache, sig, target_context, lean: bool = False):
    """``cache``'s overload of ``sig``, loaded as numba's ``_load_overload`` loads it, or
    None (a miss) where its index or data file cannot be read back (torn, or not numba's:
    numba raised from deep inside, on every later call too). An unreadable index is
    removed, an unreadable data file too (the index keeps naming it, so the kernel compiles
    and is written to the same file); the other entries stay. Only reading the files is
    guarded: numba rebuilding what it read raises as numba would. (Object code damaged
    inside a file that reads back is beyond this: LLVM aborts on it, as without this.)
    ``lean``: rebuilt by :func:`_rebuild_lean`."""
    if not cache._enabled:
        return None
    key = cache._index_key(sig, target_context.codegen())
    files = cache._cache_file
    with cache._guard_against_spurious_io_errors():
        try:
            overloads = files._load_index()
        except OSError:
            raise  # (numba takes a missing index as empty)
        except Exception:
            _remove_quietly(files._index_path)
            return None
        name = overloads.get(key)
        if name is None:
            return None
        try:
            data = files._load_data(name)
        except OSError:
            return None  # a file gone while the index names it: numba's own miss
        except Exception:
            _remove_quietly(files._data_path(name))
            return None
    if lean:
        return _rebuild_lean(cache, target_context, data)
    return cache._impl.rebuild(target_context, data)


#: What :func:`_rebuild_lean` uses of numba's code libraries (as read in numba 0.68).
_LIBRARY_PARTS = ("enable_object_caching", "_set_compiled_object", "_finalize_final_module")


def _rebuild_lean(cache, target_context, data):
    """What ``cache._impl.rebuild(target_context, data)`` returns, the kernel's code library
    made from its object code alone.

    numba also parses the library's LLVM bitcode kept beside the object code (kept for
    linking other code against it) and walks its functions to note every symbol it defines
    (for later lookups by name): most of a kernel's load. A kernel's library is never
    linked against, and the only names looked up in it are its entry points, so here the
    object code is loaded as numba loads it and those two names are noted: a small file's
    12 kernels load in 23 ms instead of 43 (``benchmarks/bench_cli.py``'s kernel count);
    whole commands on four small photos (``--ref-src``, medians of 15) took 35-61 ms less
    at k = 16, and -32 to +39 ms at k = 256, where the fit's kernels already load on the
    idle core (:func:`preload`). Data not in the form numba 0.68 writes, or a numba
    without those parts, is rebuilt by numba. What this gives up: other numba-compiled
    code cannot call a kernel loaded so (its library keeps no module to link against:
    numba raises "library unfit for linking"); the package's kernels are called from
    Python only.
    """
    codegen = target_context.codegen()
    try:
        libdata, fndesc = data[0], data[1]
        name, kind, (object_code, _bitcode) = libdata
        names = {fndesc.llvm_cpython_wrapper_name, fndesc.llvm_func_name}
        defined = codegen._engine._defined_symbols
        library_type = codegen._library_class
    except Exception:
        return cache._impl.rebuild(target_context, data)
    if (
        kind != "object"
        or not isinstance(defined, set)
        or not all(hasattr(library_type, part) for part in _LIBRARY_PARTS)
    ):
        return cache._impl.rebuild(target_context, data)

    def unserialize_library(state):
        library = codegen.create_library(name)
        library.enable_object_caching()
        library._set_compiled_object(object_code)
        library._finalize_final_module()  # loads the object code, as numba's does
        defined.update(names)
        return library

    # numba holds its compiler lock while it loads: no other thread rebuilds meanwhile.
    codegen.unserialize_library = unserialize_library
    try:
        return cache._impl.rebuild(target_context, data)
    finally:
        del codegen.unserialize_library


def _remove_quietly(path: str) -> None:
    """Remove the file ``path`` if it can be (``_files.remove_output`` serves the package;
    this module imports nothing of it)."""
    import os

    with contextlib.suppress(OSError):
        os.remove(path)


@functools.cache
def _robust_cache_class():
    from numba.core import caching

    class RobustCache(caching.FunctionCache):
        def load_overload(self, sig, target_context):
            target_context.refresh()  # what numba does first
            return _load_cached(self, sig, target_context)

    return RobustCache


@functools.cache
def _lean_cache_class():
    from numba.core import caching

    class LeanCache(caching.FunctionCache):
        lean = True  # what preload() asks

        def load_overload(self, sig, target_context):
            _start_runtime(target_context, self._cache_path)
            loaded = _load_cached(self, sig, target_context, lean=True)
            if loaded is None:
                if getattr(_preloading, "active", False):
                    raise _NotCached  # preload() only loads: the caller compiles it
                import numba
                from numba.core import entrypoints

                entrypoints.init_all()  # what numba does before any compile (once)
                _start_target_without(UNUSED_AT_START)
                _compile_helpers(numba)  # the kernel about to compile calls them
            return loaded

    return LeanCache


def _start_runtime(target_context, directory: str) -> None:
    """Start numba's runtime (NRT) for a lean process, its compiled functions loaded from
    ``directory`` (numba's cache of the kernels) where an earlier process left them.

    numba compiles the runtime's functions (reference counting, allocation) with LLVM in
    every process before the first kernel, cached or not: 22 ms of a small file's command
    line (of a first kernel load of 31 ms), against 3 ms to load them as object code, as
    numba loads a cached kernel. The file is named by numba's, llvmlite's and Python's
    versions and the CPU numba compiles for, as numba's own cache index is, and numba's
    optimisation level; it holds a SHA-256 of what it keeps (:func:`_read_runtime`).
    Anything unexpected (another numba, a file that cannot be read or written) leaves it
    to numba. (Written here, not by the package's atomic writers: this module imports
    nothing of the package.)
    """
    from numba.core.runtime import nrt

    if getattr(nrt.rtsys, "_init", False):
        return
    try:
        _runtime_from_cache(nrt.rtsys, target_context, directory)
    except Exception:
        pass  # numba starts its runtime itself (it did not start here)
    nrt.rtsys.initialize(target_context)  # nothing to do once started


def _runtime_from_cache(rtsys, target_context, directory: str) -> None:
    """:func:`_start_runtime`'s work: what numba's ``rtsys.initialize`` does (as read in
    numba 0.68), with the compiled functions kept in ``directory``. numba's runtime
    debugging (``NUMBA_DEBUG_NRT``, which changes the functions) is left to numba."""
    import hashlib
    import os
    import pickle
    import uuid

    import llvmlite
    import numba
    from llvmlite import binding as ll
    from numba.core import config
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.runtime import _nrt_python, nrtdynmod

    if getattr(config, "DEBUG_NRT", True) or not hasattr(nrtdynmod, "create_nrt_module"):
        return
    codegen = target_context.codegen()
    key = (numba.__version__, llvmlite.__version__, sys.version, codegen.magic_tuple())
    digest = hashlib.sha256(repr((*key, config.OPT)).encode()).hexdigest()
    path = os.path.join(directory, f"numba_runtime-{digest[:16]}.nbc")
    with global_compiler_lock:
        if rtsys._init:
            return
        if config.NRT_STATS:
            _nrt_python.memsys_enable_stats()
        for py_name, address in _nrt_python.c_helpers.items():
            ll.add_symbol(py_name if py_name.startswith("_") else "NRT_" + py_name, address)
        library = None
        state = _read_runtime(path)
        if state is not None:
            with contextlib.suppress(Exception):  # (its bitcode read before anything loads)
                library = codegen.unserialize_library(state)
        if library is None:
            ir_module, library = nrtdynmod.create_nrt_module(target_context)
            library.enable_object_caching()
            library.add_ir_module(ir_module)
            library.finalize()
            temporary = f"{path}.{uuid.uuid4().hex}.tmp"
            try:  # beside the kernels, written whole or not at all
                payload = pickle.dumps(library.serialize_using_object_code(), protocol=-1)
                with open(temporary, "wb") as out:
                    pickle.dump((hashlib.sha256(payload).digest(), payload), out, protocol=-1)
                os.replace(temporary, path)
            except BaseException as raised:
                _remove_quietly(temporary)
                if not isinstance(raised, Exception):
                    raise  # (a stop: the runtime is started all the same by numba)
        rtsys._library = library
        rtsys._init = True


def _read_runtime(path: str):
    """The state :func:`_runtime_from_cache` wrote to ``path``, or None: none yet, or a file
    whose contents are not those it wrote (torn, damaged, foreign; a SHA-256 of the state
    is kept with it, so that LLVM never loads damaged object code)."""
    import hashlib
    import pickle

    try:
        with open(path, "rb") as cached:
            digest, payload = pickle.load(cached)
        if hashlib.sha256(payload).digest() != digest:
            return None
        return pickle.loads(payload)
    except Exception:
        return None


def _extensions_on_miss() -> None:
    """A lean kernel's compilation hook: numba's extensions load on a cache miss only."""


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


# -- a first-ever run: compiling in two processes at once ---------------------------------------
#
# Compiling is single-threaded (numba holds one lock for it), so on a first-ever run the
# process that needs the kernels starts a second one that compiles the fit's kernels from the
# last one it needs backwards, into numba's cache, while this one goes forwards. Each kernel
# is claimed (a file created exclusively in a directory both know) by the first process to
# reach it: this process waits for a kernel the other one claimed, then loads it from the
# cache; the other one stops at the first kernel this one claimed. A kernel the other
# process could not compile (or compiled for other argument types) is compiled here as
# usual: the result never depends on which process compiled what.

#: Whether a process that meets an empty cache starts the second compiling process (set by
#: :func:`compile_alongside`).
COMPILE_ALONGSIDE = False
#: Seconds this process waits for a kernel the other one compiles before doing it itself.
ALONGSIDE_PATIENCE = 2.0
#: Environment variables naming the claims directory and the process that started the second
#: process, in the second process.
_CLAIMS_ENV = "NAPARI_KMEANS_FILTER_CLAIMS"
_PARENT_ENV = "NAPARI_KMEANS_FILTER_CLAIMS_PARENT"
_alongside = None


def stop_alongside() -> None:
    """Stop the second compiling process, if this process started one, and remove its
    claims directory. For the command line as it ends: it ends with ``os._exit``, which runs
    no exit handler, and a stopped command must not leave the other process compiling."""
    if _alongside is not None:
        _alongside.stop()


def _key(func) -> str:
    return f"{func.__module__}.{func.__qualname__}"


def _claim(directory: str, func) -> bool:
    """Whether this process is the first to claim ``func`` (its compile is then ours)."""
    import os

    try:
        os.close(os.open(os.path.join(directory, _key(func)), os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    except OSError:
        pass  # the other process has ended and removed the directory: compile here
    return True


class _Alongside:
    """The second compiling process, seen from the process that started it."""

    def __init__(self, process, directory: str) -> None:
        self.process = process
        self.directory = directory

    def take_or_wait(self, func) -> None:
        """Claim ``func`` for this process or wait until the other one has compiled it.

        The other process compiles a kernel in 0.1-1.5 s of CPU time; if it has not
        finished one within :data:`ALONGSIDE_PATIENCE` s (a machine busy with other work
        starves it), it is stopped and this process compiles everything from then on."""
        import os

        if self.process.poll() is not None or _claim(self.directory, func):
            return
        done = os.path.join(self.directory, _key(func) + ".done")
        deadline = time.perf_counter() + ALONGSIDE_PATIENCE
        while not os.path.exists(done) and self.process.poll() is None:
            if time.perf_counter() > deadline:
                self.stop()
                return
            time.sleep(0.002)

    def stop(self) -> None:
        import shutil

        if self.process.poll() is None:
            self.process.terminate()  # numba writes cache files atomically (os.replace)
            try:
                self.process.wait(5)
            except Exception:
                pass
        shutil.rmtree(self.directory, ignore_errors=True)


def _alongside_wanted(numba, func) -> bool:
    """A first-ever run (``func``, the first kernel, is not in numba's cache) of a main
    process with a second core, a Python to start, and not the second process itself."""
    import os

    if not COMPILE_ALONGSIDE or os.environ.get(_CLAIMS_ENV) or getattr(sys, "frozen", False):
        return False
    # dask's worker processes and the like: their parent decides. A process multiprocessing
    # started has imported it (importing it here to ask cost 1-8 ms of every command).
    multiprocessing = sys.modules.get("multiprocessing")
    if not sys.executable or (multiprocessing and multiprocessing.parent_process() is not None):
        return False
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # A second process only helps on a core nothing else uses. First-ever command-line runs
    # on the cat, 2 cores, alternating with one process: at load 1.0-1.3 (one other busy
    # process, or these runs themselves) the wall time went 6.6-7.2 s -> 4.8-6.2 s (4 runs
    # each); at load 4-5 this process's own CPU went 6.5-7.1 s -> 4.8-5.0 s (the other one
    # compiled half the kernels) but the wall 8.4-11.7 s -> 12.2-14.4 s, the two sharing
    # busy cores.
    if cores < 2 or (hasattr(os, "getloadavg") and os.getloadavg()[0] > cores - 0.5):
        return False
    try:
        cached = numba.njit(**_OPTIONS)(func)._cache._cache_file._load_index()
    except Exception:
        return False  # a numba whose cache this cannot read: no second process
    return not cached


def _start_alongside() -> None:
    """Start ``python -m <package>._warmup`` on the fit's kernels; stopped at exit."""
    import atexit
    import os
    import tempfile

    global _alongside
    package = __name__.rpartition(".")[0]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with _stop_signals_held():
        # A stop signal between the directory's creation and the process's handle being
        # kept left either behind, found under load: it is handled once both are kept.
        directory = tempfile.mkdtemp(prefix="nkf-claims-")
        process = _popen_warmup(package, root, directory)
        if process is None:
            os.rmdir(directory)
            return
        _alongside = _Alongside(process, directory)
        atexit.register(_alongside.stop)


def _popen_warmup(package: str, root: str, directory: str):
    """``python -m <package>._warmup`` with the claims ``directory``; None if it cannot start."""
    import os
    import subprocess

    env = dict(os.environ)
    if root not in _site_dirs():
        # The same package files as this process (numba's cache is per source file), for a
        # source tree put on sys.path at run time; a site directory is there already (and
        # on PYTHONPATH it would come before the standard library).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    env[_CLAIMS_ENV] = directory
    env[_PARENT_ENV] = str(os.getpid())
    try:
        return subprocess.Popen(
            [sys.executable, "-m", f"{package}._warmup"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    except OSError:
        return None


@contextlib.contextmanager
def _stop_signals_held():
    """Hold SIGINT and SIGTERM back while the block runs (in the main thread, where
    Python runs signal handlers), then deliver them to their handlers."""
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler not in (None, signal.SIG_IGN):
            previous[signum] = signal.signal(signum, lambda number, frame: held.append(number))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held:
            os.kill(os.getpid(), signum)


def _site_dirs() -> list:
    import os
    import site

    try:
        dirs = [*site.getsitepackages(), site.getusersitepackages()]
    except AttributeError:  # a virtualenv's old site module
        return []
    return [os.path.abspath(path) for path in dirs]


def compile_claimed(plan) -> None:
    """In the second process: compile ``plan`` (``(kernel, example_args)`` pairs, in the
    order the main process needs them) from the last, until a kernel the main process
    claimed. The example arguments give the argument types (as ``numba.typeof``).

    Stops after the kernel it is compiling when the main process has ended (the main
    process stops this one as it ends, :func:`stop_alongside`, unless it was killed). The
    claims directory is removed by ``python -m <package>._warmup`` as it ends."""
    import os

    import numba

    directory = os.environ[_CLAIMS_ENV]
    parent = int(os.environ[_PARENT_ENV])
    for call, args in reversed(plan):
        # An ended parent leaves this process to another one (init, a subreaper).
        if os.getppid() != parent or not _claim(directory, call.py_func):
            return
        try:
            call.dispatcher().compile(tuple(numba.typeof(arg) for arg in args))
        finally:
            with open(os.path.join(directory, _key(call.py_func) + ".done"), "w"):
                pass
