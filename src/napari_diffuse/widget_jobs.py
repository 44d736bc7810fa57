"""What the dock widget runs: the input as the api takes it, and the worker-side task.

:class:`Source` is read from the input controls in the GUI thread; :func:`compute` runs
in the worker thread and calls the api only (:func:`napari_diffuse.diffuse`,
:func:`~napari_diffuse.luminance_mask`, :func:`~napari_diffuse.variance_map`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from napari.layers import Image, Labels, Layer, Shapes

from . import api, intensity, tiling
from .params import DiffuseParams
from .widget_controls import VALUE_RANGES

__all__ = ["Source", "Job", "Outcome", "compute", "compute_all", "make_source", "rasterise"]


@dataclasses.dataclass(frozen=True)
class Source:
    """The input as the api takes it, read from the input controls (see ``_source``)."""

    layer: Layer
    channel_axis: int | None
    value_range: str | tuple[float, float]
    mask: np.ndarray | None
    backend: str
    nan: str


@dataclasses.dataclass(frozen=True)
class Job:
    """One run: the input, the settings, the preset's name and the extra layers wanted."""

    source: Source
    params: DiffuseParams
    preset: str
    want_mask: bool
    want_variance: bool


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a run gives back to the GUI thread."""

    result: Any
    luminance_mask: Any
    variance_map: Any
    variance_limits: tuple[float, float] | None
    seconds: float


def compute(job: Job, progress: Callable[[int, int], None]) -> Outcome:
    """Run the api on the job's input.

    Dask data is passed through: the api returns lazy arrays, computed when napari
    shows them, so there is no progress to report (nor anything to cancel) here.
    """
    start = time.perf_counter()
    source = job.source
    data = source.layer.data
    common = dict(channel_axis=source.channel_axis, value_range=source.value_range,
                  nan=source.nan)
    lazy = tiling.is_dask(data)
    result = api.diffuse(data, job.params, mask=source.mask, backend=source.backend,
                         progress=None if lazy else progress, **common)
    mask = _diffusion_mask(data, job, common) if job.want_mask else None
    variance = limits = None
    if job.want_variance:
        variance = api.variance_map(data, job.params, mask=source.mask,
                                    backend=source.backend, **common)
        first_plane = np.asarray(variance[(0,) * (variance.ndim - 2)])
        low, high = np.percentile(first_plane, [0.5, 99.5])
        limits = (float(low), float(max(high, low + 1e-6)))
    return Outcome(result, mask, variance, limits, time.perf_counter() - start)


def _diffusion_mask(data, job: Job, common: dict):
    """Where the run diffuses: the inpaint mask when one is chosen, else the luminance mask
    (everywhere at a threshold of 0 %, as darktable)."""
    source = job.source
    full = _mask_shape(data, source.channel_axis)
    if source.mask is not None:
        return np.broadcast_to(np.asarray(source.mask, bool), full)
    if job.params.luminance_threshold <= 0.0:
        return np.ones(full, bool)
    return api.luminance_mask(data, job.params, **common)


def _mask_shape(data, channel_axis: int | None) -> tuple[int, ...]:
    axis = None if channel_axis is None else channel_axis % data.ndim
    return tuple(n for i, n in enumerate(data.shape) if i != axis)


def compute_all(jobs: list[Job], progress: Callable[[int, int], None]) -> list[Outcome]:
    """Run several jobs one after the other (one run over several selected layers), with
    one progress count over all of them."""
    totals = [max(1, job.params.iterations) * _planes(job) for job in jobs]
    total, outcomes = sum(totals), []
    for index, job in enumerate(jobs):
        before = sum(totals[:index])
        outcomes.append(compute(job, lambda done, _total, before=before:
                                progress(before + done, total)))
    return outcomes


def _planes(job: Job) -> int:
    shape = _mask_shape(job.source.layer.data, job.source.channel_axis)
    return int(np.prod(shape[:-2], dtype=np.int64)) if len(shape) > 2 else 1


def rasterise(mask_layer: Labels | Shapes, spatial: tuple[int, ...], full: tuple[int, ...]):
    """A Labels or Shapes layer as a boolean mask of ``spatial`` or ``full`` shape.

    Raises
    ------
    ValueError
        For a Shapes layer drawn in neither the spatial nor the image's dimensions.
    """
    if isinstance(mask_layer, Labels):
        return np.asarray(mask_layer.data) != 0
    shape = full if mask_layer.ndim == len(full) else spatial
    if mask_layer.ndim != len(shape):
        raise ValueError(f"the Shapes layer {mask_layer.name!r} is {mask_layer.ndim}-D; the mask "
                         f"must be drawn in 2-D (shape {spatial}) or in the image's "
                         f"{len(full)} non-channel dimensions")
    if len(mask_layer.data) == 0:
        return np.zeros(shape, bool)
    return mask_layer.to_labels(labels_shape=shape) != 0


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
        Naming what is wrong (not an Image layer, a multiscale layer, a bad shape or
        dtype, a mask drawn in the wrong dimensions); checked before any work.
    """
    if not isinstance(layer, Image):
        raise TypeError(f"the input {layer.name!r} is a {type(layer).__name__} layer; "
                        "choose an Image layer (a Labels layer holds label ids, not "
                        "intensities: convert it to an Image layer first)")
    if layer.multiscale:
        raise ValueError(f"the input {layer.name!r} is a multiscale (pyramid) layer; "
                         "add its full-resolution level as its own Image layer")
    channel_axis = -1 if layer.rgb else channel_axis
    data = layer.data
    # bad shapes and dtypes, before any work ("dtype" reads no data)
    intensity.check_image(data, channel_axis, "dtype")
    if value_range == "contrast limits":
        value_range = tuple(float(v) for v in layer.contrast_limits)
    else:
        value_range = VALUE_RANGES[value_range]
    mask = None
    if mask_layer is not None:
        axis = None if channel_axis is None else channel_axis % data.ndim
        full = tuple(n for i, n in enumerate(data.shape) if i != axis)
        mask = rasterise(mask_layer, full[-2:], full)
    return Source(layer=layer, channel_axis=channel_axis, value_range=value_range,
                  mask=mask, backend=backend, nan=nan)
