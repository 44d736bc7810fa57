"""Solver selection: which implementation runs a plan (``"numpy"``, ``"opencl"``, ``"auto"``).

Every solver module offers the same two functions, with the same arguments and
(within float32 rounding) the same results:
``solve(image, plan, mask=None, *, origin, full_width, progress)`` and
``variance_map(image, plan, mask=None, *, origin, full_width)``.
"""

from __future__ import annotations

from types import ModuleType

__all__ = ["BACKENDS", "get_solver"]

#: Accepted values of the ``backend`` argument.
BACKENDS = ("auto", "numpy", "opencl")


def get_solver(backend: str) -> ModuleType:
    """Return the solver module for ``backend``.

    Raises
    ------
    ValueError
        For an unknown backend name (the message lists the accepted ones).
    RuntimeError
        If ``"opencl"`` is asked for and no working OpenCL device exists.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; accepted: {list(BACKENDS)}")
    if backend == "opencl":
        raise RuntimeError("the OpenCL backend is not available in this version; "
                           "use backend='numpy'")
    from . import numpy_solver

    return numpy_solver
