"""What the dock widget runs: the input as the api takes it, and the worker-side task.

:class:`Source` is read from the input controls in the GUI thread; :func:`compute` runs
in the worker thread and calls the api only (:func:`napari_diffuse.diffuse`,
:func:`~napari_diffuse.luminance_mask`, :func:`~napari_diffuse.variance_map`).

NumPy layers are diffused in memory, with progress per iteration. Lazy layers (dask,
zarr and other array-likes, multiscale pyramids) are not handed to napari as lazy dask
graphs, which napari would compute on its main thread at every redraw: the api's lazy
result is computed here, chunk by chunk, into a NumPy or zarr store
(:mod:`napari_diffuse.result_store`), with progress per chunk and Cancel. A multiscale
input gives a multiscale result (level 0 diffused, the lower levels block means of it
with the input's level shapes); a large single-scale result gets a display pyramid
(:func:`~napari_diffuse.result_store.display_levels`), so that napari reads only what it
shows.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from . import api, intensity, result_store, tiling
from .params import DiffuseParams
from .widget_controls import VALUE_RANGES

__all__ = ["Source", "Job", "Outcome", "compute", "compute_all", "job_total", "is_lazy", "as_dask",
           "make_source", "MaskDrawing", "LAZY_CHUNK", "spatial_axes", "without_channel"]

#: Spatial chunk edge for lazy array-likes that have no chunks of their own (and for the
#: levels of a NumPy multiscale layer).
LAZY_CHUNK = 1024


@dataclasses.dataclass(frozen=True)
class Source:
    """The input as the api takes it, read from the input controls (see ``_source``)."""

    layer: Layer
    channel_axis: int | None
    value_range: str | tuple[float, float]
    mask_drawn: MaskDrawing | None  #: the inpaint mask layer's content, or None
    backend: str
    nan: str

    @functools.cached_property
    def mask(self) -> np.ndarray | None:
        """The inpaint mask (bool), or None: read on first use, which for a Shapes layer
        takes seconds on a large image, so the worker thread reads it (see
        :class:`MaskDrawing`)."""
        return None if self.mask_drawn is None else self.mask_drawn.rasterise()

    @property
    def data(self):
        """The input's array: the full-resolution level of a multiscale layer."""
        return _levels(self.layer)[0]

    @property
    def alpha(self) -> bool:
        """Whether the input is an RGBA layer: its 4th colour is alpha, kept untouched."""
        return bool(self.layer.rgb) and self.data.shape[-1] == 4


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: the input, the settings, the preset's name, the extra layers wanted and
    where a lazy input's result goes when it does not fit in memory (None: a temporary
    folder; see :func:`napari_diffuse.result_store.compute_to_store`)."""

    source: Source
    params: DiffuseParams
    preset: str
    want_mask: bool
    want_variance: bool
    store_folder: Path | None = None


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a run gives back to the GUI thread.

    ``result``, ``luminance_mask`` (uint8) and ``variance_map`` are NumPy or zarr arrays,
    or lists of them (largest first) for a multiscale layer. ``stored`` holds a lazy
    input's store (its zarr folder, if any).
    """

    result: Any
    luminance_mask: Any
    variance_map: Any
    variance_limits: tuple[float, float] | None
    seconds: float
    stored: result_store.Stored | None = None

    def discard(self) -> None:
        """Remove the run's zarr folder (the outcome will not be shown)."""
        if self.stored is not None:
            self.stored.discard()


def colours(data, alpha: bool):
    """``data`` without its alpha (the last axis' 4th entry) when ``alpha``, else itself."""
    return data[..., :3] if alpha else data


def with_alpha(result, data, alpha: bool):
    """``result`` (the run on :func:`colours`) with ``data``'s alpha put back, untouched,
    when ``alpha`` (as the CLI does for RGBA pictures); NumPy or dask, as ``result`` is."""
    if not alpha:
        return result
    if tiling.is_dask(result):
        import dask.array as da

        kept = da.asarray(data[..., 3:]).rechunk(result.chunks[:-1] + ((1,),))
        return da.concatenate([result, kept], axis=-1).rechunk({result.ndim - 1: -1})
    return np.concatenate([np.asarray(result), np.asarray(data[..., 3:])], axis=-1)


