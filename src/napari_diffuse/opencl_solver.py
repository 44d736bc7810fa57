"""The OpenCL solver: the NumPy solver's algorithm as fused OpenCL kernels (``kernels/*.cl``).

Same interface and, within float32 rounding, the same results as
:mod:`napari_diffuse.numpy_solver`: ``solve(image, plan, mask, *, origin, full_width,
progress)`` and ``variance_map(image, plan, mask, *, origin, full_width)``.

An :class:`Engine` owns one device's context, queue, built programs and kernels, and a
workspace of device buffers reused from one image to the next. An image is uploaded
once (on a GPU through pinned staging buffers filled by several host threads), every
scale of every iteration runs on the device (per scale: one B-spline pass writing LF and
HF, one PDE pass), and the result is downloaded once. An image too large for the
device's memory or its largest allocation is processed in overlapping tiles whose
overlap covers the information's reach over all iterations, so the result equals the
whole-image result; when even that cannot fit, the NumPy solver runs it, with a warning.

The module-level functions use a shared engine, built on first use for the device that
:func:`napari_diffuse.opencl_devices.select_device` picks; :func:`configure` changes the
device, the kernel folder or the allocation limit.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyopencl as cl
import pyopencl.cltypes as cltypes

from . import numpy_solver
from .opencl_devices import OpenCLUnavailable, select_device
from .plan import (
    VARIANCE_MAP_REACH,
    Checkpoints,
    Plan,
    checked_iterations,
    divergence_bound,
    divergence_error,
)
from .resources import data_dir

__all__ = ["Engine", "KERNEL_FILES", "TILES_ON_DEVICE", "configure", "engine", "plan_tiles",
           "solve", "variance_map"]

#: Images too large for the device are tiled on it; the host holds only input and output.
TILES_ON_DEVICE = True

F32 = np.float32
#: The kernel sources, concatenated in this order into one program.
KERNEL_FILES = ("common.cl", "bspline.cl", "pde.cl", "inpaint.cl", "variance.cl",
                "divergence.cl")
_KERNEL_NAMES = ("bspline_level", "pde_step", "luminance_mask", "inpaint_noise",
                 "keep_saturated", "variance_map", "peak")
#: Work-groups and largest work-group size of the divergence check's reduction (``peak``):
#: at most this many floats come back per check.
_PEAK_GROUPS, _PEAK_LOCAL = 1024, 256
#: Precise arithmetic (no fused multiply-add, correctly rounded division and square root)
#: per device kind: on a CPU it gives NumPy's results at no cost; on a GPU it costs time.
_PRECISE = {"GPU": False, "CPU": True}
_CORRECT_ROUNDING = "-cl-fp32-correctly-rounded-divide-sqrt"
#: Share of the device's global memory a run may fill.
MEMORY_FRACTION = 0.8
#: Floats per work item of the filtering kernels (VEC in kernels/common.cl), per device
#: kind: 8 fills a CPU's AVX registers, 4 keeps a GPU's loads 16 bytes wide.
_VECTOR_WIDTH = {"GPU": 4, "CPU": 8}
#: Work-group shapes of the filtering kernels (packs of floats x rows), per device kind.
_LOCAL_SIZE = {"GPU": (64, 2), "CPU": (64, 4)}
_LARGEST_BUFFER = 4 * (2**31 - 1)  # the kernels index floats with 32-bit ints

Progress = Callable[[int, int], None]


@dataclasses.dataclass(frozen=True)
class _Tile:
    """A padded region of the image and, inside it, the core it is responsible for."""

    rows: slice
    cols: slice
    core_rows: slice  #: relative to the padded region
    core_cols: slice


def _split(size: int, parts: int, overlap: int) -> list[tuple[slice, slice]]:
    """Cut ``range(size)`` into ``parts`` cores, each padded by ``overlap`` (clamped)."""
    step = -(-size // parts)
    spans = []
    for start in range(0, size, step):
        stop = min(start + step, size)
        lo, hi = max(start - overlap, 0), min(stop + overlap, size)
        spans.append((slice(lo, hi), slice(start - lo, stop - lo)))
    return spans


def plan_tiles(height: int, width: int, overlap: int,
               fits: Callable[[int, int], bool]) -> list[_Tile] | None:
    """Return the fewest tiles, padded by ``overlap``, whose padded size ``fits(h, w)``.

    The longer padded side is split first. ``None`` if even one-pixel cores don't fit.
    """
    rows, cols = 1, 1
    while True:
        core_h, core_w = -(-height // rows), -(-width // cols)
        padded_h, padded_w = min(height, core_h + 2 * overlap), min(width, core_w + 2 * overlap)
        if fits(padded_h, padded_w):
            break
        if core_h == 1 and core_w == 1:
            return None
        if (padded_h >= padded_w and core_h > 1) or core_w == 1:
            rows = -(-height // (core_h - 1))
        else:
            cols = -(-width // (core_w - 1))
    return [_Tile(r, c, core_r, core_c)
            for r, core_r in _split(height, rows, overlap)
            for c, core_c in _split(width, cols, overlap)]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


class _Bound(NamedTuple):
    """A kernel object with its arguments set, and how to enqueue and record it."""

    kernel: cl.Kernel
    global_size: tuple[int, ...]
    local: tuple[int, ...]
    kind: str  #: "bspline" or "pde" (the events' names)
    scale: int


class _Program:
    """The kernels built for one vector width, with their fitted work-group shapes."""

    def __init__(self, context, device, source: str, vector_width: int, precise: bool,
                 local_size: tuple[int, int]):
        options = [f"-DVEC={vector_width}"]
        if precise:
            options.append("-DPRECISE")
            if device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
                options.append(_CORRECT_ROUNDING)
        program = cl.Program(context, source).build(options=options)
        self._program = program
        self._pool: dict[tuple[str, int], cl.Kernel] = {}
        self.vector_width = vector_width
        self.kernels = {name: cl.Kernel(program, name) for name in _KERNEL_NAMES}
        self.local = {name: self._fitted(kernel, device, local_size)
                      for name, kernel in self.kernels.items()}

    def pooled(self, name: str, index: int) -> cl.Kernel:
        """Kernel object number ``index`` of ``name``, made once: each holds its own
        arguments (creating one costs about 0.3 ms of host time in pyopencl)."""
        key = (name, index)
        if key not in self._pool:
            self._pool[key] = cl.Kernel(self._program, name)
        return self._pool[key]

    @staticmethod
    def _fitted(kernel, device, local_size: tuple[int, int]) -> tuple[int, int]:
        """``local_size`` shrunk (rows first) to what ``kernel`` can run in one work-group."""
        largest = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device)
        lx, ly = local_size
        while lx * ly > largest:
            if ly > 1:
                ly //= 2
            else:
                lx //= 2
        return lx, ly


class _Staging:
    """Host-device copies through pinned buffers, for devices with their own memory.

    A pageable copy runs at a fraction of the bus speed (the driver copies through its
    own staging area, on one thread). Here two pinned buffers alternate: while the device
    copies one chunk, host threads copy the next one into (or out of) the other.
    """

    CHUNK = 32 << 20

    def __init__(self, context, queue):
        self.queue = queue
        self.buffers = [cl.Buffer(context, cl.mem_flags.READ_WRITE | cl.mem_flags.ALLOC_HOST_PTR,
                                  self.CHUNK) for _ in range(2)]
        # pinned host views of the buffers, mapped for the engine's lifetime
        self.views = [cl.enqueue_map_buffer(queue, b, cl.map_flags.READ | cl.map_flags.WRITE, 0,
                                            (self.CHUNK,), np.uint8)[0] for b in self.buffers]
        workers = min(8, os.cpu_count() or 1)
        self.pool = concurrent.futures.ThreadPoolExecutor(workers, "napari-diffuse-opencl")
        self.workers = workers

    def _copy(self, dst: np.ndarray, src: np.ndarray) -> None:
        """``dst[:] = src`` for 1-D byte arrays, on several threads."""
        bounds = np.linspace(0, src.size, self.workers + 1).astype(int)
        list(self.pool.map(lambda a, b: np.copyto(dst[a:b], src[a:b]), bounds[:-1], bounds[1:]))

    def upload(self, buffer, host: np.ndarray) -> None:
        data = host.reshape(-1).view(np.uint8)
        pending = [None, None]
        for i, start in enumerate(range(0, data.size, self.CHUNK)):
            part = data[start:start + self.CHUNK]
            if pending[i % 2] is not None:
                pending[i % 2].wait()
            stage = self.views[i % 2][:part.size]
            self._copy(stage, part)
            pending[i % 2] = cl.enqueue_copy(self.queue, buffer, stage, dst_offset=start,
                                             is_blocking=False)

    def download(self, host: np.ndarray, buffer) -> None:
        data = host.reshape(-1).view(np.uint8)
        starts = list(range(0, data.size, self.CHUNK))

        def fetch(i: int):
            size = min(self.CHUNK, data.size - starts[i])
            return cl.enqueue_copy(self.queue, self.views[i % 2][:size], buffer,
                                   src_offset=starts[i], is_blocking=False)

        pending = [fetch(i) for i in range(min(2, len(starts)))]
        for i, start in enumerate(starts):
            pending[i % 2].wait()
            part = data[start:start + self.CHUNK]
            self._copy(part, self.views[i % 2][:part.size])
            if i + 2 < len(starts):
                pending[i % 2] = fetch(i + 2)


class Engine:
    """One OpenCL device with the diffusion program built and a reusable workspace.

    Parameters
    ----------
    device : pyopencl.Device
        From :func:`napari_diffuse.opencl_devices.select_device`.
    kernel_dir : path, optional
        Folder holding :data:`KERNEL_FILES`; default: the package's ``kernels/``.
    max_allocation : int, optional
        Largest device buffer in bytes, below the device's own limit (tests lower it
        to force tiling).
    local_size : (int, int), optional
        Work-group shape of the filtering kernels: packs of floats x rows.
    vector_width : {1, 4, 8}, optional
        Floats per work item of the filtering kernels. On a GPU, images whose channel
        count it does not divide use 1 (their packs would not be aligned).
    precise : bool, optional
        Round every product and sum on its own and divide exactly, as NumPy does (the
        default on CPUs); otherwise fuse the PDE's multiply-adds and use the device's own
        division and square root (the default on GPUs, faster there). Both stay within
        darktable's reference tolerances, and each gives the same result at any vector
        width, so 1-channel and multichannel images agree channel by channel.
    staged : bool, optional
        Copy between host and device through pinned staging buffers; default: where the
        device has its own memory (a GPU).
    profiling : bool
        Enable OpenCL profiling events (see ``events`` in :meth:`solve`).

    Raises
    ------
    OpenCLUnavailable
        If the context cannot be made or the program fails to build (the message holds
        the build log).
    """

    def __init__(self, device, kernel_dir: str | Path | None = None, *,
                 max_allocation: int | None = None, local_size: tuple[int, int] | None = None,
                 vector_width: int | None = None, precise: bool | None = None,
                 staged: bool | None = None, profiling: bool = False):
        self.device = device
        kind = "GPU" if device.type & cl.device_type.GPU else "CPU"
        self.vector_width = vector_width if vector_width is not None else _VECTOR_WIDTH[kind]
        # a CPU loads unaligned vectors at full speed; a GPU splits them into scalar loads
        self._unaligned_width = 1 if kind == "GPU" else self.vector_width
        self.local_size = tuple(local_size) if local_size is not None else _LOCAL_SIZE[kind]
        self.precise = precise if precise is not None else _PRECISE[kind]
        self._folder = Path(kernel_dir) if kernel_dir is not None else data_dir("kernels")
        try:
            self._source = "\n".join((self._folder / name).read_text() for name in KERNEL_FILES)
        except OSError as error:
            raise OpenCLUnavailable(
                f"cannot read the OpenCL kernels in {self._folder}: {error}") from error
        staged = not device.host_unified_memory if staged is None else staged
        try:
            self.context = cl.Context([device])
            properties = cl.command_queue_properties.PROFILING_ENABLE if profiling else 0
            self.queue = cl.CommandQueue(self.context, properties=properties)
            self._staging = _Staging(self.context, self.queue) if staged else None
        except cl.Error as error:
            raise OpenCLUnavailable(f"cannot use the OpenCL device {device.name.strip()!r}: "
                                    f"{error}") from error
        self._programs: dict[int, _Program] = {}
        self._program(self.vector_width)  # build now: a broken kernel fails here
        self.buffer_limit = min(device.max_mem_alloc_size, _LARGEST_BUFFER,
                                max_allocation if max_allocation is not None else _LARGEST_BUFFER)
        self.memory_limit = int(device.global_mem_size * MEMORY_FRACTION)
        self._lock = threading.Lock()
        self._buffers: list = []
        self._buffer_bytes = 0
        self._mask: cl.Buffer | None = None
        self._peaks: cl.Buffer | None = None

    def __repr__(self) -> str:
        return f"Engine({self.device.platform.name.strip()}: {self.device.name.strip()})"

    def _program(self, vector_width: int) -> _Program:
        """The kernels for ``vector_width``, built on first use."""
        if vector_width not in self._programs:
            try:
                self._programs[vector_width] = _Program(self.context, self.device, self._source,
                                                        vector_width, self.precise,
                                                        self.local_size)
            except cl.Error as error:
                raise OpenCLUnavailable(
                    f"the OpenCL kernels in {self._folder} failed to build on "
                    f"{self.device.name.strip()!r}: {error}") from error
        return self._programs[vector_width]

    def _program_for(self, channels: int) -> _Program:
        aligned = channels % self.vector_width == 0
        return self._program(self.vector_width if aligned else self._unaligned_width)

    # -- device memory ---------------------------------------------------------------------

    def _workspace(self, count: int, nbytes: int) -> list:
        """``count`` buffers of at least ``nbytes``, reused from earlier runs when they fit."""
        if nbytes > self._buffer_bytes or (count > len(self._buffers)
                                           and nbytes != self._buffer_bytes):
            for buffer in self._buffers:
                buffer.release()
            self._buffers, self._buffer_bytes = [], nbytes
        while len(self._buffers) < count:
            self._buffers.append(cl.Buffer(self.context, cl.mem_flags.READ_WRITE,
                                           self._buffer_bytes))
        return self._buffers[:count]

    def _mask_buffer(self, program: _Program, mask: np.ndarray | None, image_buf, shape,
                     threshold: float) -> tuple[cl.Buffer, int]:
        """Return ``(buffer, use_mask)`` for the kernels: ``mask`` uploaded, else darktable's
        luminance mask of ``image_buf`` built on the device when ``threshold`` > 0, else none.
        """
        height, width, channels = shape
        luminance = mask is None and threshold > 0.0
        nbytes = height * width if mask is not None or luminance else 1
        if self._mask is None or self._mask.size < nbytes:
            if self._mask is not None:
                self._mask.release()
            self._mask = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, nbytes)
        if mask is not None:
            cl.enqueue_copy(self.queue, self._mask, np.ascontiguousarray(mask, dtype=np.uint8))
        elif luminance:
            self._launch(program, "luminance_mask",
                         self._pixels(program, "luminance_mask", height, width),
                         (image_buf, self._mask, np.int32(width), np.int32(height),
                          np.int32(channels), F32(threshold)))
        return self._mask, int(mask is not None or luminance)

    def _upload(self, buffer, host: np.ndarray, events: list | None) -> None:
        if self._staging is None:
            self._record(events, "upload", cl.enqueue_copy(self.queue, buffer, host,
                                                            is_blocking=False))
            return
        start = time.perf_counter()
        self._staging.upload(buffer, host)
        if events is not None:  # host-side time: the copy spans several commands
            events.append((("upload", -1), time.perf_counter() - start))

    def _download(self, host: np.ndarray, buffer, events: list | None) -> None:
        if self._staging is None:
            self._record(events, "download", cl.enqueue_copy(self.queue, host, buffer))
            return
        if events is not None:
            self.queue.finish()  # time the copy alone
        start = time.perf_counter()
        self._staging.download(host, buffer)
        if events is not None:  # host-side time: the copy spans several commands
            events.append((("download", -1), time.perf_counter() - start))

    def _tiles(self, shape: tuple[int, int, int], overlap: int, buffers: int):
        height, width, channels = shape

        def fits(h: int, w: int) -> bool:
            nbytes = h * w * channels * 4
            return nbytes <= self.buffer_limit and buffers * nbytes + h * w <= self.memory_limit

        return plan_tiles(height, width, overlap, fits)

    # -- kernels ---------------------------------------------------------------------------

    @staticmethod
    def _record(events: list | None, kind: str, event: cl.Event, scale: int = -1) -> cl.Event:
        if events is not None:
            events.append(((kind, scale), event))
        return event

    def _launch(self, program: _Program, name: str, global_size, args,
                events: list | None = None, scale: int = -1) -> cl.Event:
        kernel = program.kernels[name]
        kernel.set_args(*args)
        local = program.local[name] + (1,) * (len(global_size) - 2)
        event = cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local)
        return self._record(events, name.split("_")[0], event, scale)

    @staticmethod
    def _rows(program: _Program, name: str, height: int, width: int, channels: int,
              mult: int):
        """Global size and geometry arguments of a filtering kernel at dilation ``mult``:
        packs of floats x rank in the row's class x row class (see kernels/common.cl)."""
        classes = min(mult, height)
        per_class = -(-height // classes)
        lx, ly = program.local[name]
        packs = -(-width * channels // program.vector_width)
        size = (_round_up(packs, lx), _round_up(per_class, ly), classes)
        aligned = channels % program.vector_width == 0
        return size, (np.int32(width), np.int32(height), np.int32(channels), np.int32(mult),
                      np.int32(classes), np.int32(aligned))

    @staticmethod
    def _pixels(program: _Program, name: str, height: int, width: int):
        lx, ly = program.local[name]
        return _round_up(width, lx), _round_up(height, ly)

    def _bspline(self, program, src, lf, hf, shape, mult: int, events, scale: int) -> cl.Event:
        size, geometry = self._rows(program, "bspline_level", *shape, mult)
        return self._launch(program, "bspline_level", size, (src, lf, hf, *geometry), events,
                            scale)

    def _inpaint(self, program, image_buf, mask_buf, shape, origin, full_width: int) -> None:
        height, width, channels = shape
        self._launch(program, "inpaint_noise", self._pixels(program, "inpaint_noise", height,
                                                            width),
                     (image_buf, mask_buf, np.int32(width), np.int32(height), np.int32(channels),
                      np.int32(origin[0]), np.int32(origin[1]), np.int32(full_width)))

    def _keep_saturated(self, program, image_buf, input_buf, mask_buf, shape, plan: Plan,
                        events) -> None:
        """Floor, on the device, the masked channels whose input (``input_buf``) was
        saturated: :func:`napari_diffuse.numpy_solver.keep_saturated`."""
        height, width, channels = shape
        self._launch(program, "keep_saturated",
                     self._pixels(program, "keep_saturated", height, width),
                     (image_buf, input_buf, mask_buf, np.int32(width), np.int32(height),
                      np.int32(channels), F32(plan.luminance_threshold)), events)

    def _check_divergence(self, program: _Program, image_buf, shape, plan: Plan, done: int,
                          bound: float) -> None:
        """:func:`napari_diffuse.numpy_solver.check_divergence` on the device: a ``peak``
        reduction of ``image_buf``, then ``_PEAK_GROUPS`` floats or fewer downloaded."""
        n = int(np.prod(shape))
        kernel = program.kernels["peak"]
        largest = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE,
                                             self.device)
        local = 1 << (min(_PEAK_LOCAL, largest).bit_length() - 1)  # a power of two
        groups = max(1, min(_PEAK_GROUPS, -(-n // (local * 16))))
        if self._peaks is None:
            self._peaks = cl.Buffer(self.context, cl.mem_flags.READ_WRITE, 4 * _PEAK_GROUPS)
        kernel.set_args(image_buf, np.int32(n), self._peaks, cl.LocalMemory(4 * local))
        cl.enqueue_nd_range_kernel(self.queue, kernel, (groups * local,), (local,))
        peaks = np.empty(groups, F32)
        cl.enqueue_copy(self.queue, peaks, self._peaks)
        peak = float(peaks.max())
        if not peak <= bound:
            raise divergence_error(plan, done, peak, bound)

    def _bound(self, program: _Program, name: str, global_size, args, scale: int) -> _Bound:
        """Kernel object number ``scale`` of ``name`` with ``args`` set, to enqueue again and
        again (the engine's lock keeps one run at a time on the pool)."""
        kernel = program.pooled(name, scale)
        kernel.set_args(*args)
        local = program.local[name] + (1,) * (len(global_size) - 2)
        return _Bound(kernel, global_size, local, name.split("_")[0], scale)

    def _iteration_kernels(self, program, image_buf, hf: list, lf: list, mask_buf,
                           use_mask: int, shape, plan: Plan) -> list[_Bound]:
        """One iteration's kernels, in place on ``image_buf``, with their arguments set.

        Every iteration reads and writes the same buffers, so the arguments are set once
        per tile: setting them costs more host time than enqueueing (about 0.1 ms a
        kernel in pyopencl), which bounds small images and many iterations.
        """
        kernels = []
        level_in = image_buf
        for s in range(plan.scales):
            size, geometry = self._rows(program, "bspline_level", *shape, 1 << s)
            kernels.append(self._bound(program, "bspline_level", size,
                                       (level_in, lf[s % 2], hf[s], *geometry), s))
            level_in = lf[s % 2]
        current, spare = level_in, lf[plan.scales % 2]
        modes = cltypes.make_int4(*plan.modes)
        anisotropy = cltypes.make_float4(*plan.anisotropy)
        for s in reversed(range(plan.scales)):
            step = plan.steps[s]
            target = image_buf if s == 0 else spare
            size, geometry = self._rows(program, "pde_step", *shape, step.mult)
            kernels.append(self._bound(
                program, "pde_step", size,
                (hf[s], current, target, mask_buf, np.int32(use_mask), *geometry,
                 cltypes.make_float4(*step.speeds), modes, anisotropy, F32(step.strength),
                 F32(step.regularization_factor), F32(plan.variance_threshold)), s))
            current, spare = target, current
        return kernels

    def _iteration(self, kernels: list[_Bound], events) -> cl.Event:
        """Enqueue one iteration's kernels; return the last one's event."""
        for bound in kernels:
            event = cl.enqueue_nd_range_kernel(self.queue, bound.kernel, bound.global_size,
                                               bound.local)
            self._record(events, bound.kind, event, bound.scale)
        return event

    # -- whole runs ------------------------------------------------------------------------

    def _warn_too_large(self, shape: tuple[int, ...], overlap: int) -> None:
        warnings.warn(
            f"napari-diffuse: an image of {shape} does not fit {self.device.name.strip()!r} "
            f"(largest buffer {self.buffer_limit} bytes, {self.memory_limit} bytes in all), "
            f"even in tiles with the {overlap}-pixel overlap these settings need; using the "
            f"NumPy solver", RuntimeWarning, stacklevel=3)

    def solve(self, image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
              origin: tuple[int, int] = (0, 0), full_width: int | None = None,
              progress: Progress | None = None, events: list | None = None,
              checkpoints: Checkpoints | None = None) -> np.ndarray:
        """:func:`napari_diffuse.numpy_solver.solve` on this device.

        ``events``, if given, receives ``((kind, scale), pyopencl.Event)`` for every
        B-spline and PDE kernel (kind ``"bspline"``, ``"pde"``), timed with
        ``Engine(..., profiling=True)``, and ``(("upload" or "download", -1), event or
        seconds)`` for the transfers: an event for a direct copy, host-side seconds for a
        copy through pinned staging buffers. With ``plan.keep_saturated`` and a mask, a
        second upload of the input and a ``("keep", -1)`` kernel end each tile.

        Raises :class:`~napari_diffuse.errors.DivergenceError` as the NumPy solver does,
        checking on the device at the same iterations.
        """
        image = np.ascontiguousarray(image, dtype=F32)
        bound = divergence_bound(image)
        full_width = image.shape[1] if full_width is None else full_width
        overlap = plan.iterations * plan.reach_per_iteration
        tiles = self._tiles(image.shape, overlap, plan.scales + 3)
        if tiles is None:
            self._warn_too_large(image.shape, overlap)
            return numpy_solver.solve(image, plan, mask, origin=origin, full_width=full_width,
                                      progress=progress, checkpoints=checkpoints)
        if checkpoints is not None and len(tiles) > 1:
            raise ValueError(f"checkpoints need the image ({image.shape}) to fit the device in "
                             f"one piece; it needs {len(tiles)} tiles")
        out = np.empty_like(image)
        total = len(tiles) * plan.iterations
        with self._lock:
            try:
                for t, tile in enumerate(tiles):
                    report = None if progress is None else (
                        lambda done, _total, t=t: progress(t * plan.iterations + done, total))
                    self._solve_tile(image, out, tile, plan, mask, origin, full_width, report,
                                     events, single=len(tiles) == 1, checkpoints=checkpoints,
                                     bound=bound)
            finally:
                self.queue.finish()
        return out

    def _solve_tile(self, image, out, tile: _Tile, plan: Plan, mask, origin, full_width,
                    progress: Progress | None, events, single: bool,
                    checkpoints: Checkpoints | None = None, bound: float = np.inf) -> None:
        src = image if single else np.ascontiguousarray(image[tile.rows, tile.cols])
        shape = src.shape
        program = self._program_for(shape[2])
        image_buf, *rest = self._workspace(plan.scales + 3, src.nbytes)
        hf, lf = rest[:plan.scales], rest[plan.scales:]
        self._upload(image_buf, src, events)
        mask_buf, use_mask = self._mask_buffer(
            program, None if mask is None else mask[tile.rows, tile.cols], image_buf, shape,
            plan.luminance_threshold)
        if use_mask:
            self._inpaint(program, image_buf, mask_buf, shape,
                          (origin[0] + tile.rows.start, origin[1] + tile.cols.start), full_width)
        kernels = self._iteration_kernels(program, image_buf, hf, lf, mask_buf, use_mask, shape,
                                          plan)
        checks = checked_iterations(plan, checkpoints)
        previous = None
        for it in range(plan.iterations):
            last = self._iteration(kernels, events)
            if it + 1 in checks:
                self._check_divergence(program, image_buf, shape, plan, it + 1, bound)
            if progress is not None:
                # report iteration it - 1 while iteration it keeps the device busy
                if previous is not None:
                    previous.wait()
                    progress(it, plan.iterations)
                previous = last
            if checkpoints is not None and it + 1 in checkpoints.at:
                current = np.empty_like(src)
                self._download(current, image_buf, events)
                if not checkpoints.go_on(it + 1, current):
                    break
        if progress is not None:
            previous.wait()
            progress(plan.iterations, plan.iterations)
        if plan.keep_saturated and use_mask:
            # the input was overwritten by the noise: upload it again into a wavelet buffer,
            # free after the last iteration (no extra device memory, no change to the tiling)
            self._upload(hf[0], src, events)
            self._keep_saturated(program, image_buf, hf[0], mask_buf, shape, plan, events)
        result = out if single else np.empty_like(src)
        self._download(result, image_buf, events)
        if not single:
            out[tile.rows, tile.cols][tile.core_rows, tile.core_cols] = \
                result[tile.core_rows, tile.core_cols]

    def variance_map(self, image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
                     origin: tuple[int, int] = (0, 0),
                     full_width: int | None = None) -> np.ndarray:
        """:func:`napari_diffuse.numpy_solver.variance_map` on this device."""
        image = np.ascontiguousarray(image, dtype=F32)
        full_width = image.shape[1] if full_width is None else full_width
        height, width, channels = image.shape
        overlap = VARIANCE_MAP_REACH
        tiles = self._tiles(image.shape, overlap, 4)
        if tiles is None:
            self._warn_too_large(image.shape, overlap)
            return numpy_solver.variance_map(image, plan, mask, origin=origin,
                                             full_width=full_width)
        program = self._program_for(channels)
        out = np.empty((height, width), F32)
        step = plan.steps[0]
        with self._lock:
            try:
                for tile in tiles:
                    src = np.ascontiguousarray(image[tile.rows, tile.cols])
                    h, w, _ = shape = src.shape
                    image_buf, lf, hf, map_buf = self._workspace(4, src.nbytes)
                    self._upload(image_buf, src, None)
                    mask_buf, use_mask = self._mask_buffer(
                        program, None if mask is None else mask[tile.rows, tile.cols],
                        image_buf, shape, plan.luminance_threshold)
                    if use_mask:
                        self._inpaint(program, image_buf, mask_buf, shape,
                                      (origin[0] + tile.rows.start, origin[1] + tile.cols.start),
                                      full_width)
                    self._bspline(program, image_buf, lf, hf, shape, 1, None, 0)
                    self._launch(program, "variance_map",
                                 self._pixels(program, "variance_map", h, w),
                                 (hf, map_buf, np.int32(w), np.int32(h), np.int32(channels),
                                  F32(step.regularization_factor), F32(plan.variance_threshold)))
                    result = np.empty((h, w), F32)
                    self._download(result, map_buf, None)
                    out[tile.rows, tile.cols][tile.core_rows, tile.core_cols] = \
                        result[tile.core_rows, tile.core_cols]
            finally:
                self.queue.finish()
        return out


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
          progress: Progress | None = None, checkpoints: Checkpoints | None = None) -> np.ndarray:
    """Run darktable's diffuse-or-sharpen on one float32 image, on the OpenCL device.

    Same parameters and result as :func:`napari_diffuse.numpy_solver.solve`.
    """
    with _device_errors():
        return engine().solve(image, plan, mask, origin=origin, full_width=full_width,
                              progress=progress, checkpoints=checkpoints)


def variance_map(image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
                 origin: tuple[int, int] = (0, 0), full_width: int | None = None) -> np.ndarray:
    """Return darktable's edge-variance term, computed on the OpenCL device.

    Same parameters and result as :func:`napari_diffuse.numpy_solver.variance_map`.
    """
    with _device_errors():
        return engine().variance_map(image, plan, mask, origin=origin, full_width=full_width)
