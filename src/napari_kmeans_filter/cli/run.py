"""Command-line running: each planned input through the core, then its outputs written whole.

:func:`run` reads the palette of ``--apply-palette``, plans the batch (:mod:`.plan`), then for
each input calls :func:`~napari_kmeans_filter.quantize` or
:func:`~napari_kmeans_filter.apply_palette` and writes the image, labels, palette and statistics
together: all of them or none (each under a temporary name until complete).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from .. import _io, _jit
from .._contract import InvalidParameterError
from .errors import CliError, in_shell_words, input_error_line, shell_words
from .plan import Job, input_name, plan_jobs, prepare_directories
from .progress import DISPLAY, FIT_SHARE, start_numba
from .signals import raise_lost_stop

EXIT_OK, EXIT_ERROR = 0, 2


def load_palette(path):
    """The palette of ``--apply-palette``; a bad file is one error line."""
    from .._palette_files import PaletteFileError, read_palette

    try:
        return read_palette(path)
    except PaletteFileError as exc:
        raise CliError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    """Quantise (or repaint) every input as the parsed ``args`` say.

    With ``--keep-going`` an input that cannot be read, is refused or fails while being
    processed is reported on one line as it fails and the others are processed; the run ends
    with ``N of M files failed`` and exit status 2. Without it the first such problem ends
    the run (before any work when it can be found by checking the batch).
    """
    palette = load_palette(args.apply_palette) if args.apply_palette is not None else None
    display = DISPLAY.configure(enabled=not args.quiet)
    start_numba(display)
    failures: list[Path] = []

    def failed(path: Path, exc: Exception) -> None:
        failures.append(path)
        display.error(input_error_line(path, exc))

    keep_going = getattr(args, "keep_going", False)
    jobs = plan_jobs(args, palette, failed if keep_going else None)
    prepare_directories(
        [
            path
            for job in jobs
            # An OME-NGFF label image goes inside the input: nothing to prepare there.
            for path in (job.output, None if job.ome_labels else job.labels, job.palette, job.stats)
        ]
    )
    started = time.perf_counter()
    arrow = display.arrow
    done = 0
    with _local_dask(any(job.source.lazy for job in jobs)):
        for job in jobs:
            try:
                _run_job(job, args, palette, job.number, len(args.inputs), arrow)
            except Exception as exc:
                if not keep_going:
                    # The first problem ends the run; its line names the file, as with
                    # --keep-going (in a batch, which one failed).
                    raise CliError(input_error_line(job.source.path, exc)) from exc
                display.clear()
                failed(job.source.path, exc)
                continue
            done += 1
    if done > 1:
        display.finish(f"{done} images in {time.perf_counter() - started:.1f} s")
    display.clear()
    if failures:
        display.error(f"{len(failures)} of {len(args.inputs)} files failed")
        return EXIT_ERROR
    return EXIT_OK


@contextlib.contextmanager
def _local_dask(lazy: bool):
    """For lazy inputs: dask's threaded scheduler, named, on threads of the run's own. A
    command line starts no dask.distributed Client, and without a scheduler named dask
    imports distributed at the first compute to look for one (0.4-0.5 s of a run). A run
    stopped while writing stops those threads before removing what they wrote."""
    if not lazy:
        yield
        return
    import dask
    import dask.threaded
    from dask.system import CPU_COUNT

    from .._files import writer_threads

    with writer_threads(CPU_COUNT) as pool:
        with dask.config.set(scheduler=dask.threaded.get, pool=pool):
            yield


def _run_job(job: Job, args, palette, number: int, total: int, arrow: str) -> None:
    """Process one planned input and write its outputs, printing its finished line."""
    display = DISPLAY
    name = input_name(job.source.path)
    display.begin(number, total, name)
    for note in getattr(job.source, "notes", ()):
        display.warn(f"{job.source.path}: {note}")
    job_started = time.perf_counter()
    with job.source:
        result = _process(job, args, palette, display.core_progress())
        raise_lost_stop()  # a Ctrl-C that numba's compiler swallowed: nothing written
        display.show(FIT_SHARE, "writing")
        _write_outputs(job, result, args)
    elapsed = time.perf_counter() - job_started
    display.finish(
        f"[{number}/{total}] {name} {arrow} {_written_name(job)}  "
        f"{result.n_input_colors}{arrow}{_palette_text(result.palette)}"
        f"{' (auto)' if args.n_colors == 'auto' else ''}  "
        f"{_quality_text(result, args)}  {elapsed:.2f} s"
    )


def _written_name(job: Job) -> str:
    """The file named in the finished line: the image, or with --no-image what is written."""
    if job.output is not None:
        return job.output.name
    if job.ome_labels is not None:
        return f"labels/{job.ome_labels}"
    return str(next(path for path in (job.labels, job.palette, job.stats) if path is not None))


def _process(job: Job, args, palette, progress):
    """Run the core on one input; its warnings become warning lines naming the input."""
    from .. import apply_palette, quantize

    image = job.source.load()
    # Options left out keep the core's own defaults.
    optional = {
        name: value
        for name, value in (
            ("dither", args.dither),
            ("speed", getattr(args, "speed", None)),
            ("color_space", getattr(args, "color_space", None)),
            ("random_state", getattr(args, "seed", None)),
        )
        if value is not None
    }
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            if palette is not None:
                result = apply_palette(
                    image,
                    palette,
                    channel_axis=job.channel_axis,
                    alpha=job.alpha,
                    progress=progress,
                    **optional,
                )
            else:
                result = quantize(
                    image,
                    args.n_colors,
                    channel_axis=job.channel_axis,
                    alpha=job.alpha,
                    mask=job.mask,
                    fixed_colors=job.fixed_colors,
                    target_psnr=args.target_psnr,
                    target_delta_e=args.target_delta_e,
                    progress=progress,
                    **optional,
                )
    except InvalidParameterError as error:
        # Checks that need the pixels (colours in a float image's units) come from the core
        # only now; said as the plan's are.
        raise CliError(in_shell_words(error, args, where=job.source.path)) from None
    for warning in caught:
        text = shell_words(" ".join(str(warning.message).split()))
        # About this process (numba's cache directory), not about the input.
        about_process = issubclass(warning.category, _jit.NoCacheWarning)
        DISPLAY.warn(text if about_process else f"{job.source.path}: {text}")
    return result


def _quality_text(result, args) -> str:
    """PSNR of the written image; with -k auto and --target-delta-e also the mean
    CIEDE2000, and with --dither the figures of the fit before dithering it reached."""
    text = format_psnr(result.psnr)
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


def _write_outputs(job: Job, result, args) -> None:
    """Write image, labels, palette and statistics of one job: all of them or none."""
    from .._palette_files import palette_json, stats_csv

    icc_profile = getattr(job.source, "icc_profile", None)
    ome_image = getattr(job.source, "ome_zarr", None)
    # From an OME-Zarr image a .zarr output is a new OME-Zarr image like it (axes, pyramid,
    # storage chunks, zarr format): written by _omezarr, not as a plain array.
    image_format = None if job.output is None else _io.output_format(job.output)
    ome_output = ome_image is not None and image_format == "zarr"
    outputs = {}
    if job.output is not None and not ome_output:
        outputs["image"] = (job.output, result.image, job.channel_axis, job.alpha)
    if job.labels is not None and job.ome_labels is None:
        outputs["labels"] = (job.labels, result.labels, None, None)
    indexed = args.indexed_png and image_format == "png"
    note = None
    if icc_profile and job.output is not None:
        note = _io.icc_profile_note(job.output, icc_profile)
    if note:
        DISPLAY.warn(note)
    pixel_sizes = getattr(job.source, "pixel_sizes", None)
    for path, *_ in outputs.values():  # an OME-Zarr output keeps them in its own way
        if note := _io.pixel_size_note(path, pixel_sizes):
            DISPLAY.warn(note)
    # OME-Zarr outputs are created first and written in the same dask computation as the
    # other outputs: one read of the input for all of them.
    lazy = []
    ome_labels = None
    with contextlib.ExitStack() as stack:
        temporaries = {
            role: stack.enter_context(_io.atomic_output(path, overwrite=args.overwrite))
            for role, (path, *_) in outputs.items()
        }
        if ome_output:
            from .._omezarr import write_image

            temporary = stack.enter_context(_io.atomic_output(job.output, overwrite=args.overwrite))
            lazy.append(
                write_image(temporary, result.image, like=ome_image, overwrite=True, compute=False)
            )
        if job.ome_labels is not None:
            ome_labels = _start_ome_labels(job, result, ome_image)
            # Removed unless finished: a failure anywhere leaves the input's labels as
            # they were.
            stack.callback(ome_labels.abort)
            lazy.append(ome_labels.store)
        in_memory = _store_or_compute(
            outputs, temporaries, result.labels if indexed else None, icc_profile, job, lazy
        )
        for role, (path, _, channel_axis, alpha) in outputs.items():
            if role not in in_memory:
                continue  # already stored chunk by chunk
            is_image = role == "image"
            extra = {"icc_profile": icc_profile} if is_image and icc_profile else {}
            # An ImageJ hyperstack or OME-TIFF input keeps its axes and calibration (pixel
            # sizes) in TIFF outputs, a picture its resolution in PNG, JPEG and TIFF
            # outputs: the labels lose the channel axis the palette replaces.
            extra.update(_io.output_metadata(job.source, in_memory[role].shape, job.channel_axis))
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
                **extra,
            )
        if job.palette is not None:
            temporary = stack.enter_context(
                _io.atomic_output(job.palette, overwrite=args.overwrite)
            )
            temporary.write_text(palette_json(result.palette), encoding="utf-8")
        if job.stats is not None:
            temporary = stack.enter_context(_io.atomic_output(job.stats, overwrite=args.overwrite))
            temporary.write_text(stats_csv(result), encoding="utf-8", newline="")
        if ome_labels is not None:
            # Last, so that a failure before it leaves the input's group untouched.
            ome_labels.finish()


def _start_ome_labels(job: Job, result, image):
    """The OME-NGFF label image ``labels/<name>`` of the OME-Zarr input: label values 1 ... k
    coloured with the palette, the cluster statistics as its properties, one level per image
    level. Created inside the input's group under a name of its own; its ``store`` is
    computed with the other outputs, then ``finish()`` puts it in place (``abort()`` removes
    it): a run that fails or stops leaves the input's labels as they were."""
    from .._omezarr import write_result_labels

    return write_result_labels(image, result, name=job.ome_labels, overwrite=True, compute=False)


