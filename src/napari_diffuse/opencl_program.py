"""The OpenCL program: kernel sources, build options per device kind, kernel tables.

A :class:`Program` is the kernels built for one vector width, arithmetic mode and
number of rows per work item, with each kernel's work-group shape fitted to the device.
Contexts and built programs are cached per process and device (:func:`shared_context`,
:func:`build`): every :class:`~napari_diffuse.opencl_engine.Engine` on a device shares
them, so reconfiguring the solver or making another engine builds nothing again.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyopencl as cl

from .opencl_devices import OpenCLUnavailable

__all__ = ["KERNEL_FILES", "KERNEL_NAMES", "NARROW_SHAPE", "KernelShape", "Program",
           "active_orders", "build", "device_kind", "largest_local_size", "pde_shape",
           "plan_options", "read_source", "round_up", "shared_context"]

#: The kernel sources, concatenated in this order into one program.
KERNEL_FILES = ("common.cl", "bspline.cl", "pde.cl", "inpaint.cl", "variance.cl",
                "divergence.cl")
KERNEL_NAMES = ("bspline_level", "pde_step", "luminance_mask", "inpaint_noise", "keep_saturated",
                "variance_map", "peak")
#: Precise arithmetic (no fused multiply-add, correctly rounded division and square root)
#: per device kind: on a CPU it gives NumPy's results at no cost; on a GPU it costs time.
PRECISE = {"GPU": False, "CPU": True}
_CORRECT_ROUNDING = "-cl-fp32-correctly-rounded-divide-sqrt"


class KernelShape(NamedTuple):
    """How a filtering kernel is built and launched."""

    vector_width: int  #: floats per work item (VEC in kernels/common.cl): 1, 2, 4 or 8
    rows: int  #: rows per work item (ROWS): rows sharing vertical taps read them once
    local_size: tuple[int, int]  #: work-group shape: packs of floats x blocks of rows
    #: registers per work item on NVIDIA's OpenCL (``-cl-nv-maxrregcount``; 0: the
    #: compiler's choice): fewer registers, more work items in flight; other devices ignore it
    registers: int = 0


#: The B-spline's shape per device kind (the other per-pixel kernels share its program):
#: 8 floats fill a CPU's AVX registers, 4 keep a GPU's loads 16 bytes wide, and the
#: vertical taps of 2 rows are read once (on a GPU 2 and 4 ran alike on an H200,
#: 2026-12-04; on PoCL see :data:`PDE_SHAPE`).
BSPLINE_SHAPE = {"GPU": KernelShape(4, 2, (64, 2)), "CPU": KernelShape(8, 2, (64, 4))}
#: The PDE's shape per device kind: on a GPU, built for the plan's structure
#: (:func:`plan_options`), 4 floats per work item and 4 rows sharing their stencil rows ran
#: fastest on an H100 (2026-12-05); capped at 128 registers (:func:`pde_shape`), a pass of
#: denoise: medium took 0.54 against 0.60 ms there (2026-12-06,
#: benchmarks/results/h100_narrow_shapes.log). On a CPU (PoCL, 2 cores), 4 rows with the
#: B-spline's 2 ran whole runs 1.05-1.32x faster than one row each, alternated, 2048x2048
#: RGBA and 1 channel; 1-channel bloom 0.97x (0.095 against 0.092 s)
#: (benchmarks/results/pocl_rows_2core_2026-12-07.txt).
PDE_SHAPE = {"GPU": KernelShape(4, 4, (32, 4), 128), "CPU": KernelShape(8, 4, (64, 4))}
#: On a GPU, the shapes for images whose channel count the vector width does not divide
#: (1 or 3 channels: their 4-float packs would load unaligned, split into scalar loads):
#: 2 floats per work item, 4 rows, the PDE capped at 72 registers (see :func:`pde_shape`).
#: On an H100, 6000x4000 denoise: medium, per iteration: 1 channel
#: 1.46 ms against 1.95 ms with one float in 2 rows, 3 channels 4.16 against 5.73 ms
#: (2026-12-06, benchmarks/results/h100_narrow_shapes.log).
NARROW_SHAPE = {"bspline_level": KernelShape(2, 4, (64, 2)),
                "pde_step": KernelShape(2, 4, (32, 4), 72)}
#: Cheaper reciprocals in the PDE (``native_rsqrt``, ``native_divide``) per device kind,
#: unless arithmetic is precise; within darktable's tolerances, same at every shape.
FAST_MATH = {"GPU": True, "CPU": False}

_lock = threading.Lock()
_contexts: dict[int, cl.Context] = {}
_programs: dict[tuple, cl.Program] = {}


def active_orders(plan) -> list[bool]:
    """For each of the 4 orders, whether its speed is not 0 at some scale of ``plan``."""
    return [any(step.speeds[k] != 0 for step in plan.steps) for k in range(4)]


def pde_shape(shape: KernelShape, specialized: bool) -> KernelShape:
    """``shape`` with the register cap that suits the PDE's program.

    A program built for a plan's structure keeps ``shape.registers``, light and heavy plans
    alike; the general program, which keeps every order's state, runs uncapped. On an H100
    (6000x4000, 4 iterations, PDE time per iteration, the kernels summarising stencil rows;
    benchmarks/results/h100_pde_rows_2026-12-07.log): RGBA at 128 against 168 registers,
    sharpen demosaicing 3.51 against 3.55 ms, lens deblur 3.59 against 3.76 ms (uncapped
    5.13 and 5.45 ms); 1 channel at 72 against 96, 0.97 against 0.99 and 1.03 against
    1.06 ms.
    """
    return shape if specialized else shape._replace(registers=0)


def plan_options(plan) -> tuple[str, ...]:
    """Build options that specialise ``pde_step`` to ``plan``'s structure (kernels/pde.cl):
    its modes, the orders whose speed is 0 at every scale, the orders sharing the
    exponential of order k - 2, and whether every scale regularises (or none does). Plans
    of one structure share one program; the results are those of the general program (bit for
    bit in precise arithmetic; with fast math within the FMA contractions a compiler
    chooses per program: 5.4e-7 on an H100)."""
    def array(values) -> str:
        return "{" + ",".join(str(int(v)) for v in values) + "}"

    active = active_orders(plan)
    same = [False, False, *(plan.anisotropy[k - 2] == plan.anisotropy[k] for k in (2, 3))]
    options = (f"-DPDE_MODES={array(plan.modes)}", f"-DPDE_ACTIVE={array(active)}",
               f"-DPDE_SAME_ANISOTROPY={array(same)}")
    regularizing = {step.regularization_factor != 0 for step in plan.steps}
    if len(regularizing) == 1:
        options += (f"-DPDE_REGULARIZED={int(regularizing.pop())}",)
    return options


def device_kind(device) -> str:
    """``"GPU"`` or ``"CPU"`` (anything else is treated as a CPU)."""
    return "GPU" if device.type & cl.device_type.GPU else "CPU"


def read_source(folder: Path) -> str:
    """The program's source: :data:`KERNEL_FILES` in ``folder``, concatenated."""
    try:
        return "\n".join((folder / name).read_text() for name in KERNEL_FILES)
    except OSError as error:
        raise OpenCLUnavailable(f"cannot read the OpenCL kernels in {folder}: {error}") from error


