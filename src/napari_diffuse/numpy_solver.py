"""The NumPy solver: darktable's CPU ``process()`` of *diffuse or sharpen*, vectorised.

One iteration decomposes the image into a-trous B-spline wavelet scales (high
frequencies ``HF[s]`` and a residual low frequency), then rebuilds it from the
coarsest scale to the finest, solving at each scale one explicit step of a
4-order anisotropic heat equation (see :func:`_pde`). Borders clamp to the
edge pixel. All arithmetic is float32, in darktable's order of operations, except
where noted. Rows are processed in strips that fit the CPU caches, spread over a
thread pool (NumPy releases the GIL inside its loops).
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable

import numpy as np

from .intensity import above_threshold, peak_magnitude
from .noise import inpaint_noise
from .plan import (
    GRADIENT,
    ISOPHOTE,
    ISOTROPIC,
    Checkpoints,
    Plan,
    ScaleStep,
    checked_iterations,
    divergence_bound,
    divergence_error,
    mask_source,
)

__all__ = ["CHECKS_ON_DEVICE", "TILES_ON_DEVICE", "bytes_per_pixel", "check_divergence",
           "inpaint_start", "keep_saturated", "solve", "variance_map"]

#: This solver's buffers (:func:`bytes_per_pixel`) live in host memory.
TILES_ON_DEVICE = False
#: The caller checks the input for NaN, Inf and the working range
#: (:func:`napari_diffuse.intensity.check_values`).
CHECKS_ON_DEVICE = False
#: float32 image-sized buffers a run holds beyond :attr:`Plan.workspaces`: input, output,
#: two iteration buffers, padded copies and strips, the mask start.
_EXTRA_BUFFERS = 8


def bytes_per_pixel(plan: Plan, channels: int) -> int:
    """Host bytes a run of ``plan`` holds per pixel: one float32 per buffer and channel."""
    return 4 * channels * (len(plan.workspaces) + _EXTRA_BUFFERS)

F32 = np.float32
_BSPLINE = tuple(F32(w) for w in (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16))
_STRIP_ELEMENTS = 1 << 17  # floats per strip and temporary: keeps a strip's working set in cache


@functools.cache
def _pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                                 thread_name_prefix="napari-diffuse")


def _over_strips(height: int, row_elements: int, work: Callable[[int, int], None]) -> None:
    """Run ``work(r0, r1)`` over strips of rows covering ``range(height)``, in parallel."""
    rows = max(1, _STRIP_ELEMENTS // max(row_elements, 1))
    bounds = [(r0, min(r0 + rows, height)) for r0 in range(0, height, rows)]
    if len(bounds) == 1:
        work(*bounds[0])
        return
    for future in [_pool().submit(work, r0, r1) for r0, r1 in bounds]:
        future.result()


def _pad_columns(a: np.ndarray, pad: int) -> np.ndarray:
    """A copy of ``a`` (H, W, C) with ``pad`` columns repeating the edge on each side."""
    return np.pad(a, ((0, 0), (pad, pad), (0, 0)), mode="edge")


def _rows(a: np.ndarray, r0: int, r1: int, shift: int) -> np.ndarray:
    """Rows ``r0 + shift .. r1 + shift`` of ``a``, clamped to its edges (a view if none is)."""
    lo, hi = r0 + shift, r1 + shift
    if lo >= 0 and hi <= a.shape[0]:
        return a[lo:hi]
    return a[np.clip(np.arange(lo, hi), 0, a.shape[0] - 1)]


def _offsets(distance: int, size: int) -> int:
    # clamp(i + d) == clamp(i + min(d, size - 1)) for every i in [0, size): cap the reach
    return min(distance, size - 1)


def _weighted_sum(terms, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``out = w0*a0 + w1*a1 + ...``, summed left to right like darktable's loops."""
    (w0, a0), *rest = terms
    np.multiply(a0, w0, out=out)
    for w, a in rest:
        np.multiply(a, w, out=scratch)
        np.add(out, scratch, out=out)
    return out


