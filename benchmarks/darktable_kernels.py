"""darktable's own diffuse kernels against ``diffuse()``, side by side on one OpenCL device.

darktable 4.2.1's *diffuse or sharpen* kernels (``bspline.cl``, ``diffuse.cl``) are read
from a darktable installation (``--kernels``; Debian 12's ``darktable`` package puts them in
``/usr/share/darktable/kernels``, and ``apt-get download darktable && dpkg -x
darktable_*.deb DIR`` unpacks them without installing) and driven the way darktable's
``process_cl`` drives them: ``image2d_t`` images, per scale a horizontal and a vertical
B-spline pass and a detail pass, then per scale the PDE, coarsest first; temporary images
allocated per run, global sizes rounded up to the work-group blocks, the local size left
to the driver, darktable's build options. Nothing of darktable's is copied here: the
kernels are built from the installed files at run time.

For each preset, on a random ``WxH`` RGBA float32 image (default 6000x4000): host array
in -> host array out through darktable's kernels (image upload, every pass, download) and
through ``napari_diffuse.diffuse(..., backend="opencl")``, alternately, median of
``--repeat`` runs after a warm-up each, and the speed-up. ``--reference DIR`` first runs
darktable's kernels on the reference vectors (darktable's CPU path). darktable's PDE kernel
steers with ``native_exp`` where its CPU path uses the bit-trick ``dt_vector_exp``, so its
anisotropic presets differ from the vectors by up to a few 1e-3; with ``--cpu-exp`` the
harness swaps in the CPU's exponential before building, and then every file without a
luminance mask must match within its tolerance: the check that the harness drives the
kernels as darktable does. (Files with a mask start the inpainting from darktable's GPU
noise, not the CPU's: reported, not checked.)

Example::

    python benchmarks/darktable_kernels.py --kernels /usr/share/darktable/kernels \\
        --reference ../shared/reference --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pyopencl as cl
import pyopencl.cltypes as cltypes
from host_overhead import seconds  # this folder: run as a script
from opencl_roofline import PRESETS, check_reference

from napari_diffuse import DiffuseParams, diffuse
from napari_diffuse.opencl_devices import select_device
from napari_diffuse.plan import equivalent_sigma, make_plan

#: darktable 4.2's build options (src/common/opencl.c: "-w %s %s -D%s=1 -I%s" with its
#: default per-device option, -cl-fast-relaxed-math, and the vendor's name); the include
#: folder is added.
BUILD_OPTIONS = "-w -cl-fast-relaxed-math -D{vendor}=1"
#: darktable rounds a 2-D launch up to its default blocks (clroundup_wd/ht: 16) and leaves
#: the local size to the driver.
BLOCK = (16, 16)


def vendor_define(device) -> str:
    """The vendor name darktable defines for ``device`` (NVIDIA, AMD, INTEL or UNKNOWN)."""
    vendor = device.vendor.upper()
    return next((name for name in ("NVIDIA", "AMD", "INTEL") if name in vendor), "UNKNOWN")


#: darktable's CPU exponential (dt_vector_exp's IEEE-754 bit trick), for ``--cpu-exp``.
CPU_EXP = """
inline float4 cpu_exp(const float4 x)
{
  const float4 k = fmax(x, -100.0f) * (float)(0x402DF854 - 0x3F800000);
  return as_float4(max(convert_int4(k) + 0x3F800000, 0));
}
"""


def round_up(value: int, step: int) -> int:
    """``value`` rounded up to a multiple of ``step``."""
    return -(-value // step) * step


class DarktableKernels:
    """darktable's *diffuse or sharpen* kernels on one OpenCL device.

    Parameters
    ----------
    context : pyopencl.Context
    folder : Path
        darktable's kernels folder (``bspline.cl``, ``diffuse.cl`` and their headers).
    cpu_exp : bool
        Steer with darktable's CPU exponential instead of ``native_exp`` (``--cpu-exp``).
    """

    RGBA = cl.ImageFormat(cl.channel_order.RGBA, cl.channel_type.FLOAT)
    MASK = cl.ImageFormat(cl.channel_order.R, cl.channel_type.UNSIGNED_INT8)

    def __init__(self, context, folder: Path, cpu_exp: bool = False):
        self.context = context
        self.queue = cl.CommandQueue(context)
        device = context.devices[0]
        options = f"{BUILD_OPTIONS.format(vendor=vendor_define(device))} -I{folder}"
        pde = (folder / "diffuse.cl").read_text()
        if cpu_exp:
            steering = "native_exp(-magnitude"
            if pde.count(steering) != 4:
                raise ValueError(f"{folder / 'diffuse.cl'}: expected 4 '{steering}', found "
                                 f"{pde.count(steering)}: not darktable 4.2's kernel")
            pde = pde.replace('#include "noise_generator.h"',
                              '#include "noise_generator.h"\n' + CPU_EXP)
            pde = pde.replace(steering, "cpu_exp(-magnitude")
        self.bspline = cl.Program(context, (folder / "bspline.cl").read_text()).build(options)
        self.diffuse = cl.Program(context, pde).build(options)
        self.kernels = {name: cl.Kernel(program, name) for program, names in (
            (self.bspline, ("blur_2D_Bspline_horizontal", "blur_2D_Bspline_vertical",
                            "wavelets_detail_level")),
            (self.diffuse, ("diffuse_pde", "build_mask", "inpaint_mask")))
            for name in names}

    def _image(self, width: int, height: int, image_format=None) -> cl.Image:
        return cl.create_image(self.context, cl.mem_flags.READ_WRITE,
                               image_format or self.RGBA, shape=(width, height))

    def _launch(self, name: str, width: int, height: int, *args) -> None:
        size = (round_up(width, BLOCK[0]), round_up(height, BLOCK[1]))
        kernel = self.kernels[name]
        kernel.set_args(*args)
        cl.enqueue_nd_range_kernel(self.queue, kernel, size, None)

    def run(self, image: np.ndarray, params: DiffuseParams) -> np.ndarray:
        """``image`` (H, W, 4) float32 in, darktable's result out (host arrays)."""
        plan = make_plan(params)
        height, width = image.shape[:2]
        i32 = np.int32
        dev_in = self._image(width, height)
        dev_out = self._image(width, height)
        cl.enqueue_copy(self.queue, dev_in, np.ascontiguousarray(image, np.float32),
                        origin=(0, 0), region=(width, height))
        # process_cl's temporary images, at the rounded-up sizes it allocates
        wide, tall = round_up(width, BLOCK[0]), round_up(height, BLOCK[1])
        temp1, temp2, lf_even, lf_odd = (self._image(wide, tall) for _ in range(4))
        mask = self._image(wide, tall, self.MASK)
        hf = [self._image(wide, tall) for _ in range(plan.scales)]
        source = dev_in
        has_mask = params.luminance_threshold > 0
        if has_mask:
            self._launch("build_mask", width, height, dev_in, mask,
                         np.float32(params.luminance_threshold), i32(width), i32(height))
            self._launch("inpaint_mask", width, height, temp1, dev_in, mask, i32(width),
                         i32(height))
            source = temp1
        f32 = np.float32
        # diffuse_pde's arguments after the images, width and height, per scale
        regularization = f32(np.power(f32(10.0), f32(params.edge_sensitivity)) - f32(1.0))
        pde_args = [(cltypes.make_float4(*plan.anisotropy), cltypes.make_int4(*plan.modes),
                     regularization, f32(plan.variance_threshold),
                     np.square(equivalent_sigma(step.scale)), i32(step.mult),
                     cltypes.make_float4(*step.speeds), f32(step.strength))
                    for step in plan.steps]
        for it in range(plan.iterations):
            target = dev_out if it == plan.iterations - 1 else (temp2 if it % 2 == 0 else temp1)
            self._iteration(source, target, mask, has_mask, width, height, pde_args, hf,
                            lf_odd, lf_even)
            source = target
        out = np.empty((height, width, 4), np.float32)
        cl.enqueue_copy(self.queue, out, dev_out, origin=(0, 0), region=(width, height))
        for memory in (dev_in, dev_out, temp1, temp2, lf_even, lf_odd, mask, *hf):
            memory.release()
        return out

    def _iteration(self, source, target, mask, has_mask, width, height, pde_args, hf,
                   lf_odd, lf_even) -> None:
        """One iteration as darktable's ``wavelets_process_cl`` runs it (``pde_args``: the
        PDE's constants per scale, finest first)."""
        i32 = np.int32
        residual = None
        for s in range(len(pde_args)):
            level = source if s == 0 else (lf_odd if s % 2 else lf_even)
            low = lf_even if s % 2 else lf_odd
            self._launch("blur_2D_Bspline_horizontal", width, height, level, hf[s],
                         i32(width), i32(height), i32(1 << s))
            self._launch("blur_2D_Bspline_vertical", width, height, hf[s], low,
                         i32(width), i32(height), i32(1 << s))
            self._launch("wavelets_detail_level", width, height, level, low, hf[s],
                         i32(width), i32(height))
            residual = low
        spare = lf_odd if residual is lf_even else lf_even
        for count, s in enumerate(reversed(range(len(pde_args)))):
            current, out = (residual, spare) if count % 2 == 0 else (spare, residual)
            if s == 0:
                out = target
            self._launch("diffuse_pde", width, height, hf[s], current, mask, i32(has_mask), out,
                         i32(width), i32(height), *pde_args[s])


