"""The OpenCL solver: the NumPy solver's algorithm as fused OpenCL kernels (``kernels/*.cl``).

Same interface and, within float32 rounding, the same results as
:mod:`napari_diffuse.numpy_solver`: ``solve(image, plan, mask, *, origin, full_width,
progress, checkpoints)`` and ``variance_map(image, plan, mask, *, origin, full_width)``,
plus ``solve_planes(planes, plan, masks, *, progress)``, which streams a stack through
the device with its transfers hidden behind the kernels, and ``solve(..., layout=...)``
where :func:`maps_units`: a caller's 8- or 16-bit integers mapped to and from working
units on the device (``kernels/units.cl``).

The work lives in six modules: :mod:`.opencl_tiles` (tile planning, pure arithmetic),
:mod:`.opencl_program` (kernel sources, build options, kernel tables; programs built once
per process and device), :mod:`.opencl_transfer` (direct and pinned, staged copies),
:mod:`.opencl_units` (integers mapped to and from working units on the device),
:mod:`.opencl_stack` (a stack's batches uploaded ahead of and downloaded behind the
compute) and :mod:`.opencl_engine` (the :class:`Engine`: device buffers and whole runs). This module
keeps the shared engine, built on first use for the device that
:func:`napari_diffuse.opencl_devices.select_device` picks; :func:`configure` changes the
device, the kernel folder or the allocation limit.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyopencl as cl

from .intensity import Layout
from .opencl_devices import OpenCLUnavailable, select_device
from .opencl_engine import Engine, Progress, device_bytes_per_pixel
from .opencl_program import KERNEL_FILES
from .opencl_tiles import Tile, plan_tiles
from .plan import Checkpoints, Plan

__all__ = ["CHECKS_ON_DEVICE", "Engine", "KERNEL_FILES", "TILES_ON_DEVICE", "Tile",
           "bytes_per_pixel", "configure", "device_bytes_per_pixel", "engine", "plan_tiles",
           "maps_units", "solve", "solve_planes", "variance_map"]

#: Images too large for the device are tiled on it; the host holds only input and output.
TILES_ON_DEVICE = True
#: :func:`solve` and :func:`solve_planes` refuse NaN, Inf and values beyond the working
#: range themselves (:class:`~napari_diffuse.errors.InvalidInputError`), from the device's
#: reduction of the uploaded input: the host need not read the input for them.
CHECKS_ON_DEVICE = True


def bytes_per_pixel(plan: Plan, channels: int) -> int:
    """Host bytes a run holds per pixel: the float32 input and output (the wavelet buffers
    are on the device: :func:`device_bytes_per_pixel`)."""
    return 2 * 4 * channels


@dataclasses.dataclass(frozen=True)
class _Settings:
    device: int | str | None = None
    kernel_dir: str | Path | None = None
    max_allocation: int | None = None


_settings = _Settings()
_engine: Engine | OpenCLUnavailable | None = None
_engine_lock = threading.Lock()


def configure(*, device: int | str | None = None, kernel_dir: str | Path | None = None,
              max_allocation: int | None = None) -> None:
    """Set how the shared engine is made; it is rebuilt on next use.

    Parameters
    ----------
    device : int or str, optional
        As :func:`napari_diffuse.opencl_devices.select_device` takes it; ``None``: the
        environment variable ``NAPARI_DIFFUSE_OPENCL_DEVICE``, else a GPU, else a CPU.
    kernel_dir : path, optional
        Folder of the kernel sources; default: the package's ``kernels/``.
    max_allocation : int, optional
        Largest device buffer in bytes; larger images are tiled. Default: the device's.
    """
    global _settings, _engine
    if device is not None and (isinstance(device, bool) or not isinstance(device, (int, str))):
        raise TypeError(f"device={device!r}: give a device index (int), part of its name "
                        "(str) or None")
    if max_allocation is not None and max_allocation < 1:
        raise ValueError(f"max_allocation must be a positive number of bytes, got {max_allocation}")
    with _engine_lock:
        _settings = _Settings(device, kernel_dir, max_allocation)
        _engine = None


def engine() -> Engine:
    """Return the shared engine, building it on first use.

    Raises
    ------
    OpenCLUnavailable
        Why no engine can be made: no pyopencl, platform or device, or a build error.
        The failure is remembered until :func:`configure` is called.
    """
    global _engine
    with _engine_lock:
        if _engine is None:
            try:
                _engine = Engine(select_device(_settings.device), _settings.kernel_dir,
                                 max_allocation=_settings.max_allocation)
            except OpenCLUnavailable as error:
                _engine = error
        if isinstance(_engine, OpenCLUnavailable):
            raise OpenCLUnavailable(str(_engine))
        return _engine


@contextlib.contextmanager
def _device_errors():
    """Turn a pyopencl error during a run into :class:`OpenCLUnavailable`, saying so."""
    try:
        yield
    except cl.Error as error:
        raise OpenCLUnavailable(f"the OpenCL device failed during the run: {error}") from error


def solve(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
          origin: tuple[int, int] = (0, 0), full_width: int | None = None,
          progress: Progress | None = None, checkpoints: Checkpoints | None = None,
          layout: Layout | None = None) -> np.ndarray:
    """Run darktable's diffuse-or-sharpen on one image, on the OpenCL device.

    Same parameters and result as :func:`napari_diffuse.numpy_solver.solve` (a float32
    image in working units); refuses NaN, Inf and values beyond the working range
    (:data:`CHECKS_ON_DEVICE`). With ``layout``, ``image`` and the result hold the
    caller's values instead (see :func:`maps_units`).
    """
    with _device_errors():
        return engine().solve(image, plan, mask, origin=origin, full_width=full_width,
                              progress=progress, checkpoints=checkpoints, layout=layout)


def maps_units(layout: Layout) -> bool:
    """Whether :func:`solve` maps ``layout``'s values to and from working units on the
    device (8- and 16-bit integers, a device with double precision): the caller's
    integers then cross the bus in their own dtype, and no float32 copy of the image is
    made on the host (:meth:`Engine.maps_units`)."""
    with _device_errors():
        return engine().maps_units(layout)


def solve_planes(planes: np.ndarray, plan: Plan,
                 masks: Sequence[np.ndarray | None] | None = None, *,
                 progress: Progress | None = None, layout: Layout | None = None) -> np.ndarray:
    """:func:`solve` on every plane of a float32 ``(N, H, W, C)`` stack, streamed through
    the device (:meth:`Engine.solve_planes`); ``progress`` counts iterations over all
    planes. Returns ``(N, H, W, C)`` float32; with ``layout``, the planes and the result
    hold the caller's values (see :func:`maps_units`)."""
    with _device_errors():
        return engine().solve_planes(planes, plan, masks, progress=progress, layout=layout)


def variance_map(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
                 origin: tuple[int, int] = (0, 0), full_width: int | None = None) -> np.ndarray:
    """Return darktable's edge-variance term, computed on the OpenCL device.

    Same parameters and result as :func:`napari_diffuse.numpy_solver.variance_map`.
    """
    with _device_errors():
        return engine().variance_map(image, plan, mask, origin=origin, full_width=full_width)
