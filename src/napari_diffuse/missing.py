"""NaN and infinite values as missing data: ``diffuse(..., nan="inpaint" | "keep")``.

For astro frames (FITS) NaN means "no data here", and a mosaic's edges or a bad column are
exactly what inpainting is for. A pixel that is not finite in any channel is *missing*:

1. **Start.** Each missing pixel takes the values of its nearest finite pixel (Euclidean
   distance transform, per plane): a start inside the data's range, so the value range
   (``value_range``) is found as for a complete image.
2. **Fill.** The missing pixels are inpainted (``mask`` = the missing pixels) with the
   preset ``fill gaps under a mask``, whose iterations grow with the widest hole:
   ``16 + 8 d`` for a hole whose farthest pixel lies ``d`` pixels from known data (as in
   :func:`~napari_diffuse.calibrate`'s inpainting), 16 at least and 500 at most. With
   ``"keep"`` the fill is only a neutral surround for step 3, and ``d`` counts at most 16.
3. **Run.** The caller's settings run on the filled image as on any complete image (with
   the caller's ``mask`` joined by the missing pixels, when one is given).
4. ``"inpaint"`` returns that result; ``"keep"`` puts the original non-finite values back
   where they were (every channel of a missing pixel keeps its stored value).

The range is resolved once, on the started image, and both runs use it. Dask input is
started and filled block by block with an overlap of :data:`FILL_DEPTH` pixels, so holes
wider than that are filled from the block's own data (the result may then depend on the
chunks).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from . import intensity, tiling

__all__ = ["NAN_POLICIES", "check_nan_policy", "diffuse_with_missing", "fill_iterations",
           "started",
           "FILL_PRESET", "FILL_DEPTH"]

NAN_POLICIES = ("error", "inpaint", "keep")
FILL_PRESET = "fill gaps under a mask"
#: Overlap, in pixels, between dask blocks while missing pixels are started and filled.
FILL_DEPTH = 64
_KEEP_REACH = 16  # with "keep", the fill need only be neutral this far into a hole
_MAX_ITERATIONS = 500


def check_nan_policy(nan) -> str:
    """Return ``nan`` if it is one of :data:`NAN_POLICIES`.

    Raises
    ------
    ValueError
        Naming the value and the accepted ones.
    """
    if not isinstance(nan, str) or nan not in NAN_POLICIES:
        raise ValueError(f"nan={nan!r} is not accepted; accepted: 'error' (refuse NaN/Inf, "
                         "the default), 'inpaint' (fill them) or 'keep' (fill them for the "
                         "computation, put them back afterwards)")
    return nan


def fill_iterations(distance: float, nan: str) -> int:
    """Iterations that fill a hole whose farthest pixel is ``distance`` px from known data."""
    reach = min(distance, _KEEP_REACH) if nan == "keep" else distance
    return int(min(_MAX_ITERATIONS, max(16, 16 + 8 * math.ceil(reach))))


def _missing_pixels(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """True where any channel is not finite; the image's shape without the channel axis."""
    bad = ~np.isfinite(image)
    return bad.any(axis=channel_axis) if channel_axis is not None else bad


def _start(image: np.ndarray, missing: np.ndarray, channel_axis: int | None
           ) -> tuple[np.ndarray, float]:
    """Missing pixels take their nearest finite pixel's values (per plane); return the
    started float copy and the largest distance from a missing pixel to known data."""
    from scipy import ndimage

    moved = image if channel_axis is None else np.moveaxis(image, channel_axis, -1)
    started = np.array(moved, dtype=image.dtype, copy=True)
    flat = started.reshape(-1, *missing.shape[-2:], *started.shape[missing.ndim:])
    flat_missing = missing.reshape(-1, *missing.shape[-2:])
    farthest = 0.0
    for plane, hole in zip(flat, flat_missing, strict=True):
        if not hole.any():
            continue
        if hole.all():
            raise ValueError("a plane of the image has no finite value at all: nothing to "
                             "fill its missing pixels from (remove the plane, or pass nan="
                             "'error' and replace its values first)")
        distance, (rows, cols) = ndimage.distance_transform_edt(hole, return_indices=True)
        plane[hole] = plane[rows[hole], cols[hole]]
        farthest = max(farthest, float(distance.max()))
    if channel_axis is not None:
        started = np.moveaxis(started, -1, channel_axis)
    return started, farthest


def started(image, channel_axis: int | None):
    """Return ``image`` with each missing pixel holding its nearest finite pixel's values
    (step 1 above): what :func:`~napari_diffuse.luminance_mask` and
    :func:`~napari_diffuse.variance_map` see with ``nan="inpaint"`` or ``"keep"``.

    Integer images and images without missing pixels come back as they are; dask images
    are started block by block (overlap :data:`FILL_DEPTH`).

    Raises
    ------
    ValueError
        When a plane (a block, for dask) has no finite value at all.
    """
    if np.dtype(image.dtype).kind != "f":
        return image
    if tiling.is_dask(image):
        return image.map_overlap(_start_block, depth=_spatial_depth(image, channel_axis),
                                 boundary="none", dtype=image.dtype,
                                 channel_axis=_axis(image.ndim, channel_axis))
    image = np.asarray(image)
    missing = _missing_pixels(image, channel_axis)
    return _start(image, missing, channel_axis)[0] if missing.any() else image


def _axis(ndim: int, channel_axis: int | None) -> int | None:
    return None if channel_axis is None else channel_axis % ndim


