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

VARIANTS = [
    ("base (2,4,(64,2))", (), KernelShape(2, 4, (64, 2)), ()),
    ("spec (2,4,(64,2))", SPEC, KernelShape(2, 4, (64, 2)), ()),
    ("loads (2,4,(64,2))", LOADS, KernelShape(2, 4, (64, 2)), ()),
    ("loads (4,1,(64,2))", LOADS, KernelShape(4, 1, (64, 2)), ()),
    ("loads (4,4,(64,2))", LOADS, KernelShape(4, 4, (64, 2)), ()),
    ("loads (1,4,(128,1))", LOADS, KernelShape(1, 4, (128, 1)), ()),
    ("noexp (2,4,(64,2))", NOEXP, KernelShape(2, 4, (64, 2)), ()),
    ("novar (2,4,(64,2))", NOVAR, KernelShape(2, 4, (64, 2)), ()),
    ("spec (4,2,(64,2))", SPEC, KernelShape(4, 2, (64, 2)), ()),
    ("spec (4,4,(32,4))", SPEC, KernelShape(4, 4, (32, 4)), ()),
    ("spec (1,4,(128,1))", SPEC, KernelShape(1, 4, (128, 1)), ()),
    ("spec (2,8,(64,2))", SPEC, KernelShape(2, 8, (64, 2)), ()),
    ("spec relaxed (2,4,(64,2))", SPEC, KernelShape(2, 4, (64, 2)), ("-cl-fast-relaxed-math",)),
    ("base (2,4,(256,1))", (), KernelShape(2, 4, (256, 1)), ()),
]
pde_bytes = 3 * nbytes
ptx_done = set()
for label, patch, shape, opts in VARIANTS:
    src = patched(base_source, *patch)
    try:
        program = Program(
            ctx, device, src, shape, precise=False, fast_math=True, extra_options=opts
        )
    except Exception as e:
        print(label, "build failed", e)
        continue
    tag = label.split()[0]
    if tag not in ptx_done and "NVIDIA" in device.platform.name:
        ptx_done.add(tag)
        ptx = program._program.get_info(cl.program_info.BINARIES)[0]
        p = OUT / f"{tag}.ptx"
        p.write_bytes(ptx)
        r = subprocess.run(
            ["ptxas", "-arch=sm_90", "-v", str(p), "-o", f"/tmp/{tag}.cubin"],
            capture_output=True,
            text=True,
        )
        print(
            "\n".join(
                line
                for line in r.stderr.splitlines()
                if "pde_step" in line or "bspline" in line or "registers" in line or "spill" in line
            )
        )
        r = subprocess.run(
            ["cuobjdump", "-sass", f"/tmp/{tag}.cubin"], capture_output=True, text=True
        )
        (OUT / f"{tag}.sass").write_text(r.stdout)
    row = []
    for mult in (1, 8):
        size, geometry = program.rows_geometry("pde_step", H, W, C, mult)
        k = program.kernels["pde_step"]
        k.set_args(
            bufs[0],
            bufs[1],
            bufs[2],
            mask,
            np.int32(0),
            *geometry,
            np.int32(0),
            cltypes.make_float4(*s.speeds),
            cltypes.make_int4(*plan.modes),
            cltypes.make_float4(*plan.anisotropy),
            F32(s.strength),
            F32(s.regularization_factor),
            F32(plan.variance_threshold),
        )
        t = timed(k, size, program.local["pde_step"] + (1,))
        row.append(f"mult {mult}: {t * 1e3:.3f} ms {100 * pde_bytes / t / copy_bw:.0f} %")
    print(f"pde {label}: " + "; ".join(row), flush=True)


