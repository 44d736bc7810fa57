"""The OpenCL solver against the device's own memory bandwidth, in one command.

First the device's float4 copy bandwidth (a plain ``dst[i] = src[i]`` kernel over
image-sized buffers, read + write, median of 10), then for each preset on a random
``HxWxC`` float32 image (default 6000x4000 RGBA):

- host array in -> host array out through the solver (upload, every iteration,
  download), median of ``--repeat`` runs after a warm-up;
- device time per pass with OpenCL profiling events, each pass's bytes moved
  (:attr:`napari_diffuse.plan.Pass.arrays_moved` image-sized arrays, plus the mask when
  one is used) over its time, as a share of the measured copy bandwidth; the same for
  the whole run; the upload and the download;
- with ``--api``, the same image through ``napari_diffuse.diffuse`` (host array in, host
  array out, whole planes).

``--variants`` first times 4 iterations of the first preset (on the first of
``--channels``) for several vector widths, rows per work item, work-group shapes and
register caps (checking each against ``--reference``), and runs the presets with the
fastest; ``--bspline-shapes`` and ``--pde-shapes`` name the shapes to compare instead of
the built-in lists (a PDE cap applies to the programs built for a plan's structure, see
``opencl_program.pde_shape``). ``--stack NxHxW`` streams a single-channel stack of
*denoise: medium* through the device and compares its throughput per pixel with one
plane's device-kernel throughput. ``--reference DIR`` checks parity with darktable's
reference vectors in DIR (``index.json`` + ``*.npz``).

No figure measured on another device enters a ratio here (``darktable_kernels.py`` runs
darktable's kernels beside ``diffuse()`` on one device). For reference, the side by
side measured on the H200 on 2026-12-04 (issue 11; ``../shared/docs/environment-notes.md``),
darktable's own kernels driven as darktable drives them against napari-diffuse 0.1.0's
``diffuse()``, 6000x4000 RGBA, host to host, median of 3 (another run, another machine
of the kind: compare with care):

================================  =====================  ==========
preset                            darktable's kernels    diffuse()
================================  =====================  ==========
denoise: medium                   0.650 s                0.326 s
lens deblur: medium               0.442 s                0.237 s
dehaze                            0.489 s                0.249 s
bloom                             0.162 s                0.098 s
sharpen demosaicing: AA filter    0.156 s                0.102 s
local contrast: fast              0.174 s                0.108 s
================================  =====================  ==========

Example::

    python benchmarks/opencl_roofline.py --channels 4,1 --api --stack 64x2048x2048 \\
        --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pyopencl as cl
from host_overhead import in_dtype, median_time, wall_times  # this folder: run as a script

from napari_diffuse import DiffuseParams
from napari_diffuse.opencl_devices import select_device
from napari_diffuse.opencl_engine import Engine
from napari_diffuse.opencl_program import KernelShape
from napari_diffuse.plan import make_plan

PRESETS = ["denoise: medium", "lens deblur: medium", "dehaze", "bloom",
           "sharpen demosaicing: AA filter", "local contrast: fast"]
#: The side-by-side table quoted above: darktable's kernels / napari-diffuse 0.1.0's
#: diffuse(), seconds, H200, 2026-12-04. Printed as a reference, never divided by.
QUOTED_H200 = {"denoise: medium": (0.650, 0.326), "lens deblur: medium": (0.442, 0.237),
               "dehaze": (0.489, 0.249), "bloom": (0.162, 0.098),
               "sharpen demosaicing: AA filter": (0.156, 0.102),
               "local contrast: fast": (0.174, 0.108)}
#: B-spline shapes and PDE shapes (with or without fast math) compared by ``--variants``,
#: paired in turn: each variant times one of each, so the fastest of each kind is chosen.
#: (A PDE shape's register cap applies on NVIDIA only, see opencl_program.pde_shape.)
BSPLINE_VARIANTS = [KernelShape(4, 1, (64, 2)), KernelShape(4, 2, (64, 2)),
                    KernelShape(8, 2, (32, 2)), KernelShape(4, 4, (64, 2)),
                    KernelShape(2, 4, (64, 2)), KernelShape(4, 2, (32, 4))]
PDE_VARIANTS = [(KernelShape(4, 4, (32, 4), 128), True), (KernelShape(4, 4, (32, 4)), True),
                (KernelShape(4, 4, (64, 2), 128), True), (KernelShape(4, 2, (64, 2), 128), True),
                (KernelShape(4, 4, (32, 4), 120), True), (KernelShape(2, 4, (32, 4), 72), True)]
COPY_SOURCE = """
kernel void copy4(global const float4 *src, global float4 *dst)
{
    const size_t i = get_global_id(0);
    dst[i] = src[i];
}
"""


def copy_bandwidth(context, device, nbytes: int, repeat: int = 10) -> float:
    """Bytes per second of a float4 copy kernel (read + write), median of ``repeat``."""
    nbytes = max(1 << 26, nbytes // 16 * 16)
    queue = cl.CommandQueue(context, device,
                            properties=cl.command_queue_properties.PROFILING_ENABLE)
    program = cl.Program(context, COPY_SOURCE).build()
    kernel = cl.Kernel(program, "copy4")
    src = cl.Buffer(context, cl.mem_flags.READ_WRITE, nbytes)
    dst = cl.Buffer(context, cl.mem_flags.READ_WRITE, nbytes)
    cl.enqueue_fill_buffer(queue, src, np.float32(1), 0, nbytes)
    kernel.set_args(src, dst)
    local = min(256, device.max_work_group_size)
    items = nbytes // 16 // local * local
    times = []
    for _ in range(repeat + 1):
        event = cl.enqueue_nd_range_kernel(queue, kernel, (items,), (local,))
        event.wait()
        times.append((event.profile.end - event.profile.start) * 1e-9)
    src.release()
    dst.release()
    return 2 * items * 16 / statistics.median(times[1:])


def solve_reference(engine: Engine):
    """``engine``'s solve as :func:`check_reference` runs it: a reference file's input,
    parameters and (with a luminance threshold) mask in, the result out."""
    def run(data, params: DiffuseParams) -> np.ndarray:
        mask = data["mask"] if params.luminance_threshold > 0 else None
        return engine.solve(data["input"], make_plan(params), mask)
    return run


def check_reference(run, folder: Path, verbose: bool = True, miss: str = "FAIL") -> list[dict]:
    """``run(data, params)`` on every reference file; return max/mean differences against
    the tolerances (``miss`` marks a file beyond them in the printout)."""
    rows = []
    for entry in json.loads((folder / "index.json").read_text())["files"]:
        data = np.load(folder / entry["file"])
        params = DiffuseParams.from_darktable(json.loads(str(data["params_json"])))
        difference = np.abs(run(data, params) - data["output"])
        tolerance = entry["tolerance"]
        rows.append(dict(file=entry["file"], max_abs=float(difference.max()),
                         mean_abs=float(difference.mean()), tolerance=tolerance,
                         masked=params.luminance_threshold > 0,
                         ok=bool(difference.max() <= tolerance["max_abs"]
                                 and difference.mean() <= tolerance["mean_abs"])))
        if verbose:
            row = rows[-1]
            print(f"  {entry['file']:48s} max {row['max_abs']:.2e} (<= {tolerance['max_abs']:.1e})"
                  f"  mean {row['mean_abs']:.2e} (<= {tolerance['mean_abs']:.1e})"
                  f"  {'ok' if row['ok'] else miss}", flush=True)
    return rows


def device_profile(engine: Engine, image: np.ndarray, plan, bandwidth: float) -> dict:
    """Device time of one run per pass, each against the copy bandwidth."""
    with engine.profile() as profile:
        engine.solve(image, plan)
    seconds = profile.seconds()
    image_bytes = image.nbytes
    passes = []
    moved_run = kernels = 0.0
    for step in plan.passes:
        t = seconds[(step.kind, step.scale)] / plan.iterations
        moved = step.arrays_moved * image_bytes
        if step.kind == "pde" and plan.luminance_threshold > 0:
            moved += image.shape[0] * image.shape[1]  # the mask
        passes.append(dict(kind=step.kind, scale=step.scale, ms=t * 1e3,
                           bytes=moved, bandwidth=moved / t, efficiency=moved / t / bandwidth))
        moved_run += moved * plan.iterations
        kernels += t * plan.iterations
    return dict(upload_ms=seconds[("upload", -1)] * 1e3,
                download_ms=seconds[("download", -1)] * 1e3,
                kernels_ms=kernels * 1e3, per_iteration_ms=kernels / plan.iterations * 1e3,
                roofline_ms=moved_run / bandwidth * 1e3,
                efficiency=moved_run / kernels / bandwidth, passes=passes,
                worst_pass=min(p["efficiency"] for p in passes))


def time_api(preset: str, image: np.ndarray, repeat: int) -> list[float]:
    """Wall seconds of napari_diffuse.diffuse, host array in and out, whole planes."""
    from napari_diffuse import diffuse

    return wall_times(lambda: diffuse(image, preset=preset, channel_axis=-1,
                                      backend="opencl", exact=True), repeat)


def stack_run(device, engine: Engine, spec: str, repeat: int,
              dtypes: tuple[str, ...] = ("float32",)) -> dict:
    """A single-channel ``NxHxW`` stack of *denoise: medium*: one plane's device-kernel
    time against the stack's wall time per plane (solver, then diffuse() for each of
    ``dtypes``: integers span their dtype's range)."""
    from napari_diffuse import diffuse

    count, height, width = (int(v) for v in spec.lower().split("x"))
    plan = make_plan(DiffuseParams.from_preset("denoise: medium"))
    stack = np.random.default_rng(2).random((count, height, width), dtype=np.float32)
    profiled = Engine(device, profiling=True)
    profiled.solve(stack[0, ..., None], plan)
    with profiled.profile() as profile:
        profiled.solve(stack[0, ..., None], plan)
    plane_kernels = sum(v for (kind, _), v in profile.seconds().items()
                        if kind in ("bspline", "pde"))
    plane_host = median_time(lambda: engine.solve(stack[0, ..., None], plan), repeat)
    batches = {}
    for batch in (1, 4, 8):
        engine.stack_batch = batch
        batches[batch] = wall_times(
            lambda: engine.solve_planes(stack[..., None], plan), repeat)
        print(f"  solve_planes, {batch} plane(s) per launch: median "
              f"{statistics.median(batches[batch]):.3f} s", flush=True)
    engine.stack_batch = best = min(batches, key=lambda k: statistics.median(batches[k]))
    solver = batches[best]
    per_plane = statistics.median(solver) / count
    apis = {}
    for dtype in (np.dtype(d) for d in dtypes):
        given = in_dtype(stack, dtype)
        apis[dtype.name] = wall_times(
            lambda given=given: diffuse(given, preset="denoise: medium", backend="opencl"),
            repeat)
    api = apis[np.dtype(dtypes[0]).name]
    per_plane_api = statistics.median(api) / count
    result = dict(shape=[count, height, width], batches=batches, stack_batch=best,
                  plane_kernels_ms=plane_kernels * 1e3,
                  plane_host_to_host_ms=plane_host * 1e3, stack_solver_s=solver,
                  stack_api_s=api, stack_api_by_dtype_s=apis, per_plane_ms=per_plane * 1e3,
                  per_plane_api_ms=per_plane_api * 1e3,
                  throughput_ratio=plane_kernels / per_plane,
                  throughput_ratio_api=plane_kernels / per_plane_api)
    print(f"\nstack {count}x{height}x{width}x1, denoise: medium: one plane's device kernels "
          f"{plane_kernels * 1e3:.2f} ms (host->host {plane_host * 1e3:.2f} ms); stack "
          f"through solve_planes median {statistics.median(solver):.3f} s = "
          f"{per_plane * 1e3:.2f} ms/plane ({best} planes per launch; "
          f"{100 * result['throughput_ratio']:.0f} % of the "
          f"device-kernel throughput); through diffuse() {statistics.median(api):.3f} s = "
          f"{per_plane_api * 1e3:.2f} ms/plane ({100 * result['throughput_ratio_api']:.0f} %, "
          f"{dtypes[0]})", flush=True)
    for name, seconds in list(apis.items())[1:]:
        per = statistics.median(seconds) / count
        print(f"  through diffuse(), {name} stack: {statistics.median(seconds):.3f} s = "
              f"{per * 1e3:.2f} ms/plane ({100 * plane_kernels / per:.0f} %)", flush=True)
    return result


