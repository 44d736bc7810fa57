"""The OpenCL solver's device time against the memory-bandwidth roofline.

For each preset, on a random ``HxWxC`` float32 image (default 6000x4000 RGBA):

- host array in -> host array out through the OpenCL solver (upload, every iteration,
  download), median of ``--repeat`` runs after a warm-up;
- with OpenCL profiling events: device time per iteration, per scale and kernel, the
  upload and the download, against the roofline ``bytes moved / bandwidth``. Each scale
  moves 6 image-sized arrays: the B-spline pass reads its input and writes LF and HF, the
  PDE pass reads HF and LF and writes its output.

``--variants`` first times 4 iterations of the first preset for several vector widths,
arithmetic modes and work-group shapes (checking each against ``--reference``), and runs
the presets with the fastest. ``--reference DIR`` checks parity with darktable's
reference vectors in DIR (``index.json`` + ``*.npz``).

Example::

    python benchmarks/opencl_roofline.py --size 6000x4000 --channels 4,1 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

from napari_diffuse import DiffuseParams
from napari_diffuse.opencl_devices import select_device
from napari_diffuse.opencl_solver import Engine
from napari_diffuse.plan import make_plan

PRESETS = ["denoise: medium", "lens deblur: medium", "dehaze", "bloom",
           "sharpen demosaicing: AA filter", "local contrast: fast"]
#: darktable's own OpenCL kernels on the H100, 6000x4000 RGBA, host to host, median of 3
#: (../shared/docs/environment-notes.md), for comparison.
DARKTABLE_H100_S = {"denoise: medium": 1.02, "lens deblur: medium": 0.76, "dehaze": 0.81,
                    "bloom": 0.48, "sharpen demosaicing: AA filter": 0.41,
                    "local contrast: fast": 0.45}
#: Image-sized float32 arrays read or written per scale (B-spline 1 + 2, PDE 2 + 1).
ARRAYS_PER_SCALE = 6
#: (vector width, precise, work-group) compared by ``--variants``.
VARIANTS = [(1, False, (64, 4)), (1, False, (128, 2)), (1, False, (256, 1)), (1, True, (64, 4)),
            (4, False, (64, 4)), (4, False, (32, 4)), (4, False, (64, 2)), (4, False, (128, 1)),
            (4, True, (64, 4)), (8, False, (32, 4))]


def _seconds(event) -> float:
    """A profiled event's device time, or seconds the solver measured on the host."""
    if isinstance(event, float):
        return event
    return (event.profile.end - event.profile.start) * 1e-9


def check_reference(engine: Engine, folder: Path, verbose: bool = True) -> list[dict]:
    """Run every reference file; return max/mean differences against the tolerances."""
    rows = []
    for entry in json.loads((folder / "index.json").read_text())["files"]:
        data = np.load(folder / entry["file"])
        params = DiffuseParams.from_darktable(json.loads(str(data["params_json"])))
        mask = data["mask"] if params.luminance_threshold > 0 else None
        difference = np.abs(engine.solve(data["input"], make_plan(params), mask) - data["output"])
        tolerance = entry["tolerance"]
        rows.append(dict(file=entry["file"], max_abs=float(difference.max()),
                         mean_abs=float(difference.mean()), tolerance=tolerance,
                         ok=bool(difference.max() <= tolerance["max_abs"]
                                 and difference.mean() <= tolerance["mean_abs"])))
        if verbose:
            row = rows[-1]
            print(f"  {entry['file']:48s} max {row['max_abs']:.2e} (<= {tolerance['max_abs']:.1e})"
                  f"  mean {row['mean_abs']:.2e} (<= {tolerance['mean_abs']:.1e})"
                  f"  {'ok' if row['ok'] else 'FAIL'}", flush=True)
    return rows