def _store_or_compute(
    outputs: dict,
    temporaries: dict,
    index_labels,
    icc_profile,
    job: Job | None = None,
    lazy: list | None = None,
) -> dict:
    """Store lazy results chunk by chunk; return in-memory arrays for everything else.

    Dask results going to zarr or TIFF are written without ever holding the whole image
    and are left out of the returned dict.  The other outputs (PNG, JPEG and npy need
    the whole array) are returned as numpy arrays, plus ``"index"``: ``index_labels``
    for an indexed PNG of the image.  The zarr stores and the in-memory arrays are
    computed in one ``dask.compute``, with ``lazy`` (other outputs' dask work: the OME-Zarr
    writes), so that work they share is done once; TIFFs are then written band by band
    (tiles must reach the file in order).

    A zarr output of a zarr input keeps the input's storage chunks (less the channel axis
    for the labels) and its zarr format (v2 in, v2 out), written by tasks of whole storage
    chunks (:func:`napari_kmeans_filter._tasks.align`).
    """
    from .. import _tasks
    from .._validation import is_dask_array

    wanted: dict[str, Any] = {}
    sources, targets, streamed = [], [], []
    for role, (path, array, channel_axis, alpha) in outputs.items():
        fmt = _io.output_format(path)
        # A TIFF keeps an ImageJ or OME-TIFF input's axes and pixel sizes (a picture's
        # resolution), as in memory.
        metadata = (
            {} if job is None else _io.output_metadata(job.source, array.shape, job.channel_axis)
        )
        if not is_dask_array(array) or fmt not in ("tiff", "zarr"):
            wanted[role] = array
        elif fmt == "tiff" and _io.can_stream_tiff(array.ndim, channel_axis, metadata.get("axes")):
            streamed.append((role, temporaries[role], array, channel_axis, alpha, metadata))
        elif fmt == "zarr":
            source = job.source if job is not None else None
            storage = None
            if source is not None:
                axis = job.channel_axis if role == "labels" else None
                storage = _io.zarr_output_chunks(source, array.shape, axis)
            if storage is None:
                # Not from a zarr input: the result's own (regular) chunks.
                storage = tuple(max(sizes) if sizes else 1 for sizes in array.chunks)
            # zarr allows chunks larger than the array; the tasks must not be.
            storage = tuple(
                min(c, n) if n else c for c, n in zip(storage, array.shape, strict=True)
            )
            sources.append(_tasks.align(array, storage))
            targets.append(
                _io.create_lazy_target(
                    temporaries[role],
                    fmt,
                    array.shape,
                    array.dtype,
                    storage,
                    channel_axis,
                    alpha,
                    zarr_format=getattr(source, "zarr_format", None),
                )
            )
        else:
            # A memory-mapped TIFF (a layout that cannot be streamed): regular chunks, so
            # that no two dask chunks write into one tile.
            chunks = tuple(max(sizes) for sizes in array.chunks)
            sources.append(array.rechunk(chunks))
            targets.append(
                _io.create_lazy_target(
                    temporaries[role],
                    fmt,
                    array.shape,
                    array.dtype,
                    chunks,
                    channel_axis,
                    alpha,
                    # A memory-mapped TIFF output keeps the input's colour profile and
                    # resolution too.
                    icc_profile=icc_profile if role == "image" else None,
                    pixel_sizes=metadata.get("pixel_sizes"),
                )
            )
    if index_labels is not None and "image" in wanted:
        wanted["index"] = index_labels
    lazy = lazy or []
    if not sources and not lazy and not any(is_dask_array(array) for array in wanted.values()):
        values = list(wanted.values())
    else:
        import dask
        import dask.array as da

        store = da.store(sources, targets, compute=False, lock=False) if sources else None
        with DISPLAY.dask_writing("writing"):
            _, _, *values = dask.compute(store, lazy, *wanted.values())
        for target in targets:
            if hasattr(target, "flush"):  # TIFF memory map: push the pages to the file
                target.flush()
    for role, temporary, array, channel_axis, alpha, metadata in streamed:
        extra = {"icc_profile": icc_profile} if role == "image" and icc_profile else {}
        _io.write_tiff_from_dask(
            temporary,
            array,
            channel_axis,
            alpha,
            progress=DISPLAY.writing("writing TIFF"),
            **extra,
            **metadata,
        )
    return dict(zip(wanted, values, strict=True))


def _colours(count: int) -> str:
    return f"{count} colour" if count == 1 else f"{count} colours"


def _palette_text(palette) -> str:
    """``8 colours``, or ``8 colours (1 unused)`` when entries paint no visible pixel (a
    fixed colour the image lacks, a palette applied to another image)."""
    unused = int(np.count_nonzero(np.asarray(palette.counts) == 0))
    text = _colours(len(palette))
    return f"{text} ({unused} unused)" if unused else text


def format_psnr(psnr: float) -> str:
    """``PSNR 31.0 dB``, or ``lossless``."""
    return "lossless" if math.isinf(psnr) else f"PSNR {psnr:.1f} dB"
