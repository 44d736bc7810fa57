"""Lazy (dask) results computed chunk by chunk into a store, with progress and cancel.

The dock widget must not hand napari a lazy dask graph: napari would compute it on its
main thread every time it draws. :func:`compute_to_store` computes the graph once, in the
caller's (worker) thread's stead, chunk by chunk, into arrays that drawing only reads:

- **Where.** In memory (NumPy) when everything the run stores fits
  :func:`in_memory_budget` (:data:`IN_MEMORY_BUDGET`, by default a quarter of the memory
  available when the run starts), else zarr arrays (zarr 3) in a temporary folder
  (``napari-diffuse-*`` under the system's temporary folder, or under ``folder``),
  removed when its array is garbage-collected (the layer was replaced or deleted) and at
  exit.
- **Progress.** ``progress(done, total)`` counts chunks written into the store; it is
  also called every :data:`POLL_SECONDS` while a chunk is computing, so that a
  ``progress`` that raises (the widget's *Cancel*) stops the run within that time,
  however long a chunk takes: the dask computation runs in a helper thread and the
  caller's thread only waits for it. Chunks already computing (at most one per CPU) stop
  at their next iteration when the graph's solver was given the ``check`` hook as its
  ``progress`` (see :func:`compute_to_store`), else they finish in the background; either
  way nothing is written after the cancel and the temporary folder is removed.
- **Pyramids.** Each array may come with lower levels (their shapes, e.g. a multiscale
  input's level shapes): they are built after level 0 by block means of the level above
  (``"mean"``) or by taking every n-th pixel (``"nearest"``, for label masks).
  :func:`display_levels` proposes levels for a large single-scale result, so that napari
  draws only what it shows (reading or downsampling a whole large plane on its main
  thread stalls it for seconds).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import shutil
import tempfile
import threading
import uuid
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["STORE_FOLDER", "IN_MEMORY_BUDGET", "POLL_SECONDS", "PYRAMID_ABOVE",
           "PYRAMID_SMALLEST", "Wanted", "Stored", "Stopped", "compute_to_store",
           "display_levels", "in_memory_budget", "pyramid"]

#: Where zarr stores go (a new ``run-*`` sub-folder per run); None: a temporary folder of
#: this process, removed at exit.
STORE_FOLDER: str | Path | None = None
#: Bytes a run may keep in memory (NumPy) before it stores in zarr instead; None: a
#: quarter of the memory available when the run starts (at least 256 MiB).
IN_MEMORY_BUDGET: int | None = None
#: How often, in seconds, the waiting thread calls ``progress`` (and so may be cancelled).
POLL_SECONDS = 0.1
#: Planes with more pixels than this get a display pyramid (:func:`display_levels`).
PYRAMID_ABOVE = 4096 * 4096
#: A display pyramid halves the spatial axes until both are at most this many pixels.
PYRAMID_SMALLEST = 1024
_ROOT: Path | None = None  # this process's temporary folder, made on first use
_ROOT_LOCK = threading.Lock()


def in_memory_budget() -> int:
    """Return the bytes a run may keep in memory.

    Returns
    -------
    int
        :data:`IN_MEMORY_BUDGET`, or a quarter of the memory available now (at least
        256 MiB).
    """
    if IN_MEMORY_BUDGET is not None:
        return int(IN_MEMORY_BUDGET)
    try:
        import psutil

        available = psutil.virtual_memory().available
    except (ImportError, OSError):  # pragma: no cover - psutil comes with napari
        available = 4 << 30
    return max(256 << 20, available // 4)


def display_levels(shape: Sequence[int], spatial_axes: Sequence[int], *,
                   in_memory: bool) -> list[tuple[int, ...]]:
    """Return the lower levels' shapes of a display pyramid for a single-scale result.

    Parameters
    ----------
    shape : sequence of int
        The result's shape.
    spatial_axes : sequence of int
        Its two spatial axes (halved); the other axes keep their length.
    in_memory : bool
        Whether the result is kept in memory (NumPy); a zarr-stored result always gets
        a pyramid when it is larger than :data:`PYRAMID_SMALLEST`, since napari would
        read its whole plane on its main thread to draw it.

    Returns
    -------
    list of tuple of int
        No level for a plane of at most :data:`PYRAMID_ABOVE` pixels kept in memory;
        else the spatial axes halved (rounding up) until both are at most
        :data:`PYRAMID_SMALLEST`.
    """
    height, width = (shape[a] for a in spatial_axes)
    if in_memory and height * width <= PYRAMID_ABOVE:
        return []
    levels, current = [], list(shape)
    while max(current[a] for a in spatial_axes) > PYRAMID_SMALLEST:
        for a in spatial_axes:
            current[a] = max(1, math.ceil(current[a] / 2))
        levels.append(tuple(current))
    return levels


@dataclasses.dataclass(frozen=True)
class Wanted:
    """One array to store: a lazy level 0 and the shapes of the levels below it."""

    array: Any  #: a dask array, computed into the store
    lower: tuple[tuple[int, ...], ...] = ()  #: lower levels' shapes, largest first
    method: str = "mean"  #: how lower levels are made: "mean" or "nearest"

    @property
    def nbytes(self) -> int:
        """Bytes of every level."""
        itemsize = np.dtype(self.array.dtype).itemsize
        return int(sum(math.prod(s) for s in (self.array.shape, *self.lower)) * itemsize)


class Stopped(Exception):
    """Raised in the helper thread's computations once the run was cancelled."""


