"""Where ``diffuse()`` spends host time around the OpenCL solver, step by step.

On a random ``HxWx4`` image (default 6000x4000, float32; ``--dtype uint16`` for a
camera's integers): each host step of
``napari_diffuse.diffuse(image, preset=..., channel_axis=-1, backend="opencl")`` timed on
its own (median of ``--repeat``): allocating and touching an output, the value-range
survey, the working-range and NaN/Inf checks, the mapping to and from working units, the
solver host to host (float32 working values), and ``diffuse()`` itself. The gap between
``diffuse()`` and the solver is the host overhead. ``diffuse()`` maps 8- and 16-bit
integers on an OpenCL device with double precision: the ``to_planes``, ``check_values``
and ``from_planes`` rows are then steps it no longer takes.

Example::

    python benchmarks/host_overhead.py --size 6000x4000 --dtype uint16
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from napari_diffuse import DiffuseParams, diffuse, intensity
from napari_diffuse.plan import make_plan


def seconds(run) -> float:
    """Wall seconds of one call of ``run()``."""
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def wall_times(run, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls of ``run()``, after one warm-up call."""
    run()
    return [seconds(run) for _ in range(repeat)]


def median_time(run, repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``run()``, after one warm-up call."""
    return statistics.median(wall_times(run, repeat))


def in_dtype(values: np.ndarray, dtype) -> np.ndarray:
    """0..1 float ``values`` as ``dtype``: integers span their dtype's whole range."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return np.rint(values * np.iinfo(dtype).max).astype(dtype)
    return values.astype(dtype, copy=False)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT")
    parser.add_argument("--preset", default="denoise: medium")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=None,
                        help="override the preset's iterations (a CPU device: fewer)")
    parser.add_argument("--dtype", default="float32",
                        help="the image's dtype: integers span their whole range")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    image = in_dtype(np.random.default_rng(0).random((height, width, 4), dtype=np.float32),
                     args.dtype)
    layout = intensity.check_image(image, -1, "dtype")
    work = intensity.to_planes(image, layout)
    overrides = {} if args.iterations is None else {"iterations": args.iterations}
    plan = make_plan(DiffuseParams.from_preset(args.preset).replace(**overrides))
    from napari_diffuse import opencl_solver

    steps = {
        "np.empty_like + first touch (page faults)": lambda: np.empty_like(image).fill(0),
        "np.empty_like + np.copyto": lambda: np.copyto(np.empty_like(image), image),
        "min + max (NumPy, one thread)": lambda: (image.min(), image.max()),
        "intensity.extremes (threaded, one pass)": lambda: intensity.extremes(image),
        "np.sum (the former NaN/Inf check)": lambda: np.sum(work),
        "check_image (value-range survey)": lambda: intensity.check_image(image, -1, None),
        "to_planes (working-range check)": lambda: intensity.to_planes(image, layout),
        "check_values (NaN/Inf and working range)":
            lambda: intensity.check_values(work, layout),
        "from_planes": lambda: intensity.from_planes(work, layout),
        "solver, host to host": lambda: opencl_solver.solve(work[0], plan),
        "diffuse()": lambda: diffuse(image, preset=args.preset, channel_axis=-1,
                                     backend="opencl", **overrides),
    }
    results = {}
    for name, run in steps.items():
        results[name] = median_time(run, args.repeat)
        print(f"{name:45s} {results[name] * 1e3:8.1f} ms", flush=True)
    print(f"{'diffuse() - solver':45s} "
          f"{(results['diffuse()'] - results['solver, host to host']) * 1e3:8.1f} ms")
    return results


if __name__ == "__main__":
    main()
