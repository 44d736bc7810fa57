"""The integer survey's block size: ``intensity.extremes`` and ``check_image`` per block size.

``intensity.extremes`` (the min and max of every value, which ``value_range="auto"`` and
8- and 16-bit images whose sample stays below a quarter of their range need) scans each
thread's part in blocks of ``intensity._BLOCK_BYTES``. This times it, and
``check_image(value_range="auto")`` (which reads every value; ``None`` judges these
full-range arrays from their sample since 2026-12-07: the earlier logs' ``None`` column
timed, for the integer arrays, what ``"auto"`` does now), on four arrays with each block
size given, one after the other in one process (median of ``--repeat``), and checks every
result against NumPy's ``min()`` and ``max()``.

Example::

    python benchmarks/survey_blocks.py --blocks 64K-items,1M
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from host_overhead import median_time  # this folder: run as a script

from napari_diffuse import intensity


def _block_bytes(spec: str, itemsize: int) -> int:
    """``"1M"``, ``"256K"`` (bytes) or ``"64K-items"`` (the earlier, per-element size)."""
    items = spec.endswith("-items")
    spec = spec.removesuffix("-items")
    number = int(spec.rstrip("KM")) << {"K": 10, "M": 20}.get(spec[-1], 0)
    return number * itemsize if items else number


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", default="64K-items,1M",
                        help="comma-separated block sizes: 1M, 256K, or 64K-items")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args(argv)
    blocks = args.blocks.split(",")
    rng = np.random.default_rng(0)
    arrays = {
        "64x2048x2048 uint16": (rng.integers(0, 65536, (64, 2048, 2048), dtype=np.uint16), None),
        "6000x4000 RGBA float32": (rng.random((4000, 6000, 4), dtype=np.float32), -1),
        "6000x4000 RGBA uint16": (rng.integers(0, 65536, (4000, 6000, 4), dtype=np.uint16), -1),
        "6000x4000 RGBA uint8": (rng.integers(0, 256, (4000, 6000, 4), dtype=np.uint8), -1),
    }
    saved = intensity._BLOCK_BYTES
    print(f"{os.cpu_count()} CPUs; median of {args.repeat}, ms")
    print(f"{'array':24s}" + "".join(f" {'extremes ' + b:>20s} {'check_image ' + b:>22s}"
                                     for b in blocks))
    try:
        for name, (array, axis) in arrays.items():
            row = f"{name:24s}"
            for block in blocks:
                intensity._BLOCK_BYTES = _block_bytes(block, array.itemsize)
                assert intensity.extremes(array) == (float(array.min()), float(array.max()))
                scan = median_time(lambda a=array: intensity.extremes(a), args.repeat)
                check = median_time(lambda a=array, c=axis: intensity.check_image(a, c, "auto"),
                                    args.repeat)
                row += f" {scan * 1e3:20.1f} {check * 1e3:22.1f}"
            print(row, flush=True)
    finally:
        intensity._BLOCK_BYTES = saved


if __name__ == "__main__":
    main()