def shared_context(device) -> cl.Context:
    """This process's context on ``device``, made on first use."""
    key = device.int_ptr
    with _lock:
        if key not in _contexts:
            _contexts[key] = cl.Context([device])
        return _contexts[key]


def build(context, device, source: str, options: tuple[str, ...]) -> cl.Program:
    """``source`` built with ``options`` for ``device``, once per process (a failed build
    raises each time, with the build log)."""
    key = (context.int_ptr, device.int_ptr, source, options)
    with _lock:
        program = _programs.get(key)
    if program is None:
        program = cl.Program(context, source).build(options=list(options), devices=[device])
        with _lock:
            program = _programs.setdefault(key, program)
    return program


class Program:
    """The kernels built for one vector width, mode and rows per item, with their fitted
    work-group shapes and a pool of kernel objects (each holds its own arguments)."""

    def __init__(self, context, device, source: str, shape: KernelShape, precise: bool,
                 fast_math: bool = False, extra_options: tuple[str, ...] = ()):
        options = [f"-DVEC={shape.vector_width}", f"-DROWS={shape.rows}", *extra_options]
        if precise:
            options.append("-DPRECISE")
            if device.single_fp_config & cl.device_fp_config.CORRECTLY_ROUNDED_DIVIDE_SQRT:
                options.append(_CORRECT_ROUNDING)
        elif fast_math:
            options.append("-DFAST_MATH")
        if shape.registers and "cl_nv_compiler_options" in device.extensions:
            options.append(f"-cl-nv-maxrregcount={shape.registers}")
        #: The build options, as given to the compiler.
        self.options = tuple(options)
        program = build(context, device, source, self.options)
        self._program = program
        self._pool: dict[tuple[str, object], cl.Kernel] = {}
        self.shape = shape
        self.vector_width = shape.vector_width
        self.rows = shape.rows
        self.kernels = {name: cl.Kernel(program, name) for name in KERNEL_NAMES}
        self.local = {name: self._fitted(kernel, device, shape.local_size)
                      for name, kernel in self.kernels.items()}

    def pooled(self, name: str, key) -> cl.Kernel:
        """Kernel object ``key`` of ``name``, made once: each holds its own arguments
        (creating one costs about 0.3 ms of host time in pyopencl)."""
        if (name, key) not in self._pool:
            self._pool[(name, key)] = cl.Kernel(self._program, name)
        return self._pool[(name, key)]

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

    def rows_geometry(self, name: str, height: int, width: int, channels: int, mult: int,
                      planes: int = 1, plane_stride: int = 0):
        """Global size, work-group size and geometry arguments of a filtering kernel at
        dilation ``mult``: packs of floats x blocks of :attr:`rows` ranks in the row's class
        x (batch plane, row class), for ``planes`` planes ``plane_stride`` floats apart (see
        kernels/common.cl).

        Where a class has fewer blocks than the fitted work-group has rows (coarse scales:
        at dilation 512 a 4000-row image has 8 rows a class, 2 blocks of 4), the work-group
        trades rows for packs, same size, so that no work item is idle for want of rows.
        """
        classes = min(mult, height)
        per_class = -(-height // classes)
        blocks = -(-per_class // self.rows)
        lx, ly = self.local[name]
        while ly > 1 and ly // 2 >= blocks:
            lx, ly = 2 * lx, ly // 2
        packs = -(-width * channels // self.vector_width)
        size = (round_up(packs, lx), round_up(blocks, ly), classes * planes)
        # rows and every neighbour (multiples of mult pixels away) start on whole packs
        aligned = (width * channels) % self.vector_width == 0 \
            and (channels * mult) % self.vector_width == 0
        return size, (lx, ly, 1), (np.int32(width), np.int32(height), np.int32(channels),
                                   np.int32(mult), np.int32(classes), np.int32(aligned),
                                   np.int32(plane_stride))

    def pixels_geometry(self, name: str, height: int, width: int) -> tuple[int, int]:
        """Global size of a kernel with one work item per pixel."""
        lx, ly = self.local[name]
        return round_up(width, lx), round_up(height, ly)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``."""
    return -(-n // multiple) * multiple


def largest_local_size(kernel: cl.Kernel, device, cap: int) -> int:
    """The largest power of two at most ``cap`` that ``kernel`` runs in one work-group."""
    largest = kernel.get_work_group_info(cl.kernel_work_group_info.WORK_GROUP_SIZE, device)
    return 1 << (min(cap, largest).bit_length() - 1)
