"""A caller's integers mapped to and from working units on the OpenCL device.

8- and 16-bit integer images cross the bus in their own dtype (half or a quarter of the
float32 bytes) and are mapped on the device by ``kernels/units.cl``, bit for bit as
:func:`napari_diffuse.intensity.to_working` and ``from_working`` map them on the host.
The program is built on its own for each integer type, on first use, on devices with double
precision; where it is missing or fails to build, the host maps them instead.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyopencl as cl

from . import intensity
from .intensity import Layout
from .opencl_program import build, largest_local_size, round_up

__all__ = ["UNITS_FILE", "UNIT_TYPES", "DeviceUnits"]

F32 = np.float32
#: The caller-units program, built with ``-DCALLER_T=`` the OpenCL type of :data:`UNIT_TYPES`.
UNITS_FILE = "units.cl"
#: The integer dtypes mapped on the device, and their OpenCL types.
UNIT_TYPES = {np.dtype(np.uint8): "uchar", np.dtype(np.int8): "char",
              np.dtype(np.uint16): "ushort", np.dtype(np.int16): "short"}
_KERNELS = ("to_working", "from_working")


class DeviceUnits:
    """The caller-units kernels of one device, built per integer type on first use.

    Parameters
    ----------
    context : pyopencl.Context
        The context the kernels run in.
    device : pyopencl.Device
        The device they are built for.
    kernel_dir : path
        Folder holding :data:`UNITS_FILE`.
    """

    def __init__(self, context, device, kernel_dir: Path):
        self.context, self.device, self.folder = context, device, Path(kernel_dir)
        # per OpenCL type: kernel and work-group size by name; None where the build failed
        self._kernels: dict[str, dict[str, tuple[cl.Kernel, int]] | None] = {}

    def maps(self, layout: Layout) -> bool:
        """Whether ``layout``'s values are mapped on this device, bit for bit as the host
        would for finite values: 8- and 16-bit integers that
        :func:`~napari_diffuse.intensity.maps_in_float32`, on a device with double
        precision, where the program builds."""
        return (layout.dtype in UNIT_TYPES and intensity.maps_in_float32(layout)
                and "cl_khr_fp64" in self.device.extensions
                and self._kernels_for(layout.dtype) is not None)

    def _kernels_for(self, dtype: np.dtype) -> dict[str, tuple[cl.Kernel, int]] | None:
        """The kernels for ``dtype`` with their work-group sizes; None where the program is
        missing or fails to build (remembered)."""
        type_name = UNIT_TYPES[np.dtype(dtype)]
        if type_name not in self._kernels:
            try:
                source = (self.folder / UNITS_FILE).read_text()
                program = build(self.context, self.device, source, (f"-DCALLER_T={type_name}",))
                kernels = {name: cl.Kernel(program, name) for name in _KERNELS}
            except (OSError, cl.Error):
                self._kernels[type_name] = None
            else:
                self._kernels[type_name] = {
                    name: (kernel, largest_local_size(kernel, self.device, 256))
                    for name, kernel in kernels.items()}
        return self._kernels[type_name]

    def _enqueue(self, queue, name: str, dtype: np.dtype, args: tuple, n: int) -> cl.Event:
        kernel, local = self._kernels_for(dtype)[name]
        kernel.set_args(*args, np.int32(n))
        return cl.enqueue_nd_range_kernel(queue, kernel, (round_up(n, local),), (local,))

    def to_working(self, queue, caller_buf, buffer, n: int, layout: Layout) -> cl.Event:
        """Enqueue on ``queue`` the mapping of ``n`` caller's values in ``caller_buf`` to
        working units in the float32 ``buffer``; return its event. ``scale`` goes as a
        double (kernels/units.cl says why)."""
        return self._enqueue(queue, "to_working", layout.dtype,
                             (caller_buf, buffer, F32(layout.offset),
                              np.float64(F32(layout.scale))), n)

    def from_working(self, queue, buffer, caller_buf, n: int, layout: Layout) -> cl.Event:
        """Enqueue on ``queue`` the mapping of ``n`` working values in ``buffer`` to the
        caller's integers in ``caller_buf`` (rounded, clipped to the dtype); return its
        event."""
        info = np.iinfo(layout.dtype)
        return self._enqueue(queue, "from_working", layout.dtype,
                             (buffer, caller_buf, np.float64(layout.scale),
                              np.float64(layout.offset), np.float64(info.min),
                              np.float64(info.max)), n)
