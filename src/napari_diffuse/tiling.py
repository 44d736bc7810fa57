"""Chunked, lazy processing with dask: large images, stacks, clusters.

An image is cut into spatial chunks (all channels together, one plane of the leading
axes at a time); each chunk is extended by an overlap with its neighbours
(``dask.array.map_overlap(..., boundary="none")``), run through the solver, and
trimmed back. At the image's true edges nothing is padded, so the solver's own
clamp-to-edge handling applies there exactly as on the whole image; only the inner
seams see neighbours.

How much overlap
----------------
One iteration spreads information at most ``3 * (2**scales - 1)`` pixels
(:func:`.plan.reach_per_iteration`), so ``iterations`` times that (the *full reach*) is
a strict bound. It is pessimistic: the coarse wavelet scales reach that far only
through B-spline taps weighted ``(1/16)**scales``, and most presets damp their coarse
scales. :func:`influence_depth` bounds instead how fast a difference at a seam (at
most the value range, 1) spreads: linearising one iteration, each scale ``s`` adds at
most ``a_s`` times a kernel made of its B-spline blurs and PDE stencil, with ``a_s``
from the plan's speeds (divided by the smallest variance, ``10**edge_threshold``) and
sharpening gain. A Chernoff bound on ``iterations`` such steps gives the distance
beyond which the difference is below :data:`TOLERANCE` (with a 100x margin). For
``denoise: medium`` it is 211 px instead of 2976 px; measured differences fall below
1e-4 within 8 to 17 px (random noise, steps, fluorescence-like data).

When a block holding that overlap does not fit :data:`MEMORY_BUDGET` (dehaze and
local contrast reach 3069 px per iteration, 30,690 px in 10), the overlap is reduced
to what fits and a :class:`SeamWarning` names the reach and the overlap used: seams may then differ
from the whole-image result by more than the tolerance. ``exact=True`` processes
whole planes instead (no seams, memory grows with the plane).

Inpainting noise is seeded by each pixel's position in the whole image (chunks pass
``origin`` and ``full_width`` to the solver), the luminance mask is computed from
each chunk's own input, and a user mask is chunked with the same chunks and overlap
as the image, so chunked and whole results agree under masks too.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import warnings
from collections.abc import Callable

import numpy as np

from . import intensity
from .backends import get_solver
from .params import DiffuseParams
from .plan import ISOTROPIC, VARIANCE_MAP_REACH, Plan

__all__ = ["DEFAULT_CHUNK", "MEMORY_BUDGET", "TOLERANCE", "SeamWarning", "Tiling", "is_dask",
           "influence_depth", "check_depth", "check_chunks", "check_known_chunks",
           "solver_bytes_per_pixel", "plan_tiling", "needs_chunks",
           "diffuse_lazy", "diffuse_chunked", "luminance_lazy", "variance_lazy"]

#: Spatial chunk edge in pixels, without the overlap, when none is given.
DEFAULT_CHUNK = 2048


def _default_budget() -> int:
    """A quarter of the physical memory, shared by one block per CPU; at least 1 GiB."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        physical = 16 << 30
    return max(1 << 30, physical // (4 * (os.cpu_count() or 1)))


#: Bytes one block (chunk plus overlap) may use in the solver: by default a quarter of
#: the physical memory divided by the number of CPUs (3 GiB on 2 cores and 24 GiB), at
#: least 1 GiB. NumPy input whose whole plane needs more is processed in chunks; a block
#: that would need more with the overlap it should have gets smaller chunks, then a
#: smaller overlap (with a warning).
MEMORY_BUDGET = _default_budget()
#: Largest difference (max abs, values 0..1) between chunked and whole-image results
#: that the automatic overlap aims for.
TOLERANCE = 1e-4
#: :func:`influence_depth` aims this many times below the tolerance, for the nonlinear
#: terms its linearisation leaves out (edge directions, the variance's own change).
_NONLINEAR_MARGIN = 100.0


class SeamWarning(UserWarning):
    """The overlap between chunks is smaller than the settings' reach: seams may show."""


def is_dask(array) -> bool:
    """Return whether ``array`` is a dask array (without importing dask if it is not loaded)."""
    module = type(array).__module__
    return module.startswith("dask.") and hasattr(array, "chunks") and hasattr(array, "dask")


def solver_bytes_per_pixel(plan: Plan, channels: int) -> int:
    """Return the host bytes a solver uses per pixel of a block, as the NumPy solver declares
    them (:func:`.numpy_solver.bytes_per_pixel`; the OpenCL solver holds less on the host)."""
    from . import numpy_solver

    return numpy_solver.bytes_per_pixel(plan, channels)


def _log_cosh(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(x, -x) - math.log(2.0)


def _log_step_growth(plan: Plan, lam: np.ndarray) -> np.ndarray:
    """``log`` of the moment generating function of one iteration's linearised influence.

    Scale ``s`` adds ``|strength - 1|`` times its high frequencies (mass 2) and each
    order's speed over the smallest variance times its stencil (abs mass 6 isotropic,
    at most 9 anisotropic; one row of it at ``+-2**s``), both seen through the ``s + 1``
    B-spline blurs (each ``cosh(lam * m / 2)**4`` for dilation ``m``).
    """
    log_terms = []
    blur = np.zeros_like(lam)
    for step in plan.steps:
        blur = blur + 4.0 * _log_cosh(lam * step.mult / 2.0)
        log_far = _log_cosh(lam * step.mult)
        sharpen = 2.0 * abs(float(step.strength) - 1.0)
        weights = [np.full_like(lam, math.log(sharpen))] if sharpen > 0.0 else []
        for order, speed in enumerate(step.speeds):
            if speed == 0.0:
                continue
            centre, side = (4.0, 2.0) if plan.modes[order] == ISOTROPIC else (6.0, 3.0)
            gain = abs(float(speed)) / float(plan.variance_threshold) * (1.0 if order < 2 else 2.0)
            weights.append(math.log(gain) + np.logaddexp(math.log(centre),
                                                         math.log(side) + log_far))
        if weights:
            log_terms.append(np.logaddexp.reduce(np.stack(weights), axis=0) + blur)
    if not log_terms:
        return np.zeros_like(lam)
    return np.logaddexp(0.0, np.logaddexp.reduce(np.stack(log_terms), axis=0))


def influence_depth(params: DiffuseParams, plan: Plan, tolerance: float = TOLERANCE) -> int:
    """Return the overlap, in pixels, that keeps chunk seams within ``tolerance``.

    A Chernoff bound on the linearised spread of a seam difference of 1 over
    ``plan.iterations`` iterations (see the module notes), aiming 100 times below
    ``tolerance``, never more than the strict full reach
    ``iterations * reach_per_iteration(params)``.
    """
    full = plan.full_reach
    lam = np.geomspace(1e-4, 4.0, 1024)
    log_bound = plan.iterations * _log_step_growth(plan, lam) - np.log(np.expm1(lam))
    target = tolerance / _NONLINEAR_MARGIN
    depth = float(np.min((log_bound - math.log(target)) / lam))
    return int(min(full, max(0, math.ceil(depth))))


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How one image is cut: spatial chunks, the overlap, and why."""

    chunks: tuple[tuple[int, ...], tuple[int, ...]]  #: row and column chunk sizes
    depth: tuple[int, int]  #: overlap along rows and columns (0 where an axis is one chunk)
    wanted_depth: int  #: the overlap the settings need
    full_reach: int  #: the strict bound, ``iterations * reach_per_iteration``

    @property
    def starts(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """First row and first column of every chunk."""
        return tuple(tuple(int(s) for s in np.cumsum((0, *sizes[:-1]))) for sizes in self.chunks)


def _axis_chunks(length: int, core: int, depth: int) -> tuple[int, ...]:
    """Chunks of ``core`` pixels covering ``length``, none smaller than ``depth``."""
    if length <= core:
        return (length,)
    sizes = [core] * (length // core)
    rest = length - core * len(sizes)
    if rest >= depth and rest > 0:
        sizes.append(rest)
    elif rest:
        sizes[-1] += rest
    return tuple(sizes)


def _block_pixels(chunks, depth: int) -> int:
    return math.prod(max(sizes) + (2 * depth if len(sizes) > 1 else 0) for sizes in chunks)


def check_depth(depth) -> None:
    """Raise ``ValueError`` unless ``depth`` is ``"auto"``, ``"full"`` or an int >= 0."""
    if isinstance(depth, str):
        valid = depth in ("auto", "full")
    else:
        valid = isinstance(depth, (int, np.integer)) and not isinstance(depth, bool) and depth >= 0
    if not valid:
        raise ValueError(f"depth={depth!r}; accepted: 'auto', 'full' or an int >= 0 (pixels)")


def check_chunks(chunks) -> None:
    """Raise ``ValueError`` unless ``chunks`` is None, an int >= 1 or a pair of them."""
    def whole(size):
        return isinstance(size, (int, np.integer)) and not isinstance(size, (bool, np.bool_)) \
            and size >= 1

    if chunks is None or whole(chunks):
        return
    if isinstance(chunks, (tuple, list)) and len(chunks) == 2 and all(map(whole, chunks)):
        return
    raise ValueError(f"chunks={chunks!r}; accepted: None, an int >= 1 or (rows, cols) of "
                     "ints >= 1 (the spatial chunk size in pixels, without the overlap)")


def check_known_chunks(image) -> None:
    """Raise ``ValueError`` if a dask array's chunk sizes are unknown (NaN)."""
    if any(math.isnan(size) for sizes in image.chunks for size in sizes):
        raise ValueError(
            f"the dask array has unknown chunk sizes {image.chunks} (from boolean indexing "
            "or similar), so it cannot be cut into overlapping chunks; call "
            "x.compute_chunk_sizes() on it first (or x.compute() for NumPy input)")


def _wanted_depth(depth, params: DiffuseParams, plan: Plan, full: int) -> int:
    check_depth(depth)
    if depth == "auto":
        return influence_depth(params, plan)
    return full if depth == "full" else int(depth)


def _core_sizes(chunks, spatial_shape, input_chunks) -> tuple[int, int]:
    if chunks is None:
        if input_chunks is not None:
            return tuple(max(sizes) for sizes in input_chunks)
        return DEFAULT_CHUNK, DEFAULT_CHUNK
    check_chunks(chunks)
    sizes = (chunks, chunks) if isinstance(chunks, (int, np.integer)) else tuple(chunks)
    return tuple(min(int(s), n) for s, n in zip(sizes, spatial_shape, strict=True))


def plan_tiling(spatial_shape: tuple[int, int], channels: int, params: DiffuseParams, plan: Plan,
                *, chunks=None, depth="auto", exact: bool = False,
                input_chunks: tuple[tuple[int, ...], tuple[int, ...]] | None = None,
                name: str = "these settings") -> Tiling:
    """Choose the spatial chunks and the overlap for one image.

    Parameters
    ----------
    spatial_shape : (int, int)
        Height and width.
    channels : int
        Channels per pixel (all in one chunk).
    params, plan
        The settings and their plan.
    chunks : int or (int, int), optional
        Chunk size without the overlap; default: ``input_chunks`` if they suit, else
        :data:`DEFAULT_CHUNK`. Enlarged to the overlap where needed (dask needs chunks
        at least as large as the overlap).
    depth : "auto", "full" or int
        The overlap: :func:`influence_depth`, the strict full reach, or pixels.
    exact : bool
        One chunk per plane: no seams at all.
    input_chunks : tuple of tuples, optional
        A dask input's row and column chunks, kept when no ``chunks`` is given and
        they hold the overlap within :data:`MEMORY_BUDGET`.
    name : str
        Names the settings in a warning.

    Warns
    -----
    SeamWarning
        When the overlap had to be reduced below the wanted depth to fit the budget.
    """
    height, width = spatial_shape
    full = plan.full_reach
    wanted = _wanted_depth(depth, params, plan, full)
    if exact:
        return Tiling(((height,), (width,)), (0, 0), wanted, full)
    budget_pixels = MEMORY_BUDGET // solver_bytes_per_pixel(plan, channels)
    if chunks is None and input_chunks is not None and all(
            len(sizes) == 1 or min(sizes) >= wanted for sizes in input_chunks) \
            and _block_pixels(input_chunks, wanted) <= budget_pixels:
        grid = tuple(tuple(int(s) for s in sizes) for sizes in input_chunks)
        return _tiling(grid, wanted, wanted, full)
    cores = _core_sizes(chunks, spatial_shape, input_chunks)
    used = wanted

    def grid_for(sizes, overlap):
        return tuple(_axis_chunks(n, max(c, overlap), overlap)
                     for n, c in zip(spatial_shape, sizes, strict=True))

    grid = grid_for(cores, used)
    if _block_pixels(grid, used) > budget_pixels:
        if height * width <= budget_pixels:
            grid = ((height,), (width,))
        else:
            side = math.isqrt(budget_pixels)
            if side - 2 * used >= used:
                grid = grid_for((side - 2 * used,) * 2, used)
            else:
                used = max(1, side // 3)
                grid = grid_for((used,) * 2, used)
    if used < wanted and any(len(sizes) > 1 for sizes in grid):
        warnings.warn(
            f"{name}: chunks of a {height}x{width} image need an overlap of {wanted} px "
            f"(reach {plan.reach_per_iteration} px per iteration, {full} px in "
            f"{plan.iterations} iterations), but a block with it would not fit the memory "
            f"budget ({MEMORY_BUDGET / 2**20:.0f} MiB): using {used} px, so results near "
            f"chunk seams may differ from the whole-image result by more than {TOLERANCE:g}. "
            f"Use exact=True to process whole planes (about "
            f"{height * width * solver_bytes_per_pixel(plan, channels) / 2**20:.0f} MiB per "
            "plane), or raise napari_diffuse.tiling.MEMORY_BUDGET.",
            SeamWarning, stacklevel=4)
    return _tiling(grid, used, wanted, full)


def _tiling(grid, depth: int, wanted: int, full: int) -> Tiling:
    return Tiling(grid, tuple(depth if len(sizes) > 1 else 0 for sizes in grid), wanted, full)


def needs_chunks(layout: intensity.Layout, plan: Plan, *, chunks=None, exact: bool = False) -> bool:
    """Return whether NumPy input is processed in chunks: asked for, or a plane over budget."""
    if exact:
        return False
    height, width = layout.spatial_shape
    return chunks is not None or \
        height * width * solver_bytes_per_pixel(plan, layout.channels) > MEMORY_BUDGET


def _channels_last(image, layout: intensity.Layout):
    """A dask view ``(*leading, H, W, C)`` of the caller's array (no data read)."""
    import dask.array as da

    if layout.channel_axis is None:
        return image[..., None]
    return da.moveaxis(image, layout.channel_axis, -1)


def _caller_axes(result, layout: intensity.Layout):
    """Undo :func:`_channels_last` on a ``(*leading, H, W, C)`` dask array."""
    import dask.array as da

    if layout.channel_axis is None:
        return result[..., 0]
    return da.moveaxis(result, -1, layout.channel_axis)


def _block_origin(block_info, tiling: Tiling, leading_shape) -> tuple[int, int, int]:
    """``(plane, row, col)`` of a block's first pixel, overlap included, in the whole image."""
    location = block_info[0]["chunk-location"]
    rows, cols = location[-3], location[-2]
    row0 = tiling.starts[0][rows] - (tiling.depth[0] if rows > 0 else 0)
    col0 = tiling.starts[1][cols] - (tiling.depth[1] if cols > 0 else 0)
    plane = int(np.ravel_multi_index(location[:-3], leading_shape)) if leading_shape else 0
    return plane, row0, col0


@dataclasses.dataclass(frozen=True)
class _BlockJob:
    """What every block needs: picklable (plain data and a backend name), for dask clusters."""

    layout: intensity.Layout
    plan: Plan
    backend: str
    tiling: Tiling
    operation: str  #: "solve" or "variance_map"

    def prepare(self, block: np.ndarray, mask_block, block_info):
        """Return the block's working plane, its mask, its origin in the whole image."""
        plane_index, row0, col0 = _block_origin(block_info, self.tiling, self.layout.leading_shape)
        work = intensity.to_working(block, self.layout, check=False).reshape(block.shape[-3:])
        intensity.check_values(work[None], self.layout, origin=(plane_index, row0, col0))
        # without a user mask the solver applies the luminance mask of this block's input
        mask = None if mask_block is None else \
            np.asarray(mask_block, bool).reshape(block.shape[-3:-1])
        return work, mask, (row0, col0)


def _run_block(block: np.ndarray, mask_block: np.ndarray | None = None, *, job: _BlockJob,
               progress: Callable[[int, int], None] | None = None, block_info=None) -> np.ndarray:
    """Run ``job.operation`` on one block (leading axes of length 1, channels last)."""
    work, mask, origin = job.prepare(block, mask_block, block_info)
    solver = get_solver(job.backend)
    full_width = job.layout.spatial_shape[1]
    if job.operation == "variance_map":
        result = solver.variance_map(work, job.plan, mask, origin=origin, full_width=full_width)
        return result.reshape(block.shape[:-1])
    result = solver.solve(work, job.plan, mask, origin=origin, full_width=full_width,
                          progress=progress)
    return intensity.from_working(result, job.layout).reshape(block.shape)


def _lazy_mask(mask, layout: intensity.Layout, tiling: Tiling):
    """The user mask as a bool dask ``(*leading, H, W, 1)`` array with the image's chunks."""
    import dask.array as da

    if not is_dask(mask):
        mask = np.asarray(mask)
    intensity.check_mask_shape(mask, layout)
    lead = (1,) * len(layout.leading_shape)
    if not is_dask(mask):
        mask = da.from_array(mask, chunks=(*lead[:mask.ndim - 2], *tiling.chunks))
    full = (*layout.leading_shape, *layout.spatial_shape)
    return da.broadcast_to(mask.astype(bool), full)[..., None].rechunk((*lead, *tiling.chunks, 1))


def _map_blocks(image, layout, plan, *, backend, mask, operation, tiling, progress=None):
    """Run ``operation`` over ``image`` chunk by chunk: a ``(*leading, H, W, C)`` dask array
    (``(*leading, H, W)`` for the variance map)."""
    import dask.array as da

    work = _channels_last(image, layout)
    lead = len(layout.leading_shape)
    chunks = (*(1,) * lead, *tiling.chunks, layout.channels)
    arrays = [work.rechunk(chunks)]
    if mask is not None:
        arrays.append(_lazy_mask(mask, layout, tiling))
    depth = {**{a: 0 for a in range(lead)}, lead: tiling.depth[0], lead + 1: tiling.depth[1],
             lead + 2: 0}
    job = _BlockJob(layout, plan, backend, tiling, operation)
    function = functools.partial(_run_block, job=job, progress=progress)
    if operation == "variance_map":
        return da.map_overlap(function, *arrays, depth=[depth] * len(arrays), boundary="none",
                              dtype=np.float32, drop_axis=work.ndim - 1,
                              meta=np.empty((0,) * (work.ndim - 1), np.float32))
    return da.map_overlap(function, *arrays, depth=[depth] * len(arrays), boundary="none",
                          dtype=layout.dtype, meta=np.empty((0,) * work.ndim, layout.dtype))


def _spatial_input_chunks(image, layout: intensity.Layout):
    axes = [a for a in range(image.ndim) if a != layout.channel_axis][-2:]
    return tuple(image.chunks[a] for a in axes)


def diffuse_lazy(image, layout: intensity.Layout, params: DiffuseParams, plan: Plan, *,
                 backend: str, mask=None, chunks=None, depth="auto", exact: bool = False,
                 progress: Callable[[int, int], None] | None = None,
                 name: str = "these settings"):
    """Return the lazy diffusion of a dask ``image``: same shape, dtype and chunks.

    Nothing is computed; values are checked (NaN/Inf) chunk by chunk when computed.
    See :func:`plan_tiling` for ``chunks``, ``depth`` and ``exact``. ``progress(done,
    total)`` is called from the chunks as they compute, counting iterations over all of
    them (a local scheduler's threads; it may raise to stop them).
    """
    tiling = plan_tiling(layout.spatial_shape, layout.channels, params, plan, chunks=chunks,
                         depth=depth, exact=exact, name=name,
                         input_chunks=_spatial_input_chunks(image, layout))
    result = _map_blocks(image, layout, plan, backend=backend, mask=mask,
                         operation="solve", tiling=tiling,
                         progress=_counter(progress, layout, tiling, plan))
    return _caller_axes(result, layout).rechunk(image.chunks)


class _ProgressCounter:
    """Sums per-block iteration reports into one ``progress(done, total)`` (thread-safe)."""

    def __init__(self, progress: Callable[[int, int], None], total: int):
        self._progress, self._total, self._done = progress, total, 0
        self._lock = threading.Lock()

    def __call__(self, done: int, total: int) -> None:
        with self._lock:
            self._done += 1
            done_now = self._done
        self._progress(min(done_now, self._total), self._total)


def _counter(progress, layout: intensity.Layout, tiling: Tiling, plan: Plan):
    """One :class:`_ProgressCounter` over every block's iterations (None without progress)."""
    if progress is None:
        return None
    blocks = math.prod(layout.leading_shape) * math.prod(len(c) for c in tiling.chunks)
    return _ProgressCounter(progress, blocks * plan.iterations)


def diffuse_chunked(image: np.ndarray, layout: intensity.Layout, params: DiffuseParams,
                    plan: Plan, *, backend: str, mask=None, chunks=None, depth="auto",
                    progress: Callable[[int, int], None] | None = None,
                    name: str = "these settings") -> np.ndarray:
    """Diffuse a NumPy ``image`` in chunks (dask's threaded scheduler); return NumPy.

    ``progress(done, total)`` counts iterations over all blocks.
    """
    import dask.array as da

    tiling = plan_tiling(layout.spatial_shape, layout.channels, params, plan, chunks=chunks,
                         depth=depth, name=name)
    result = _map_blocks(da.from_array(image, chunks=-1), layout, plan, backend=backend,
                         mask=mask, operation="solve", tiling=tiling,
                         progress=_counter(progress, layout, tiling, plan))
    return np.ascontiguousarray(_caller_axes(result, layout).compute(scheduler="threads"))


def luminance_lazy(image, layout: intensity.Layout, threshold: float):
    """Return the lazy luminance mask of a dask ``image``: bool, leading plus spatial shape.

    All False when ``threshold`` is 0 (the luminance mask is off).
    """
    import dask.array as da

    work = _channels_last(image, layout)
    if threshold <= 0.0:
        return da.zeros(work.shape[:-1], bool, chunks=work.chunks[:-1])
    lead = len(layout.leading_shape)
    work = work.rechunk({lead + 2: -1})
    return work.map_blocks(_luminance_block, layout=layout, threshold=threshold, dtype=bool,
                           drop_axis=work.ndim - 1,
                           meta=np.empty((0,) * (work.ndim - 1), bool))


def _luminance_block(block: np.ndarray, *, layout: intensity.Layout, threshold: float):
    return intensity.above_threshold(intensity.to_working(block, layout), threshold)


def variance_lazy(image, layout: intensity.Layout, params: DiffuseParams, plan: Plan, *,
                  backend: str, mask=None):
    """Return the lazy :func:`variance_map` of a dask ``image``: float32, leading plus spatial."""
    tiling = plan_tiling(layout.spatial_shape, layout.channels, params, plan,
                         depth=VARIANCE_MAP_REACH,
                         input_chunks=_spatial_input_chunks(image, layout))
    return _map_blocks(image, layout, plan, backend=backend, mask=mask,
                       operation="variance_map", tiling=tiling)
