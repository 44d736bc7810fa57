"""The public Python API: :func:`diffuse`, :func:`luminance_mask`, :func:`variance_map`.

Data path: caller's array -> :mod:`.intensity` (dtype, value range, channel axis) ->
``(planes, H, W, C)`` float32 -> a solver from :mod:`.backends`, plane by plane ->
back to the caller's shape and dtype. Dask arrays, and NumPy planes too large for
:data:`.tiling.MEMORY_BUDGET`, take the same path chunk by chunk (:mod:`.tiling`).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import intensity, tiling
from .backends import get_solver
from .errors import InpaintingWarning, InvalidInputError
from .missing import check_nan_policy, diffuse_with_missing, started
from .params import DiffuseParams
from .plan import make_plan, mask_source

__all__ = ["diffuse", "luminance_mask", "variance_map", "resolve_params"]

Progress = Callable[[int, int], None]
ValueRange = str | Sequence[float] | None


def resolve_params(params: DiffuseParams | None = None, preset: str | None = None,
                   **overrides: Any) -> DiffuseParams:
    """Combine a params object or a preset name with field overrides.

    Raises
    ------
    ValueError
        If both ``params`` and ``preset`` are given, the preset is unknown, or an
        override names no field or has an invalid value.
    """
    if params is not None and preset is not None:
        raise ValueError("give either params or preset, not both")
    if preset is not None:
        params = DiffuseParams.from_preset(preset)
    elif params is None:
        params = DiffuseParams()
    elif not isinstance(params, DiffuseParams):
        raise TypeError(f"params must be a DiffuseParams, got {type(params).__name__}")
    return params.replace(**overrides) if overrides else params


def _validate(image, params, preset, channel_axis, value_range, overrides):
    params = resolve_params(params, preset, **overrides)
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        image = np.asarray(image)
    if tiling.is_dask(image):
        tiling.check_known_chunks(image)
    layout = intensity.check_image(image, channel_axis, value_range, stacklevel=4)
    return image, params, layout


def _planes(image, layout: intensity.Layout, solver_checks: bool = False) -> np.ndarray:
    """The working planes, checked for NaN/Inf and the working range here unless
    ``solver_checks`` (the solver's ``CHECKS_ON_DEVICE``: then :func:`_solved` answers)."""
    planes = intensity.to_planes(image, layout, check=False)
    if not solver_checks:
        intensity.check_values(planes, layout)
    return planes


@contextlib.contextmanager
def _solved(image, layout: intensity.Layout):
    """Turn a solver's :class:`~napari_diffuse.errors.InvalidInputError` into the host's
    message: how many NaN/Inf or out-of-range values, and the first one's index."""
    try:
        yield
    except InvalidInputError:
        intensity.check_values(intensity.to_planes(image, layout, check=False), layout)
        raise


def _maps_units(solver, layout: intensity.Layout) -> bool:
    """Whether ``solver`` takes the planes in the caller's units and maps them on its
    device (the OpenCL solver, 8- and 16-bit integers): no float32 copy on the host."""
    return hasattr(solver, "maps_units") and solver.maps_units(layout)


def _masks(planes, layout, mask) -> list[np.ndarray | None]:
    """The user's mask per plane; None lets the solver apply the luminance mask."""
    if mask is not None:
        return list(intensity.check_mask(mask, layout))
    return [None] * planes.shape[0]


def _changes_nothing(params: DiffuseParams, mask) -> bool:
    """Whether ``params`` (with ``mask``) leave every value as it is: no speed, no
    sharpness, nothing to inpaint (no mask and no luminance threshold, or an empty mask)."""
    if any(getattr(params, name) != 0.0 for name in ("first", "second", "third", "fourth",
                                                      "sharpness")):
        return False
    if mask is None:
        return params.luminance_threshold == 0.0
    return not tiling.is_dask(mask) and not np.asarray(mask).any()


def _copy_block(block: np.ndarray) -> np.ndarray:
    if block.dtype.kind == "f" and not np.isfinite(block).all():
        n_nan = int(np.isnan(block).sum())
        raise ValueError(
            f"a chunk of the image contains {n_nan} NaN and "
            f"{int((~np.isfinite(block)).sum()) - n_nan} infinite value(s). To treat them as "
            "missing data pass nan='inpaint' (fill them) or nan='keep' (fill them for the "
            "computation, put them back afterwards)")
    return block.copy()


def _name(params: DiffuseParams, preset: str | None) -> str:
    return f"preset {preset!r}" if preset is not None and params == \
        DiffuseParams.from_preset(preset) else "these settings"


def diffuse(image, params: DiffuseParams | None = None, *, preset: str | None = None,
            channel_axis: int | None = None, mask=None, backend: str = "auto",
            value_range: ValueRange = None, progress: Progress | None = None,
            chunks: int | tuple[int, int] | None = None, depth: int | str = "auto",
            exact: bool = False, nan: str = "error", **overrides: Any):
    """Diffuse or sharpen an image with darktable's multiscale anisotropic heat model.

    Parameters
    ----------
    image : array_like or dask.array.Array
        2-D or more. The last two non-channel axes are the spatial axes (height,
        width); leading axes (Z, T, ...) are processed as independent planes. The
        model's thresholds assume values near 0..1 (see ``value_range``). A dask array
        gives a lazy dask array (see ``chunks``).
    params : DiffuseParams, optional
        The settings; default: darktable's defaults (the identity).
        ``iterations=0`` runs one iteration, as darktable does (its GUI allows 0 and
        its code runs ``max(iterations, 1)``).
    preset : str, optional
        A preset name instead of ``params`` (see :func:`list_presets`).
    channel_axis : int, optional
        The axis holding channels (RGB, RGBA, fluorescence channels...); ``None`` means
        a single channel. Channels are diffused independently, with the same settings.
    mask : array_like of bool, optional
        Replaces the luminance mask: diffuse only where True, starting inside from
        seeded noise (inpainting); elsewhere the image is kept. Shape ``(H, W)`` or the
        image's leading plus spatial shape. May be a dask array.
    backend : {"auto", "numpy", "opencl"}
        The solver. ``"auto"`` prefers a working OpenCL device, else NumPy.
    value_range : None, "auto", "dtype" or (float, float)
        What maps to the working range 0..1, and back. Below 0 becomes 0 (as in
        darktable); above 1 is allowed.

        - ``(lo, hi)``: ``lo..hi``, for fixed units (counts, 12-bit data in uint16,
          background-subtracted data with negatives);
        - ``"dtype"``: floats as stored (nominally 0..1), integers from their dtype's
          full range (rounded and clipped back);
        - ``"auto"``: robust percentiles, :func:`~napari_diffuse.intensity.auto_range`:
          ``hi`` = the 99.9th percentile, ``lo`` = the minimum (negatives kept) unless
          it lies more than ``p99.9 - p0.1`` below the 0.1th percentile (then
          ``p0.1 - (p99.9 - p0.1)``). One range for the whole image (a dask array is
          read once now to find it); a constant image raises ``ValueError``;
        - ``None`` (default): ``"dtype"``, unless the data is clearly not on a 0..1
          scale: integers whose maximum is at most 1/4 of the dtype's maximum, or floats
          whose 99.9th percentile is above 16 or whose 0.1th percentile is below
          ``-0.25 * max(1, p99.9)``. Then ``"auto"``, with an ``IntensityWarning``
          naming the range (not for an image without spread: it keeps ``"dtype"``);
          pass ``value_range`` explicitly to silence it. This check reads the data (a
          dask array once, now).
    progress : callable, optional
        Called as ``progress(done, total)`` after each iteration of each plane (of each
        chunk, when chunked); it may raise an exception to stop the run. With dask input
        it is called later, while the result is computed, from the threads computing its
        chunks (``total`` counts the iterations of every chunk; raising stops the
        chunks computing then at their next iteration): for local schedulers (threads,
        synchronous); with a distributed cluster use its dashboard instead.
    chunks : int or (int, int), optional
        Spatial chunk size (rows, columns), without the overlap. Dask input: default is
        its own chunks when they hold the overlap, else 2048. NumPy input is chunked
        when this is given or when a whole plane would exceed
        ``napari_diffuse.tiling.MEMORY_BUDGET`` in the NumPy solver (the OpenCL solver
        tiles large images on its device itself); the result is then
        computed (dask's threaded scheduler) and returned as NumPy. Channels always stay
        in one chunk and leading axes are cut into single planes, run in parallel.
    depth : "auto", "full" or int
        Overlap between chunks in pixels. ``"auto"`` bounds how far a seam can change
        the result by more than 1e-4 (values 0..1); ``"full"`` is the strict reach,
        ``iterations * 3 * (2**scales - 1)``. Reduced, with a ``SeamWarning``, when a
        block would exceed the memory budget.
    exact : bool
        Process whole spatial planes (no seams); memory grows with the plane size.
    nan : {"error", "inpaint", "keep"}
        What NaN and infinite values mean. ``"error"`` (default): they are refused
        (``ValueError``). ``"inpaint"``: missing data, filled from their surroundings
        (started from the nearest finite pixel, inpainted with the preset ``fill gaps
        under a mask`` for as many iterations as the widest hole needs, then the settings
        run on the whole filled image; with ``mask``, they join it). ``"keep"``: filled
        the same way for the computation, so they disturb nothing around them, and put
        back afterwards. A pixel not finite in any channel is missing in all. See
        :mod:`napari_diffuse.missing`.
    **overrides
        Any :class:`DiffuseParams` field, e.g. ``iterations=8``.

    Returns
    -------
    numpy.ndarray or dask.array.Array
        A new array with the input's shape and dtype; for dask input, a lazy dask array
        with the input's chunks. Integers are rounded and clipped to their dtype's
        range, floats clipped to their dtype's finite range (float16: +-65504).
        Settings that change nothing (all four speeds and sharpness 0, and nothing to
        inpaint: no ``mask`` and ``luminance_threshold`` 0, or an all-False ``mask``)
        return an exact copy of the input, for every dtype, without running the solver
        (which would clip negative working values to 0 and round through float32); the
        input is still checked (NaN/Inf, working range) and ``progress`` is called once
        (NumPy input).

    Warns
    -----
    IntensityWarning
        With ``value_range=None``, when ``"auto"`` replaces ``"dtype"`` (see above).

    Raises
    ------
    ValueError, TypeError
        For invalid images, masks, parameters, presets, backends, ``value_range``,
        ``chunks``, ``depth`` or ``progress`` (checked before any work), a dask array with
        unknown chunk sizes (call ``x.compute_chunk_sizes()`` first), or values that map
        beyond :data:`~napari_diffuse.intensity.MAX_WORKING` (1e30) in working units
        (e.g. float data near float32's maximum with ``value_range="dtype"``); the
        caller's array is never modified. NaN or infinite values in a dask array raise
        ``ValueError`` when the chunk holding them is computed.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_diffuse import diffuse
    >>> noisy = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    >>> diffuse(noisy, preset="denoise: fine", iterations=2).shape
    (64, 64)

    A large image in a zarr store, lazily, written to another store:

    >>> import dask.array as da                                 # doctest: +SKIP
    >>> big = da.from_zarr("in.zarr")                           # doctest: +SKIP
    >>> diffuse(big, preset="denoise: medium").to_zarr("out.zarr")  # doctest: +SKIP
    """
    if check_nan_policy(nan) != "error":
        return _diffuse_missing(image, params, preset=preset, channel_axis=channel_axis,
                                mask=mask, backend=backend, value_range=value_range,
                                progress=progress, chunks=chunks, depth=depth, exact=exact,
                                nan=nan, overrides=overrides)
    image, params, layout = _validate(image, params, preset, channel_axis, value_range,
                                      overrides)
    _check_options(backend, progress, chunks, depth, exact)
    solver = get_solver(backend)
    plan = make_plan(params)
    if _changes_nothing(params, mask):
        return _identity(image, layout, mask, plan, progress)
    chunking = dict(backend=backend, mask=mask, chunks=chunks, depth=depth,
                    name=_name(params, preset))
    if tiling.is_dask(image):
        return tiling.diffuse_lazy(image, layout, params, plan, exact=exact,
                                   progress=progress, **chunking)
    if tiling.needs_chunks(layout, plan, chunks=chunks,
                           exact=exact or (solver.TILES_ON_DEVICE and chunks is None)):
        result = tiling.diffuse_chunked(np.asarray(image), layout, params, plan,
                                        progress=progress, **chunking)
        planes = None
    else:
        in_caller_units = _maps_units(solver, layout)
        planes = intensity.caller_planes(image, layout) if in_caller_units \
            else _planes(image, layout, solver.CHECKS_ON_DEVICE)
        units = {"layout": layout} if in_caller_units else {}
        masks = _masks(planes, layout, mask)
        total = planes.shape[0] * plan.iterations
        with _solved(image, layout):
            if planes.shape[0] > 1 and hasattr(solver, "solve_planes"):
                # a stack streams through the device, its transfers hidden behind the kernels
                out = solver.solve_planes(planes, plan, masks, progress=progress, **units)
            else:
                results = []
                for p, (plane, plane_mask) in enumerate(zip(planes, masks, strict=True)):
                    report = None if progress is None else (
                        lambda done, _total, p=p: progress(p * plan.iterations + done, total))
                    results.append(solver.solve(plane, plan, plane_mask, progress=report,
                                                **units))
                out = results[0][None] if len(results) == 1 else np.stack(results)
        if in_caller_units:
            result, planes = intensity.caller_shape(out, layout), None
        else:
            result = intensity.from_planes(out, layout)
    source = mask_source(mask, plan)
    if source is not None:
        _warn_unfilled(image, planes, result, layout,
                       _inpainted(image, planes, layout, mask, plan.luminance_threshold),
                       None if source == "caller" else plan.luminance_threshold)
    return result


def _started(image, channel_axis, nan: str):
    """``image`` as the extra outputs see it: missing pixels started when ``nan`` allows."""
    if check_nan_policy(nan) == "error":
        return image
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        image = np.asarray(image)
    intensity.check_image(image, channel_axis, "dtype")  # a valid channel axis, no reading
    return started(image, channel_axis)


def _check_options(backend: str, progress, chunks, depth, exact) -> None:
    tiling.check_depth(depth)
    if not isinstance(exact, (bool, np.bool_)):
        raise TypeError(f"exact={exact!r} is not a boolean; pass True or False")
    tiling.check_chunks(chunks)
    if progress is not None and not callable(progress):
        raise TypeError(f"progress={progress!r} is not callable; pass a function "
                        "progress(done, total), or None")
    get_solver(backend)


def _diffuse_missing(image, params, *, preset, channel_axis, mask, backend, value_range,
                     progress, chunks, depth, exact, nan, overrides):
    """:func:`diffuse` with ``nan="inpaint"`` or ``"keep"``: every argument checked first,
    then :func:`~napari_diffuse.missing.diffuse_with_missing`."""
    params = resolve_params(params, preset, **overrides)
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        image = np.asarray(image)
    if tiling.is_dask(image):
        tiling.check_known_chunks(image)
    layout = intensity.check_image(image, channel_axis, "dtype")  # reads no values
    intensity.check_value_range(value_range)
    if mask is not None:
        if not hasattr(mask, "shape"):
            mask = np.asarray(mask)  # a nested list, as diffuse() takes without nan
        intensity.check_mask_shape(mask, layout)
    _check_options(backend, progress, chunks, depth, exact)
    common = dict(channel_axis=channel_axis, backend=backend, chunks=chunks, depth=depth,
                  exact=exact)

    def run(array, fill, *, mask, value_range, progress, **changes):
        if fill is None:
            return diffuse(array, params, mask=mask, value_range=value_range,
                           progress=progress, **common)
        return diffuse(array, preset=fill, mask=mask, value_range=value_range,
                       progress=progress, **common, **changes)

    return diffuse_with_missing(image, nan, channel_axis=channel_axis, mask=mask,
                                value_range=value_range, progress=progress, run=run,
                                iterations=params.iterations)


def _inpainted(image, planes: np.ndarray | None, layout: intensity.Layout, mask,
               threshold: float) -> np.ndarray:
    """Where a run inpainted, bool ``(planes, H, W)``: the caller's ``mask``, else the
    luminance mask at ``threshold`` (from ``planes`` in working units where at hand, else
    from ``image`` one plane at a time)."""
    if mask is not None:
        return intensity.check_mask(mask, layout)
    if planes is not None:
        return intensity.above_threshold(planes, threshold)
    return np.stack([intensity.above_threshold(intensity.to_working(plane, layout), threshold)
                     for plane in intensity.caller_planes(image, layout)])


def _warn_unfilled(image, planes: np.ndarray | None, result, layout: intensity.Layout,
                   masks: np.ndarray, threshold: float | None) -> None:
    """Warn when inpainted pixels end beyond the input's range by more than its span:
    darktable's start noise (up to a few times each pixel's value) was not diffused away.
    The whole input counts (a clipped highlight may rightly be brighter than every known
    pixel), so only an overshoot of the original values themselves warns. ``planes`` is
    the input in working units (:func:`~napari_diffuse.intensity.to_planes`) where at
    hand; else the caller's extremes are mapped (the mapping is monotonic: the same
    values), and only the inpainted pixels of ``result`` (``masks``, from
    :func:`_inpainted`: the caller's mask, or the luminance mask at ``threshold``)."""
    if not masks.any():
        return
    filled = intensity.to_working(intensity.caller_planes(result, layout)[masks], layout)
    if planes is None:
        caller = intensity.caller_planes(image, layout)
        low, high = (float(v) for v in intensity.to_working(
            np.array([caller.min(), caller.max()], caller.dtype), layout))
    else:
        low, high = float(planes.min()), float(planes.max())
    span = max(high - low, np.finfo(np.float32).eps)
    outside = (filled > high + span) | (filled < low - span)
    if outside.any():
        warnings.warn(InpaintingWarning(
            f"{int(outside.sum())} of {filled.size} inpainted values end far outside the "
            f"image's range ({low:.4g}..{high:.4g} in working units; up to "
            f"{float(filled.max()):.4g}): these settings diffuse too little to fill "
            f"{'the mask' if threshold is None else 'the luminance mask'} from darktable's "
            "seeded start noise. " + (
                "Use the preset 'fill gaps under a mask' or calibrate(image, 'inpaint', "
                "mask=...)" if threshold is None else
                f"Every value above luminance_threshold={threshold:g} is inpainted: more "
                "iterations or a wider radius fill it (the preset 'inpaint highlights' is "
                "made for it), luminance_threshold=0 inpaints nothing")),
            stacklevel=3)


def _identity(image, layout: intensity.Layout, mask, plan, progress):
    """An exact copy of ``image``, checked like any input (NaN/Inf, working range)."""
    if tiling.is_dask(image):
        if mask is not None:
            intensity.check_mask_shape(np.asarray(mask), layout)
        # NaN/Inf are refused chunk by chunk when computed, as on the solver path
        return image.map_blocks(_copy_block, dtype=image.dtype,
                                meta=np.empty((0,) * image.ndim, image.dtype))
    planes = _planes(image, layout)
    _masks(planes, layout, mask)
    if progress is not None:
        total = planes.shape[0] * plan.iterations
        progress(total, total)
    return np.array(image, copy=True)


def luminance_mask(image, params: DiffuseParams | None = None, *, preset: str | None = None,
                   channel_axis: int | None = None, value_range: ValueRange = None,
                   nan: str = "error", **overrides: Any) -> np.ndarray:
    """Return the luminance mask: where :func:`diffuse` would inpaint.

    True where any colour channel (R, G, B; the 4th of 4 channels is alpha; every
    channel otherwise) is above ``luminance_threshold``, in working units. All False
    when the threshold is 0 (darktable then diffuses everywhere).

    Parameters
    ----------
    image : array_like or dask.array.Array
        As in :func:`diffuse`.
    params : DiffuseParams, optional
        The settings; default: darktable's defaults.
    preset : str, optional
        A preset name instead of ``params`` (see :func:`list_presets`).
    channel_axis : int, optional
        The axis holding channels; ``None`` means a single channel.
    value_range : None, "auto", "dtype" or (float, float)
        The working units, as in :func:`diffuse` (and may warn the same way).
    nan : {"error", "inpaint", "keep"}
        ``"error"`` refuses NaN and infinite values; otherwise missing pixels take
        their nearest finite pixel's values first
        (:func:`napari_diffuse.missing.started`).
    **overrides
        Fields of :class:`DiffuseParams` replacing those of ``params`` or ``preset``.

    Returns
    -------
    numpy.ndarray of bool
        The image's leading plus spatial shape; lazy (dask) for dask input.

    Raises
    ------
    ValueError
        As :func:`diffuse` does, for the same arguments.
    """
    image = _started(image, channel_axis, nan)
    image, params, layout = _validate(image, params, preset, channel_axis, value_range,
                                      overrides)
    if tiling.is_dask(image):
        return tiling.luminance_lazy(image, layout, params.luminance_threshold)
    shape = (*layout.leading_shape, *layout.spatial_shape)
    planes = _planes(image, layout)
    if params.luminance_threshold <= 0.0:
        return np.zeros(shape, bool)
    return intensity.above_threshold(planes, params.luminance_threshold).reshape(shape)


def variance_map(image, params: DiffuseParams | None = None, *, preset: str | None = None,
                 channel_axis: int | None = None, mask=None, backend: str = "auto",
                 value_range: ValueRange = None, nan: str = "error",
                 **overrides: Any) -> np.ndarray:
    """Return darktable's edge-variance term: what slows diffusion down near edges.

    ``10**edge_threshold + (10**edge_sensitivity - 1) * sigma_0**2 / 9 * sum_3x3(HF**2)``
    at the finest wavelet scale of the first iteration, averaged over channels. Every
    speed is divided by it: bright areas of the map (edges, texture) are protected,
    dark areas (flat regions, values near ``10**edge_threshold``) diffuse at full speed.
    Use it to tune *edge sensitivity* and *edge threshold*.

    Parameters
    ----------
    image : array_like or dask.array.Array
        As in :func:`diffuse`.
    params : DiffuseParams, optional
        The settings; default: darktable's defaults.
    preset : str, optional
        A preset name instead of ``params`` (see :func:`list_presets`).
    channel_axis : int, optional
        The axis holding channels; ``None`` means a single channel.
    mask : array_like of bool, optional
        The caller's mask, as in :func:`diffuse` (else the luminance mask): inside it
        the map sees darktable's seeded start noise, as the first iteration does.
    backend : {"auto", "numpy", "opencl"}
        The solver that computes the map.
    value_range : None, "auto", "dtype" or (float, float)
        The working units, as in :func:`diffuse` (and may warn the same way).
    nan : {"error", "inpaint", "keep"}
        As in :func:`luminance_mask`.
    **overrides
        Fields of :class:`DiffuseParams` replacing those of ``params`` or ``preset``.

    Returns
    -------
    numpy.ndarray of float32
        The image's leading plus spatial shape; lazy (dask, exact: chunks overlap by
        3 px) for dask input.

    Raises
    ------
    ValueError
        As :func:`diffuse` does, for the same arguments.
    """
    image = _started(image, channel_axis, nan)
    image, params, layout = _validate(image, params, preset, channel_axis, value_range,
                                      overrides)
    solver = get_solver(backend)
    plan = make_plan(params)
    if tiling.is_dask(image):
        return tiling.variance_lazy(image, layout, params, plan, backend=backend, mask=mask)
    planes = _planes(image, layout)
    masks = _masks(planes, layout, mask)
    maps = np.stack([solver.variance_map(plane, plan, plane_mask)
                     for plane, plane_mask in zip(planes, masks, strict=True)])
    return maps.reshape(*layout.leading_shape, *layout.spatial_shape)