def main(argv=None) -> dict:
    """Run the benchmark from the command line; returns the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernels", type=Path, default=Path("/usr/share/darktable/kernels"),
                        help="darktable's kernels folder")
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default=None, help="index or part of the name")
    parser.add_argument("--reference", type=Path, default=None,
                        help="check the harness against the reference vectors in DIR")
    parser.add_argument("--cpu-exp", action="store_true",
                        help="steer with darktable's CPU exponential (checks the harness)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    if not (args.kernels / "diffuse.cl").is_file():
        parser.error(f"--kernels {args.kernels}: no diffuse.cl there; give darktable's kernels "
                     "folder (Debian: apt-get install darktable, or apt-get download darktable "
                     "&& dpkg -x darktable_*.deb DIR, then DIR/usr/share/darktable/kernels)")
    device = select_device(args.device)
    print(f"device: {device.platform.name}: {device.name}", flush=True)
    darktable = DarktableKernels(cl.Context([device]), args.kernels, args.cpu_exp)
    results: dict = dict(device=device.name, cpu_exp=args.cpu_exp, reference=[], presets={})
    if args.reference is not None:
        print("darktable's kernels on the reference vectors"
              + (" (CPU exponential):" if args.cpu_exp else ":"), flush=True)
        results["reference"] = check_reference(
            lambda data, params: darktable.run(data["input"], params), args.reference,
            miss="differs")
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = np.random.default_rng(0).random((height, width, 4), dtype=np.float32)
    print(f"\n{width}x{height} RGBA float32, host array in -> host array out, median of "
          f"{args.repeat} after a warm-up, alternated", flush=True)
    print(f"{'preset':32s} | darktable's kernels | diffuse() | speed-up", flush=True)
    for preset in args.presets.split(","):
        params = DiffuseParams.from_preset(preset)
        theirs, ours = [], []
        def run_darktable(params=params):
            darktable.run(image, params)

        def run_ours(preset=preset):  # as opencl_roofline.py --api times it: whole planes
            diffuse(image, preset=preset, channel_axis=-1, backend="opencl", exact=True)

        run_darktable(), run_ours()  # warm-up
        for _ in range(args.repeat):  # alternate, so drifts hit both sides alike
            theirs.append(seconds(run_darktable))
            ours.append(seconds(run_ours))
        dt_s, ours_s = statistics.median(theirs), statistics.median(ours)
        results["presets"][preset] = dict(darktable_s=theirs, diffuse_s=ours,
                                          speed_up=dt_s / ours_s)
        print(f"{preset:32s} | {dt_s:17.3f} s | {ours_s:7.3f} s | {dt_s / ours_s:6.1f}x",
              flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