class _State:
    """What the waiting thread and the helper thread share."""

    def __init__(self):
        self.lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.cancelled = False
        self.folder: Path | None = None

    def check(self, *_progress) -> None:
        """Raise :class:`Stopped` once cancelled (a solver's ``progress`` hook)."""
        if self.cancelled:
            raise Stopped

    def cancel(self) -> None:
        """Refuse every later write, then remove the run's folder."""
        with self.lock:
            self.cancelled = True
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)


class _Writer:
    """A store target for ``dask.array.store`` that counts writes and refuses them once
    cancelled (writes are serialised: zarr chunks need not match dask chunks)."""

    def __init__(self, target, state: _State):
        self.target, self.state = target, state
        self.shape, self.dtype, self.ndim = target.shape, target.dtype, len(target.shape)
        self._token = uuid.uuid4().hex

    def __dask_tokenize__(self):
        return self._token

    def __setitem__(self, key, value) -> None:
        with self.state.lock:
            if self.state.cancelled:
                raise Stopped
            self.target[key] = value
            self.state.done += 1


@dataclasses.dataclass
class Stored:
    """A run's stored arrays, in the order asked for.

    Attributes
    ----------
    arrays : list
        Per :class:`Wanted`: a NumPy or zarr array, or the list of its levels when it
        has lower levels.
    folder : pathlib.Path or None
        The zarr arrays' folder (None in memory).
    """

    arrays: list
    folder: Path | None

    def discard(self) -> None:
        """Remove the zarr folder now (after a cancel: the arrays must not be shown)."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)


def _root() -> Path:
    """This process's temporary folder, removed at exit."""
    global _ROOT
    with _ROOT_LOCK:
        if _ROOT is None or not _ROOT.exists():
            _ROOT = Path(tempfile.mkdtemp(prefix="napari-diffuse-"))
            atexit.register(shutil.rmtree, _ROOT, True)
        return _ROOT


def _store_chunks(array) -> tuple[int, ...]:
    return tuple(max(1, max(sizes)) for sizes in array.chunks)


def _target(shape, dtype, chunks, folder: Path | None, name: str):
    if folder is None:
        return np.empty(shape, dtype)
    import zarr

    chunks = tuple(min(c, max(1, n)) for c, n in zip(chunks, shape, strict=True))
    return zarr.create_array(store=str(folder / name), shape=shape, dtype=dtype,
                             chunks=chunks, overwrite=True)