def device_profile(engine: Engine, image: np.ndarray, plan, bandwidth: float) -> dict:
    """Device time of one run, split by kernel kind and scale, with the roofline."""
    events: list = []
    engine.solve(image, plan, events=events)
    per: dict = {}
    for (kind, scale), event in events:
        per[(kind, scale)] = per.get((kind, scale), 0.0) + _seconds(event)
    image_bytes = image.nbytes
    scales = []
    for s in range(plan.scales):
        bspline = per[("bspline", s)] / plan.iterations
        pde = per[("pde", s)] / plan.iterations
        roofline = ARRAYS_PER_SCALE * image_bytes / bandwidth
        scales.append(dict(scale=s, bspline_ms=bspline * 1e3, pde_ms=pde * 1e3,
                           roofline_ms=roofline * 1e3,
                           efficiency=roofline / (bspline + pde)))
    kernels = sum(v for (kind, _), v in per.items() if kind in ("bspline", "pde"))
    roofline_run = plan.iterations * plan.scales * ARRAYS_PER_SCALE * image_bytes / bandwidth
    return dict(upload_ms=per[("upload", -1)] * 1e3, download_ms=per[("download", -1)] * 1e3,
                kernels_ms=kernels * 1e3, per_iteration_ms=kernels / plan.iterations * 1e3,
                roofline_ms=roofline_run * 1e3, efficiency=roofline_run / kernels,
                per_scale=scales)


def host_to_host(engine: Engine, image: np.ndarray, plan, repeat: int) -> list[float]:
    """Wall seconds of ``repeat`` host-array-to-host-array runs, after a warm-up."""
    engine.solve(image, plan)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        engine.solve(image, plan)
        times.append(time.perf_counter() - start)
    return times


def time_api(preset: str, height: int, width: int, repeat: int) -> dict:
    """Wall seconds of napari_diffuse.diffuse on an RGBA image, whole planes, OpenCL."""
    from napari_diffuse import diffuse

    image = np.random.default_rng(1).random((height, width, 4), dtype=np.float32)
    diffuse(image, preset=preset, channel_axis=-1, backend="opencl", exact=True)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        diffuse(image, preset=preset, channel_axis=-1, backend="opencl", exact=True)
        times.append(time.perf_counter() - start)
    print(f"api diffuse({preset!r}, backend='opencl'): median {statistics.median(times):.3f} s "
          f"{['%.3f' % t for t in times]}", flush=True)
    return dict(preset=preset, times_s=times, median_s=statistics.median(times))