def is_lazy(layer: Layer) -> bool:
    """Return whether ``layer`` is computed into a store (:mod:`.result_store`).

    Parameters
    ----------
    layer : napari.layers.Layer
        An input layer.

    Returns
    -------
    bool
        True for a multiscale layer, or data other than a NumPy array (dask, zarr...).
    """
    return bool(getattr(layer, "multiscale", False)) or not isinstance(layer.data, np.ndarray)


def compute(job: Job, progress: Callable[[int, int], None]) -> Outcome:
    """Run the api on the job's input, in the worker thread.

    Parameters
    ----------
    job : Job
        The input, settings and extra layers wanted.
    progress : callable
        ``progress(done, total)``; it may raise to cancel. NumPy input: iterations (of
        every plane). Lazy input (:func:`is_lazy`): the api's lazy result is computed
        chunk by chunk into a store and ``progress`` counts chunks (see
        :func:`napari_diffuse.result_store.compute_to_store`); it is also called every
        0.1 s, so that Cancel stops the run within that time, leaving no zarr folder.

    Returns
    -------
    Outcome
        The result and the extra layers' arrays (a large result with a display pyramid).
    """
    if is_lazy(job.source.layer):
        return _compute_lazy(job, progress)
    start = time.perf_counter()
    source = job.source
    data = colours(source.layer.data, source.alpha)
    common = dict(channel_axis=source.channel_axis, value_range=source.value_range,
                  nan=source.nan)
    result = api.diffuse(data, job.params, mask=source.mask, backend=source.backend,
                         progress=progress, **common)
    result = with_alpha(result, source.layer.data, source.alpha)
    # uint8, as napari's Labels layers hold it (and as the lazy path stores it)
    mask = np.asarray(_diffusion_mask(data, job, common), np.uint8) if job.want_mask else None
    variance = limits = None
    if job.want_variance:
        variance = api.variance_map(data, job.params, mask=source.mask,
                                    backend=source.backend, **common)
        limits = _limits(variance)
    # a large result is shown through a display pyramid (napari draws only what it shows)
    lower = result_store.display_levels(
        result.shape, spatial_axes(result.ndim, source.channel_axis), in_memory=True)
    if lower:
        reduced = [without_channel(shape, source.channel_axis) for shape in lower]
        result = result_store.pyramid(result, lower)
        mask = None if mask is None else result_store.pyramid(mask, reduced, "nearest")
        variance = None if variance is None else result_store.pyramid(variance, reduced)
    return Outcome(result, mask, variance, limits, time.perf_counter() - start)


def _limits(variance) -> tuple[float, float]:
    """Display limits of a variance map: its first plane's 0.5 and 99.5 percentiles (of
    at most about a million pixels, read from the smallest level of a pyramid)."""
    level = variance[-1] if isinstance(variance, list) else variance
    lead = (0,) * (len(level.shape) - 2)
    step = max(1, int(np.sqrt(level.shape[-2] * level.shape[-1] / 1e6)))
    plane = np.asarray(level[(*lead, slice(None, None, step), slice(None, None, step))])
    low, high = np.percentile(plane, [0.5, 99.5])
    return float(low), float(max(high, low + 1e-6))


def _levels(layer: Layer) -> list:
    """The layer's arrays: every level of a multiscale layer, else its data."""
    return list(layer.data) if layer.multiscale else [layer.data]


def without_channel(values: Sequence, channel_axis: int | None) -> tuple:
    """Return ``values`` without the channel axis's entry.

    Parameters
    ----------
    values : sequence
        One entry per axis of an image: its shape, chunks, an index, or ``range(ndim)``.
    channel_axis : int or None
        The image's channel axis (negative counts from the end), or None for none.

    Returns
    -------
    tuple
        ``values`` as they are without a channel axis.
    """
    axis = None if channel_axis is None else channel_axis % len(values)
    return tuple(v for i, v in enumerate(values) if i != axis)


