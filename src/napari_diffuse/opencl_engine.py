"""The OpenCL engine: one device's queue, programs and device buffers, and whole runs.

An image is uploaded once, every scale of every iteration runs on the device (per scale
one B-spline pass writing LF and HF and one PDE pass, as :attr:`Plan.passes` schedules
them), and the result is downloaded once. An image too large for the device is processed
in overlapping tiles (:mod:`.opencl_tiles`) that give the whole-image result; when even
that cannot fit, the NumPy solver runs it, with a warning. A stack of planes streams
through the device in batches (:meth:`Engine.solve_planes`): the next batches upload and the
previous one downloads, on their own queues and host threads (:mod:`.opencl_stack`), while
the current one computes, each kernel launch running every plane of the batch. Planes of
8- or 16-bit integers may come in the caller's dtype (``solve`` and ``solve_planes`` with
``layout``): they cross the bus as they are and are mapped to and from working units on the
device (:mod:`.opencl_units`), bit for bit as on the host.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyopencl as cl
import pyopencl.cltypes as cltypes

from . import intensity, numpy_solver
from .intensity import Layout, peak_magnitude
from .opencl_devices import OpenCLUnavailable
from .opencl_program import (
    BSPLINE_SHAPE,
    FAST_MATH,
    NARROW_SHAPE,
    PDE_SHAPE,
    PRECISE,
    KernelShape,
    Program,
    device_kind,
    largest_local_size,
    pde_shape,
    plan_options,
    read_source,
    round_up,
    shared_context,
)
from .opencl_stack import SLOTS, StackPipeline
from .opencl_tiles import Tile, plan_tiles
from .opencl_transfer import Transfers
from .opencl_units import DeviceUnits
from .plan import (
    VARIANCE_MAP_REACH,
    Checkpoints,
    Plan,
    checked_iterations,
    divergence_error,
    input_bound,
    mask_source,
)
from .resources import data_dir

__all__ = ["Engine", "MEMORY_FRACTION", "Profile", "device_bytes_per_pixel"]

F32 = np.float32
#: Share of the device's global memory a run may fill.
MEMORY_FRACTION = 0.8
_LARGEST_BUFFER = 4 * (2**31 - 1)  # the kernels index floats with 32-bit ints
#: Work-groups and largest work-group size of the divergence check's reduction (``peak``):
#: at most this many floats come back per check.
_PEAK_GROUPS, _PEAK_LOCAL = 1024, 256
#: Planes of a stack per B-spline and PDE launch, per device kind (Engine.solve_planes).
STACK_BATCH = {"GPU": 8, "CPU": 1}

Progress = Callable[[int, int], None]


def device_bytes_per_pixel(plan: Plan, channels: int, images: int = 1,
                           workspaces: int = 1) -> int:
    """Device bytes a run of ``plan`` holds per pixel: ``images`` image buffers (the
    iteration runs in place) and, per workspace, the wavelet buffers of
    :attr:`Plan.passes` and one mask byte."""
    return 4 * channels * (images + workspaces * len(plan.workspaces)) + workspaces


@dataclasses.dataclass
class Profile:
    """What :meth:`Engine.profile` records: ``((kind, scale), event or seconds)`` for every
    B-spline and PDE kernel (kind ``"bspline"``, ``"pde"``; ``scale`` from 0), the other
    kernels (``"keep"``, and ``"to_working"``, ``"from_working"`` for the caller-units
    mapping; scale -1) and the transfers (``"upload"``, ``"download"``, scale -1): a
    profiled event for a kernel or a direct copy, host-side seconds for a copy through
    pinned staging buffers."""

    events: list = dataclasses.field(default_factory=list)

    def seconds(self) -> dict[tuple[str, int], float]:
        """Total seconds per ``(kind, scale)``."""
        totals: dict[tuple[str, int], float] = {}
        for key, event in self.events:
            value = event if isinstance(event, float) else \
                (event.profile.end - event.profile.start) * 1e-9
            totals[key] = totals.get(key, 0.0) + value
        return totals


class _Peak(NamedTuple):
    """A largest magnitude on its way from the device."""

    partial: np.ndarray  #: one maximum per work-group
    event: cl.Event

    def value(self) -> float:
        self.event.wait()
        return float(self.partial.max())


class _Bound(NamedTuple):
    """A kernel object with its arguments set, and how to enqueue and record it."""

    kernel: cl.Kernel
    global_size: tuple[int, ...]
    local: tuple[int, ...]
    kind: str  #: "bspline" or "pde" (the events' names)
    scale: int


class Engine:
    """One OpenCL device with the diffusion program built and a reusable workspace.

    Parameters
    ----------
    device : pyopencl.Device
        From :func:`napari_diffuse.opencl_devices.select_device`.
    kernel_dir : path, optional
        Folder holding :data:`~napari_diffuse.opencl_program.KERNEL_FILES`; default: the
        package's ``kernels/``.
    max_allocation : int, optional
        Largest device buffer in bytes, below the device's own limit (tests lower it
        to force tiling).
    vector_width, rows, local_size : optional
        How the filtering kernels are built and launched (:class:`~napari_diffuse.
        opencl_program.KernelShape`): floats per work item (1, 2, 4 or 8), rows per work
        item (1 to 8; rows sharing vertical taps read them once) and the work-group shape
        (packs of floats x blocks of rows). Given any of them, both the B-spline and the
        PDE use them (unless ``pde`` is given); default: each kernel's shape for the device
        kind (``BSPLINE_SHAPE``, ``PDE_SHAPE``). On a GPU, images whose channel count a
        vector width does not divide use 2 floats per work item (``NARROW_SHAPE``, or the
        given shape with at most 2): their wider packs would load unaligned. Every shape
        gives the same result.
    pde : KernelShape, optional
        The PDE's own shape.
    precise : bool, optional
        Round every product and sum on its own and divide exactly, as NumPy does (the
        default on CPUs); otherwise fuse the PDE's multiply-adds and use the device's own
        division and square root (the default on GPUs, faster there). Both stay within
        darktable's reference tolerances, and each gives the same result at any vector
        width, so 1-channel and multichannel images agree channel by channel.
    staged : bool, optional
        Copy between host and device through pinned staging buffers; default: where the
        device has its own memory (a GPU).
    fast_math : bool, optional
        Without ``precise``: the PDE's reciprocals through ``native_rsqrt`` and
        ``native_divide`` (within darktable's tolerances; the same at every shape).
    profiling : bool
        Make the queue record timings, for :meth:`profile`.
    build_options : dict, optional
        Extra compiler options per filtering kernel (``"bspline_level"``, ``"pde_step"``),
        for experiments such as a register cap.
    stack_batch : int, optional
        Planes of a stack that each B-spline and PDE launch runs (:meth:`solve_planes`);
        default 8 on a GPU (fewer launches: fewer gaps between them; fewer when 8 do not
        fit the device), 1 on a CPU.
    specialized : bool
        Build the PDE for each plan's structure (its modes, the orders it leaves out: see
        :func:`~napari_diffuse.opencl_program.plan_options`), one program per structure,
        built on first use; False: one general program reads them from its arguments.
        Same results either way (bit for bit in precise arithmetic; with an NVIDIA GPU's
        fast math within 5.4e-7, the two programs' FMAs differing); on *denoise: medium*
        the device kernels ran 1.39x faster on an H100, the whole run 1.09x on PoCL.

    Raises
    ------
    OpenCLUnavailable
        If the context cannot be made or the program fails to build (the message holds
        the build log).
    """

    #: Outputs of at least this many bytes have their pages touched while the device works.
    PREFAULT_BYTES = 16 << 20

    def __init__(self, device, kernel_dir: str | Path | None = None, *,
                 max_allocation: int | None = None, local_size: tuple[int, int] | None = None,
                 vector_width: int | None = None, rows: int | None = None,
                 pde: KernelShape | None = None, precise: bool | None = None,
                 fast_math: bool | None = None, staged: bool | None = None,
                 profiling: bool = False, build_options: dict[str, tuple[str, ...]] | None = None,
                 stack_batch: int | None = None, specialized: bool = True):
        self.device = device
        kind = device_kind(device)
        #: Whether the PDE is built for each plan's structure (``specialized``).
        self.specialized = bool(specialized)
        bspline = BSPLINE_SHAPE[kind]
        given = vector_width is not None or rows is not None or local_size is not None
        bspline = KernelShape(vector_width if vector_width is not None else bspline.vector_width,
                              int(rows) if rows is not None else bspline.rows,
                              tuple(local_size) if local_size is not None else bspline.local_size)
        pde_given = pde
        pde = KernelShape(*pde) if pde is not None else bspline if given else PDE_SHAPE[kind]
        for shape in (bspline, pde):
            if not 1 <= shape.rows <= 8:
                raise ValueError(f"rows={shape.rows!r}: 1 to 8 rows per work item")
            if shape.vector_width not in (1, 2, 4, 8):
                raise ValueError(f"vector_width={shape.vector_width!r}: 1, 2, 4 or 8")
        #: The shapes of the filtering kernels; the other kernels use the B-spline's program.
        self.shapes = {"bspline_level": bspline, "pde_step": pde}
        # on a GPU, for channel counts the vector width does not divide: 2 floats per item
        self._narrow_shapes = {name: NARROW_SHAPE[name] if not given and pde_given is None
                               else shape._replace(vector_width=min(2, shape.vector_width))
                               for name, shape in self.shapes.items()}
        self.vector_width, self.rows, self.local_size = bspline[:3]
        # a CPU loads unaligned vectors at full speed; a GPU splits them into scalar loads
        self._gpu = kind == "GPU"
        self.precise = precise if precise is not None else PRECISE[kind]
        self.fast_math = fast_math if fast_math is not None else FAST_MATH[kind]
        self._build_options = {name: tuple((build_options or {}).get(name, ()))
                               for name in self.shapes}
        self.profiling = profiling
        self._folder = Path(kernel_dir) if kernel_dir is not None else data_dir("kernels")
        self._source = read_source(self._folder)
        self._staged = not device.host_unified_memory if staged is None else staged
        try:
            self.context = shared_context(device)
            self.queue = self._new_queue()
            self._transfers = Transfers(self.context, self.queue, self._staged)
        except cl.Error as error:
            raise OpenCLUnavailable(f"cannot use the OpenCL device {device.name.strip()!r}: "
                                    f"{error}") from error
        self._programs: dict[tuple, Program] = {}
        for name, shape in self.shapes.items():
            self._program(shape, self._build_options[name])  # a broken kernel fails here
        self.buffer_limit = min(device.max_mem_alloc_size, _LARGEST_BUFFER,
                                max_allocation if max_allocation is not None else _LARGEST_BUFFER)
        self.memory_limit = int(device.global_mem_size * MEMORY_FRACTION)
        self._lock = threading.Lock()
        self._buffers: dict[str, cl.Buffer] = {}
        self._stack_transfers: tuple[Transfers, Transfers] | None = None
        self._profile: Profile | None = None
        self._toucher: concurrent.futures.ThreadPoolExecutor | None = None
        self._alive: list = []  # host arrays a non-blocking copy still reads
        self._units = DeviceUnits(self.context, device, self._folder)
        #: Planes of a stack that each B-spline and PDE launch runs (:meth:`solve_planes`).
        self.stack_batch = STACK_BATCH[kind] if stack_batch is None else int(stack_batch)

    def __repr__(self) -> str:
        return f"Engine({self.device.platform.name.strip()}: {self.device.name.strip()})"

    def _new_queue(self) -> cl.CommandQueue:
        properties = cl.command_queue_properties.PROFILING_ENABLE if self.profiling else 0
        return cl.CommandQueue(self.context, self.device, properties=properties)

    def _program(self, shape: KernelShape, options: tuple[str, ...] = ()) -> Program:
        """The kernels built for ``shape``, on first use (once per process)."""
        key = (shape, options)
        if key not in self._programs:
            try:
                self._programs[key] = Program(self.context, self.device, self._source, shape,
                                              self.precise, self.fast_math, options)
            except cl.Error as error:
                raise OpenCLUnavailable(
                    f"the OpenCL kernels in {self._folder} failed to build on "
                    f"{self.device.name.strip()!r}: {error}") from error
        return self._programs[key]

    def _program_for(self, channels: int, kernel: str = "bspline_level",
                     plan: Plan | None = None) -> Program:
        """The program that runs ``kernel`` on images of ``channels`` channels (the PDE's
        built for ``plan``'s structure where :attr:`specialized`)."""
        shape = self.shapes[kernel]
        if self._gpu and channels % shape.vector_width:
            shape = self._narrow_shapes[kernel]
        options = self._build_options[kernel]
        if kernel == "pde_step" and plan is not None:
            shape = pde_shape(shape, self.specialized)
            if self.specialized:
                options += plan_options(plan)
        return self._program(shape, options)

    # -- caller units ----------------------------------------------------------------------

    def maps_units(self, layout: Layout) -> bool:
        """Whether this device maps ``layout``'s values to and from working units itself
        (:meth:`~napari_diffuse.opencl_units.DeviceUnits.maps`; else the host maps them)."""
        return self._units.maps(layout)

    def _to_working(self, caller_buf, buffer, n: int, layout: Layout) -> cl.Event:
        """Enqueue the mapping of ``n`` caller's values in ``caller_buf`` to working units
        in ``buffer``; return its event."""
        event = self._units.to_working(self.queue, caller_buf, buffer, n, layout)
        self._record("to_working", event)
        return event

    def _from_working(self, buffer, caller_buf, n: int, layout: Layout) -> cl.Event:
        """Enqueue the mapping of ``n`` working values in ``buffer`` to the caller's
        integers in ``caller_buf``; return its event."""
        event = self._units.from_working(self.queue, buffer, caller_buf, n, layout)
        self._record("from_working", event)
        return event

    @staticmethod
    def _on_host(run: Callable[[np.ndarray], np.ndarray], values: np.ndarray,
                 layout: Layout) -> np.ndarray:
        """``run`` on ``values`` mapped to working units on the host, mapped back."""
        return intensity.from_working(run(intensity.to_working(values, layout, check=False)),
                                      layout)

    def _upload_working(self, buffer, src: np.ndarray, layout: Layout | None,
                        transfers: Transfers | None = None) -> cl.Event:
        """Start putting ``src`` into the float32 ``buffer`` in working units: uploaded as
        it is, or, with ``layout``, in the caller's integers then mapped on the device.
        Returns the event that completes it."""
        transfers = transfers or self._transfers
        if layout is None:
            return transfers.upload(buffer, src, record=self._recorder)
        caller_buf = self._buffer("caller", src.nbytes)
        event = transfers.upload(caller_buf, src, record=self._recorder)
        cl.enqueue_barrier(self.queue, wait_for=[event])
        return self._to_working(caller_buf, buffer, src.size, layout)

    def _download_caller(self, result: np.ndarray, buffer, layout: Layout | None) -> None:
        """The float32 ``buffer`` into ``result``: as it is, or, with ``layout``, mapped to
        the caller's integers on the device, then downloaded."""
        if layout is not None:
            caller_buf = self._buffer("caller", result.nbytes)
            self._from_working(buffer, caller_buf, result.size, layout)
            buffer = caller_buf
        self._transfers.download(result, buffer, record=self._recorder)

    # -- profiling -------------------------------------------------------------------------

    @contextlib.contextmanager
    def profile(self):
        """Record the runs inside the ``with`` block: yields a :class:`Profile`.

        Needs ``Engine(..., profiling=True)``.
        """
        if not self.profiling:
            raise ValueError("profile() needs an engine made with profiling=True")
        profile = Profile()
        self._profile = profile
        try:
            yield profile
        finally:
            self.queue.finish()
            self._profile = None

    def _record(self, kind: str, event, scale: int = -1) -> None:
        if self._profile is not None:
            self._profile.events.append(((kind, scale), event))

    @property
    def _recorder(self):
        return None if self._profile is None else self._record

    # -- device memory ---------------------------------------------------------------------

    def _buffer(self, name: str, nbytes: int) -> cl.Buffer:
        """The device buffer ``name`` of at least ``nbytes``, reused from earlier runs."""
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < nbytes:
            if buffer is not None:
                buffer.release()
            buffer = self._buffers[name] = cl.Buffer(self.context, cl.mem_flags.READ_WRITE,
                                                     max(nbytes, 1))
        return buffer

    def _workspace(self, plan: Plan, nbytes: int) -> dict[str, cl.Buffer]:
        return {name: self._buffer(name, nbytes) for name in plan.workspaces}

    def _tiles(self, shape: tuple[int, int, int], overlap: int, plan: Plan | None,
               images: int = 1, workspaces: int = 1) -> list[Tile] | None:
        """Tiles that fit the device: ``plan``'s buffers (:func:`device_bytes_per_pixel`),
        or for ``plan=None`` the variance map's four."""
        height, width, channels = shape

        def fits(h: int, w: int) -> bool:
            nbytes = h * w * channels * 4
            per_pixel = device_bytes_per_pixel(plan, channels, images, workspaces) \
                if plan is not None \
                else 4 * channels * 4 + 1
            return nbytes <= self.buffer_limit and h * w * per_pixel <= self.memory_limit

        return plan_tiles(height, width, overlap, fits)

    # -- kernels ---------------------------------------------------------------------------

    def _launch(self, program: Program, name: str, global_size, args, kind: str | None = None,
                scale: int = -1, local: tuple[int, ...] | None = None) -> cl.Event:
        kernel = program.kernels[name]
        kernel.set_args(*args)
        if local is None:
            local = program.local[name]
        event = cl.enqueue_nd_range_kernel(self.queue, kernel, global_size, local)
        if kind is not None:
            self._record(kind, event, scale)
        return event

    def _mask_buffer(self, program: Program, mask: np.ndarray | None, image_buf, shape,
                     plan: Plan, target=None) -> tuple[cl.Buffer, int]:
        """Return ``(buffer, use_mask)`` for the kernels, as
        :func:`~napari_diffuse.plan.mask_source` says: ``mask`` uploaded, or darktable's
        luminance mask of ``image_buf`` built on the device, or none."""
        height, width, channels = shape
        source = mask_source(mask, plan)
        buffer = target if target is not None else \
            self._buffer("mask", height * width if source else 1)
        if source == "caller":
            host = np.ascontiguousarray(mask, dtype=np.uint8)
            self._alive.append(host)  # until the run's end: the copy does not block
            cl.enqueue_copy(self.queue, buffer, host, is_blocking=False)
        elif source == "luminance":
            self._launch(program, "luminance_mask",
                         program.pixels_geometry("luminance_mask", height, width),
                         (image_buf, buffer, np.int32(width), np.int32(height),
                          np.int32(channels), F32(plan.luminance_threshold)))
        return buffer, int(source is not None)

    def _start_tile(self, program: Program, image_buf, shape, plan: Plan, mask, origin,
                    full_width: int, mask_target=None) -> tuple[cl.Buffer, int]:
        """The tile prologue shared by every run, after the upload: the mask (into
        ``mask_target`` if given), then the inpainting start where it applies. Returns
        ``(mask buffer, use_mask)``."""
        mask_buf, use_mask = self._mask_buffer(program, mask, image_buf, shape, plan,
                                               mask_target)
        if use_mask:
            height, width, channels = shape
            self._launch(program, "inpaint_noise",
                         program.pixels_geometry("inpaint_noise", height, width),
                         (image_buf, mask_buf, np.int32(width), np.int32(height),
                          np.int32(channels), np.int32(origin[0]), np.int32(origin[1]),
                          np.int32(full_width)))
        return mask_buf, use_mask

    def _keep_saturated(self, program, image_buf, input_buf, mask_buf, shape,
                        plan: Plan) -> None:
        """Floor, on the device, the masked channels whose input (``input_buf``) was
        saturated: :func:`napari_diffuse.numpy_solver.keep_saturated`."""
        height, width, channels = shape
        self._launch(program, "keep_saturated",
                     program.pixels_geometry("keep_saturated", height, width),
                     (image_buf, input_buf, mask_buf, np.int32(width), np.int32(height),
                      np.int32(channels), F32(plan.luminance_threshold)), "keep")

    def _peak(self, program: Program, buffer, n: int) -> _Peak:
        """The largest magnitude of ``buffer``'s first ``n`` floats (inf for NaN or Inf),
        pending: a ``peak`` reduction, then ``_PEAK_GROUPS`` floats or fewer downloaded
        without blocking (the queue is in order, so every check can reuse one buffer)."""
        kernel = program.kernels["peak"]
        local = largest_local_size(kernel, self.device, _PEAK_LOCAL)
        groups = max(1, min(_PEAK_GROUPS, -(-n // (local * 16))))
        peaks_buf = self._buffer("peaks", 4 * _PEAK_GROUPS)
        kernel.set_args(buffer, np.int32(n), peaks_buf, cl.LocalMemory(4 * local))
        cl.enqueue_nd_range_kernel(self.queue, kernel, (groups * local,), (local,))
        peaks = np.empty(groups, F32)
        return _Peak(peaks, cl.enqueue_copy(self.queue, peaks, peaks_buf, is_blocking=False))

    def _bound_of(self, input_peak: _Peak | float) -> float:
        """:func:`~napari_diffuse.plan.input_bound` from the input's peak taken on the
        device (no pass over the host array), or the bound itself."""
        if isinstance(input_peak, float):
            return input_peak
        return input_bound(input_peak.value())

    def _bound(self, program: Program, name: str, global_size, local, args, key) -> _Bound:
        """Kernel object ``key`` of ``name`` with ``args`` set, to enqueue again and again
        (the engine's lock keeps one run at a time on the pool)."""
        kernel = program.pooled(name, key)
        kernel.set_args(*args)
        return _Bound(kernel, global_size, local, name.split("_")[0], key[0])

    def _iteration_kernels(self, program: Program, image_buf, work: dict, mask_buf,
                           use_mask: int, shape, plan: Plan, slot: int = 0,
                           batch: tuple[int, int, int] = (1, 0, 0)) -> list[_Bound]:
        """One iteration's kernels, in place on ``image_buf`` (the schedule's input and
        output), with their arguments set.

        Every iteration reads and writes the same buffers, so the arguments are set once
        per tile: setting them costs more host time than enqueueing (about 0.1 ms a
        kernel in pyopencl), which bounds small images and many iterations. ``batch`` is
        ``(planes, plane stride in floats, mask plane stride in bytes)``: each launch runs
        that many planes of a stack at once.
        """
        mask_stride = batch[2]
        buffers = {"input": image_buf, "output": image_buf, **work}
        pde = self._program_for(shape[2], "pde_step", plan)
        modes = cltypes.make_int4(*plan.modes)
        anisotropy = cltypes.make_float4(*plan.anisotropy)
        kernels = []
        for step in plan.passes:
            s = step.scale
            if step.kind == "bspline":
                (level,), (low, high) = step.reads, step.writes
                kernels.append(self._filter(program, "bspline_level", shape, 1 << s, batch,
                                            (buffers[level], buffers[low], buffers[high]), (),
                                            (s, slot)))
            else:
                scale = plan.steps[s]
                (high, current), (target,) = step.reads, step.writes
                kernels.append(self._filter(
                    pde, "pde_step", shape, scale.mult, batch,
                    (buffers[high], buffers[current], buffers[target], mask_buf,
                     np.int32(use_mask)),
                    (np.int32(mask_stride), cltypes.make_float4(*scale.speeds), modes,
                     anisotropy, F32(scale.strength), F32(scale.regularization_factor),
                     F32(plan.variance_threshold)), (s, slot)))
        return kernels

    def _filter(self, program: Program, name: str, shape, mult: int,
                batch: tuple[int, int, int], buffers: tuple, constants: tuple, key) -> _Bound:
        """Filtering kernel ``name`` at dilation ``mult`` bound to its arguments (buffers,
        geometry, constants)."""
        planes, plane_stride, _ = batch
        size, local, geometry = program.rows_geometry(name, *shape, mult, planes, plane_stride)
        return self._bound(program, name, size, local, (*buffers, *geometry, *constants), key)

    def _iteration(self, kernels: list[_Bound]) -> cl.Event:
        """Enqueue one iteration's kernels; return the last one's event."""
        for bound in kernels:
            event = cl.enqueue_nd_range_kernel(self.queue, bound.kernel, bound.global_size,
                                               bound.local)
            self._record(bound.kind, event, bound.scale)
        return event

    def _iterate(self, program, image_buf, work, mask_buf, use_mask, shape, plan: Plan,
                 bound: _Peak | float, progress: Progress | None,
                 checkpoints: Checkpoints | None, slot: int = 0,
                 batch: tuple[int, int, int] = (1, 0, 0),
                 views: Sequence | None = None,
                 bounds: Sequence | None = None) -> Callable[[], None]:
        """Enqueue every iteration of ``plan`` on the uploaded, started ``image_buf``.

        The divergence checks read their peaks without blocking; the returned function
        waits for them and raises the first :class:`DivergenceError` (iterations after a
        failed check are wasted, never handed over), after
        :class:`~napari_diffuse.errors.InvalidInputError` for an input peak that is not
        finite or beyond the working range. With ``progress`` or ``checkpoints`` the host
        waits for the device anyway, so the input is judged before the first iteration
        and each check at once. A batch of planes (``views``: each plane's part of
        ``image_buf``, ``bounds``: their input peaks) is checked plane by plane.
        """
        kernels = self._iteration_kernels(program, image_buf, work, mask_buf, use_mask, shape,
                                          plan, slot, batch)
        views = [image_buf] if views is None else views
        bounds = [bound] if bounds is None else bounds
        checks = checked_iterations(plan, checkpoints)
        eager = progress is not None or checkpoints is not None
        pending: list[tuple[int, int, _Peak]] = []
        limits: list[float] = []
        n = int(np.prod(shape))

        def judge() -> None:
            if not limits:
                limits.extend(self._bound_of(b) for b in bounds)
            pending.sort(key=lambda entry: (entry[1], entry[0]))  # plane by plane, as in turn
            while pending:
                done, index, peak = pending.pop(0)
                value = peak.value()
                if not value <= limits[index]:
                    pending.clear()
                    raise divergence_error(plan, done, value, limits[index])

        if eager:
            judge()  # the input, before any iteration
        previous = None
        for it in range(plan.iterations):
            last = self._iteration(kernels)
            if it + 1 in checks:
                pending.extend((it + 1, index, self._peak(program, view, n))
                               for index, view in enumerate(views))
                if eager:
                    judge()
            if progress is not None:
                # report iteration it - 1 while iteration it keeps the device busy
                if previous is not None:
                    previous.wait()
                    progress(it, plan.iterations)
                previous = last
            if checkpoints is not None and it + 1 in checkpoints.at:
                current = np.empty(shape, F32)
                self._transfers.download(current, image_buf, record=self._recorder)
                if not checkpoints.go_on(it + 1, current):
                    break
        if progress is not None:
            previous.wait()
            progress(plan.iterations, plan.iterations)
        return judge

    # -- whole runs ------------------------------------------------------------------------

    def _warn_too_large(self, shape: tuple[int, ...], overlap: int) -> None:
        warnings.warn(
            f"napari-diffuse: an image of {shape} does not fit {self.device.name.strip()!r} "
            f"(largest buffer {self.buffer_limit} bytes, {self.memory_limit} bytes in all), "
            f"even in tiles with the {overlap}-pixel overlap these settings need; using the "
            f"NumPy solver", RuntimeWarning, stacklevel=3)

    def solve(self, image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
              origin: tuple[int, int] = (0, 0), full_width: int | None = None,
              progress: Progress | None = None,
              checkpoints: Checkpoints | None = None,
              layout: Layout | None = None) -> np.ndarray:
        """:func:`napari_diffuse.numpy_solver.solve` on this device.

        With ``plan.keep_saturated`` and a mask, a second upload of the input and a
        ``keep_saturated`` kernel end each tile. Raises
        :class:`~napari_diffuse.errors.DivergenceError` as the NumPy solver does, checking
        on the device at the same iterations, and
        :class:`~napari_diffuse.errors.InvalidInputError` for NaN, Inf or values beyond
        :data:`~napari_diffuse.intensity.MAX_WORKING` in ``image``, found by the same
        device reduction (the host never reads the input for them).

        With ``layout``, ``image`` holds the caller's values (one plane of
        :func:`~napari_diffuse.intensity.caller_planes`) and so does the result: where
        :meth:`maps_units` and the image fits the device in one piece, they cross the bus
        in their own dtype and are mapped on the device; otherwise on the host
        (:func:`~napari_diffuse.intensity.to_working`, ``from_working``). Bit for bit the
        same either way.
        """
        if layout is not None:  # mapped on the device only in one piece, beside its input
            image = np.ascontiguousarray(image)
            tiles = self._tiles(image.shape, plan.full_reach, plan, images=2) \
                if self.maps_units(layout) else None
            if tiles is None or len(tiles) > 1:
                return self._on_host(lambda work: self.solve(
                    work, plan, mask, origin=origin, full_width=full_width, progress=progress,
                    checkpoints=checkpoints), image, layout)
        else:
            image = np.ascontiguousarray(image, dtype=F32)
            tiles = self._tiles(image.shape, plan.full_reach, plan)
        full_width = image.shape[1] if full_width is None else full_width
        if tiles is None:
            self._warn_too_large(image.shape, plan.full_reach)
            return numpy_solver.solve(image, plan, mask, origin=origin, full_width=full_width,
                                      progress=progress, checkpoints=checkpoints)
        if checkpoints is not None and len(tiles) > 1:
            raise ValueError(f"checkpoints need the image ({image.shape}) to fit the device in "
                             f"one piece; it needs {len(tiles)} tiles")
        single = len(tiles) == 1
        bound = None if single else input_bound(peak_magnitude(image))  # the whole image's
        out = np.empty_like(image)
        touched = self._prefault(out) if single else None
        total = len(tiles) * plan.iterations
        with self._lock:
            try:
                for t, tile in enumerate(tiles):
                    report = None if progress is None else (
                        lambda done, _total, t=t: progress(t * plan.iterations + done, total))
                    src = image if single else np.ascontiguousarray(image[tile.rows, tile.cols])
                    tile_mask = None if mask is None else mask[tile.rows, tile.cols]
                    tile_origin = (origin[0] + tile.rows.start, origin[1] + tile.cols.start)
                    result = out if single else np.empty_like(src)
                    self._solve_tile(src, result, plan, tile_mask, tile_origin, full_width,
                                     report, checkpoints, bound, touched, layout)
                    if not single:
                        out[tile.rows, tile.cols][tile.core_rows, tile.core_cols] = \
                            result[tile.core_rows, tile.core_cols]
            finally:
                self.queue.finish()
                self._alive.clear()
        return out

    def _prefault(self, out: np.ndarray) -> list[concurrent.futures.Future] | None:
        """Touch every page of a new output array on host threads while the device works:
        the page faults of a large allocation then cost nothing at the download (on a
        device with its own memory; elsewhere the copy is direct)."""
        if not self._staged or out.nbytes < self.PREFAULT_BYTES:
            return None
        if self._toucher is None:
            self._toucher = concurrent.futures.ThreadPoolExecutor(4, "napari-diffuse-touch")
        flat = out.reshape(-1).view(np.uint8)
        bounds = np.linspace(0, flat.size, 5).astype(np.int64)

        def touch(a: int, b: int) -> None:
            flat[a:b:4096] = 0

        return [self._toucher.submit(touch, a, b)
                for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

    def _solve_tile(self, src, result, plan: Plan, mask, origin, full_width: int,
                    progress: Progress | None, checkpoints: Checkpoints | None,
                    bound: float | None,
                    touched: list[concurrent.futures.Future] | None = None,
                    layout: Layout | None = None) -> None:
        shape = src.shape
        program = self._program_for(shape[2])
        nbytes = src.size * 4  # float32 working values
        image_buf = self._buffer("image0", nbytes)
        work = self._workspace(plan, nbytes)
        self._upload_working(image_buf, src, layout)
        if bound is None:
            bound = self._peak(program, image_buf, int(np.prod(shape)))
        mask_buf, use_mask = self._start_tile(program, image_buf, shape, plan, mask, origin,
                                              full_width)
        self._iterate(program, image_buf, work, mask_buf, use_mask, shape, plan, bound,
                      progress, checkpoints)()
        self._finish_tile(program, src, image_buf, work["hf0"], mask_buf, use_mask, shape,
                          plan, self._transfers, layout)
        for part in touched or ():
            part.result()
        self._download_caller(result, image_buf, layout)

    def _finish_tile(self, program, src, image_buf, input_buf, mask_buf, use_mask, shape,
                     plan: Plan, transfers: Transfers, layout: Layout | None = None) -> None:
        if plan.keep_saturated and use_mask:
            # the input was overwritten by the noise: upload it again into a wavelet buffer,
            # free after the last iteration (no change to the tiling; integers mapped on the
            # device pass through the one-plane "caller" buffer)
            event = self._upload_working(input_buf, src, layout, transfers)
            cl.enqueue_barrier(self.queue, wait_for=[event])
            self._keep_saturated(program, image_buf, input_buf, mask_buf, shape, plan)

    def solve_planes(self, planes: np.ndarray, plan: Plan,
                     masks: Sequence[np.ndarray | None] | None = None, *,
                     progress: Progress | None = None,
                     layout: Layout | None = None) -> np.ndarray:
        """:meth:`solve` on every plane of a ``(N, H, W, C)`` stack; returns ``(N, H, W, C)``.

        The planes stream through the device in batches of :attr:`stack_batch`: while a
        batch computes, the next ones upload and the previous one downloads, on their own
        queues and host threads (:class:`~napari_diffuse.opencl_stack.StackPipeline`), so
        that the transfers can overlap the kernels (on an
        NVIDIA H200 the next batch's uploads were measured waiting for the running batch
        instead: ``benchmarks/results/issue11_2026-12-06.md``). Each B-spline
        and PDE launch runs the whole batch (fewer launches, fewer gaps between them);
        the per-plane steps (mask, inpainting start, divergence checks) run plane by
        plane on views of the batch. ``masks`` holds one mask (or None) per plane;
        ``progress(done, total)`` counts iterations over all planes (batches of one plane
        then). A stack whose planes need tiles runs plane by plane. With ``layout``, the
        planes and the result hold the caller's values, as for :meth:`solve`: mapped on the
        device where :meth:`maps_units`, each plane after its upload and before its
        download.
        """
        planes = np.asarray(planes)
        if layout is not None and not self.maps_units(layout):
            return self._on_host(lambda work: self.solve_planes(work, plan, masks,
                                                                progress=progress),
                                 planes, layout)
        count = planes.shape[0]
        masks = [None] * count if masks is None else list(masks)
        shape = planes.shape[1:]
        total = count * plan.iterations

        def report(p):
            return None if progress is None else (
                lambda done, _total: progress(p * plan.iterations + done, total))

        mixed = len({m is None for m in masks}) > 1  # one mask policy per launch
        batch = 1 if progress is not None or mixed else max(1, min(self.stack_batch, count))
        align = max(1, self.device.mem_base_addr_align // 8)
        nbytes = 4 * int(np.prod(shape))
        stride = round_up(nbytes, align)  # bytes from one plane of a batch to the next
        mask_bytes = shape[0] * shape[1]
        mask_stride = round_up(mask_bytes, align)
        caller_bytes = planes.itemsize * int(np.prod(shape)) if layout is not None else 0
        caller_stride = round_up(caller_bytes, align)
        while True:  # the largest batch that fits the device in one piece
            # the caller's values: a batch per slot, and one plane for keep_saturated
            tiles = self._tiles(shape, plan.full_reach, plan,
                                images=SLOTS * batch
                                + -(-(SLOTS * batch + 1) * caller_bytes // nbytes),
                                workspaces=batch)
            if batch == 1 or (tiles is not None and len(tiles) == 1):
                break
            batch = max(1, batch // 2)
        out = np.empty(planes.shape, planes.dtype if layout is not None else F32)
        if count < 2 or tiles is None or len(tiles) > 1:
            for p in range(count):
                out[p] = self.solve(planes[p], plan, masks[p], progress=report(p),
                                    layout=layout)
            return out
        groups = [range(b, min(b + batch, count)) for b in range(0, count, batch)]
        with self._lock:
            if self._stack_transfers is None:
                self._stack_transfers = (Transfers(self.context, self._new_queue(), self._staged),
                                         Transfers(self.context, self._new_queue(), self._staged))
            slots = [self._buffer(f"image{k}", stride * batch) for k in range(SLOTS)]
            work = {name: self._buffer(name, stride * batch)
                    for name in plan.workspaces}
            mask_all = self._buffer("mask", mask_stride * batch)
            program = self._program_for(shape[2])
            views = [[slot.get_sub_region(i * stride, nbytes) for i in range(batch)]
                     for slot in slots]
            # what crosses the bus: the working values, or with layout the caller's values
            # of each slot's planes, mapped on the device
            caller_views, packed = views, slots if stride == nbytes else None
            if layout is not None:
                callers = [self._buffer(f"caller{k}", caller_stride * batch)
                           for k in range(SLOTS)]
                caller_views = [[c.get_sub_region(i * caller_stride, caller_bytes)
                                 for i in range(batch)] for c in callers]
                packed = callers if caller_stride == caller_bytes else None
            hf0 = [work["hf0"].get_sub_region(i * stride, nbytes) for i in range(batch)]
            mask_views = [mask_all.get_sub_region(i * mask_stride, mask_bytes)
                          for i in range(batch)]
            pipeline = StackPipeline(planes, out, groups, caller_views, self._stack_transfers,
                                     self._recorder, packed)
            judges: list = []
            n = int(np.prod(shape))
            try:
                for g, group in enumerate(groups):
                    image_views = views[g % SLOTS][:len(group)]
                    cl.enqueue_barrier(self.queue, wait_for=pipeline.uploaded(g))
                    if layout is not None:
                        for caller, view in zip(caller_views[g % SLOTS], image_views,
                                                strict=False):
                            self._to_working(caller, view, n, layout)
                    bounds = [self._peak(program, view, n) for view in image_views]
                    use_mask = 0
                    for i, p in enumerate(group):
                        _, use_mask = self._start_tile(program, image_views[i], shape, plan,
                                                       masks[p], (0, 0), shape[1],
                                                       mask_views[i])
                    judges.append(self._iterate(
                        program, slots[g % SLOTS], work, mask_all, use_mask, shape, plan, 0.0,
                        report(group[0]), None, slot=(g % SLOTS, len(group)),
                        batch=(len(group), stride // 4, mask_stride), views=image_views,
                        bounds=bounds))
                    for i, p in enumerate(group):
                        self._finish_tile(program, pipeline.host_plane(p), image_views[i],
                                          hf0[i], mask_views[i], use_mask, shape, plan,
                                          self._transfers, layout)
                        if layout is not None:
                            self._from_working(image_views[i], caller_views[g % SLOTS][i], n,
                                               layout)
                    done = cl.enqueue_marker(self.queue)
                    self.queue.flush()
                    pipeline.download(g, done)
                    # judge the previous batch while this one keeps the device busy
                    if len(judges) > 1:
                        judges.pop(0)()
                while judges:
                    judges.pop(0)()
                pipeline.finish()
            finally:
                pipeline.close()
                for queue in (self.queue, *(t.queue for t in self._stack_transfers)):
                    queue.finish()
                self._alive.clear()
        return out

    def variance_map(self, image: np.ndarray, plan: Plan, mask: np.ndarray | None = None, *,
                     origin: tuple[int, int] = (0, 0),
                     full_width: int | None = None) -> np.ndarray:
        """:func:`napari_diffuse.numpy_solver.variance_map` on this device."""
        image = np.ascontiguousarray(image, dtype=F32)
        full_width = image.shape[1] if full_width is None else full_width
        height, width, channels = image.shape
        overlap = VARIANCE_MAP_REACH
        tiles = self._tiles(image.shape, overlap, None)
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
                    image_buf = self._buffer("image0", src.nbytes)
                    lf, hf = self._buffer("lf0", src.nbytes), self._buffer("hf0", src.nbytes)
                    map_buf = self._buffer("lf1", src.nbytes)
                    self._transfers.upload(image_buf, src)
                    self._start_tile(program, image_buf, shape, plan,
                                     None if mask is None else mask[tile.rows, tile.cols],
                                     (origin[0] + tile.rows.start, origin[1] + tile.cols.start),
                                     full_width)
                    size, local, geometry = program.rows_geometry("bspline_level", *shape, 1)
                    self._launch(program, "bspline_level", size, (image_buf, lf, hf, *geometry),
                                 local=local)
                    self._launch(program, "variance_map",
                                 program.pixels_geometry("variance_map", h, w),
                                 (hf, map_buf, np.int32(w), np.int32(h), np.int32(channels),
                                  F32(step.regularization_factor), F32(plan.variance_threshold)))
                    result = np.empty((h, w), F32)
                    self._transfers.download(result, map_buf)
                    out[tile.rows, tile.cols][tile.core_rows, tile.core_cols] = \
                        result[tile.core_rows, tile.core_cols]
            finally:
                self.queue.finish()
                self._alive.clear()
        return out
