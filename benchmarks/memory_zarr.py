"""Peak memory of a large image diffused lazily from one zarr store to another.

Creates a ``SIZE x SIZE`` single-channel float32 zarr store chunk by chunk (smooth
structures plus noise), runs ``diffuse(..., preset)`` on it lazily with dask and writes
the result to a second store with ``dask.array.to_zarr``. The job runs in a fresh
subprocess, so its peak resident memory (``ru_maxrss``, cross-checked by a thread
sampling ``/proc/self/statm``) belongs to this job alone. Prints a table.

Usage::

    python benchmarks/memory_zarr.py --size 16384 --preset "denoise: medium"
    python benchmarks/memory_zarr.py --size 8192 --size 16384   # several sizes, one table

The issue's target: 16384 x 16384 with ``denoise: medium`` under 2 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class _Sampler(threading.Thread):
    """Samples this process's resident memory every ``interval`` seconds."""

    def __init__(self, interval: float = 0.05):
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, 0, threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


def _block_values(block, block_info=None):
    """Smooth blobs plus noise for one chunk, seeded by the chunk's position."""
    import numpy as np

    (r0, r1), (c0, c1) = block_info[None]["array-location"]
    rng = np.random.default_rng([r0, c0])
    rows = np.arange(r0, r1, dtype=np.float32)[:, None]
    cols = np.arange(c0, c1, dtype=np.float32)[None, :]
    smooth = 0.35 + 0.25 * np.sin(rows / 97.0) * np.cos(cols / 131.0)
    return (smooth + rng.normal(0.0, 0.05, smooth.shape)).clip(0, None).astype(np.float32)


def make_input(path: str, size: int, chunk: int) -> None:
    """Write the input store chunk by chunk (never the whole image in memory)."""
    import dask.array as da
    import numpy as np

    template = da.empty((size, size), dtype=np.float32, chunks=chunk)
    template.map_blocks(_block_values, dtype=np.float32).to_zarr(path, overwrite=True)


def run_job(source: str, target: str, preset: str, workers: int) -> dict:
    """Diffuse ``source`` into ``target`` lazily; return timings and memory figures."""
    import dask
    import dask.array as da

    from napari_diffuse import diffuse
    from napari_diffuse.params import DiffuseParams
    from napari_diffuse.plan import make_plan
    from napari_diffuse.tiling import influence_depth, plan_tiling, solver_bytes_per_pixel

    sampler = _Sampler()
    sampler.start()
    start = time.perf_counter()
    image = da.from_zarr(source)
    result = diffuse(image, preset=preset, backend="numpy")
    with dask.config.set(scheduler="threads", num_workers=workers):
        result.to_zarr(target, overwrite=True)
    wall = time.perf_counter() - start
    sampled = sampler.stop()
    params = DiffuseParams.from_preset(preset)
    plan = make_plan(params)
    tiling = plan_tiling(image.shape, 1, params, plan, input_chunks=image.chunks)
    block = max(tiling.chunks[0]) + 2 * tiling.depth[0]
    check = da.from_zarr(target)
    return {
        "size": image.shape[0], "chunk": image.chunksize[0], "depth": tiling.depth[0],
        "auto_depth": influence_depth(params, plan), "full_reach": tiling.full_reach,
        "workers": workers, "wall_s": wall,
        "block_mb": block * block * solver_bytes_per_pixel(plan, 1) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "sampled_rss_mb": sampled / 2**20,
        "output_mean": float(check[::64, ::64].mean().compute()),
    }


def _child(args) -> None:
    if args.child == "input":
        make_input(args.source, args.size[0], args.chunk)
        print(json.dumps({}))
    else:
        print(json.dumps(run_job(args.source, args.target, args.preset, args.workers)))


def _in_subprocess(*argv: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True,
                          text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    """Parse the arguments, run each size in fresh subprocesses, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, action="append", help="image edge (repeatable)")
    parser.add_argument("--chunk", type=int, default=2048, help="zarr and dask chunk edge")
    parser.add_argument("--preset", default="denoise: medium")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="dask threads")
    parser.add_argument("--dir", default=None, help="where the stores go (default: a temp dir)")
    parser.add_argument("--child", choices=["input", "job"], help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.size = args.size or [16384]
    if args.child:
        _child(args)
        return
    root = args.dir or tempfile.mkdtemp(prefix="napari-diffuse-zarr-")
    print(f"{'size':>6} {'chunk':>5} {'depth':>5} {'full reach':>10} {'workers':>7} "
          f"{'block MiB':>9} {'peak RSS MiB':>12} {'sampled MiB':>11} {'wall s':>8}", flush=True)
    for size in args.size:
        source = os.path.join(root, f"input-{size}.zarr")
        target = os.path.join(root, f"output-{size}.zarr")
        try:
            _in_subprocess("--child", "input", "--source", source, "--size", str(size),
                           "--chunk", str(args.chunk))
            row = _in_subprocess("--child", "job", "--source", source, "--target", target,
                                 "--preset", args.preset, "--workers", str(args.workers))
        finally:
            if args.dir is None:
                shutil.rmtree(source, ignore_errors=True)
                shutil.rmtree(target, ignore_errors=True)
        print(f"{row['size']:>6} {row['chunk']:>5} {row['depth']:>5} {row['full_reach']:>10} "
              f"{row['workers']:>7} {row['block_mb']:>9.0f} {row['peak_rss_mb']:>12.0f} "
              f"{row['sampled_rss_mb']:>11.0f} {row['wall_s']:>8.1f}", flush=True)
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