def parse_shapes(spec: str) -> list[KernelShape]:
    """Kernel shapes from ``"V,R,LXxLY[,REGISTERS];..."`` (vector width, rows per item,
    work-group, NVIDIA register cap), e.g. ``"4,2,64x2;4,4,32x4,128"``."""
    shapes = []
    for item in filter(None, (part.strip() for part in spec.split(";"))):
        fields = [f.strip() for f in item.split(",")]
        if len(fields) not in (3, 4):
            raise SystemExit(f"shape {item!r}: expected V,R,LXxLY[,REGISTERS]")
        local = tuple(int(v) for v in fields[2].lower().split("x"))
        shapes.append(KernelShape(int(fields[0]), int(fields[1]), local,
                                  int(fields[3]) if len(fields) == 4 else 0))
    return shapes


def run_variants(device, presets, height, width, bandwidth, reference, results,
                 bspline_variants=BSPLINE_VARIANTS, pde_variants=PDE_VARIANTS,
                 channels: int = 4) -> Engine | None:
    """Time 4 iterations of the first preset per variant (B-spline and PDE shapes paired
    in turn); return an engine with the fastest B-spline shape and the fastest PDE shape
    (and its arithmetic) within the reference tolerances."""
    image = np.random.default_rng(0).random((height, width, channels), dtype=np.float32)
    plan = make_plan(DiffuseParams.from_preset(presets[0]).replace(iterations=4))
    results["variants"] = []
    print(f"variants ({presets[0]}, {channels} channel(s), 4 iterations, device ms per "
          "iteration):")
    best = {}
    count = max(len(bspline_variants), len(pde_variants))
    for k in range(count):
        bspline = bspline_variants[k % len(bspline_variants)]
        pde, fast = pde_variants[k % len(pde_variants)]
        label = f"bspline {tuple(bspline)}, pde {tuple(pde)}{' fast math' if fast else ''}"
        try:
            variant = Engine(device, vector_width=bspline.vector_width, rows=bspline.rows,
                             local_size=bspline.local_size, pde=pde, fast_math=fast,
                             profiling=True)
            device_profile(variant, image, plan, bandwidth)  # warm-up
            profile = min((device_profile(variant, image, plan, bandwidth) for _ in range(2)),
                          key=lambda p: p["per_iteration_ms"])
        except Exception as error:  # a shape the device refuses: report, go on
            print(f"  {label}: {type(error).__name__}: {error}", flush=True)
            continue
        worst = None
        if reference is not None:
            worst = max(max(r["max_abs"] / r["tolerance"]["max_abs"],
                            r["mean_abs"] / r["tolerance"]["mean_abs"])
                        for r in check_reference(solve_reference(variant), reference,
                                                verbose=False))
        times = {kind: sum(p["ms"] for p in profile["passes"] if p["kind"] == kind)
                 for kind in ("bspline", "pde")}
        worst_pass = {kind: min(p["efficiency"] for p in profile["passes"] if p["kind"] == kind)
                      for kind in ("bspline", "pde")}
        row = dict(bspline=list(bspline), pde=list(pde), fast_math=fast,
                   per_iteration_ms=profile["per_iteration_ms"], bspline_ms=times["bspline"],
                   pde_ms=times["pde"], efficiency=profile["efficiency"],
                   worst_bspline_pass=worst_pass["bspline"], worst_pde_pass=worst_pass["pde"],
                   worst_tolerance_ratio=worst)
        results["variants"].append(row)
        print(f"  {label}: {row['per_iteration_ms']:.2f} ms (bspline {times['bspline']:.2f} ms, "
              f"worst pass {100 * worst_pass['bspline']:.0f} %; pde {times['pde']:.2f} ms, worst "
              f"pass {100 * worst_pass['pde']:.0f} %; worst/tolerance {worst})", flush=True)
        if worst is None or worst <= 1.0:
            if "bspline" not in best or times["bspline"] < best["bspline"][0]:
                best["bspline"] = (times["bspline"], bspline)
            if "pde" not in best or times["pde"] < best["pde"][0]:
                best["pde"] = (times["pde"], pde, fast)
    if len(best) < 2:
        return None
    (_, bspline), (_, pde, fast) = best["bspline"], best["pde"]
    return Engine(device, vector_width=bspline.vector_width, rows=bspline.rows,
                  local_size=bspline.local_size, pde=pde, fast_math=fast, profiling=True)


