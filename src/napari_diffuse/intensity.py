"""Intensity mapping: the caller's array <-> the solvers' float32 (planes, H, W, C) stack.

- float input is processed as given (scene-referred, nominally 0..1, above 1 allowed);
- integer input is mapped from its dtype's full range to 0..1, and back (rounded, clipped);
- ``value_range=(lo, hi)`` maps ``lo..hi`` to 0..1 and back instead, for other units
  (astro counts, 12-bit data in uint16, background-subtracted data with negatives).

The spatial axes are the last two axes that are not the channel axis; any leading axes
(Z, T, ...) are independent planes. The caller's array is never modified.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["Layout", "check_image", "to_planes", "from_planes", "to_working", "from_working",
           "above_threshold", "check_mask", "check_mask_shape"]


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a caller's array maps onto the solvers' ``(planes, H, W, C)`` float32 stack."""

    shape: tuple[int, ...]
    dtype: np.dtype
    channel_axis: int | None  #: normalised to a non-negative axis, or None
    offset: float  #: working = (value - offset) / scale
    scale: float

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """Shape of the leading (plane) axes, channel axis removed."""
        return self._moved_shape[:-3]

    @property
    def spatial_shape(self) -> tuple[int, int]:
        """``(H, W)``."""
        return self._moved_shape[-3:-1]

    @property
    def channels(self) -> int:
        """Number of channels (1 without a channel axis)."""
        return self._moved_shape[-1]

    @property
    def _moved_shape(self) -> tuple[int, ...]:
        if self.channel_axis is None:
            return (*self.shape, 1)
        rest = [n for i, n in enumerate(self.shape) if i != self.channel_axis]
        return (*rest, self.shape[self.channel_axis])


def check_image(image, channel_axis: int | None,
                value_range: Sequence[float] | None = None) -> Layout:
    """Validate an image and return its :class:`Layout`.

    Raises
    ------
    TypeError
        For a non-numeric, boolean or complex dtype.
    ValueError
        For fewer than 2 spatial dimensions, an empty array, a channel axis out of
        range, or an invalid ``value_range``.
    """
    dtype = np.dtype(image.dtype)
    if dtype.kind == "b":
        raise TypeError("image has dtype bool; diffuse a numeric image (a boolean array is a "
                        "mask: pass it as mask=...)")
    if dtype.kind not in "uif":
        raise TypeError(f"image has dtype {dtype}; accepted: unsigned/signed integers and "
                        "real floats (not complex, not objects or strings)")
    ndim = image.ndim
    if channel_axis is not None:
        if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
            raise TypeError(f"channel_axis={channel_axis!r} must be an int or None")
        if not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for a {ndim}-D "
                             f"image (accepted: {-ndim} to {ndim - 1}, or None)")
        channel_axis = int(channel_axis) % ndim
    spatial_dims = ndim - (channel_axis is not None)
    if spatial_dims < 2:
        raise ValueError(f"image has shape {image.shape} (channel_axis={channel_axis}): it needs "
                         "at least 2 spatial dimensions (..., height, width)")
    if 0 in image.shape:
        raise ValueError(f"image is empty (shape {image.shape})")
    if value_range is not None:
        lo, hi = (float(v) for v in value_range)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
            raise ValueError(f"value_range={tuple(value_range)} must be two finite numbers "
                             "(lo, hi) with hi > lo")
        offset, scale = lo, hi - lo
    elif dtype.kind in "ui":
        info = np.iinfo(dtype)
        offset, scale = float(info.min), float(info.max) - float(info.min)
    else:
        offset, scale = 0.0, 1.0
    return Layout(tuple(image.shape), dtype, channel_axis, offset, scale)


def check_finite(planes: np.ndarray, layout: Layout,
                 origin: tuple[int, int, int] | None = None) -> None:
    """Raise ``ValueError`` naming how many NaN/Inf values there are and where the first is.

    ``origin=(plane, row, col)`` says that ``planes`` is a chunk of the image starting
    there: the message then counts the chunk's values and gives the image's index.
    """
    if np.isfinite(np.sum(planes)):
        return  # NaN and Inf propagate through a sum (an overflow looks below)
    bad = ~np.isfinite(planes)
    if bad.any():
        n_nan = int(np.isnan(planes).sum())
        first = np.unravel_index(int(np.argmax(bad.ravel())), planes.shape)
        where = "image"
        if origin is not None:
            first = (first[0] + origin[0], first[1] + origin[1], first[2] + origin[2], first[3])
            where = "a chunk of the image"
        position = _caller_index(first, layout)
        raise ValueError(
            f"{where} contains {n_nan} NaN and {int(bad.sum()) - n_nan} infinite value(s); the "
            f"first is at index {position}. Replace them first, e.g. with numpy.nan_to_num "
            "or by masking them and inpainting (mask=...)")


