"""Benchmark napari-diffuse's solvers, optionally side by side with darktable's own module.

Usage (from the repository root)::

    python benchmarks/run.py                       # numpy, 3 presets, 2048x2048, RGBA and 1 channel
    python benchmarks/run.py --backends numpy,opencl --darktable --repeat 3
    python benchmarks/run.py --sizes 6000x4000 --channels 4 --backends opencl

Prints one row per (preset, size, channels, backend): the median wall time of ``diffuse()``
(host array in, host array out, after one warm-up run), megapixel-iterations per second,
and with ``--darktable`` the median of darktable-cli's own module time (``dtpeer``, run
alternately with ours on the same input) the ratio ours / darktable, and the largest
difference between darktable's output and ours (R, G, B; it includes darktable's colour
round trip, about 3e-5 for values <= 1).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from napari_diffuse import DiffuseParams, diffuse

DEFAULT_PRESETS = ["denoise: medium", "lens deblur: medium", "dehaze"]
PEER_DIR = Path(os.environ.get("DTPEER_DIR", Path(__file__).resolve().parents[2] / "shared" /
                               "peers" / "darktable-cli"))


def test_image(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    """A reproducible linear image: smooth structures plus fine noise, 0..1, alpha 0."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 0.4 + 0.3 * np.sin(x / 37.0) * np.cos(y / 23.0)
    image = base[..., None] + rng.normal(0, 0.02, (height, width, channels)).astype(np.float32)
    image = np.clip(image, 0, None).astype(np.float32)
    if channels == 4:
        image[..., 3] = 0.0
    return image


def _darktable_peer():
    sys.path.insert(0, str(PEER_DIR))
    import dtpeer

    return dtpeer


def _time(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(DEFAULT_PRESETS),
                        help="comma-separated preset names")
    parser.add_argument("--sizes", default="2048x2048", help="comma-separated HxW")
    parser.add_argument("--channels", default="4,1", help="comma-separated channel counts")
    parser.add_argument("--backends", default="numpy", help="comma-separated: numpy,opencl")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per row (median)")
    parser.add_argument("--darktable", action="store_true",
                        help="also time darktable-cli's module (4-channel rows), alternately")
    args = parser.parse_args(argv)

    peer = _darktable_peer() if args.darktable else None
    rows = []
    print(_header(), flush=True)
    for preset in args.presets.split(","):
        params = DiffuseParams.from_preset(preset)
        for size in args.sizes.split(","):
            height, width = (int(v) for v in size.lower().split("x"))
            for channels in (int(c) for c in args.channels.split(",")):
                image = test_image(height, width, channels)
                channel_axis = -1 if channels > 1 else None
                data = image if channels > 1 else image[..., 0]
                runs = {b: [] for b in args.backends.split(",")}
                outputs = {}
                darktable, dt_output = [], None
                for backend in runs:  # warm-up: kernel builds, caches, thread pools
                    outputs[backend] = diffuse(data, params, channel_axis=channel_axis,
                                               backend=backend)
                for _ in range(args.repeat):
                    if peer is not None and channels >= 3:
                        dt_output, info = peer.run_diffuse(image[..., :3], params.to_darktable(),
                                                           threads=os.cpu_count())
                        darktable.append(info["module_seconds"])
                    for backend, times in runs.items():
                        times.append(_time(functools.partial(
                            diffuse, data, params, backend=backend, channel_axis=channel_axis)))
                for backend, times in runs.items():
                    median = statistics.median(times)
                    rate = height * width / 1e6 * max(params.iterations, 1) / median
                    dt = statistics.median(darktable) if darktable else None
                    difference = None if dt_output is None else \
                        float(np.abs(outputs[backend][..., :3] - dt_output).max())
                    rows.append((preset, size, channels, backend, median, rate, dt,
                                 median / dt if dt else None, difference))
                    print(_format(rows[-1]), flush=True)


def _header() -> str:
    return (f"{'preset':<22} {'size':>10} {'ch':>3} {'backend':>8} {'median s':>9} "
            f"{'MPix*it/s':>10} {'darktable s':>12} {'ours/dt':>8} {'max|dt-ours|':>13}")


def _format(row) -> str:
    preset, size, channels, backend, median, rate, dt, ratio, difference = row
    dt_text = f"{dt:12.2f}" if dt is not None else f"{'-':>12}"
    ratio_text = f"{ratio:8.2f}" if ratio is not None else f"{'-':>8}"
    diff_text = f"{difference:13.2e}" if difference is not None else f"{'-':>13}"
    return (f"{preset:<22} {size:>10} {channels:>3} {backend:>8} {median:9.3f} {rate:10.1f} "
            f"{dt_text} {ratio_text} {diff_text}")


if __name__ == "__main__":
    main()