def spatial_axes(ndim: int, channel_axis: int | None) -> list[int]:
    """Return the spatial axes of an ``ndim``-D image: its last two non-channel axes."""
    return list(without_channel(range(ndim), channel_axis))[-2:]


def as_dask(array, channel_axis: int | None):
    """Return a dask view of a lazy array (a layer's level), read chunk by chunk.

    Parameters
    ----------
    array : array-like
        A dask array (returned as it is), an array with its own chunks (zarr: those), or
        any other array-like (single planes of :data:`LAZY_CHUNK` pixels, all channels).
    channel_axis : int or None
        Its channel axis, kept in one chunk.

    Returns
    -------
    dask.array.Array
    """
    import dask.array as da

    if tiling.is_dask(array):
        return array
    chunks = getattr(array, "chunks", None)
    if not (isinstance(chunks, tuple) and len(chunks) == len(array.shape)
            and all(isinstance(c, (int, np.integer)) for c in chunks)):
        spatial = spatial_axes(len(array.shape), channel_axis)
        axis = None if channel_axis is None else channel_axis % len(array.shape)
        chunks = tuple(LAZY_CHUNK if a in spatial else n if a == axis else 1
                       for a, n in enumerate(array.shape))
    return da.from_array(array, chunks=chunks, asarray=True, lock=False)


def _compute_lazy(job: Job, progress: Callable[[int, int], None]) -> Outcome:
    """A lazy input's run: the api's lazy arrays computed into a store."""
    start = time.perf_counter()
    source, params = job.source, job.params
    levels, channel_axis = _levels(source.layer), source.channel_axis
    shape, dtype = tuple(levels[0].shape), np.dtype(levels[0].dtype)
    reduced = without_channel(shape, channel_axis)
    level0_bytes = math.prod(shape) * dtype.itemsize + math.prod(reduced) * (
        int(job.want_mask) + 4 * int(job.want_variance))
    budget = result_store.in_memory_budget()
    in_memory = level0_bytes * 4 // 3 <= budget  # a pyramid adds at most a third
    if len(levels) > 1:
        lower = tuple(tuple(level.shape) for level in levels[1:])
        lower_reduced = tuple(without_channel(s, channel_axis) for s in lower)
    else:
        lower = tuple(result_store.display_levels(
            shape, spatial_axes(len(shape), channel_axis), in_memory=in_memory))
        lower_reduced = tuple(without_channel(s, channel_axis) for s in lower)
    common = dict(channel_axis=channel_axis, value_range=source.value_range, nan=source.nan)

    def build(check) -> list[result_store.Wanted]:  # in the store's helper thread
        whole = as_dask(levels[0], channel_axis)
        image = colours(whole, source.alpha)
        # the chunks computing when Cancel comes stop at their next iteration
        result = with_alpha(api.diffuse(image, params, mask=source.mask,
                                        backend=source.backend, progress=check, **common),
                            whole, source.alpha)
        wanted = [result_store.Wanted(result, lower, "mean")]
        if job.want_mask:
            wanted.append(result_store.Wanted(_lazy_diffusion_mask(image, job, common, result),
                                              lower_reduced, "nearest"))
        if job.want_variance:
            variance = api.variance_map(image, params, mask=source.mask,
                                        backend=source.backend, **common)
            wanted.append(result_store.Wanted(variance, lower_reduced, "mean"))
        return wanted

    stored = result_store.compute_to_store(build, progress, folder=job.store_folder,
                                           budget=budget if in_memory else 0)
    arrays = iter(stored.arrays)
    result = next(arrays)
    mask = next(arrays) if job.want_mask else None
    variance = next(arrays) if job.want_variance else None
    limits = _limits(variance) if variance is not None else None
    return Outcome(result, mask, variance, limits, time.perf_counter() - start, stored)


