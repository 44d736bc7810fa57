"""Where the PDE and B-spline passes spend device time: variants that leave a stage out.

On a random 6000x4000 RGBA float32 image (``DIAG_H``, ``DIAG_W`` to change it), one pass
of each variant at several dilations, median of 7 profiled launches, as a share of the
device's float4 copy bandwidth (also timed: a 2-read/1-write and a 1-read/2-write kernel):

- PDE: the general program and the one built for *denoise: medium*'s structure
  (``plan_options``), in several shapes; then, built for it, its loads alone (with the
  row summaries and hf^2 row sums done when a row is loaded, none of the equation's
  arithmetic), without the exponential, without the variance (its row sums still
  computed), with relaxed math;
- B-spline: as built, in several shapes; without the HF store.

With NVIDIA's OpenCL, each program's PTX goes to ``$OUT`` with ``ptxas -v``'s registers
and spills. Variants other than "general", "specialised" and "base" change results:
timing only.

Example::

    OUT=/tmp python benchmarks/opencl_stages.py
"""

import os
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pyopencl as cl
import pyopencl.cltypes as cltypes

from napari_diffuse import DiffuseParams
from napari_diffuse.opencl_devices import select_device
from napari_diffuse.opencl_program import KernelShape, Program, plan_options, read_source
from napari_diffuse.plan import make_plan

OUT = Path(os.environ.get("OUT", "/tmp"))
H, W, C = int(os.environ.get("DIAG_H", 4000)), int(os.environ.get("DIAG_W", 6000)), 4
device = select_device(None)
ctx = cl.Context([device])
queue = cl.CommandQueue(ctx, device, properties=cl.command_queue_properties.PROFILING_ENABLE)
base_source = read_source(Path("kernels"))
plan = make_plan(DiffuseParams.from_preset("denoise: medium"))
nbytes = H * W * C * 4
rng = np.random.default_rng(0)
host = rng.random((H, W, C), dtype=np.float32)
bufs = [
    cl.Buffer(ctx, cl.mem_flags.READ_WRITE | cl.mem_flags.COPY_HOST_PTR, hostbuf=host)
    for _ in range(3)
]
mask = cl.Buffer(ctx, cl.mem_flags.READ_WRITE, H * W)
F32 = np.float32


def timed(kernel, size, local, repeat=7):
    times = []
    for _ in range(repeat + 1):
        ev = cl.enqueue_nd_range_kernel(queue, kernel, size, local)
        ev.wait()
        times.append((ev.profile.end - ev.profile.start) * 1e-9)
    return statistics.median(times[1:])


SIMPLE = """
kernel void copy4(global const float4 *a, global float4 *o)
{ size_t i = get_global_id(0); o[i] = a[i]; }
kernel void add4(global const float4 *a, global const float4 *b, global float4 *o)
{ size_t i = get_global_id(0); o[i] = a[i] + b[i]; }
kernel void split4(global const float4 *a, global float4 *o, global float4 *p)
{ size_t i = get_global_id(0); float4 v = a[i]; o[i] = v * 0.5f; p[i] = v - 1.0f; }
"""
prg = cl.Program(ctx, SIMPLE).build()
n4 = nbytes // 16
for name, args, arrays in (("copy4", bufs[:2], 2), ("add4", bufs[:3], 3), ("split4", bufs[:3], 3)):
    k = cl.Kernel(prg, name)
    k.set_args(*args)
    t = timed(k, (n4,), (256,))
    bw = arrays * nbytes / t
    print(f"{name}: {t * 1e3:.3f} ms {bw / 1e12:.2f} TB/s", flush=True)
    if name == "copy4":
        copy_bw = bw


def patched(source, *pairs):
    for old, new in pairs:
        assert old in source, old
        source = source.replace(old, new)
    return source


LOADS = (
    (
        "vec_t result = H[1].centre * strength;",
        "vec_t result = H[1].centre * strength + (L[0].sum + L[0].difference + L[0].centre"
        " + L[1].sum + L[1].difference + L[2].sum + L[2].difference + L[2].centre"
        " + H[0].sum + H[0].difference + H[0].centre + H[1].sum + H[1].difference"
        " + H[2].sum + H[2].difference + H[2].centre + squares[0] + squares[1] + squares[2])"
        " * 1e-30f;",
    ),
    ("if (speeds[0] != 0.0f || speeds[1] != 0.0f || speeds[2] != 0.0f || speeds[3] != 0.0f)",
     "if (false)"),
)
SPECIALISED = plan_options(plan)
NOEXP = (("return AS_VEC(max(CONVERT_IVEC(k) + 0x3F800000, 0));", "return k;"),)
NOVAR = (
    (
        "acc = DIVIDE(acc, MAD(squares[0] + squares[1] + squares[2], regularization,\n"
        "                                  variance_threshold));",
        "acc = acc * squares[2];",
    ),
)

