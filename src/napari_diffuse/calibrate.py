"""Self-calibration: choose :class:`DiffuseParams` from the image alone, no ground truth.

``task="denoise"`` minimises a self-supervised loss, *Recorrupted-to-Recorrupted* (Pang
et al., CVPR 2021): with ``n`` the image's noise and ``z`` fresh noise of the same
per-pixel variance, ``y1 = y + a z`` and ``y2 = y - z / a`` have noises ``n + a z`` and
``n - z / a``, which are uncorrelated; so ``mean((diffuse(y1) - y2)**2)`` equals the true
error of ``diffuse(y1)`` against the clean image plus a constant, and its minimum is the
best setting for noise ``1 + a**2`` times the image's (``a = 0.5``: 1.25x). Two
recorruptions travel as two channels of one solver run (channels are diffused
independently). The noise is pixel-independent Poisson-Gaussian, ``variance = gain *
value + floor``, both estimated from the image (:func:`estimate_noise`); ``z`` is drawn
with that variance at each pixel's local mean, from a fixed seed (deterministic).

J-invariance (Noise2Self, which scikit-image's ``calibrate_denoiser`` uses) needs no
noise model but hides pixels and predicts them from their neighbours, which fails at
features a pixel or two wide: on the Hubble deep field it chose settings 0.3-0.6 dB
worse than this criterion (``benchmarks/quality.py``), and worse than calibrated total
variation.

Signal-dependent noise is handled by **noise-aware thresholds**, not by a
variance-stabilising transform around the solver: the result must be a
``DiffuseParams`` that :func:`napari_diffuse.diffuse` reproduces on the caller's data,
so the search runs in the same working units as ``diffuse`` (see ``value_range``). The
estimated noise model recorrupts the image with the right variance at each intensity,
and seeds the edge sensitivity, whose variance term then scales with the local noise;
the search refines it with the rest.

The search is a coordinate descent over ladders of values per field (the four speeds,
the 1st and 3rd order anisotropies, the radius span, the edge sensitivity and
threshold), each field line-searched up and down from the current best, two passes.
The central radius stays 0: searching it too gained 0.01 dB on the benchmark's eight
denoising cases for 8 % more time. The number of iterations
is not searched by re-running: each candidate runs once on the solver, which hands over
its result at 4, 8, 12, ... 128 iterations (:class:`~napari_diffuse.plan.Checkpoints`);
the best count is kept and the run stops once the loss has clearly turned up.

``task="inpaint"`` sets the radius and a lower bound on the iterations from the largest
hole (its distance transform), so that every hole is filled, and chooses the speeds,
anisotropy and iterations by hiding a ring of known pixels around the mask and
predicting them.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from collections.abc import Callable, Sequence

import numpy as np
from scipy import ndimage

from . import intensity
from .api import diffuse
from .backends import get_solver
from .errors import DivergenceError, InpaintingWarning
from .params import DiffuseParams
from .plan import Checkpoints, make_plan

__all__ = ["Calibration", "calibrate", "estimate_noise"]

Progress = Callable[[int, int], None]

#: Smallest region (pixels per side) the self-supervised loss is reliable on.
MIN_SIZE = 32
#: Side of the automatic calibration crop.
AUTO_CROP = 256
#: Recorruption strength ``a`` and number of recorrupted copies (channels of one run).
_RECORRUPTION = 0.5
_COPIES = 2
#: Iteration counts at which a denoising candidate's loss is read.
_CHECKPOINTS = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128)
#: A loss this much above the best so far, twice in a row, ends a candidate's run.
_TURNED_UP = 1.02

#: Ladders of the fields searched for denoising, in search order.
_DENOISE_LADDERS: dict[str, tuple[float, ...]] = {
    "first": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    "third": (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
    "edge_sensitivity": (0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0),
    "edge_threshold": (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0),
    "radius": (0, 1, 2, 3, 4, 6, 8),
    "anisotropy_first": (-2.0, 0.0, 1.0, 2.0, 3.0, 5.0, 8.0),
    "anisotropy_third": (-2.0, 0.0, 1.0, 2.0, 3.0, 5.0, 8.0),
    "second": (0.0, 0.1, 0.2, 0.3),
    "fourth": (0.0, 0.1, 0.2, 0.3),
}
_DENOISE_START = DiffuseParams(iterations=16, radius=2, first=0.3, third=0.3,
                               anisotropy_first=3.0, anisotropy_third=2.0,
                               edge_sensitivity=1.5, edge_threshold=0.0)
_PASSES = 2


@dataclasses.dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured (returned with ``extra_output=True``)."""

    task: str
    loss: float  #: the self-supervised loss reached (mean squared error, working units)
    input_loss: float  #: the same loss for the unprocessed input (denoise) or a 0-iteration fill
    noise: tuple[float, float]  #: (gain, floor): variance = gain * value + floor, working units
    region: tuple[int, int, int, int]  #: (y0, x0, y1, x1) of the calibration crop
    evaluations: int  #: candidate settings run
    seconds: float

    def summary(self) -> str:
        """One line for people: the time, the loss reached against the input's, the
        candidates run and the region (the CLI, the demo and the widget show it)."""
        return (f"calibrated in {self.seconds:.1f} s: self-supervised loss {self.loss:.3g} "
                f"(input {self.input_loss:.3g}), {self.evaluations} evaluations on region "
                f"{self.region}")