def _decompose(src: np.ndarray, hf: np.ndarray, lf: np.ndarray, mult: int) -> None:
    """One a-trous level: ``lf = bspline(src)`` (clipped at 0), ``hf = src - lf``."""
    height, width, channels = src.shape
    pr, pc = _offsets(2 * mult, height), _offsets(2 * mult, width)
    row_taps = (-pr, -_offsets(mult, height), 0, _offsets(mult, height), pr)
    col_taps = (-pc, -_offsets(mult, width), 0, _offsets(mult, width), pc)
    padded = _pad_columns(src, pc)

    def work(r0: int, r1: int) -> None:
        tmp = np.empty((r1 - r0, width + 2 * pc, channels), F32)
        scratch = np.empty_like(tmp)
        _weighted_sum([(w, _rows(padded, r0, r1, d))
                       for w, d in zip(_BSPLINE, row_taps, strict=True)], tmp, scratch)
        np.maximum(tmp, 0.0, out=tmp)
        out = lf[r0:r1]
        _weighted_sum([(w, tmp[:, pc + d:pc + d + width])
                       for w, d in zip(_BSPLINE, col_taps, strict=True)], out, scratch[:, :width])
        np.maximum(out, 0.0, out=out)
        np.subtract(src[r0:r1], out, out=hf[r0:r1])

    _over_strips(height, (width + 4 * mult) * channels, work)


def _fast_exp(x: np.ndarray) -> np.ndarray:
    """darktable's ``dt_vector_exp``: an IEEE-754 bit trick, >= exp(x), meant for x <= 0."""
    k = np.maximum(x, F32(-100.0)) * F32(0x402DF854 - 0x3F800000)
    k = k.astype(np.int32) + np.int32(0x3F800000)
    return np.maximum(k, 0).view(F32)


def _direction(dx: np.ndarray, minus_dy: np.ndarray):
    """Return ``(magnitude, cos^2, -cos*sin)`` of the vector (dx, dy), given as dx and -dy;
    0 and 0 where it is null."""
    magnitude = np.sqrt(dx * dx + minus_dy * minus_dy)
    nonzero = magnitude != 0.0
    cos = np.divide(dx, magnitude, out=np.zeros_like(dx), where=nonzero)
    minus_sin = np.divide(minus_dy, magnitude, out=np.zeros_like(dx), where=nonzero)
    return magnitude, cos * cos, cos * minus_sin


def _second_differences(p: list[np.ndarray], isotropic: bool, steered: bool):
    """Return ``(Lh + Lv, Lh - Lv, Lv, D/2, diagonal sum, centre)`` of a 3x3 stencil given
    as 9 row-major views: the diagonal sum only for an ``isotropic`` kernel, ``Lh - Lv``
    and ``D/2`` only for a ``steered`` one (None otherwise).

    darktable's rotated laplacian kernel ``[[a12/2, a22, -a12/2], [a11, -2(a11+a22), a11],
    [-a12/2, a22, a12/2]]`` applied to the stencil equals
    ``a11 * Lh + a22 * Lv + a12 * D/2``, with ``Lh`` the horizontal and ``Lv`` the
    vertical second difference and ``D`` the diagonal cross difference. Factoring it so
    costs 3 products instead of 9 (the sums differ from darktable's by float32 rounding).
    Each stencil row enters through its middle tap and the sum and difference of its
    outer taps, as in kernels/pde.cl.
    """
    centre2 = p[4] + p[4]
    horizontal = p[3] + p[5]
    horizontal -= centre2
    vertical = p[1] + p[7]
    vertical -= centre2
    total = horizontal + vertical
    delta = half_cross = diagonal = None
    if steered:
        delta = np.subtract(horizontal, vertical, out=horizontal)
        half_cross = p[0] - p[2]
        half_cross -= p[6] - p[8]
        half_cross *= F32(0.5)
    if isotropic:
        diagonal = p[0] + p[2]
        diagonal += p[6] + p[8]
    return total, delta, vertical, half_cross, diagonal, p[4]


