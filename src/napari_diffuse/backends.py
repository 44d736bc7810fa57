"""Solver selection: which implementation runs a plan (``"numpy"``, ``"opencl"``, ``"auto"``).

Every solver module offers the same two functions, with the same arguments and
(within float32 rounding) the same results:
``solve(image, plan, mask=None, *, origin, full_width, progress, checkpoints)`` (see
:class:`~napari_diffuse.plan.Checkpoints`) and
``variance_map(image, plan, mask=None, *, origin, full_width)`` (``mask=None``: darktable's
luminance mask when the plan's ``luminance_threshold`` is above 0, else none), and the flag
``TILES_ON_DEVICE``: True when the solver fits any image to its device itself, holding
only the input and the output in host memory (then :mod:`.tiling` need not chunk NumPy
input to bound memory); and ``CHECKS_ON_DEVICE``: True when ``solve`` and
``solve_planes`` refuse NaN, Inf and values beyond the working range themselves
(:class:`~napari_diffuse.errors.InvalidInputError`), so the caller need not read the
input for them (:func:`~napari_diffuse.intensity.check_values`).

``"auto"`` prefers OpenCL when a working device exists (see
:mod:`napari_diffuse.opencl_devices` for which one) and otherwise falls back to NumPy,
warning once per reason.
"""

from __future__ import annotations

import threading
import warnings
from types import ModuleType

__all__ = ["BACKENDS", "get_solver"]

#: Accepted values of the ``backend`` argument.
BACKENDS = ("auto", "numpy", "opencl")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def _opencl_solver() -> ModuleType:
    """Return the OpenCL solver with its engine built, or raise RuntimeError saying why."""
    try:
        from . import opencl_solver
    except ImportError as error:
        raise RuntimeError("the OpenCL backend needs pyopencl, which is not installed "
                           "(pip install 'napari-diffuse[opencl]')") from error
    try:
        opencl_solver.engine()
    except RuntimeError as error:
        raise RuntimeError(f"the OpenCL backend is not available: {error}") from error
    return opencl_solver


def get_solver(backend: str) -> ModuleType:
    """Return the solver module for ``backend``.

    Raises
    ------
    ValueError
        For an unknown backend name (the message lists the accepted ones).
    RuntimeError
        If ``"opencl"`` is asked for and no working OpenCL device exists (no pyopencl,
        no platform or device, a kernel build error); the message says which.

    Warns
    -----
    RuntimeWarning
        Once per reason, when ``"auto"`` falls back to NumPy.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {list(BACKENDS)}")
    if backend != "numpy":
        try:
            return _opencl_solver()
        except RuntimeError as error:
            if backend == "opencl":
                raise
            reason = str(error)
            with _warned_lock:
                first = reason not in _warned
                _warned.add(reason)
            if first:
                warnings.warn(f"napari-diffuse: {reason}; using the NumPy solver "
                              "(backend='numpy' silences this warning)", RuntimeWarning,
                              stacklevel=3)
    from . import numpy_solver

    return numpy_solver
