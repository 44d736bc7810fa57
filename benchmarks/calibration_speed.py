"""Time :func:`napari_diffuse.calibrate` on a 512x512 region, per backend.

Usage: ``python benchmarks/calibration_speed.py [--backends opencl,numpy] [--repeats 3]``.
Prints, per backend, the median seconds of ``calibrate(region=(0, 0, 512, 512))`` on
scikit-image's ``cell`` at 10 photons (Poisson-Gaussian noise), the candidates run, and
the device.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import skimage.data

from napari_diffuse import calibrate


def noisy_cell(peak: float = 10.0) -> np.ndarray:
    """scikit-image's ``cell`` (660x550) scaled to 0..1 with Poisson-Gaussian noise."""
    clean = skimage.data.cell().astype(np.float64)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    rng = np.random.default_rng(0)
    return (rng.poisson(clean * peak) / peak + rng.normal(0, 0.01, clean.shape)).astype(np.float32)


def device_name(backend: str) -> str:
    """The OpenCL device's name, or the CPU count for NumPy."""
    if backend == "numpy":
        import os
        return f"NumPy on {os.cpu_count()} CPU cores"
    from napari_diffuse import opencl_solver
    return str(opencl_solver.engine())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default="opencl")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = noisy_cell()
    print("| backend | device | median s (512x512 region) | candidates |")
    print("|---|---|---|---|")
    for backend in args.backends.split(","):
        calibrate(image[:64, :64], backend=backend, value_range=(0, 1))  # build, warm up
        seconds = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _, report = calibrate(image, backend=backend, region=(0, 0, 512, 512),
                                  value_range=(0, 1), extra_output=True)
            seconds.append(time.perf_counter() - start)
        print(f"| {backend} | {device_name(backend)} | {np.median(seconds):.2f} | "
              f"{report.evaluations} |")


if __name__ == "__main__":
    main()
