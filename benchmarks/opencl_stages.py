"""Where the PDE and B-spline passes spend device time: variants that leave a stage out.

On a random 6000x4000 RGBA float32 image (``DIAG_H``, ``DIAG_W`` to change it), one pass
of each variant at several dilations, median of 7 profiled launches, as a share of the
device's float4 copy bandwidth (also timed: a 2-read/1-write and a 1-read/2-write kernel):

- PDE: the kernel as built; its loads alone (no arithmetic); without the exponential;
  without the variance; with *denoise: medium*'s orders, modes and anisotropies as literal
  constants ("spec"); tiled (``pde_step_tiled``) in several shapes;
- B-spline: as built; without the HF store; tiled (``bspline_level_tiled``).

With NVIDIA's OpenCL, each program's PTX goes to ``$OUT`` with ``ptxas -v``'s registers
and spills. Variants other than "base" and "tiled" change results: timing only.

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
from napari_diffuse.opencl_program import KernelShape, Program, read_source
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
        "vec_t result = H[4] * strength;",
        "vec_t result = H[4] * strength + (L[0]+L[1]+L[2]+L[3]+L[5]+L[6]+L[7]+L[8]"
        "+H[0]+H[1]+H[2]+H[3]+H[5]+H[6]+H[7]+H[8]) * 1e-30f;",
    ),
    ("if (any(speed != 0.0f))", "if (false)"),
)
s = plan.steps[0]
spd = [float(v) for v in s.speeds]
SPEC = (
    (
        "const float speeds[4] = {speed.s0, speed.s1, speed.s2, speed.s3};",
        "const float speeds[4] = {"
        + ", ".join("speed.s%d" % k if spd[k] != 0 else "0.0f" for k in range(4))
        + "};",
    ),
    (
        "const int modes[4] = {mode.s0, mode.s1, mode.s2, mode.s3};",
        "const int modes[4] = {" + ", ".join(str(m) for m in plan.modes) + "};",
    ),
    (
        "const float anisotropies[4] = {anisotropy.s0, anisotropy.s1, anisotropy.s2,\n"
        + " " * 39
        + "anisotropy.s3};",
        "const float anisotropies[4] = {"
        + ", ".join("%.9ef" % float(a) for a in plan.anisotropy)
        + "};",
    ),
    ("if (any(speed != 0.0f))", "if (true)"),
    ("if (regularization != 0.0f)", "if (true)"),
)
NOEXP = (("return AS_VEC(max(CONVERT_IVEC(k) + 0x3F800000, 0));", "return k;"),)
NOVAR = (
    (
        "acc = DIVIDE(acc, MAD(variance, regularization, variance_threshold));",
        "acc = acc * variance.s0;",
    ),
)

print("plan", plan.modes, plan.anisotropy, spd, s.regularization_factor, plan.variance_threshold)


def sweep(label: str, program: Program, name: str, mults) -> None:
    """Print kernel ``name``'s time at each dilation as a share of the copy bandwidth (each
    pass moves 3 image-sized arrays); tiled forms get their tile (Program.tile_bytes)."""
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
        size, geometry = program.rows_geometry(name, H, W, C, mult)
        tile = ()
        if name.endswith("_tiled"):
            tile = (cl.LocalMemory(program.tile_bytes(name, C, mult)),)
        kernel = program.kernels[name]
        kernel.set_args(*buffers, *geometry, *constants[kind], *tile)
        try:
            t = timed(kernel, size, program.local[name] + (1,))
        except cl.Error as error:  # a tile the device refuses: report, go on
            row.append(f"mult {mult}: {type(error).__name__}")
            continue
        extra = f" ({program.tile_bytes(name, C, mult) // 1024} KiB)" if tile else ""
        row.append(f"mult {mult}: {t * 1e3:.3f} ms {100 * 3 * nbytes / t / copy_bw:.0f} %{extra}")
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
VARIANTS = [
    *[("pde_step", f"base {tuple(sh)}", (), sh, ())
      for sh in (K(2, 4, (64, 2)), K(2, 4, (256, 1)))],
    *[("pde_step", f"spec {tuple(sh)}", SPEC, sh, ())
      for sh in (K(2, 4, (64, 2)), K(4, 2, (64, 2)), K(4, 4, (32, 4)), K(1, 4, (128, 1)),
                 K(2, 8, (64, 2)))],
    ("pde_step", "spec relaxed (2, 4, (64, 2))", SPEC, K(2, 4, (64, 2)),
     ("-cl-fast-relaxed-math",)),
    *[("pde_step", f"loads {tuple(sh)}", LOADS, sh, ())
      for sh in (K(2, 4, (64, 2)), K(4, 1, (64, 2)), K(4, 4, (64, 2)), K(1, 4, (128, 1)))],
    ("pde_step", "noexp (2, 4, (64, 2))", NOEXP, K(2, 4, (64, 2)), ()),
    ("pde_step", "novar (2, 4, (64, 2))", NOVAR, K(2, 4, (64, 2)), ()),
    *[("pde_step_tiled", f"tiled {tuple(sh)}", (), sh, ())
      for sh in (K(2, 4, (64, 2)), K(4, 2, (64, 2)), K(4, 4, (64, 2)), K(4, 4, (32, 4)),
                 K(2, 4, (128, 1)), K(2, 8, (64, 1)), K(1, 4, (128, 2)), K(4, 8, (64, 1)))],
    *[("pde_step_tiled", f"tiled spec {tuple(sh)}", SPEC, sh, ())
      for sh in (K(4, 4, (64, 2)), K(2, 4, (64, 2)))],
    *[("bspline_level", f"base {tuple(sh)}", (), sh, ())
      for sh in (K(4, 2, (64, 2)), K(4, 4, (64, 2)), K(4, 2, (128, 1)), K(4, 2, (32, 4)),
                 K(2, 4, (64, 2)), K(4, 8, (64, 2)))],
    ("bspline_level", "nohf (4, 2, (64, 2))", NOHF, K(4, 2, (64, 2)), ()),
    *[("bspline_level_tiled", f"tiled {tuple(sh)}", (), sh, ())
      for sh in (K(4, 2, (64, 2)), K(4, 4, (64, 2)), K(4, 4, (32, 4)), K(4, 8, (64, 1)),
                 K(2, 4, (128, 2)), K(4, 2, (128, 2)), K(8, 4, (32, 2)))],
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
    sweep(label, program, name, (1, 8, 16, 32) if name.endswith("_tiled") else (1, 8))
