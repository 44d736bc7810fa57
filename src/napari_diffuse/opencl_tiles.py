"""Tile planning for the OpenCL solver: pure arithmetic on sizes (no device, no pyopencl).

An image too large for the device is cut into tiles whose padded regions overlap by
the run's full reach (:attr:`napari_diffuse.plan.Plan.full_reach`), so every tile's core
gets the whole-image result.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

__all__ = ["Tile", "plan_tiles"]


@dataclasses.dataclass(frozen=True)
class Tile:
    """A padded region of the image and, inside it, the core it is responsible for."""

    rows: slice
    cols: slice
    core_rows: slice  #: relative to the padded region
    core_cols: slice

    @property
    def origin(self) -> tuple[int, int]:
        """Row and column of the padded region's first pixel in the image."""
        return self.rows.start, self.cols.start


def _split(size: int, parts: int, overlap: int) -> list[tuple[slice, slice]]:
    """Cut ``range(size)`` into ``parts`` cores, each padded by ``overlap`` (clamped)."""
    step = -(-size // parts)
    spans = []
    for start in range(0, size, step):
        stop = min(start + step, size)
        lo, hi = max(start - overlap, 0), min(stop + overlap, size)
        spans.append((slice(lo, hi), slice(start - lo, stop - lo)))
    return spans


def plan_tiles(height: int, width: int, overlap: int,
               fits: Callable[[int, int], bool]) -> list[Tile] | None:
    """Return the fewest tiles, padded by ``overlap``, whose padded size ``fits(h, w)``.

    The longer padded side is split first. ``None`` if even one-pixel cores don't fit.
    """
    rows, cols = 1, 1
    while True:
        core_h, core_w = -(-height // rows), -(-width // cols)
        padded_h, padded_w = min(height, core_h + 2 * overlap), min(width, core_w + 2 * overlap)
        if fits(padded_h, padded_w):
            break
        if core_h == 1 and core_w == 1:
            return None
        if (padded_h >= padded_w and core_h > 1) or core_w == 1:
            rows = -(-height // (core_h - 1))
        else:
            cols = -(-width // (core_w - 1))
    return [Tile(r, c, core_r, core_c)
            for r, core_r in _split(height, rows, overlap)
            for c, core_c in _split(width, cols, overlap)]
