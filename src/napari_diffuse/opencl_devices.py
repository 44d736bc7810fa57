"""Which OpenCL device runs the OpenCL solver: listing, explicit choice, default.

The choice, in order: an explicit ``device`` (an index into :func:`list_devices` or a
case-insensitive part of a device's ``"platform: name"``), else the environment variable
``NAPARI_DIFFUSE_OPENCL_DEVICE`` (same forms), else the first GPU, else the first CPU,
else any device. pyopencl is imported only when a device is looked for, so the package
works without it.
"""

from __future__ import annotations

import dataclasses
import os

__all__ = ["DEVICE_VARIABLE", "DeviceInfo", "OpenCLUnavailable", "list_devices", "select_device"]

#: Environment variable naming the device to use (index or part of its name).
DEVICE_VARIABLE = "NAPARI_DIFFUSE_OPENCL_DEVICE"


class OpenCLUnavailable(RuntimeError):
    """No usable OpenCL device: pyopencl, a platform or the chosen device is missing."""


@dataclasses.dataclass(frozen=True)
class DeviceInfo:
    """One OpenCL device, as :func:`list_devices` reports it."""

    index: int  #: position in :func:`list_devices`, accepted as a choice
    platform: str
    name: str
    kind: str  #: "GPU", "CPU", "accelerator" or "other"
    global_memory: int  #: bytes
    max_allocation: int  #: bytes, the largest single buffer

    @property
    def label(self) -> str:
        """``"platform: name"``, the text a name choice is matched against."""
        return f"{self.platform}: {self.name}"

    def __str__(self) -> str:
        return (f"[{self.index}] {self.label} ({self.kind}, "
                f"{self.global_memory / 2**30:.1f} GiB)")


def _import_pyopencl():
    try:
        import pyopencl
    except ImportError as error:
        raise OpenCLUnavailable(
            "pyopencl is not installed (pip install 'napari-diffuse[opencl]')") from error
    return pyopencl


def _devices() -> list:
    """Every available device of every platform, as pyopencl Device objects."""
    cl = _import_pyopencl()
    try:
        platforms = cl.get_platforms()
    except cl.Error as error:
        raise OpenCLUnavailable(f"no OpenCL platform found ({error})") from error
    devices = []
    for platform in platforms:
        try:
            devices += [d for d in platform.get_devices() if d.available]
        except cl.Error:
            continue  # a platform with no device of any type
    if not devices:
        raise OpenCLUnavailable("no OpenCL device found on platforms "
                                f"{[p.name for p in platforms]}")
    return devices


def _kind(device) -> str:
    cl = _import_pyopencl()
    for flag, kind in ((cl.device_type.GPU, "GPU"), (cl.device_type.CPU, "CPU"),
                       (cl.device_type.ACCELERATOR, "accelerator")):
        if device.type & flag:
            return kind
    return "other"


def _info(index: int, device) -> DeviceInfo:
    return DeviceInfo(index=index, platform=device.platform.name.strip(),
                      name=device.name.strip(), kind=_kind(device),
                      global_memory=device.global_mem_size,
                      max_allocation=device.max_mem_alloc_size)


def list_devices() -> list[DeviceInfo]:
    """Return the OpenCL devices that could run the OpenCL solver.

    Returns
    -------
    list of DeviceInfo
        In platform order; empty when pyopencl or an OpenCL platform is missing.

    Examples
    --------
    >>> from napari_diffuse import list_devices
    >>> for device in list_devices():  # doctest: +SKIP
    ...     print(device)
    [0] Portable Computing Language: cpu-haswell-AMD EPYC (CPU, 4.2 GiB)
    """
    try:
        return [_info(i, d) for i, d in enumerate(_devices())]
    except OpenCLUnavailable:
        return []


def select_device(choice: int | str | None = None):
    """Return the pyopencl Device to use.

    Parameters
    ----------
    choice : int or str, optional
        An index into :func:`list_devices`, or a case-insensitive part of a device's
        ``"platform: name"``. ``None``: the environment variable
        ``NAPARI_DIFFUSE_OPENCL_DEVICE`` if set, else the first GPU, then the first CPU.

    Raises
    ------
    OpenCLUnavailable
        If pyopencl, a platform or the chosen device is missing (the message lists the
        devices there are).
    """
    devices = _devices()
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        choice = os.environ.get(DEVICE_VARIABLE, "").strip() or None
    if choice is None:
        by_kind = {kind: [d for d in devices if _kind(d) == kind] for kind in ("GPU", "CPU")}
        return (by_kind["GPU"] or by_kind["CPU"] or devices)[0]
    infos = [_info(i, d) for i, d in enumerate(devices)]
    if isinstance(choice, int) or (isinstance(choice, str) and choice.strip().isdigit()):
        index = int(choice)
        if 0 <= index < len(devices):
            return devices[index]
        raise OpenCLUnavailable(f"OpenCL device index {index} is out of range "
                                f"0..{len(devices) - 1}; devices: {[str(i) for i in infos]}")
    if not isinstance(choice, str):
        raise TypeError(f"an OpenCL device choice is an int or a str, got {type(choice).__name__}")
    matches = [d for d, info in zip(devices, infos, strict=True)
               if choice.strip().lower() in info.label.lower()]
    if not matches:
        raise OpenCLUnavailable(f"no OpenCL device matches {choice!r}; "
                                f"devices: {[str(i) for i in infos]}")
    return matches[0]