TVARIANTS = [
    ("tiled (2,4,(64,2))", (), KernelShape(2, 4, (64, 2))),
    ("tiled (4,2,(64,2))", (), KernelShape(4, 2, (64, 2))),
    ("tiled (4,4,(64,2))", (), KernelShape(4, 4, (64, 2))),
    ("tiled (4,4,(32,4))", (), KernelShape(4, 4, (32, 4))),
    ("tiled (2,4,(128,1))", (), KernelShape(2, 4, (128, 1))),
    ("tiled (2,8,(64,1))", (), KernelShape(2, 8, (64, 1))),
    ("tiled (1,4,(128,2))", (), KernelShape(1, 4, (128, 2))),
    ("tiled (4,8,(64,1))", (), KernelShape(4, 8, (64, 1))),
    ("tiled spec (4,4,(64,2))", SPEC, KernelShape(4, 4, (64, 2))),
    ("tiled spec (2,4,(64,2))", SPEC, KernelShape(2, 4, (64, 2))),
]
for label, patch, shape in TVARIANTS:
    program = Program(
        ctx, device, patched(base_source, *patch), shape, precise=False, fast_math=True
    )
    row = []
    lx, ly = shape.local_size
    for mult in (1, 8, 16, 32):
        size, geometry = program.rows_geometry("pde_step", H, W, C, mult)
        tw = shape.vector_width * lx + 2 * mult * C
        tr = shape.rows * ly + 2
        k = program.kernels["pde_step_tiled"]
        k.set_args(
            bufs[0],
            bufs[1],
            bufs[2],
            mask,
            np.int32(0),
            *geometry,
            np.int32(0),
            cltypes.make_float4(*s.speeds),
            cltypes.make_int4(*plan.modes),
            cltypes.make_float4(*plan.anisotropy),
            F32(s.strength),
            F32(s.regularization_factor),
            F32(plan.variance_threshold),
            cl.LocalMemory(2 * tw * tr * 4),
        )
        try:
            t = timed(k, size, (lx, ly, 1))
        except Exception as e:
            row.append(f"mult {mult}: {type(e).__name__}")
            continue
        row.append(
            f"mult {mult}: {t * 1e3:.3f} ms {100 * pde_bytes / t / copy_bw:.0f} % "
            f"({2 * tw * tr * 4 // 1024} KiB)"
        )
    print(f"pde {label}: " + "; ".join(row), flush=True)

NOHF = (("store_pack(hf + y * row_length, pack, centre[r] - low);", ""),)
BVARIANTS = [
    ("base (4,2,(64,2))", (), KernelShape(4, 2, (64, 2))),
    ("nohf (4,2,(64,2))", NOHF, KernelShape(4, 2, (64, 2))),
    ("base (4,4,(64,2))", (), KernelShape(4, 4, (64, 2))),
    ("base (4,2,(128,1))", (), KernelShape(4, 2, (128, 1))),
    ("base (4,2,(32,4))", (), KernelShape(4, 2, (32, 4))),
    ("base (2,4,(64,2))", (), KernelShape(2, 4, (64, 2))),
    ("base (4,8,(64,2))", (), KernelShape(4, 8, (64, 2))),
]
for label, patch, shape in BVARIANTS:
    program = Program(
        ctx, device, patched(base_source, *patch), shape, precise=False, fast_math=True
    )
    row = []
    for mult in (1, 8):
        size, geometry = program.rows_geometry("bspline_level", H, W, C, mult)
        k = program.kernels["bspline_level"]
        k.set_args(bufs[0], bufs[1], bufs[2], *geometry)
        t = timed(k, size, program.local["bspline_level"] + (1,))
        row.append(f"mult {mult}: {t * 1e3:.3f} ms {100 * 3 * nbytes / t / copy_bw:.0f} %")
    print(f"bspline {label}: " + "; ".join(row), flush=True)

BT = [
    KernelShape(4, 2, (64, 2)),
    KernelShape(4, 4, (64, 2)),
    KernelShape(4, 4, (32, 4)),
    KernelShape(4, 8, (64, 1)),
    KernelShape(2, 4, (128, 2)),
    KernelShape(4, 2, (128, 2)),
    KernelShape(8, 4, (32, 2)),
]
for shape in BT:
    program = Program(ctx, device, base_source, shape, precise=False, fast_math=True)
    row = []
    lx, ly = shape.local_size
    for mult in (1, 8, 16, 32):
        size, geometry = program.rows_geometry("bspline_level", H, W, C, mult)
        tw = shape.vector_width * lx + 4 * mult * C
        tr = shape.rows * ly + 4
        k = program.kernels["bspline_level_tiled"]
        k.set_args(bufs[0], bufs[1], bufs[2], *geometry, cl.LocalMemory(tw * tr * 4))
        try:
            t = timed(k, size, (lx, ly, 1))
        except Exception as e:
            row.append(f"mult {mult}: {type(e).__name__}")
            continue
        row.append(
            f"mult {mult}: {t * 1e3:.3f} ms {100 * 3 * nbytes / t / copy_bw:.0f} % "
            f"({tw * tr * 4 // 1024} KiB)"
        )
    print(f"bspline tiled {tuple(shape)}: " + "; ".join(row), flush=True)