print("plan", plan.modes, plan.anisotropy, [float(v) for v in plan.steps[0].speeds],
      plan.steps[0].regularization_factor, plan.variance_threshold, SPECIALISED)


def sweep(label: str, program: Program, name: str, mults) -> None:
    """Print kernel ``name``'s time at each dilation as a share of the copy bandwidth (each
    pass moves 3 image-sized arrays)."""
    step = plan.steps[0]
    constants = {
        "bspline": (),
        "pde": (
            np.int32(0),
            cltypes.make_float4(*step.speeds),
            cltypes.make_int4(*plan.modes),
            cltypes.make_float4(*plan.anisotropy),
            F32(step.strength),
            F32(step.regularization_factor),
            F32(plan.variance_threshold),
        ),
    }
    kind = name.split("_")[0]
    buffers = (*bufs, mask, np.int32(0)) if kind == "pde" else tuple(bufs)
    row = []
    for mult in mults:
        size, local, geometry = program.rows_geometry(name, H, W, C, mult)
        kernel = program.kernels[name]
        kernel.set_args(*buffers, *geometry, *constants[kind])
        try:
            t = timed(kernel, size, local)
        except cl.Error as error:  # a shape the device refuses: report, go on
            row.append(f"mult {mult}: {type(error).__name__}")
            continue
        row.append(f"mult {mult}: {t * 1e3:.3f} ms {100 * 3 * nbytes / t / copy_bw:.0f} %")
    print(f"{kind} {label}: " + "; ".join(row), flush=True)


def print_registers(tag: str, program: Program) -> None:
    """NVIDIA only: the program's PTX and SASS to $OUT, ptxas' registers and spills."""
    ptx = OUT / f"{tag}.ptx"
    ptx.write_bytes(program._program.get_info(cl.program_info.BINARIES)[0])
    cubin = f"/tmp/{tag}.cubin"
    r = subprocess.run(["ptxas", "-arch=sm_90", "-v", str(ptx), "-o", cubin],
                       capture_output=True, text=True)
    print("\n".join(line for line in r.stderr.splitlines()
                    if any(word in line for word in ("pde_step", "bspline", "registers", "spill"))))
    r = subprocess.run(["cuobjdump", "-sass", cubin], capture_output=True, text=True)
    (OUT / f"{tag}.sass").write_text(r.stdout)


NOHF = (("store_pack(hf + y * row_length, pack, centre[r] - low);", ""),)
K = KernelShape
#: (kernel, label, source patch, shape, extra build options)
SHAPES = (K(2, 4, (64, 2)), K(4, 4, (32, 4)), K(4, 2, (64, 2)), K(4, 4, (64, 2)),
          K(2, 4, (32, 4)), K(4, 8, (32, 2)), K(1, 4, (128, 1)))
VARIANTS = [
    *[("pde_step", f"general {tuple(sh)}", (), sh, ()) for sh in SHAPES[:2]],
    *[("pde_step", f"specialised {tuple(sh)}", (), sh, SPECIALISED) for sh in SHAPES],
    ("pde_step", "relaxed (4, 4, (32, 4))", (), K(4, 4, (32, 4)),
     (*SPECIALISED, "-cl-fast-relaxed-math")),
    *[("pde_step", f"loads {tuple(sh)}", LOADS, sh, SPECIALISED) for sh in SHAPES[:3]],
    ("pde_step", "noexp (4, 4, (32, 4))", NOEXP, K(4, 4, (32, 4)), SPECIALISED),
    ("pde_step", "novar (4, 4, (32, 4))", NOVAR, K(4, 4, (32, 4)), SPECIALISED),
    *[("bspline_level", f"base {tuple(sh)}", (), sh, ())
      for sh in (K(4, 2, (64, 2)), K(4, 4, (64, 2)), K(4, 2, (128, 1)), K(4, 2, (32, 4)),
                 K(2, 4, (64, 2)))],
    ("bspline_level", "nohf (4, 2, (64, 2))", NOHF, K(4, 2, (64, 2)), ()),
]
registers_shown = set()
for name, label, patch, shape, options in VARIANTS:
    try:
        program = Program(ctx, device, patched(base_source, *patch), shape, precise=False,
                          fast_math=True, extra_options=options)
    except cl.Error as error:
        print(label, "build failed", error)
        continue
    tag = label.split()[0]
    if tag not in registers_shown and "NVIDIA" in device.platform.name:
        registers_shown.add(tag)
        print_registers(tag, program)
    sweep(label, program, name, (1, 8))