def _derivative(mode: int, c2, direction, differences) -> np.ndarray:
    """One order's ``kernel * stencil`` (``heat_PDE_diffusion``'s ``derivatives[k]``), a
    new array.

    With ``sin^2 = 1 - cos^2``, ``U = cos2 Lh + sin2 Lv - cs D/2 = Lv + cos2 (Lh - Lv)
    - cs D/2`` and ``V = sin2 Lh + cos2 Lv + cs D/2 = Lh + Lv - U``: the isophote kernel
    gives ``U + c2 V`` and the gradient kernel ``V + c2 U``; the isotropic kernel
    (Oono & Puri) gives ``diag/4 + (Lh + Lv)/2 - centre``. Where the gradient is null,
    c2 = 1 and both give ``Lh + Lv`` whatever the angle.
    """
    total, delta, vertical, half_cross, diagonal, centre = differences
    if mode == ISOTROPIC:
        result = diagonal * F32(0.25)
        result += total * F32(0.5)
        result -= centre
        return result
    _, cos2, minus_cossin = direction
    along = cos2 * delta
    along += vertical
    along += minus_cossin * half_cross
    across = total - along
    if mode == ISOPHOTE:
        across *= c2
        across += along
        return across
    assert mode == GRADIENT
    along *= c2
    along += across
    return along


def _neighbours(padded: np.ndarray, dr: int, dc: int, r0: int, r1: int,
                width: int) -> list[np.ndarray]:
    """The 3x3 stencil at dilation (dr, dc) for rows r0..r1, as 9 arrays, row-major.

    ``padded`` is the image with ``dc`` edge columns on each side (:func:`_pad_columns`).
    """
    rows = [_rows(padded, r0, r1, i * dr) for i in (-1, 0, 1)]
    return [r[:, dc + j * dc:dc + j * dc + width] for r in rows for j in (-1, 0, 1)]


def _row_box_of_squares(hf_p: np.ndarray, dc: int, width: int) -> np.ndarray:
    """``HF**2`` summed over the 3 taps of a row at dilation ``dc``, on every padded row."""
    rows = np.empty((hf_p.shape[0], width, hf_p.shape[2]), F32)

    def work(r0: int, r1: int) -> None:
        squares = np.square(hf_p[r0:r1])
        out = rows[r0:r1]
        np.add(squares[:, :width], squares[:, dc:dc + width], out=out)
        out += squares[:, 2 * dc:2 * dc + width]

    _over_strips(hf_p.shape[0], hf_p.shape[1] * hf_p.shape[2], work)
    return rows


def _box_of_squares(row_box: np.ndarray, r0: int, r1: int, dr: int) -> np.ndarray:
    """``HF**2`` summed over the 3x3 stencil at row dilation ``dr``, for rows r0..r1.

    ``row_box`` is :func:`_row_box_of_squares`: the sums along each row, done once per scale.
    """
    total = _rows(row_box, r0, r1, -dr) + row_box[r0:r1]
    total += _rows(row_box, r0, r1, dr)
    return total


def _pde(hf: np.ndarray, lf: np.ndarray, out: np.ndarray, step: ScaleStep, plan: Plan,
         mask: np.ndarray | None) -> None:
    """One explicit step of the 4-order heat equation at one scale (``heat_PDE_diffusion``)."""
    height, width, channels = hf.shape
    dr, dc = _offsets(step.mult, height), _offsets(step.mult, width)
    hf_p, lf_p = _pad_columns(hf, dc), _pad_columns(lf, dc)
    active = [k for k in range(4) if step.speeds[k] != 0.0]
    row_box = _row_box_of_squares(hf_p, dc, width) \
        if active and step.regularization_factor != 0.0 else None

    def work(r0: int, r1: int) -> None:
        LF = _neighbours(lf_p, dr, dc, r0, r1, width)
        HF = _neighbours(hf_p, dr, dc, r0, r1, width)
        result = out[r0:r1]
        np.multiply(HF[4], step.strength, out=result)
        if active:
            acc = _speeds_sum(LF, HF, step, plan, active)
            if row_box is not None:
                variance = _box_of_squares(row_box, r0, r1, dr)
                variance *= step.regularization_factor
                variance += plan.variance_threshold
                acc /= variance
            else:
                acc /= plan.variance_threshold
            result += acc
        result += LF[4]
        np.maximum(result, 0.0, out=result)
        if mask is not None:
            keep = np.broadcast_to(~mask[r0:r1, :, None], result.shape)
            np.add(HF[4], LF[4], out=result, where=keep)

    _over_strips(height, (width + 2 * dc) * channels, work)