class _Evaluator:
    """Runs candidates (denoising: on the solver, with checkpoints; inpainting: through
    :func:`diffuse`), caches their loss, reports progress."""

    def __init__(self, backend: str, progress: Progress | None, budget: int):
        self.backend, self.progress, self.budget = backend, progress, budget
        self.solver = get_solver(backend)
        self.cache: dict[DiffuseParams, tuple[float, int]] = {}

    def run(self, work: np.ndarray, params: DiffuseParams, mask=None) -> np.ndarray:
        with warnings.catch_warnings():  # a candidate that fills badly just scores badly
            warnings.simplefilter("ignore", InpaintingWarning)
            return diffuse(work, params, channel_axis=-1, mask=mask, backend=self.backend,
                           value_range=(0.0, 1.0))

    def tick(self) -> None:
        self.budget = max(self.budget, len(self.cache))
        if self.progress is not None:
            self.progress(len(self.cache), self.budget)


# ----------------------------------------------------------------------------- checks


def _check_region(region, spatial_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    height, width = spatial_shape
    try:
        y0, x0, y1, x1 = (int(v) for v in region)
    except (TypeError, ValueError):
        raise ValueError(f"region={region!r} must be four integers (y0, x0, y1, x1)") from None
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise ValueError(f"region={tuple(region)} is outside the image: accepted "
                         f"0 <= y0 < y1 <= {height}, 0 <= x0 < x1 <= {width}")
    if y1 - y0 < MIN_SIZE or x1 - x0 < MIN_SIZE:
        raise ValueError(f"region={tuple(region)} is {y1 - y0}x{x1 - x0} pixels; calibration "
                         f"needs at least {MIN_SIZE}x{MIN_SIZE}: choose a larger region")
    return y0, x0, y1, x1


def _auto_region(plane: np.ndarray, mask: np.ndarray | None) -> tuple[int, int, int, int]:
    """A representative ``AUTO_CROP``-sided crop: the most structured one, or the mask's.

    Denoising: among a grid of candidate windows, the one whose smoothed content varies
    most (signal, not background). Inpainting: the window centred on the largest hole.
    """
    height, width = plane.shape[:2]
    side_y, side_x = min(AUTO_CROP, height), min(AUTO_CROP, width)
    if side_y == height and side_x == width:
        return 0, 0, height, width
    if mask is not None:
        distance = ndimage.distance_transform_edt(mask)
        cy, cx = np.unravel_index(int(np.argmax(distance)), distance.shape)
        y0 = int(np.clip(cy - side_y // 2, 0, height - side_y))
        x0 = int(np.clip(cx - side_x // 2, 0, width - side_x))
        return y0, x0, y0 + side_y, x0 + side_x
    smooth = ndimage.uniform_filter(plane.mean(axis=-1), size=5)
    best, best_score = (0, 0), -1.0
    for y0 in np.linspace(0, height - side_y, num=min(8, height - side_y + 1)).astype(int):
        for x0 in np.linspace(0, width - side_x, num=min(8, width - side_x + 1)).astype(int):
            score = float(np.std(smooth[y0:y0 + side_y, x0:x0 + side_x]))
            if score > best_score:
                best, best_score = (int(y0), int(x0)), score
    return best[0], best[1], best[0] + side_y, best[1] + side_x


def _calibration_plane(image, layout: intensity.Layout, region, masks: np.ndarray | None):
    """Return the working-unit crop ``(h, w, C)``, its mask crop and the region used.

    ``masks`` is :func:`~napari_diffuse.intensity.check_mask`'s ``(planes, H, W)``, or None.
    Only the middle plane of a stack is read and converted.
    """
    index = int(np.prod(layout.leading_shape, dtype=np.int64)) // 2
    plane = intensity.to_plane(image, layout, index)
    plane_mask = None if masks is None else masks[index]
    if region is None:
        if min(plane.shape[:2]) < MIN_SIZE:
            raise ValueError(f"the image's planes are {plane.shape[0]}x{plane.shape[1]} pixels; "
                             f"calibration needs at least {MIN_SIZE}x{MIN_SIZE}")
        finite = np.where(np.isfinite(plane), plane, 0.0)
        region = _auto_region(finite, plane_mask)
    y0, x0, y1, x1 = _check_region(region, layout.spatial_shape)
    crop = np.array(plane[y0:y1, x0:x1], dtype=np.float32)
    bad = ~np.isfinite(crop)
    if bad.any():
        raise ValueError(f"the calibration region holds {int(bad.sum())} NaN or infinite "
                         "value(s); calibrate on finite data (choose another region, or "
                         "replace them, e.g. with numpy.nan_to_num)")
    if float(crop.max()) == float(crop.min()):
        raise ValueError(f"the calibration region is constant (every value is "
                         f"{float(crop.min()):g} in working units): there is nothing to "
                         "calibrate on; choose a region with image content")
    crop_mask = None if plane_mask is None else plane_mask[y0:y1, x0:x1].copy()
    return crop, crop_mask, (y0, x0, y1, x1)


# ----------------------------------------------------------------------------- noise


def estimate_noise(work: np.ndarray) -> tuple[float, float]:
    """Estimate a Poisson-Gaussian noise model ``variance = gain * value + floor``.

    The finest detail ``(4 x - sum of the 4 neighbours) / sqrt(20)`` has the noise's
    variance where the signal is smooth; its robust variance (MAD) is measured in 16
    bins of local mean and a line is fitted through them (weighted by bin size, both
    coefficients kept non-negative).

    Parameters
    ----------
    work : (H, W) or (H, W, C) float array
        Working units (0..1 nominal); channels are pooled.

    Returns
    -------
    (gain, floor) : tuple of float
    """
    work = np.asarray(work, dtype=np.float64)
    if work.ndim == 2:
        work = work[..., None]
    inner = work[1:-1, 1:-1]
    detail = (4 * inner - work[:-2, 1:-1] - work[2:, 1:-1] - work[1:-1, :-2]
              - work[1:-1, 2:]) / math.sqrt(20.0)
    local = ndimage.uniform_filter(work, size=(3, 3, 1))[1:-1, 1:-1]
    detail, local = detail.ravel(), local.ravel()
    edges = np.unique(np.quantile(local, np.linspace(0, 1, 17)))
    which = np.clip(np.searchsorted(edges, local, side="right") - 1, 0, len(edges) - 2)
    means, variances, weights = [], [], []
    for b in range(len(edges) - 1):
        values = detail[which == b]
        if values.size < 50:
            continue
        mad = np.median(np.abs(values - np.median(values)))
        means.append(float(np.mean(local[which == b])))
        variances.append(float((1.4826 * mad) ** 2))
        weights.append(float(values.size))
    if len(means) < 2:
        return 0.0, float(variances[0]) if variances else 0.0
    m, v, w = np.array(means), np.array(variances), np.sqrt(np.array(weights))
    gain, floor = np.linalg.lstsq(np.stack([m, np.ones_like(m)], 1) * w[:, None], v * w,
                                  rcond=None)[0]
    if gain < 0:
        gain, floor = 0.0, float(np.average(v, weights=w))
    elif floor < 0:
        gain, floor = float(np.sum(w * w * m * v) / np.sum(w * w * m * m)), 0.0
    return float(gain), float(floor)


def _noise_aware_start(noise: tuple[float, float], work: np.ndarray) -> DiffuseParams:
    """The denoising start point, its edge sensitivity set from the noise variance.

    darktable divides every speed by ``10**edge_threshold + (10**edge_sensitivity - 1)
    * sigma**2 / 9 * sum_3x3(HF**2)``. Flat noise gives ``sum_3x3(HF**2)`` near
    ``9 * variance``; the sensitivity is set so that the noise term alone is about
    0.5, leaving flat areas near full speed while edges, many times the noise, slow
    down.
    """
    variance = noise[0] * float(np.median(work)) + noise[1]
    if variance <= 0:
        return _DENOISE_START
    sensitivity = math.log10(1.0 + 0.5 / (1.11 * variance))
    ladder = _DENOISE_LADDERS["edge_sensitivity"]
    nearest = min(ladder, key=lambda v: abs(v - sensitivity))
    return _DENOISE_START.replace(edge_sensitivity=nearest)


# ----------------------------------------------------------------------------- denoise


@dataclasses.dataclass(frozen=True)
class _Recorrupted:
    """The solver's input ``y + a z`` (copies as channels) and the targets ``y - z / a``."""

    inputs: np.ndarray  #: (h, w, C * _COPIES) float32
    targets: np.ndarray  #: (h, w, C * _COPIES) float64

    def loss(self, output: np.ndarray) -> float:
        """Mean squared difference between the diffused inputs and the targets."""
        return float(np.mean((output.astype(np.float64) - self.targets) ** 2))


def _recorrupt(work: np.ndarray, noise: tuple[float, float]) -> _Recorrupted:
    """Recorrupt ``work`` with noise of its own estimated per-pixel variance (seed 0)."""
    gain, floor = noise
    level = np.maximum(ndimage.uniform_filter(work.astype(np.float64), size=(3, 3, 1)), 0.0)
    deviation = np.sqrt(gain * level + floor)
    fresh = np.random.default_rng(0).standard_normal((_COPIES, *work.shape)) * deviation
    inputs = np.concatenate([work + _RECORRUPTION * z for z in fresh], axis=-1)
    targets = np.concatenate([work - z / _RECORRUPTION for z in fresh], axis=-1)
    return _Recorrupted(inputs.astype(np.float32), targets)


def _denoise_curve(evaluator: _Evaluator, data: _Recorrupted,
                   params: DiffuseParams) -> tuple[float, int]:
    """Best (loss, iterations) of ``params`` over :data:`_CHECKPOINTS`, in one run.

    The solver hands over its result at each checkpoint; the run stops once the loss
    has turned up twice in a row (or is no longer finite).
    """
    key = params.replace(iterations=1)
    if key in evaluator.cache:
        return evaluator.cache[key]
    state = {"best": math.inf, "iterations": _CHECKPOINTS[0], "rising": 0}

    def handle(done: int, current: np.ndarray) -> bool:
        loss = data.loss(current)
        if not math.isfinite(loss):
            return False
        if loss < state["best"]:
            state.update(best=loss, iterations=done, rising=0)
        elif loss > state["best"] * _TURNED_UP:
            state["rising"] += 1
        return state["rising"] < 2

    plan = make_plan(params.replace(iterations=_CHECKPOINTS[-1]))
    try:
        evaluator.solver.solve(data.inputs, plan, None,
                               checkpoints=Checkpoints(frozenset(_CHECKPOINTS), handle))
    except DivergenceError:
        pass  # the checkpoints handed over before it diverged still count
    evaluator.cache[key] = (state["best"], state["iterations"])
    evaluator.tick()
    return evaluator.cache[key]


def _coordinate_search(evaluate: Callable[[DiffuseParams], float], start: DiffuseParams,
                       ladders: dict[str, Sequence[float]], passes: int) -> DiffuseParams:
    """Line-search each field along its ladder (up, then down), ``passes`` times."""
    best, best_loss = start, evaluate(start)
    for _ in range(passes):
        moved = False
        for field, ladder in ladders.items():
            value = getattr(best, field)
            here = min(range(len(ladder)), key=lambda i: abs(ladder[i] - value))
            for step in (1, -1):
                index, stepped = here + step, False
                while 0 <= index < len(ladder):
                    candidate = best.replace(**{field: ladder[index]})
                    loss = evaluate(candidate)
                    if not loss < best_loss:
                        break
                    best, best_loss, stepped, moved = candidate, loss, True, True
                    index += step
                if stepped:
                    break
        if not moved:
            break
    return best


def _calibrate_denoise(work: np.ndarray, evaluator: _Evaluator):
    """Search on the region's most structured ``AUTO_CROP`` window; count the
    iterations of the winner on the whole region."""
    noise = estimate_noise(work)
    y0, x0, y1, x1 = _auto_region(work, None)
    window = _recorrupt(work[y0:y1, x0:x1], noise)

    def evaluate(params: DiffuseParams) -> float:
        return _denoise_curve(evaluator, window, params)[0]

    best = _coordinate_search(evaluate, _noise_aware_start(noise, work), _DENOISE_LADDERS,
                              _PASSES)
    whole = _recorrupt(work, noise)
    if whole.inputs.shape != window.inputs.shape:
        evaluator = _Evaluator(evaluator.backend, None, 0)  # a fresh cache: other pixels
    loss, iterations = _denoise_curve(evaluator, whole, best)
    return best.replace(iterations=iterations), loss, whole.loss(whole.inputs), noise


# ----------------------------------------------------------------------------- inpaint

#: Inpainting candidates: the diffused orders (full speed), the radius spans besides the
#: hole's own, and the iteration multipliers.
_INPAINT_ORDERS = (("third", "fourth"), ("first", "second", "third", "fourth"), ("fourth",))
_INPAINT_RADII = (2, 4)
_INPAINT_ITERATION_FACTORS = (1, 2)
#: Width of the ring of known pixels hidden around the mask.
_RING = 2


def _hole_half_width(mask: np.ndarray) -> float:
    """The largest distance from a masked pixel to the nearest known pixel."""
    return float(ndimage.distance_transform_edt(mask).max())


def _inpaint_candidates(mask: np.ndarray) -> list[DiffuseParams]:
    """Candidates whose iterations fill the largest hole (half-width ``d`` pixels).

    Iterations start at ``16 + 8 d``, enough for the fill to meet in the middle of
    the widest hole at the finest radius tried; radius spans are small ones (fine
    scales interpolate best) and one covering the hole (``2 d``).
    """
    half_width = _hole_half_width(mask)
    iterations = 16 + 8 * math.ceil(half_width)
    radii = sorted({*_INPAINT_RADII, int(min(max(2, math.ceil(2 * half_width)), 2048))})
    return [DiffuseParams(iterations=min(500, iterations * factor), radius=radius,
                          **{order: 1.0 for order in orders})
            for factor in _INPAINT_ITERATION_FACTORS for radius in radii
            for orders in _INPAINT_ORDERS]


def _calibrate_inpaint(work: np.ndarray, mask: np.ndarray, evaluator: _Evaluator):
    noise = estimate_noise(work)
    grown = ndimage.binary_dilation(mask, iterations=_RING)
    ring = grown & ~mask
    if not ring.any():
        raise ValueError("the mask leaves no known pixels next to its holes to calibrate on")
    truth = work[ring].astype(np.float64)
    # hidden pixels must not see their own value (the inpainting start is seeded from it):
    # they take the value of the nearest known pixel
    nearest = ndimage.distance_transform_edt(grown, return_distances=False, return_indices=True)
    hidden = work[nearest[0], nearest[1]]

    def evaluate(params: DiffuseParams) -> float:
        if params in evaluator.cache:
            return evaluator.cache[params][0]
        try:
            out = evaluator.run(hidden, params, mask=grown)
            loss = float(np.mean((out[ring] - truth) ** 2))
        except DivergenceError:
            loss = math.inf
        evaluator.cache[params] = (loss, params.iterations)
        evaluator.tick()
        return loss

    input_loss = evaluate(DiffuseParams(iterations=0))
    candidates = _inpaint_candidates(grown)
    losses = [evaluate(c) for c in candidates]
    return candidates[int(np.argmin(losses))], float(min(losses)), input_loss, noise


# ----------------------------------------------------------------------------- API


def calibrate(image, task: str = "denoise", *, mask=None, channel_axis: int | None = None,
              value_range=None, backend: str = "auto", region=None,
              progress: Progress | None = None, extra_output: bool = False):
    """Choose diffusion parameters from a noisy (or damaged) image alone.

    Parameters
    ----------
    image : array_like
        As for :func:`napari_diffuse.diffuse`. A stack is calibrated on its middle plane.
    task : {"denoise", "inpaint"}
        ``"denoise"``: a self-supervised (Recorrupted-to-Recorrupted) search, valid
        for pixel-independent Poisson-Gaussian noise, whose model it estimates.
        ``"inpaint"``: fill the
        True pixels of ``mask``; radius and iterations from the largest hole, the rest
        by predicting hidden known pixels around the mask.
    mask : array_like of bool, optional
        Required for ``"inpaint"`` (True where pixels are missing); shape as for
        :func:`~napari_diffuse.diffuse`.
    channel_axis, value_range, backend
        As for :func:`~napari_diffuse.diffuse`; calibration works in the same working
        units, so pass the same ``value_range`` to ``diffuse`` with the result.
    region : (y0, x0, y1, x1), optional
        The spatial box to calibrate on (at least 32x32). Default: a representative
        256x256 crop (the most structured window; for inpainting, the window around
        the largest hole), or the whole plane when smaller.
    progress : callable, optional
        Called as ``progress(done, total)`` after each candidate; ``total`` is an
        estimate that may grow. It may raise an exception to stop the calibration.
    extra_output : bool
        Also return a :class:`Calibration` with the loss reached and what was measured.

    Returns
    -------
    DiffuseParams or (DiffuseParams, Calibration)
        Deterministic for a given input: run it with :func:`~napari_diffuse.diffuse`,
        save it as a user preset, or load it in the widget.

    Raises
    ------
    ValueError
        For an unknown task, a missing, empty or all-True mask for ``"inpaint"``, a
        region outside the image or smaller than 32x32, a constant region, or NaN/Inf
        values in the region; and for anything :func:`~napari_diffuse.diffuse` refuses.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_diffuse import calibrate, diffuse
    >>> rng = np.random.default_rng(0)
    >>> clean = np.tile(np.linspace(0.2, 0.8, 64, dtype=np.float32), (64, 1))
    >>> noisy = clean + rng.normal(0, 0.05, clean.shape).astype(np.float32)
    >>> params = calibrate(noisy, backend="numpy")          # doctest: +SKIP
    >>> denoised = diffuse(noisy, params, backend="numpy")  # doctest: +SKIP
    """
    started = time.perf_counter()
    if task not in ("denoise", "inpaint"):
        raise ValueError(f"task={task!r}; accepted: 'denoise' or 'inpaint'")
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        image = np.asarray(image)
    layout = intensity.check_image(image, channel_axis, value_range)
    masks = None
    if task == "inpaint":
        if mask is None:
            raise ValueError("task='inpaint' needs mask=... (True where pixels are missing)")
        masks = intensity.check_mask(mask, layout)
        if not masks.any():
            raise ValueError("the mask has no True pixel: there is nothing to inpaint")
        if masks.all():
            raise ValueError("the mask is True everywhere: inpainting needs known pixels "
                             "around the holes")
    elif mask is not None:
        raise ValueError("mask=... is only used with task='inpaint'")
    work, crop_mask, region = _calibration_plane(image, layout, region, masks)
    if task == "inpaint":
        if not crop_mask.any() or crop_mask.all():
            raise ValueError(f"region={region} holds {'no' if not crop_mask.any() else 'only'} "
                             "masked pixels; choose a region with holes and known pixels")
        evaluator = _Evaluator(backend, progress, 1 + len(_INPAINT_ORDERS)
                               * (len(_INPAINT_RADII) + 1) * len(_INPAINT_ITERATION_FACTORS))
        params, loss, input_loss, noise = _calibrate_inpaint(work, crop_mask, evaluator)
    else:
        evaluator = _Evaluator(backend, progress, 1 + 2 * len(_DENOISE_LADDERS))
        params, loss, input_loss, noise = _calibrate_denoise(work, evaluator)
    if progress is not None:
        progress(len(evaluator.cache), len(evaluator.cache))
    if not extra_output:
        return params
    return params, Calibration(task, loss, input_loss, noise, region, len(evaluator.cache),
                               time.perf_counter() - started)