def _lazy_diffusion_mask(image, job: Job, common: dict, result):
    """:func:`_diffusion_mask` of a dask image, lazily, as uint8 in the result's chunks."""
    import dask.array as da

    source = job.source
    full = without_channel(image.shape, source.channel_axis)
    chunks = without_channel(result.chunks, source.channel_axis)
    if source.mask is not None:
        mask = np.broadcast_to(np.asarray(source.mask, bool), full)
        return da.from_array(mask, chunks=chunks).astype(np.uint8)
    if job.params.luminance_threshold <= 0.0:
        return da.ones(full, dtype=np.uint8, chunks=chunks)
    return api.luminance_mask(image, job.params, **common).astype(np.uint8).rechunk(chunks)


def _diffusion_mask(data, job: Job, common: dict):
    """Where the run diffuses: the inpaint mask when one is chosen, else the luminance mask
    (everywhere at a threshold of 0 %, as darktable)."""
    source = job.source
    full = without_channel(data.shape, source.channel_axis)
    if source.mask is not None:
        return np.broadcast_to(np.asarray(source.mask, bool), full)
    if job.params.luminance_threshold <= 0.0:
        return np.ones(full, bool)
    return api.luminance_mask(data, job.params, **common)


def compute_all(jobs: list[Job], progress: Callable[[int, int], None]) -> list[Outcome]:
    """Run several jobs one after the other (one run over several selected layers).

    Parameters
    ----------
    jobs : list of Job
        The jobs, in order.
    progress : callable
        ``progress(done, total)``: one count over all jobs, each job's share its
        :func:`job_total`; it may raise to cancel.

    Returns
    -------
    list of Outcome
        One per job. When a job fails or is cancelled, the stores of the jobs done
        before it are removed and the exception propagates.
    """
    if len(jobs) == 1:
        return [compute(jobs[0], progress)]
    totals = [job_total(job) for job in jobs]
    total, outcomes = sum(totals), []
    try:
        for index, job in enumerate(jobs):
            before, share = sum(totals[:index]), totals[index]

            def report(done: int, of: int, before=before, share=share) -> None:
                progress(before + min(share, done * share // max(1, of)), total)

            outcomes.append(compute(job, report))
    except BaseException:
        for outcome in outcomes:
            outcome.discard()
        raise
    return outcomes


def job_total(job: Job) -> int:
    """Return the progress steps of a job, as far as known before it runs.

    Parameters
    ----------
    job : Job
        The job.

    Returns
    -------
    int
        Iterations times planes for NumPy input, the number of chunks of a lazy input's
        level 0 (at least 1).
    """
    layer = job.source.layer
    if is_lazy(layer):
        level = as_dask(_levels(layer)[0], job.source.channel_axis)
        return max(1, math.prod(len(c) for c in level.chunks))
    shape = without_channel(layer.data.shape, job.source.channel_axis)
    planes = int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1
    return max(1, job.params.iterations) * planes


@dataclasses.dataclass(frozen=True)
class MaskDrawing:
    """An inpaint mask layer's content, taken in the GUI thread, made into a boolean mask
    in the worker (:meth:`rasterise`): a Labels layer's array, or a copy of a Shapes
    layer's vertices and shape types (rasterising them takes seconds on a 4096x4096 image,
    so it must not run in the GUI thread; the copy keeps the worker off the live layer)."""

    name: str
    labels: np.ndarray | None  #: a Labels layer's pixels (True where painted), or None
    shapes: tuple[tuple[str, np.ndarray], ...]  #: (shape type, vertices) of each shape
    shape: tuple[int, ...]  #: the mask's shape

    @classmethod
    def of(cls, mask_layer: Labels | Shapes, spatial: tuple[int, ...],
           full: tuple[int, ...]) -> MaskDrawing:
        """Take ``mask_layer``'s content, for a mask of ``spatial`` or ``full`` shape.

        Parameters
        ----------
        mask_layer : napari.layers.Labels or napari.layers.Shapes
            The inpaint mask layer.
        spatial, full : tuple of int
            The image's spatial shape, and its shape without the channel axis.

        Raises
        ------
        ValueError
            For a Shapes layer drawn in neither the spatial nor the image's dimensions.
        """
        if isinstance(mask_layer, Labels):  # a copy: painting during the run changes nothing
            labels = np.asarray(mask_layer.data) != 0
            return cls(mask_layer.name, labels, (), labels.shape)
        shape = full if mask_layer.ndim == len(full) else spatial
        if mask_layer.ndim != len(shape):
            raise ValueError(f"the Shapes layer {mask_layer.name!r} is {mask_layer.ndim}-D; the "
                             f"mask must be drawn in 2-D (shape {spatial}) or in the image's "
                             f"{len(full)} non-channel dimensions")
        shapes = tuple((kind, np.array(vertices, copy=True)) for kind, vertices in
                       zip(mask_layer.shape_type, mask_layer.data, strict=True))
        return cls(mask_layer.name, None, shapes, shape)

    def is_empty(self) -> bool:
        """Whether nothing is painted or drawn (a cheap test, for the GUI thread)."""
        return not self.shapes if self.labels is None else not self.labels.any()

    def rasterise(self) -> np.ndarray:
        """Return the mask: True where painted (any label) or inside a shape. Shapes are
        rasterised by napari's ``Shapes.to_labels``; the last few results are kept, so that
        a preview's refreshes and the runs after it rasterise the same shapes once."""
        if self.labels is not None:
            return self.labels
        if not self.shapes:
            return np.zeros(self.shape, bool)
        key = (self.shape, tuple((kind, v.shape, v.tobytes()) for kind, v in self.shapes))
        with _RASTERS_LOCK:
            if key in _RASTERS:
                return _RASTERS[key]
        layer = Shapes([v for _, v in self.shapes], shape_type=[k for k, _ in self.shapes])
        mask = layer.to_labels(labels_shape=self.shape) != 0
        mask.flags.writeable = False  # shared by the runs that hit the cache
        with _RASTERS_LOCK:
            _RASTERS[key] = mask
            while len(_RASTERS) > _RASTERS_KEPT:
                _RASTERS.pop(next(iter(_RASTERS)))
        return mask


_RASTERS: dict[tuple, np.ndarray] = {}  # rasterised shapes, oldest first
_RASTERS_KEPT = 4
_RASTERS_LOCK = threading.Lock()


def make_source(layer: Layer, *, channel_axis: int | None, value_range: str,
                mask_layer: Layer | None, backend: str, nan: str) -> Source:
    """Read the input as the api takes it, from the input controls' values.

    Parameters
    ----------
    layer : napari.layers.Layer
        The input layer.
    channel_axis : int or None
        The channel axis menu's value (ignored for RGB layers: their colour axis).
    value_range : str
        The intensities menu's entry (:data:`~napari_diffuse.widget_controls.VALUE_RANGES`
        or ``"contrast limits"``).
    mask_layer : Labels or Shapes layer, optional
        The inpaint mask menu's layer.
    backend, nan : str
        As :func:`napari_diffuse.diffuse` takes them.

    Raises
    ------
    ValueError, TypeError
        Naming what is wrong (not an Image layer, a bad shape or dtype, a mask drawn in
        the wrong dimensions); checked before any work. A multiscale layer is accepted:
        its full-resolution level is diffused (:func:`compute`).
    """
    if not isinstance(layer, Image):
        raise TypeError(f"the input {layer.name!r} is a {type(layer).__name__} layer; "
                        "choose an Image layer (a Labels layer holds label ids, not "
                        "intensities: convert it to an Image layer first)")
    channel_axis = -1 if layer.rgb else channel_axis
    data = _levels(layer)[0]
    # bad shapes and dtypes, before any work ("dtype" reads no data)
    intensity.check_image(data, channel_axis, "dtype")
    if value_range == "contrast limits":
        value_range = tuple(float(v) for v in layer.contrast_limits)
    else:
        value_range = VALUE_RANGES[value_range]
    drawn = None
    if mask_layer is not None:
        full = without_channel(data.shape, channel_axis)
        drawn = MaskDrawing.of(mask_layer, full[-2:], full)
    return Source(layer=layer, channel_axis=channel_axis, value_range=value_range,
                  mask_drawn=drawn, backend=backend, nan=nan)
