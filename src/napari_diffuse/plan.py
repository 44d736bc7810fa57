"""The solver-independent schedule of one run: scales, per-scale speeds, reach.

Everything here is computed in float32, in the order darktable computes it
(``src/iop/diffuse.c`` and ``src/common/bspline.h``), so that the NumPy and OpenCL
solvers start from bit-identical constants.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Literal

import numpy as np

from .errors import DivergenceError, InvalidInputError
from .intensity import MAX_WORKING, peak_magnitude
from .params import DiffuseParams

__all__ = ["B_SPLINE_SIGMA", "DIVERGENCE_BOUND", "DIVERGENCE_CHECK_EVERY", "MAX_SCALES",
           "Checkpoints", "Pass", "Plan", "ScaleStep", "checked_iterations", "divergence_bound",
           "divergence_checks", "divergence_error", "input_bound", "iteration_passes", "make_plan",
           "mask_source", "num_scales", "reach_per_iteration"]

F32 = np.float32
#: Standard deviation of the 5-tap B-spline (1 4 6 4 1)/16 as a Gaussian.
B_SPLINE_SIGMA = F32(1.0553651328015339)
#: darktable's cap on the number of wavelet scales.
MAX_SCALES = 10
#: Time step of the explicit PDE scheme (spatial step 1).
KAPPA = F32(0.25)

ISOTROPIC, ISOPHOTE, GRADIENT = 0, 1, 2
#: Pixels the variance map reads around each pixel: the finest B-spline taps (2) plus the
#: 3x3 sum of squares (1). Tiles overlapping by this much give the whole-image map.
VARIANCE_MAP_REACH = 3
#: A run diverges when its largest value, in working units (inputs nominally 0..1), exceeds
#: this times ``max(1, largest input magnitude)``, or is not finite. The solvers clamp every
#: scale at 0 from below, so only the top can run away. Legal settings that converge stay
#: within a few times the input's range (the largest of darktable's reference outputs, the
#: line-drawing preset's 50 iterations of negative speeds, peaks at 1.35 on 0..1 input); a
#: diverging run grows geometrically, so it crosses 1e6 well before float32 overflows
#: (3.4e38). Scaling by the input's peak keeps float data stored above 1 (value_range
#: "dtype" or fixed ranges with hot pixels) from tripping it.
DIVERGENCE_BOUND = 1e6
#: Both solvers check for divergence after every this many iterations and after the last.
DIVERGENCE_CHECK_EVERY = 8


def divergence_checks(iterations: int) -> frozenset[int]:
    """The iterations (counted from 1) after which both solvers check for divergence.

    Every :data:`DIVERGENCE_CHECK_EVERY` iterations and the last one; each check reads
    the whole result once (a max over the finest output, on the device for OpenCL), so
    its cost is a small fraction of the iterations between checks. Solvers also check
    every :class:`Checkpoints` iteration before handing a result over.
    """
    iterations = max(int(iterations), 1)
    return frozenset({*range(DIVERGENCE_CHECK_EVERY, iterations + 1, DIVERGENCE_CHECK_EVERY),
                      iterations})


def divergence_bound(image: np.ndarray) -> float:
    """The largest magnitude a run from ``image`` may reach: :data:`DIVERGENCE_BOUND`
    times ``max(1, the image's largest magnitude)``."""
    peak = peak_magnitude(image)
    return DIVERGENCE_BOUND * max(1.0, peak if np.isfinite(peak) else 1.0)


def input_bound(peak: float) -> float:
    """:func:`divergence_bound` of an input whose largest magnitude is ``peak``, for a
    solver that checks its input itself: that input must be finite and within
    :data:`~napari_diffuse.intensity.MAX_WORKING`.

    Raises
    ------
    InvalidInputError
        If ``peak`` is NaN, infinite or beyond ``MAX_WORKING``.
    """
    if not peak <= MAX_WORKING:
        raise InvalidInputError(
            f"the solver's input holds NaN, infinite values or working values beyond "
            f"{MAX_WORKING:g} (largest magnitude {peak:.3g}); accepted: finite values within "
            f"+-{MAX_WORKING:g}. Check the image with napari_diffuse.diffuse, which names "
            "them and their first index", peak=float(peak))
    return DIVERGENCE_BOUND * max(1.0, peak)


def checked_iterations(plan: Plan, checkpoints: Checkpoints | None) -> frozenset[int]:
    """The iterations after which a solver checks for divergence: the plan's schedule and
    every checkpoint (a result is checked before it is handed over)."""
    return plan.divergence_checks | (checkpoints.at if checkpoints is not None else frozenset())


def divergence_error(plan: "Plan", iteration: int, peak: float, bound: float) -> DivergenceError:
    """The :class:`DivergenceError` for a run whose largest value at ``iteration`` is ``peak``."""
    value = f"reached {peak:.3g}, above the bound {bound:.3g}" if np.isfinite(peak) \
        else "became infinite or NaN"
    hint = plan.divergence_hint or "the speeds and sharpness"
    return DivergenceError(
        f"diffusion diverged at iteration {iteration} of {plan.iterations}: the values {value} "
        f"(working units, inputs nominally 0..1). The explicit scheme is unstable for these "
        f"settings; the ones that drive it: {hint}. Lower the iterations, bring negative "
        f"speeds toward 0 (or lower the speeds), lower sharpness, or raise edge_threshold.",
        iteration=iteration, peak=float(peak) if np.isfinite(peak) else float("inf"),
        bound=float(bound))


def _divergence_hint(params: DiffuseParams) -> str:
    """The settings that make a run diverge, with their values, for the error message."""
    parts = [f"iterations={params.iterations}"]
    for name in ("first", "second", "third", "fourth"):
        speed = getattr(params, name)
        if speed != 0.0:
            text = f"{name}={speed:g}"
            anisotropy = getattr(params, f"anisotropy_{name}")
            if anisotropy != 0.0:
                text += f" (anisotropy_{name}={anisotropy:g})"
            parts.append(text)
    if params.sharpness != 0.0:
        parts.append(f"sharpness={params.sharpness:g}")
    parts.append(f"edge_threshold={params.edge_threshold:g}")
    if params.edge_sensitivity != 0.0:
        parts.append(f"edge_sensitivity={params.edge_sensitivity:g}")
    parts.append(f"radius={params.radius:g}")
    return ", ".join(parts)


def equivalent_sigma(step: int) -> np.float32:
    """Return the Gaussian sigma equivalent to ``step + 1`` stacked a-trous B-spline blurs."""
    sigma = B_SPLINE_SIGMA
    for s in range(1, step + 1):
        sigma = F32(np.sqrt(sigma * sigma + (F32(2.0**s) * B_SPLINE_SIGMA) ** 2))
    return sigma


def num_scales(params: DiffuseParams) -> int:
    """Return the number of wavelet scales darktable uses for ``params`` (1 to 10)."""
    final_radius = F32(params.radius + params.radius_center) * F32(2.0)
    s, radius = 0, B_SPLINE_SIGMA
    while radius < final_radius:
        s += 1
        radius = F32(np.sqrt(radius * radius + (F32(1 << s) * B_SPLINE_SIGMA) ** 2))
    return int(np.clip(s + 1, 1, MAX_SCALES))


def reach_per_iteration(params: DiffuseParams) -> int:
    """Return how far, in pixels, one iteration spreads information: ``3 * (2**scales - 1)``.

    Each scale ``s`` reads B-spline taps ``2 * 2**s`` away and the PDE stencil ``2**s``
    away, so a pixel's result depends on input pixels at most this far in each direction.
    """
    return make_plan(params).reach_per_iteration


@dataclasses.dataclass(frozen=True)
class ScaleStep:
    """The constants of the PDE update at one wavelet scale."""

    scale: int  #: 0 is the finest
    mult: int  #: dilation of the stencils, ``2**scale``
    speeds: tuple[np.float32, np.float32, np.float32, np.float32]  #: 1st..4th order, x kappa x norm
    strength: np.float32  #: gain on the high frequencies, ``sharpness * norm + 1``
    regularization_factor: np.float32  #: ``(10**edge_sensitivity - 1) * sigma_s**2 / 9``


@dataclasses.dataclass(frozen=True)
class Plan:
    """Everything a solver needs to run ``params``, derived once."""

    iterations: int
    scales: int
    steps: tuple[ScaleStep, ...]  #: finest first; the solvers reconstruct coarsest first
    anisotropy: tuple[np.float32, ...]  #: the four anisotropy factors, ``user**2``
    modes: tuple[int, ...]  #: ISOTROPIC, ISOPHOTE or GRADIENT for the four orders
    variance_threshold: np.float32  #: ``10**edge_threshold``
    luminance_threshold: float
    #: After the last iteration, inpainted channels whose input was >= ``luminance_threshold``
    #: end at least at it (``params.keep_saturated`` with a threshold above 0).
    keep_saturated: bool = False
    #: The settings that drive divergence, with their values (for :class:`DivergenceError`).
    divergence_hint: str = dataclasses.field(default="", compare=False)

    @property
    def divergence_checks(self) -> frozenset[int]:
        """Iterations after which the solvers check for divergence: :func:`divergence_checks`."""
        return divergence_checks(self.iterations)

    @property
    def reach_per_iteration(self) -> int:
        """Pixels one iteration reaches in each direction, ``3 * (2**scales - 1)``."""
        return 3 * ((1 << self.scales) - 1)

    @property
    def full_reach(self) -> int:
        """Pixels the whole run reaches: ``iterations * reach_per_iteration``. Tiles
        overlapping by this much give the whole-image result exactly."""
        return self.iterations * self.reach_per_iteration

    @property
    def passes(self) -> tuple[Pass, ...]:
        """One iteration's passes and buffers: :func:`iteration_passes`."""
        return iteration_passes(self.scales)

    @property
    def workspaces(self) -> tuple[str, ...]:
        """The buffers :attr:`passes` use besides the image's (``input``, ``output``), in
        the order they first appear: ``lf0``, ``hf0``, ``lf1`` (not for one scale), ``hf1``..."""
        used = dict.fromkeys(name for step in self.passes for name in (*step.reads, *step.writes))
        return tuple(name for name in used if name not in ("input", "output"))


@dataclasses.dataclass(frozen=True)
class Pass:
    """One pass of an iteration over image-sized buffers, named as :func:`iteration_passes`
    names them."""

    kind: Literal["bspline", "pde"]
    scale: int
    reads: tuple[str, ...]  #: ``("level",)`` for B-spline; ``("hf", "lf")`` for the PDE
    writes: tuple[str, ...]  #: ``("lf", "hf")`` for B-spline; ``("out",)`` for the PDE

    @property
    def arrays_moved(self) -> int:
        """Image-sized arrays read or written (each once): its memory traffic."""
        return len(self.reads) + len(self.writes)


@functools.cache
def iteration_passes(scales: int) -> tuple[Pass, ...]:
    """The buffer schedule of one iteration, shared by every solver.

    Buffers: ``"input"`` (the iteration's input), ``"output"`` (its result; a solver may
    make it the input's buffer: the input is read only by the first pass, before the
    output is written), ``"lf0"`` and ``"lf1"`` (low frequencies, alternating) and
    ``"hf<s>"`` (the high frequencies of scale ``s``, kept until the PDE of that scale).

    First the decomposition, finest first: ``bspline`` s reads its level (the input, then
    the previous low frequencies) and writes ``lf<s % 2>`` and ``hf<s>``. Then the
    reconstruction, coarsest first: ``pde`` s reads ``hf<s>`` and the current
    reconstruction (the coarsest low frequencies first) and writes the free low-frequency
    buffer, or the output at scale 0.
    """
    passes = []
    level = "input"
    for s in range(scales):
        passes.append(Pass("bspline", s, (level,), (f"lf{s % 2}", f"hf{s}")))
        level = f"lf{s % 2}"
    current, spare = level, f"lf{scales % 2}"
    for s in reversed(range(scales)):
        target = "output" if s == 0 else spare
        passes.append(Pass("pde", s, (f"hf{s}", current), (target,)))
        current, spare = target, current
    return tuple(passes)


def mask_source(mask, plan: Plan) -> Literal["caller", "luminance"] | None:
    """Where a run's mask comes from, for every solver: the caller's mask when one is
    given, else darktable's luminance mask when the plan's ``luminance_threshold`` is
    above 0, else none (diffuse everywhere)."""
    if mask is not None:
        return "caller"
    return "luminance" if plan.luminance_threshold > 0.0 else None


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """Intermediate results a solver hands over during one run.

    After each iteration count in ``at``, the solver calls ``handle(done, current)``
    with the ``(H, W, C)`` result so far (valid only during the call: copy what you
    keep); when it returns False the run stops there and returns that result. Self-
    calibration reads a setting's whole error curve from one run this way. Only for
    images the solver runs in one piece (the OpenCL solver refuses tiled runs).
    """

    at: frozenset[int]
    handle: Callable[[int, np.ndarray], bool]

    def go_on(self, done: int, current: np.ndarray) -> bool:
        """Hand ``current`` over if ``done`` is a checkpoint; return whether to go on."""
        return done not in self.at or bool(self.handle(done, current))


def _mode(anisotropy: float) -> int:
    if anisotropy == 0.0:
        return ISOTROPIC
    return ISOPHOTE if anisotropy > 0.0 else GRADIENT


def make_plan(params: DiffuseParams) -> Plan:
    """Derive the per-scale constants of a run, in darktable's float32 arithmetic."""
    scales = num_scales(params)
    aniso_user = (params.anisotropy_first, params.anisotropy_second, params.anisotropy_third,
                  params.anisotropy_fourth)
    speeds_user = [F32(v) for v in (params.first, params.second, params.third, params.fourth)]
    regularization = F32(np.power(F32(10.0), F32(params.edge_sensitivity))) - F32(1.0)
    steps = []
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for s in range(scales):
            sigma = equivalent_sigma(s)
            distance = sigma - F32(params.radius_center)
            norm = F32(np.exp(-(distance * distance) / (F32(params.radius) * F32(params.radius))))
            steps.append(ScaleStep(
                scale=s,
                mult=1 << s,
                speeds=tuple(F32(v * KAPPA * norm) for v in speeds_user),
                strength=F32(F32(params.sharpness) * norm + F32(1.0)),
                regularization_factor=F32(regularization * (sigma * sigma) / F32(9.0)),
            ))
    return Plan(
        iterations=max(params.iterations, 1),
        scales=scales,
        steps=tuple(steps),
        anisotropy=tuple(F32(F32(a) * F32(a)) for a in aniso_user),
        modes=tuple(_mode(a) for a in aniso_user),
        variance_threshold=F32(np.power(F32(10.0), F32(params.edge_threshold))),
        luminance_threshold=params.luminance_threshold,
        keep_saturated=bool(params.keep_saturated and params.luminance_threshold > 0.0),
        divergence_hint=_divergence_hint(params),
    )