def _speeds_sum(LF, HF, step: ScaleStep, plan: Plan, active: list[int]) -> np.ndarray:
    """``sum_k speed_k * derivative_k`` over the orders with a non-zero speed."""
    # orders 1, 2 diffuse LF and 3, 4 diffuse HF; orders 1, 3 steer along the gradient
    # of LF and orders 2, 4 along the gradient of HF
    stencils, differences, directions, c2s = (LF, HF), {}, {}, {}
    acc = None
    for k in active:
        pixels, steer, mode = k // 2, k % 2, plan.modes[k]
        if pixels not in differences:
            modes = {plan.modes[j] for j in active if j // 2 == pixels}
            differences[pixels] = _second_differences(
                stencils[pixels], ISOTROPIC in modes, modes != {ISOTROPIC})
        c2 = direction = None
        if mode != ISOTROPIC:
            if steer not in directions:
                # twice the gradient: the exponential takes half the anisotropy
                p = stencils[steer]
                directions[steer] = _direction(p[7] - p[1], p[3] - p[5])
            direction = directions[steer]
            key = (steer, plan.anisotropy[k])
            if key not in c2s:
                c2s[key] = _fast_exp(-direction[0] * (F32(plan.anisotropy[k]) * F32(0.5)))
            c2 = c2s[key]
        term = _derivative(mode, c2, direction, differences[pixels])
        term *= step.speeds[k]
        acc = term if acc is None else np.add(acc, term, out=acc)
    return acc


def inpaint_start(image: np.ndarray, mask: np.ndarray, origin: tuple[int, int] = (0, 0),
                  full_width: int | None = None) -> np.ndarray:
    """Return a copy of ``image`` (H, W, C) whose masked pixels hold darktable's noise.

    ``origin`` and ``full_width`` place the array in a larger image, so that a tile
    gets the same noise as the whole image would.
    """
    start = image.copy()
    rows, cols = np.nonzero(mask)
    if rows.size:
        full_width = image.shape[1] if full_width is None else full_width
        index = (rows.astype(np.uint64) + np.uint64(origin[0])) * np.uint64(full_width) \
            + cols.astype(np.uint64) + np.uint64(origin[1])
        start[rows, cols] = inpaint_noise(image[rows, cols], index, full_width)
    return start


def _mask_or_luminance(mask: np.ndarray | None, image: np.ndarray,
                       plan: Plan) -> np.ndarray | None:
    """The run's mask, as :func:`~napari_diffuse.plan.mask_source` says."""
    if mask_source(mask, plan) == "luminance":
        return above_threshold(image, plan.luminance_threshold)
    return mask


def keep_saturated(result: np.ndarray, original: np.ndarray, mask: np.ndarray | None,
                   plan: Plan) -> None:
    """Raise, in place, inpainted channels that were saturated back to the threshold.

    Where ``mask`` is True, every channel of ``result`` whose value in ``original`` (the
    input, before the inpainting noise) is >= the plan's ``luminance_threshold`` becomes
    ``max(result, threshold)``. Does nothing unless ``plan.keep_saturated``.
    """
    if not plan.keep_saturated or mask is None:
        return
    threshold = F32(plan.luminance_threshold)
    saturated = np.greater_equal(original, threshold)
    saturated &= np.asarray(mask, dtype=bool)[:, :, None]
    np.maximum(result, threshold, out=result, where=saturated)


def _one_iteration(src: np.ndarray, out: np.ndarray, plan: Plan, mask: np.ndarray | None,
                   workspace: dict[str, np.ndarray]) -> None:
    """One iteration from ``src`` into ``out``, pass by pass as :attr:`Plan.passes` says,
    through ``workspace`` (an array per name in :attr:`Plan.workspaces`)."""
    buffers = {"input": src, "output": out, **workspace}
    for step in plan.passes:
        if step.kind == "bspline":
            (level,), (low, high) = step.reads, step.writes
            _decompose(buffers[level], buffers[high], buffers[low], 1 << step.scale)
        else:
            (high, current), (target,) = step.reads, step.writes
            _pde(buffers[high], buffers[current], buffers[target], plan.steps[step.scale], plan,
                 mask)


def solve(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
          origin: tuple[int, int] = (0, 0), full_width: int | None = None,
          progress: Callable[[int, int], None] | None = None,
          checkpoints: Checkpoints | None = None) -> np.ndarray:
    """Run darktable's diffuse-or-sharpen on one float32 image.

    Parameters
    ----------
    image : (H, W, C) float32 array
        Channels last; each channel is processed independently. Not modified.
    plan : Plan
        From :func:`napari_diffuse.plan.make_plan`.
    mask : (H, W) bool array, optional
        Where to diffuse; masked pixels start from seeded noise (inpainting) and
        unmasked ones are kept. ``None``: darktable's luminance mask when the plan's
        ``luminance_threshold`` is above 0, else everywhere. With ``plan.keep_saturated``,
        masked channels whose input was >= the threshold end at least at it
        (:func:`keep_saturated`).
    origin, full_width : optional
        Position of this array in a larger image, for the inpainting noise seeds.
    progress : callable, optional
        Called as ``progress(done, total)`` after each iteration; it may raise to stop.
    checkpoints : Checkpoints, optional
        Hand over intermediate results; may stop the run early.

    Returns
    -------
    (H, W, C) float32 array

    Raises
    ------
    DivergenceError
        At the first iteration of ``plan.divergence_checks`` (or of ``checkpoints.at``)
        whose result holds a non-finite value or one above
        :func:`~napari_diffuse.plan.divergence_bound` of the input.
    """
    image = original = np.ascontiguousarray(image, dtype=F32)
    bound = divergence_bound(image)
    checks = checked_iterations(plan, checkpoints)
    mask = _mask_or_luminance(mask, image, plan)
    if mask is not None:
        image = inpaint_start(image, mask, origin, full_width)
    workspace = {name: np.empty_like(image) for name in plan.workspaces}
    buffers = (np.empty_like(image), np.empty_like(image))
    current = image
    for it in range(plan.iterations):
        target = buffers[it % 2]
        # a diverging run overflows between checks: the check below reports it
        with np.errstate(over="ignore", invalid="ignore"):
            _one_iteration(current, target, plan, mask, workspace)
        current = target
        if it + 1 in checks:
            check_divergence(current, plan, it + 1, bound)
        if progress is not None:
            progress(it + 1, plan.iterations)
        if checkpoints is not None and not checkpoints.go_on(it + 1, current):
            break
    keep_saturated(current, original, mask, plan)
    return current


def check_divergence(current: np.ndarray, plan: Plan, done: int, bound: float) -> None:
    """Raise :class:`~napari_diffuse.errors.DivergenceError` if ``current`` (the result
    after ``done`` iterations) holds NaN, an infinity or a value above ``bound``."""
    peak = peak_magnitude(current)
    if not peak <= bound:
        raise divergence_error(plan, done, peak, bound)


def variance_map(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
                 origin: tuple[int, int] = (0, 0), full_width: int | None = None) -> np.ndarray:
    """Return darktable's edge-variance term at the finest scale of the first iteration.

    ``10**edge_threshold + (10**edge_sensitivity - 1) * sigma_0**2 / 9 * sum_3x3(HF0**2)``,
    averaged over channels: the divisor of every speed. Where it is large (edges,
    texture) diffusion is slowed; where it is small (flat areas) it runs at full speed.

    Returns
    -------
    (H, W) float32 array
    """
    image = np.ascontiguousarray(image, dtype=F32)
    mask = _mask_or_luminance(mask, image, plan)
    if mask is not None:
        image = inpaint_start(image, mask, origin, full_width)
    hf, lf = np.empty_like(image), np.empty_like(image)
    _decompose(image, hf, lf, 1)
    height, width, _ = image.shape
    dr, dc = _offsets(1, height), _offsets(1, width)
    row_box = _row_box_of_squares(_pad_columns(hf, dc), dc, width)
    total = _box_of_squares(row_box, 0, height, dr)
    variance = plan.variance_threshold + total * plan.steps[0].regularization_factor
    return variance.mean(axis=-1, dtype=F32)