def print_build_log(engine: Engine) -> None:
    """The compiler's log for each filtering kernel's program, built again verbosely."""
    from napari_diffuse.opencl_program import Program

    verbose = ("-cl-nv-verbose",) if "NVIDIA" in engine.device.platform.name else ()
    for name, shape in engine.shapes.items():
        try:
            program = Program(engine.context, engine.device, engine._source, shape,
                              engine.precise, engine.fast_math,
                              (*engine._build_options[name], *verbose))
            log = program._program.get_build_info(engine.device, cl.program_build_info.LOG)
        except cl.Error as error:
            log = f"{type(error).__name__}: {error}"
        lines = [line for line in log.splitlines() if name in line or "registers" in line
                 or "spill" in line or "stack" in line.lower()]
        print(f"build log, {name} {tuple(shape)}:")
        print("\n".join("  " + line for line in (lines or log.splitlines()[:20])))


def main(argv=None) -> dict:
    """Run the benchmark; print the tables and return (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--channels", default="4", help="comma-separated channel counts")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default=None, help="index or part of the name")
    parser.add_argument("--variants", action="store_true",
                        help="first compare vector widths, rows per item, work-group shapes")
    parser.add_argument("--bspline-shapes", default=None, metavar="V,R,LXxLY;...",
                        help="with --variants: the B-spline shapes to compare (vector width, "
                             "rows per item, work-group), e.g. '4,2,64x2;4,4,32x4'")
    parser.add_argument("--pde-shapes", default=None, metavar="V,R,LXxLY[,REG];...",
                        help="with --variants: the PDE shapes to compare, fast math, with an "
                             "optional NVIDIA register cap, e.g. '4,4,32x4,128;4,4,32x4,160'")
    parser.add_argument("--reference", type=Path, default=None,
                        help="folder of darktable reference vectors to check first")
    parser.add_argument("--api", action="store_true",
                        help="also time napari_diffuse.diffuse(..., backend='opencl') per "
                             "preset (host array in, host array out)")
    parser.add_argument("--stack", default=None, metavar="NxHxW",
                        help="also stream a single-channel stack of denoise: medium")
    parser.add_argument("--stack-dtypes", default="float32", metavar="DTYPE,...",
                        help="the stack's dtypes through diffuse() (integers span their "
                             "range), e.g. 'float32,uint16'")
    parser.add_argument("--details", action="store_true", help="print every pass")
    parser.add_argument("--general", action="store_true",
                        help="the general PDE program instead of one built for each preset's "
                             "structure (Engine(specialized=False)), also through diffuse()")
    parser.add_argument("--build-log", action="store_true",
                        help="print the compiler's report on the filtering kernels (NVIDIA: "
                             "registers and spills, through -cl-nv-verbose)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = select_device(args.device)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    engine = Engine(device, profiling=True, specialized=not args.general)
    if args.general:
        from napari_diffuse import opencl_solver

        opencl_solver.engine().specialized = False  # diffuse()'s engine too
    bandwidth = copy_bandwidth(engine.context, device, height * width * 16)
    results: dict = dict(device=f"{device.platform.name.strip()}: {device.name.strip()}",
                         size=[height, width], copy_bandwidth=bandwidth)
    print(f"device: {results['device']}")
    print(f"float4 copy kernel: {bandwidth / 1e12:.3f} TB/s (read + write), the roofline "
          "below", flush=True)
    if args.variants:
        bsplines = (parse_shapes(args.bspline_shapes) if args.bspline_shapes
                    else BSPLINE_VARIANTS)
        pdes = ([(shape, True) for shape in parse_shapes(args.pde_shapes)]
                if args.pde_shapes else PDE_VARIANTS)
        fastest = run_variants(device, presets, height, width, bandwidth, args.reference,
                               results, bsplines, pdes,
                               int(args.channels.split(",")[0]))
        engine = fastest or engine
    results.update(shapes={k: list(v) for k, v in engine.shapes.items()},
                   precise=engine.precise, fast_math=engine.fast_math,
                   specialized=engine.specialized,
                   build_options=engine._build_options)
    if args.build_log:
        print_build_log(engine)
    print(f"engine: B-spline {tuple(engine.shapes['bspline_level'])}, PDE "
          f"{tuple(engine.shapes['pde_step'])} (vector width, rows per item, work-group), "
          f"precise {engine.precise}, fast math {engine.fast_math}, PDE specialised "
          f"{engine.specialized}",
          flush=True)
    if args.reference is not None:
        print("reference parity:")
        results["reference"] = check_reference(solve_reference(engine), args.reference)
        print(f"  {sum(r['ok'] for r in results['reference'])}/{len(results['reference'])} "
              "within tolerance", flush=True)

    results["runs"] = []
    rng = np.random.default_rng(0)
    header = (f"\n{'preset':32s} {'C':>1s} {'it x sc':>7s} | {'host->host':>10s} | "
              f"{'device kernels':>14s} | {'of copy bw':>10s} | {'worst pass':>10s} | "
              f"{'upload + download':>17s} | {'diffuse()':>9s}")
    lines = []
    for channels in (int(c) for c in args.channels.split(",")):
        image = rng.random((height, width, channels), dtype=np.float32)
        for preset in presets:
            plan = make_plan(DiffuseParams.from_preset(preset))
            times = wall_times(lambda: engine.solve(image, plan), args.repeat)  # noqa: B023
            profile = device_profile(engine, image, plan, bandwidth)
            run = dict(preset=preset, channels=channels, iterations=plan.iterations,
                       scales=plan.scales, host_to_host_s=times,
                       median_s=statistics.median(times), **profile)
            if args.api and channels == 4:
                run["api_s"] = time_api(preset, image, args.repeat)
                run["api_median_s"] = statistics.median(run["api_s"])
            results["runs"].append(run)
            api = f"{run['api_median_s']:.3f} s" if "api_median_s" in run else "-"
            line = (f"{preset:32s} {channels:1d} {plan.iterations:3d} x {plan.scales:2d} | "
                    f"{run['median_s']:8.3f} s | {run['kernels_ms']:11.1f} ms | "
                    f"{100 * run['efficiency']:8.0f} % | {100 * run['worst_pass']:8.0f} % | "
                    f"{run['upload_ms']:6.1f} + {run['download_ms']:5.1f} ms | {api:>9s}")
            lines.append(line)
            print(line, flush=True)
            if args.details:
                for p in run["passes"]:
                    print(f"    {p['kind']:7s} scale {p['scale']}: {p['ms']:.3f} ms, "
                          f"{p['bandwidth'] / 1e12:.2f} TB/s ({100 * p['efficiency']:.0f} %)")
    print(header)
    print("\n".join(lines))
    print(f"(copy bandwidth {bandwidth / 1e12:.3f} TB/s; device kernels and passes: bytes "
          "moved / time against it; host->host: the solver; diffuse(): the API, whole planes)")
    print("\nfor reference, quoted (issue 11, H200, 2026-12-04, another run): darktable's "
          "kernels / diffuse() of napari-diffuse 0.1.0")
    for preset, (darktable, old) in QUOTED_H200.items():
        print(f"  {preset:32s} {darktable:.3f} s / {old:.3f} s")
    if args.stack:
        results["stack"] = stack_run(device, engine, args.stack, args.repeat,
                                     tuple(args.stack_dtypes.split(",")))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