def _fit(array, shape: tuple[int, ...]):
    """Crop or edge-pad a dask ``array`` to ``shape``."""
    import dask.array as da

    array = array[tuple(slice(0, n) for n in shape)]
    pad = [(0, n - m) for n, m in zip(shape, array.shape, strict=True)]
    return da.pad(array, pad, mode="edge") if any(after for _, after in pad) else array


def _downsample(source, shape: tuple[int, ...], method: str, chunks: tuple[int, ...]):
    """``source`` (a stored array) reduced to ``shape``: block means or every n-th pixel."""
    import dask.array as da

    factors = {a: max(1, round(n / m)) for a, (n, m) in enumerate(
        zip(source.shape, shape, strict=True))}
    lazy = da.from_array(source, chunks=tuple(
        max(f, (c // f) * f) for c, f in zip(chunks, factors.values(), strict=True)),
        asarray=True, lock=False)
    if method == "nearest":
        reduced = lazy[tuple(slice(None, None, f) for f in factors.values())]
    else:
        trimmed = lazy[tuple(slice(0, max(f, (n // f) * f))
                             for n, f in zip(source.shape, factors.values(), strict=True))]
        reduced = da.coarsen(np.mean, trimmed.astype(np.float64), factors, trim_excess=True)
        dtype = np.dtype(source.dtype)
        if dtype.kind in "iub":
            info = np.iinfo(dtype) if dtype.kind != "b" else None
            reduced = da.round(reduced)
            if info is not None:
                reduced = da.clip(reduced, info.min, info.max)
        reduced = reduced.astype(dtype)
    fitted = _fit(reduced, shape)
    return fitted.rechunk(tuple(min(c, max(1, n)) for c, n in zip(chunks, shape, strict=True)))


def _chunk_count(shape, chunks) -> int:
    return math.prod(math.ceil(n / min(c, max(1, n))) for n, c in zip(shape, chunks, strict=True))


def pyramid(array: np.ndarray, lower: Sequence[Sequence[int]], method: str = "mean") -> list:
    """Return an in-memory array with its lower levels, each made from the one above.

    For a NumPy result that is already computed (a display pyramid, see
    :func:`display_levels`); it takes a fraction of a second per 8192x8192 plane.

    Parameters
    ----------
    array : numpy.ndarray
        Level 0.
    lower : sequence of shapes
        The lower levels' shapes, largest first.
    method : {"mean", "nearest"}
        Block means, or every n-th pixel (label masks); see :class:`Wanted`.

    Returns
    -------
    list of numpy.ndarray or numpy.ndarray
        ``[array, *levels]``; ``array`` alone when ``lower`` is empty.
    """
    levels = [array]
    chunks = tuple(min(n, 2048) for n in array.shape)
    for shape in lower:
        levels.append(_downsample(levels[-1], tuple(shape), method, chunks).compute(
            scheduler="threads"))
    return levels if len(levels) > 1 else array


def _run(state: _State, wanted: Sequence[Wanted], folder: Path | None, box: dict) -> None:
    """The helper thread: store every level 0, then each lower level from the one above
    (built only then: dask snapshots NumPy arrays when it wraps them)."""
    import dask.array as da

    try:
        chunks = [_store_chunks(item.array) for item in wanted]
        targets = [[_target(shape, item.array.dtype, chunks[i], folder, f"{i}/{level}.zarr")
                    for level, shape in enumerate((item.array.shape, *item.lower))]
                   for i, item in enumerate(wanted)]
        state.total = sum(math.prod(len(c) for c in item.array.chunks) for item in wanted) + \
            sum(_chunk_count(shape, chunks[i]) for i, item in enumerate(wanted)
                for shape in item.lower)
        da.store([item.array for item in wanted],
                 [_Writer(levels[0], state) for levels in targets], lock=False,
                 scheduler="threads")
        for level in range(1, 1 + max((len(item.lower) for item in wanted), default=0)):
            mine = [i for i, item in enumerate(wanted) if len(item.lower) >= level]
            sources = [_downsample(targets[i][level - 1], wanted[i].lower[level - 1],
                                   wanted[i].method, chunks[i]) for i in mine]
            da.store(sources, [_Writer(targets[i][level], state) for i in mine], lock=False,
                     scheduler="threads")
        box["levels"] = targets
    except BaseException as error:  # noqa: B036 - handed to the waiting thread
        box["error"] = error


def compute_to_store(wanted: Sequence[Wanted] | Callable[[Callable], Sequence[Wanted]],
                     progress: Callable[[int, int], None] | None = None, *,
                     folder: str | Path | None = None, budget: int | None = None) -> Stored:
    """Compute lazy arrays chunk by chunk into NumPy or zarr arrays.

    Parameters
    ----------
    wanted : sequence of Wanted, or a callable returning one
        The arrays. A callable is called in the helper thread (so that reading the data
        to build the graph, e.g. finding a value range, can be cancelled too) as
        ``wanted(check)``: ``check(*any)`` raises :class:`Stopped` once the run was
        cancelled; pass it as the solver's ``progress`` so that the chunks computing
        when Cancel comes stop at their next iteration.
    progress : callable, optional
        ``progress(done, total)``: chunks written so far, of all levels of all arrays
        (``total`` is 1 until the graph is built); called after each chunk and at least
        every :data:`POLL_SECONDS`. It may raise to stop the run: nothing more is
        written, the zarr folder is removed and the exception propagates.
    folder : str or Path, optional
        Where zarr arrays go (a new sub-folder of it); default: :data:`STORE_FOLDER`, else
        a temporary folder removed at exit.
    budget : int, optional
        Bytes that may be kept in memory; default: :func:`in_memory_budget`.

    Returns
    -------
    Stored
        The arrays, in memory when all of them (every level) fit ``budget``.

    Raises
    ------
    Exception
        Whatever computing the arrays raised (e.g. ``ValueError`` for NaN), or what
        ``progress`` raised.
    """
    state, box = _State(), {}
    build = wanted if callable(wanted) else (lambda _check: wanted)
    limit = in_memory_budget() if budget is None else budget

    def work() -> None:
        try:
            items = list(build(state.check))
        except BaseException as error:  # noqa: B036 - handed to the waiting thread
            box["error"] = error
            return
        if sum(item.nbytes for item in items) > limit:
            chosen = folder if folder is not None else STORE_FOLDER
            root = Path(chosen) if chosen is not None else _root()
            root.mkdir(parents=True, exist_ok=True)
            with state.lock:
                if state.cancelled:
                    return
                state.folder = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        box["items"] = items
        _run(state, items, state.folder, box)

    helper = threading.Thread(target=work, name="napari-diffuse store", daemon=True)
    helper.start()
    try:
        last = -1
        while helper.is_alive():
            helper.join(POLL_SECONDS)
            if progress is not None and (state.done != last or helper.is_alive()):
                last = state.done
                progress(state.done, max(1, state.total))
    except BaseException:
        state.cancel()
        raise
    if "error" in box:
        state.cancel()
        raise box["error"]
    arrays = []
    for targets in box["levels"]:
        arrays.append(targets if len(targets) > 1 else targets[0])
        if state.folder is not None:
            # the layer holds level 0 (and the rest) until it is replaced or deleted
            weakref.finalize(targets[0], _remove_part, state.folder, len(arrays) - 1)
    return Stored(arrays, state.folder)


def _remove_part(folder: Path, index: int) -> None:
    """Remove array ``index``'s levels from a run's folder, and the folder once empty."""
    shutil.rmtree(folder / str(index), ignore_errors=True)
    try:
        folder.rmdir()
    except OSError:  # other arrays of the run are still shown, or it is gone already
        pass