def _spatial_depth(image, channel_axis: int | None) -> dict[int, int]:
    """Overlap :data:`FILL_DEPTH` along the dask image's split spatial axes, at most the axis
    (dask refuses a depth beyond the array), none along whole axes and the others."""
    channel = _axis(image.ndim, channel_axis)
    spatial = [a for a in range(image.ndim) if a != channel][-2:]
    return {a: (min(FILL_DEPTH, image.shape[a]) if a in spatial and image.numblocks[a] > 1
                else 0) for a in range(image.ndim)}


def _start_block(block: np.ndarray, *, channel_axis: int | None) -> np.ndarray:
    missing = _missing_pixels(block, channel_axis)
    return _start(block, missing, channel_axis)[0] if missing.any() else block


def _range(started, channel_axis: int | None, value_range) -> tuple[float, float]:
    layout = intensity.check_image(started, channel_axis, value_range, stacklevel=5)
    return (layout.offset, layout.offset + layout.scale)


def diffuse_with_missing(image, nan: str, *, channel_axis: int | None, mask, value_range,
                         progress: Callable[[int, int], None] | None,
                         run: Callable[..., np.ndarray], iterations: int):
    """Diffuse ``image`` with its NaN/Inf pixels treated as missing (see the module).

    Parameters
    ----------
    image : array_like or dask.array.Array
        The caller's image (not modified).
    nan : {"inpaint", "keep"}
        Return the filled result, or put the non-finite values back.
    channel_axis, mask, value_range, progress
        As in :func:`~napari_diffuse.diffuse`.
    run : callable
        ``run(image, fill, *, mask, value_range, progress, **changes)``: the caller's
        ``diffuse`` with everything else bound; ``fill`` None runs the caller's
        settings, else the named preset with ``changes`` (the fill's iterations).
    iterations : int
        The caller's iterations (for the progress total).

    Returns
    -------
    numpy.ndarray or dask.array.Array
        As :func:`~napari_diffuse.diffuse` returns.
    """
    if np.dtype(image.dtype).kind != "f":
        return run(image, None, mask=mask, value_range=value_range, progress=progress)
    if tiling.is_dask(image):
        return _lazy(image, nan, channel_axis=channel_axis, mask=mask,
                     value_range=value_range, progress=progress, run=run)
    image = np.asarray(image)
    missing = _missing_pixels(image, channel_axis)
    if not missing.any():
        return run(image, None, mask=mask, value_range=value_range, progress=progress)
    started, farthest = _start(image, missing, channel_axis)
    value_range = _range(started, channel_axis, value_range)
    fill = fill_iterations(farthest, nan)
    planes = max(1, missing.size // math.prod(missing.shape[-2:]))
    first, second = _split_progress(progress, planes * fill, planes * max(1, iterations))
    filled = run(started, FILL_PRESET, mask=missing, value_range=value_range,
                 progress=first, iterations=fill)
    joined = None if mask is None else np.logical_or(mask, missing)
    result = run(filled, None, mask=joined, value_range=value_range, progress=second)
    if nan == "keep":
        bad = ~np.isfinite(image)
        result[bad] = image[bad]
    return result


def _split_progress(progress, first_total: int, second_total: int):
    """Two callbacks reporting one run of ``first_total + second_total`` steps."""
    if progress is None:
        return None, None
    total = first_total + second_total

    def first(done: int, _total: int) -> None:
        progress(min(done, first_total), total)

    def second(done: int, total_second: int) -> None:
        progress(first_total + done, first_total + total_second)

    return first, second


def _fill_block(block: np.ndarray, *, channel_axis: int | None, nan: str,
                value_range: tuple[float, float], run) -> np.ndarray:
    missing = _missing_pixels(block, channel_axis)
    if not missing.any():
        return block
    started, farthest = _start(block, missing, channel_axis)
    return run(started, FILL_PRESET, mask=missing, value_range=value_range, progress=None,
               iterations=fill_iterations(farthest, nan))


def _lazy(image, nan: str, *, channel_axis: int | None, mask, value_range, progress, run):
    """The dask path: start and fill block by block (overlap :data:`FILL_DEPTH`), then the
    caller's settings lazily on the filled image (``progress`` counts these), then the
    non-finite values back."""
    import dask.array as da

    channel = _axis(image.ndim, channel_axis)
    depth = _spatial_depth(image, channel_axis)
    probe = image.map_blocks(lambda b: np.where(np.isfinite(b), b, np.nan), dtype=image.dtype)
    finite_min = da.nanmin(probe)
    if not np.isfinite(float(finite_min.compute())):
        raise ValueError("the image has no finite value at all: nothing to fill from")
    if value_range is None or isinstance(value_range, str):
        rough = da.where(da.isfinite(image), image, finite_min)  # only to find the range
        value_range = _range(rough, channel_axis, value_range)
    filled = image.map_overlap(_fill_block, depth=depth, boundary="none", dtype=image.dtype,
                               channel_axis=channel, nan=nan, value_range=value_range, run=run)
    joined = None
    if mask is not None:
        missing = da.any(~da.isfinite(image), axis=channel) if channel is not None \
            else ~da.isfinite(image)
        joined = da.logical_or(da.asarray(mask), missing)
    result = run(filled, None, mask=joined, value_range=value_range, progress=progress)
    if nan == "keep":
        result = da.where(da.isfinite(image), result, image)
    return result
