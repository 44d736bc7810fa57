"""Two kernel folders side by side on one OpenCL device: a change to ``kernels/`` measured.

Builds one engine on ``--old`` (for instance ``git show REV:kernels/pde.cl`` and the other
files copied into a folder) and one on ``--new`` (default: this tree's ``kernels/``), checks
both against darktable's reference vectors (``--reference``), then for each preset on a
random ``--size`` image, RGBA and 1 channel, alternates profiled runs of the two engines
(``--rounds``, at most 4 iterations each) and prints the medians: device time per
iteration, the PDE passes' time per iteration and their worst pass against the device's
float4 copy bandwidth, and the largest and mean difference between the two results.

Both engines take this tree's build options and register caps
(``opencl_program.plan_options``, ``pde_shape``). A ``pde.cl`` from 3c68bb5 or earlier
tests ``#ifdef PDE_REGULARIZED``, which the option ``-DPDE_REGULARIZED=0`` (plans that
never regularise, e.g. *bloom*) would turn on: change that line to
``#if defined(PDE_REGULARIZED) && PDE_REGULARIZED`` in the old copy. Those kernels also
ran heavy plans (3-4 steered orders) at 168 registers on NVIDIA, where they now get 128.

Example::

    python benchmarks/kernels_ab.py --old /tmp/old-kernels --reference ../shared/reference
"""

import argparse
import statistics
from pathlib import Path

import numpy as np
from opencl_roofline import (  # this folder: run as a script
    PRESETS,
    check_reference,
    copy_bandwidth,
    device_profile,
    solve_reference,
)

from napari_diffuse import DiffuseParams
from napari_diffuse.opencl_devices import select_device
from napari_diffuse.opencl_engine import Engine
from napari_diffuse.plan import make_plan


def pde_figures(profiles: list[dict]) -> tuple[float, float, float]:
    """Medians over ``profiles`` (:func:`device_profile`): ms per iteration, PDE ms per
    iteration, the worst PDE pass's share of the copy bandwidth."""
    def pde(profile):
        return [p for p in profile["passes"] if p["kind"] == "pde"]

    return (statistics.median(p["per_iteration_ms"] for p in profiles),
            statistics.median(sum(p["ms"] for p in pde(r)) for r in profiles),
            statistics.median(min(p["efficiency"] for p in pde(r)) for r in profiles))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the kernel folder to compare")
    parser.add_argument("--new", type=Path, default=None,
                        help="default: the kernels napari_diffuse runs")
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--presets", default=",".join(PRESETS), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default=None, help="index or part of the name")
    parser.add_argument("--reference", type=Path, default=None)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    device = select_device(args.device)
    engines = {name: Engine(device, folder, profiling=True)
               for name, folder in (("old", args.old), ("new", args.new))}
    bandwidth = copy_bandwidth(engines["new"].context, device, width * height * 16)
    print(f"device: {device.name.strip()}; float4 copy {bandwidth / 1e12:.3f} TB/s", flush=True)
    if args.reference is not None:
        for name, engine in engines.items():
            rows = check_reference(solve_reference(engine), args.reference, verbose=False)
            print(f"{name}: {sum(r['ok'] for r in rows)}/{len(rows)} reference files within "
                  "tolerance", flush=True)
    rng = np.random.default_rng(0)
    print(f"{'preset':32s} C | {'old ms/it':>9s} {'pde':>6s} {'worst':>5s} | {'new ms/it':>9s} "
          f"{'pde':>6s} {'worst':>5s} | new/old pde | max|new-old|  mean")
    for channels in (4, 1):
        image = rng.random((height, width, channels), dtype=np.float32)
        for preset in args.presets.split(","):
            params = DiffuseParams.from_preset(preset)
            plan = make_plan(params.replace(iterations=min(params.iterations, 4)))
            results = {name: engine.solve(image, plan) for name, engine in engines.items()}
            difference = np.abs(results["new"] - results["old"])
            profiles = {name: [] for name in engines}
            for _ in range(args.rounds):
                for name, engine in engines.items():
                    profiles[name].append(device_profile(engine, image, plan, bandwidth))
            old, new = (pde_figures(profiles[name]) for name in ("old", "new"))
            print(f"{preset:32s} {channels} | {old[0]:9.3f} {old[1]:6.3f} {100 * old[2]:4.0f}% | "
                  f"{new[0]:9.3f} {new[1]:6.3f} {100 * new[2]:4.0f}% | {new[1] / old[1]:11.3f} | "
                  f"{difference.max():.1e}  {difference.mean():.1e}", flush=True)


if __name__ == "__main__":
    main()