def _caller_index(index, layout: Layout) -> tuple[int, ...]:
    plane, row, col, channel = (int(i) for i in index)
    lead = np.unravel_index(plane, layout.leading_shape) if layout.leading_shape else ()
    position = [*(int(i) for i in lead), row, col]
    if layout.channel_axis is not None:
        position.insert(layout.channel_axis, channel)
    return tuple(position)


def to_planes(image, layout: Layout) -> np.ndarray:
    """Return a float32 ``(planes, H, W, C)`` array in working units (0..1 nominal).

    A view of ``image`` when no conversion is needed (see :func:`to_working`): read only.
    """
    data = np.asarray(image)
    if layout.channel_axis is not None:
        data = np.moveaxis(data, layout.channel_axis, -1)
    else:
        data = data[..., None]
    height, width = layout.spatial_shape
    return to_working(data.reshape(-1, height, width, layout.channels), layout)


def to_working(values, layout: Layout) -> np.ndarray:
    """Return ``values`` (caller's units) as float32 in working units.

    Float32 values that need no mapping come back as they are (a view, not a copy):
    callers only read the result. Elementwise, so it applies to a whole image or to
    any chunk of it.
    """
    values = np.asarray(values)
    if layout.offset == 0.0 and layout.scale == 1.0:
        return values.astype(np.float32, copy=False)
    work = values.astype(np.float32, copy=True)
    work -= np.float32(layout.offset)
    work /= np.float32(layout.scale)
    return work


def from_working(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Return working-unit ``values`` in the caller's units and dtype (rounded, clipped).

    Elementwise, so it applies to a whole image or to any chunk of it.
    """
    data = values
    if layout.offset != 0.0 or layout.scale != 1.0:
        data = data.astype(np.float64) * layout.scale + layout.offset
    if layout.dtype.kind in "ui":
        info = np.iinfo(layout.dtype)
        data = np.clip(np.rint(data), info.min, info.max)
    return data.astype(layout.dtype, copy=False)


def above_threshold(work: np.ndarray, threshold: float) -> np.ndarray:
    """Return darktable's luminance mask of a working ``(..., C)`` array: bool ``(...)``.

    True where any colour channel is above ``threshold``: R, G, B of 3 or 4 channels
    (a 4th channel is alpha), every channel otherwise.
    """
    colour = work[..., :3] if work.shape[-1] in (3, 4) else work
    return (colour > np.float32(threshold)).any(axis=-1)


def from_planes(planes: np.ndarray, layout: Layout) -> np.ndarray:
    """Return the caller's shape and dtype from a working ``(planes, H, W, C)`` array."""
    data = from_working(planes, layout).reshape(*layout.leading_shape, *layout.spatial_shape,
                                                layout.channels)
    if layout.channel_axis is None:
        return np.ascontiguousarray(data[..., 0])
    return np.ascontiguousarray(np.moveaxis(data, -1, layout.channel_axis))


def check_mask(mask, layout: Layout) -> np.ndarray:
    """Return ``mask`` as a bool ``(planes, H, W)`` array.

    It may have the spatial shape ``(H, W)`` (used for every plane) or the leading plus
    spatial shape.

    Raises
    ------
    ValueError
        If the shape fits neither.
    """
    mask = np.asarray(mask)
    check_mask_shape(mask, layout)
    height, width = layout.spatial_shape
    planes = int(np.prod(layout.leading_shape, dtype=np.int64))
    return np.broadcast_to(mask.astype(bool), (*layout.leading_shape, height, width)) \
        .reshape(planes, height, width)


def check_mask_shape(mask, layout: Layout) -> None:
    """Check a mask's shape and dtype against ``layout`` without reading its values.

    Works on any array-like with ``shape`` and ``dtype`` (NumPy, dask, zarr).

    Raises
    ------
    ValueError
        If the shape is neither ``(H, W)`` nor the image's leading plus spatial shape.
    TypeError
        If the dtype is not boolean or integer.
    """
    height, width = layout.spatial_shape
    accepted = [(height, width), (*layout.leading_shape, height, width)]
    if tuple(mask.shape) not in accepted:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; accepted: {accepted[0]} or "
                         f"{accepted[1]} (the image's spatial shape, optionally with its "
                         "leading axes)")
    if np.dtype(mask.dtype).kind not in "biu":
        raise TypeError(f"mask has dtype {mask.dtype}; pass a boolean (or 0/1 integer) array")