def main(argv=None) -> dict:
    """Run the benchmark; print a table and return (and optionally save) the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--channels", default="4", help="comma-separated channel counts")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--bandwidth", type=float, default=3.0e12, help="bytes/s of the roofline")
    parser.add_argument("--device", default=None, help="index or part of the name")
    parser.add_argument("--variants", action="store_true",
                        help="first compare work-group shapes and vector widths")
    parser.add_argument("--reference", type=Path, default=None,
                        help="folder of darktable reference vectors to check first")
    parser.add_argument("--api", action="store_true",
                        help="also time napari_diffuse.diffuse(..., backend='opencl') for the "
                             "first preset (host array in, host array out, through the API)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)

    width, height = (int(v) for v in args.size.lower().split("x"))
    device = select_device(args.device)
    rng = np.random.default_rng(0)
    presets = [p.strip() for p in args.presets.split(",") if p.strip()]
    results: dict = dict(device=f"{device.platform.name.strip()}: {device.name.strip()}",
                         size=[height, width], bandwidth=args.bandwidth)
    print(f"device: {results['device']}", flush=True)
    engine = Engine(device, profiling=True)
    if args.variants:
        image = rng.random((height, width, 4), dtype=np.float32)
        plan = make_plan(DiffuseParams.from_preset(presets[0]).replace(iterations=4))
        results["variants"] = []
        print(f"variants ({presets[0]}, device ms per iteration):")
        fastest = None
        for vector_width, precise, local_size in VARIANTS:
            try:
                variant = Engine(device, vector_width=vector_width, local_size=local_size,
                                 precise=precise, profiling=True)
                device_profile(variant, image, plan, args.bandwidth)  # warm-up
                profile = min((device_profile(variant, image, plan, args.bandwidth)
                               for _ in range(2)), key=lambda p: p["per_iteration_ms"])
            except Exception as error:  # a shape the device refuses: report, go on
                print(f"  vector {vector_width} precise {precise} work-group {local_size}: "
                      f"{type(error).__name__}: {error}", flush=True)
                continue
            worst = None
            if args.reference is not None:
                worst = max(max(r["max_abs"] / r["tolerance"]["max_abs"],
                                r["mean_abs"] / r["tolerance"]["mean_abs"])
                            for r in check_reference(variant, args.reference, verbose=False))
            bspline = sum(s["bspline_ms"] for s in profile["per_scale"])
            pde = sum(s["pde_ms"] for s in profile["per_scale"])
            row = dict(vector_width=vector_width, precise=precise, local_size=list(local_size),
                       fitted_local_size={k: list(v) for k, v in
                                          variant._program(vector_width).local.items()},
                       per_iteration_ms=profile["per_iteration_ms"], bspline_ms=bspline,
                       pde_ms=pde, efficiency=profile["efficiency"],
                       worst_tolerance_ratio=worst)
            results["variants"].append(row)
            print(f"  vector {vector_width} precise {precise!s:5} work-group {local_size}: "
                  f"{row['per_iteration_ms']:.2f} ms (bspline {bspline:.2f}, pde {pde:.2f}; "
                  f"{100 * row['efficiency']:.0f} % of roofline; worst/tolerance {worst})",
                  flush=True)
            if (worst is None or worst <= 1.0) and (
                    fastest is None or row["per_iteration_ms"] < fastest[0]):
                fastest = (row["per_iteration_ms"], vector_width, precise, local_size)
            del variant
        if fastest is not None:
            _, vector_width, precise, local_size = fastest
            engine = Engine(device, vector_width=vector_width, local_size=local_size,
                            precise=precise, profiling=True)
    results.update(vector_width=engine.vector_width, precise=engine.precise,
                   local_size=list(engine.local_size))
    print(f"engine: vector width {engine.vector_width}, precise {engine.precise}, "
          f"work-group {engine.local_size}", flush=True)
    if args.reference is not None:
        print("reference parity:")
        results["reference"] = check_reference(engine, args.reference)
        print(f"  {sum(r['ok'] for r in results['reference'])}/{len(results['reference'])} "
              "within tolerance", flush=True)

    results["runs"] = []
    for channels in (int(c) for c in args.channels.split(",")):
        image = rng.random((height, width, channels), dtype=np.float32)
        for preset in presets:
            plan = make_plan(DiffuseParams.from_preset(preset))
            times = host_to_host(engine, image, plan, args.repeat)
            profile = device_profile(engine, image, plan, args.bandwidth)
            run = dict(preset=preset, channels=channels, iterations=plan.iterations,
                       scales=plan.scales, host_to_host_s=times,
                       median_s=statistics.median(times), **profile)
            results["runs"].append(run)
            if channels == 4 and (height, width) == (4000, 6000) and preset in DARKTABLE_H100_S:
                run["darktable_h100_s"] = DARKTABLE_H100_S[preset]
                print(f"  darktable's kernels on the H100: {DARKTABLE_H100_S[preset]:.2f} s, "
                      f"{DARKTABLE_H100_S[preset] / run['median_s']:.1f}x this run's median")
            print(f"{preset:32s} C={channels} {plan.iterations:3d} it x {plan.scales:2d} scales: "
                  f"host->host median {run['median_s']:.3f} s  device kernels "
                  f"{run['kernels_ms']:.1f} ms (roofline {run['roofline_ms']:.1f} ms, "
                  f"{100 * run['efficiency']:.0f} %), upload {run['upload_ms']:.1f} ms, "
                  f"download {run['download_ms']:.1f} ms", flush=True)
            for s in run["per_scale"]:
                print(f"    scale {s['scale']}: bspline {s['bspline_ms']:.3f} ms  pde "
                      f"{s['pde_ms']:.3f} ms  roofline {s['roofline_ms']:.3f} ms  "
                      f"({100 * s['efficiency']:.0f} %)")
    if args.api:
        results["api"] = time_api(presets[0], height, width, args.repeat)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
