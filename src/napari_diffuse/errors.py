"""Exceptions of napari-diffuse that callers may want to catch by type."""

from __future__ import annotations

__all__ = ["DivergenceError", "InpaintingWarning", "InvalidInputError"]


class InpaintingWarning(UserWarning):
    """Masked pixels ended far outside the known pixels' range: the settings diffused too
    little to fill the mask from darktable's seeded start noise."""


class DivergenceError(ValueError):
    """A run's values left the bounded range: the explicit scheme diverged.

    Raised by both solvers at the same checked iteration (see
    :func:`napari_diffuse.plan.divergence_checks`) instead of returning NaN, infinities or
    huge values. ``iteration`` is the first checked iteration where the largest value was
    not finite or above ``bound``; ``peak`` is that value (``inf`` for NaN or infinity).
    """

    def __init__(self, message: str, *, iteration: int, peak: float = float("inf"),
                 bound: float = float("nan")):
        super().__init__(message)
        self.iteration = iteration
        self.peak = peak
        self.bound = bound

    def __reduce__(self):  # picklable (dask workers) with its keyword arguments
        return (_rebuild, (self.args[0], self.iteration, self.peak, self.bound))


class InvalidInputError(ValueError):
    """A solver found NaN, Inf or values beyond the working range in its input, checking
    it on its device. ``peak`` is its largest magnitude (``inf`` for NaN or infinity).

    :func:`napari_diffuse.diffuse` answers it with the host's message, which counts the
    values and names the first one's index.
    """

    def __init__(self, message: str, *, peak: float = float("inf")):
        super().__init__(message)
        self.peak = peak

    def __reduce__(self):  # picklable (dask workers) with its keyword argument
        return (_rebuild_invalid, (self.args[0], self.peak))


def _rebuild_invalid(message: str, peak: float) -> InvalidInputError:
    return InvalidInputError(message, peak=peak)


def _rebuild(message: str, iteration: int, peak: float, bound: float) -> DivergenceError:
    return DivergenceError(message, iteration=iteration, peak=peak, bound=bound)
