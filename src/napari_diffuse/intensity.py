"""Intensity mapping: the caller's array <-> the solvers' float32 (planes, H, W, C) stack.

- ``value_range="dtype"``: float input is processed as given (scene-referred, nominally
  0..1, above 1 allowed); integer input is mapped from its dtype's full range to 0..1,
  and back (rounded, clipped);
- ``value_range=(lo, hi)`` maps ``lo..hi`` to 0..1 and back instead, for other units
  (astro counts, 12-bit data in uint16, background-subtracted data with negatives);
- ``value_range="auto"`` takes ``(lo, hi)`` from robust percentiles (:func:`auto_range`);
- ``value_range=None`` (the default) is ``"dtype"`` unless the data is clearly not on a
  0..1 scale (:func:`check_image`): then ``"auto"``, with an :class:`IntensityWarning`.

One mapping serves the whole image, so chunks of it (:mod:`.tiling`) share it.

The spatial axes are the last two axes that are not the channel axis; any leading axes
(Z, T, ...) are independent planes. The caller's array is never modified.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import math
import numbers
import os
import warnings
from collections.abc import Sequence

import numpy as np

__all__ = ["Layout", "IntensityWarning", "SAMPLE_SIZE", "auto_range", "check_image",
           "check_value_range", "check_values", "to_planes", "from_planes", "to_working",
           "from_working", "above_threshold", "caller_planes", "caller_shape", "maps_in_float32",
           "check_mask", "check_mask_shape", "MAX_WORKING", "peak_magnitude", "to_plane"]

#: At most this many values (a strided subsample) estimate the percentiles of
#: :func:`auto_range`; NumPy and dask input of one shape use the same subsample.
SAMPLE_SIZE = 2_000_000
#: The robust range's percentiles (in %).
_PERCENTILES = (0.1, 99.9)
#: Samples at least this large take those percentiles from their tails alone
#: (:func:`_tail_percentiles`); smaller ones from :func:`numpy.percentile`.
_TAIL_MIN = 100_000
#: ``value_range=None`` switches to ``"auto"`` for floats whose 99.9th percentile is above
#: this, or whose 0.1th percentile is below ``-_NEGATIVE_FRACTION * max(1, p99.9)``...
_FLOAT_HIGH = 16.0
_NEGATIVE_FRACTION = 0.25
#: ...and for integers whose maximum is at most this fraction of the dtype's maximum.
_INTEGER_FRACTION = 0.25
_ACCEPTED = ("accepted: None (detect), 'auto' (robust percentiles), 'dtype' (floats as "
             "stored, integers from their dtype's full range) or (lo, hi), two finite "
             "numbers with hi > lo")


class IntensityWarning(UserWarning):
    """The image is clearly not on a 0..1 scale: ``value_range='auto'`` is used instead."""


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a caller's array maps onto the solvers' ``(planes, H, W, C)`` float32 stack."""

    shape: tuple[int, ...]
    dtype: np.dtype
    channel_axis: int | None  #: normalised to a non-negative axis, or None
    offset: float  #: working = (value - offset) / scale
    scale: float
    #: The whole image's finite ``(min, max)`` when it was read to find its value range
    #: (NumPy input, ``value_range`` None or "auto") and holds no NaN/Inf; else None. The
    #: working-range and NaN/Inf checks of this image (and of any part of it) then need
    #: no pass over the data of their own.
    extremes: tuple[float, float] | None = None

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
                value_range: str | Sequence[float] | None = None, *,
                stacklevel: int = 2) -> Layout:
    """Validate an image and return its :class:`Layout`.

    Parameters
    ----------
    image : array_like or dask.array.Array
        The caller's image (not modified). Read only for ``"auto"`` and ``None``: for a
        dask array, those compute its range now (one pass over the data).
    channel_axis : int or None
        The channel axis, or None for one channel.
    value_range : None, "auto", "dtype" or (float, float)
        What maps to the working range 0..1 (values outside it are allowed: below 0
        becomes 0 in the solvers, above 1 stays above 1):

        - ``(lo, hi)``: ``lo..hi``;
        - ``"dtype"``: floats as stored (0..1), integers their dtype's full range;
        - ``"auto"``: :func:`auto_range` (robust percentiles, negatives kept);
        - ``None``: ``"dtype"``, unless the data is clearly not on a 0..1 scale: an
          integer image whose maximum is at most 1/4 of its dtype's maximum (e.g.
          12-bit data in uint16), or a float image whose 99.9th percentile is above 16
          or whose 0.1th percentile is below ``-0.25 * max(1, p99.9)`` (largely
          negative). Then ``"auto"`` is used, with an :class:`IntensityWarning`; not
          for an image without spread (0.1th = 99.9th percentile, e.g. constant),
          which keeps ``"dtype"``.
    stacklevel : int
        Passed to :func:`warnings.warn`: which caller the warning names.

    Returns
    -------
    Layout
        The shape, dtype, channel axis and intensity mapping.

    Warns
    -----
    IntensityWarning
        With ``value_range=None``, when ``"auto"`` replaces ``"dtype"`` (see above).

    Raises
    ------
    TypeError
        For a non-numeric, boolean or complex dtype, or a ``value_range`` of the wrong
        type.
    ValueError
        For fewer than 2 spatial dimensions, an empty array, a channel axis out of
        range, an invalid ``value_range``, or ``"auto"`` on an image without spread.
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
    value_range = check_value_range(value_range)
    known = None
    sample = None
    if value_range is None and not _is_dask(image):
        sample = _sample(np.asarray(image), channel_axis)
        if _sample_keeps_dtype(sample, dtype):
            value_range = "dtype"
    if value_range is None or value_range == "auto":
        # integers are detected from their maximum and "auto" starts at the minimum: those
        # read every value; a float image's detection needs only the sample's percentiles
        survey = _survey(image, channel_axis, every_value=dtype.kind in "ui"
                         or value_range == "auto", sample=sample)
        if value_range is None:
            value_range, survey = _detect(survey, image, dtype, stacklevel + 1)
        else:
            value_range = _auto_range(survey)
        if survey is not None and survey.read_all:
            known = (survey.minimum, survey.maximum)
    if value_range == "dtype":
        value_range = (float(np.iinfo(dtype).min), float(np.iinfo(dtype).max)) \
            if dtype.kind in "ui" else (0.0, 1.0)
    lo, hi = value_range
    return Layout(tuple(image.shape), dtype, channel_axis, lo, hi - lo, known)


def check_value_range(value_range) -> str | tuple[float, float] | None:
    """Return ``value_range`` as None, ``"auto"``, ``"dtype"`` or a float pair.

    Raises
    ------
    ValueError, TypeError
        For an unknown mode, a pair that is not two finite numbers with hi > lo.
    """
    if value_range is None or isinstance(value_range, str) and value_range in ("auto", "dtype"):
        return value_range
    if isinstance(value_range, (str, bytes)):
        raise ValueError(f"value_range={value_range!r} is not a known mode; {_ACCEPTED}")
    try:
        values = tuple(value_range)
    except TypeError:
        raise TypeError(f"value_range={value_range!r} is not a pair; {_ACCEPTED}") from None
    if len(values) != 2:
        raise ValueError(f"value_range={value_range!r} has {len(values)} values, not 2; "
                         f"{_ACCEPTED}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"value_range={value_range!r} must hold two numbers; {_ACCEPTED}")
    try:
        lo, hi = (float(v) for v in values)
    except OverflowError:
        lo = hi = math.inf
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"value_range={value_range!r} must be two finite numbers (lo, hi) "
                         f"with hi > lo; {_ACCEPTED}")
    return lo, hi


@dataclasses.dataclass(frozen=True)
class _Survey:
    """An image's extremes and robust percentiles, over its finite values."""

    minimum: float
    maximum: float
    low: float  #: 0.1th percentile
    high: float  #: 99.9th percentile
    #: Whether ``minimum`` and ``maximum`` are those of every value of a NumPy image (no
    #: NaN/Inf among them), rather than of a sample or of a lazy (dask) array.
    read_all: bool = False
    #: Whether only the sample was read: ``minimum`` and ``maximum`` are its own.
    sampled: bool = True

    def read_extremes(self, image: np.ndarray) -> _Survey:
        """This survey with the extremes of every value of NumPy ``image`` (one pass)."""
        return self.with_extremes(*extremes(image), read_all=True)

    def with_extremes(self, minimum: float, maximum: float, *, read_all: bool) -> _Survey:
        """This survey with the extremes of every value, ``minimum`` and ``maximum``; one
        that is not finite (NaN or Inf, refused later, when processed) leaves the
        sample's, and ``read_all`` False."""
        finite = bool(np.isfinite(minimum)), bool(np.isfinite(maximum))
        return dataclasses.replace(
            self, minimum=float(minimum) if finite[0] else self.minimum,
            maximum=float(maximum) if finite[1] else self.maximum,
            read_all=read_all and all(finite), sampled=False)

    def auto_range(self) -> tuple[float, float]:
        """``(max(minimum, low - span), high)`` with ``span = high - low``."""
        lo = max(self.minimum, self.low - (self.high - self.low))
        if not self.high > lo:
            raise ValueError(
                f"value_range='auto' finds no spread in the image: its 0.1th and 99.9th "
                f"percentiles are both {self.high:.7g} (a constant image?), so nothing can "
                "map to 0..1; pass value_range=(lo, hi) in the image's units, or "
                "value_range='dtype'")
        return lo, self.high


def _sample_slices(shape: tuple[int, ...], channel_axis: int | None) -> tuple[slice, ...]:
    """One step along every axis but the channel axis, keeping at most ~SAMPLE_SIZE values."""
    step = 1
    while math.prod(n if axis == channel_axis else -(-n // step)
                    for axis, n in enumerate(shape)) > SAMPLE_SIZE and step < max(shape):
        step += 1
    return tuple(slice(None) if axis == channel_axis else slice(None, None, step)
                 for axis in range(len(shape)))


def _tail_percentiles(sample: np.ndarray) -> tuple[float, float]:
    """``numpy.percentile(sample, _PERCENTILES)`` of a 1-D float sample, bit for bit as
    for the sample in float64 (a float32 sample's order statistics are the same values:
    they are interpolated in float64).

    Partitioning the whole sample for the four order statistics the two percentiles
    interpolate took 40 ms for 2 million values; here a coarse subsample bounds each tail
    (its 0.5th and 99.5th percentiles) and only the values beyond a bound are partitioned
    (about 8 ms). NumPy's 'linear' method: virtual index ``(n - 1) q``, interpolated
    between the order statistics at its floor and the next position. Falls back to
    :func:`numpy.percentile` for samples under :data:`_TAIL_MIN` values and where a
    bound misses its order statistics (a subsample unlike the rest: periodic data).
    """
    n = sample.size
    virtual = (n - 1) * np.true_divide(_PERCENTILES, 100)
    floor = np.floor(virtual)
    pairs = _tail_order_statistics(sample, floor.astype(np.intp)) if n >= _TAIL_MIN else None
    if pairs is None:
        return tuple(float(v) for v in np.percentile(sample.astype(np.float64), _PERCENTILES))
    return tuple(float(_lerp(np.float64(a), np.float64(b), weight))
                 for (a, b), weight in zip(pairs, virtual - floor, strict=True))


def _tail_order_statistics(sample: np.ndarray, at: np.ndarray):
    """The sample's sorted values at ``(at[0], at[0] + 1)`` (low tail) and ``(at[1],
    at[1] + 1)`` (high tail), or None where the coarse bounds miss them."""
    coarse = sample[::16].copy()
    k = coarse.size // 200
    coarse.partition([k, coarse.size - 1 - k])
    low_tail = sample[sample <= coarse[k]]  # sorted positions 0 .. size - 1
    high_tail = sample[sample >= coarse[-1 - k]]  # sorted positions n - size .. n - 1
    low_at, high_at = int(at[0]), int(at[1]) - (sample.size - high_tail.size)
    if low_at + 1 >= low_tail.size or high_at < 0:
        return None
    low_tail.partition([low_at, low_at + 1])
    high_tail.partition([high_at, high_at + 1])
    return low_tail[low_at:low_at + 2], high_tail[high_at:high_at + 2]


def _lerp(a: np.float64, b: np.float64, weight: np.float64) -> np.float64:
    """NumPy's interpolation between ``a`` and ``b`` (from whichever end is nearer)."""
    difference = b - a
    return a + difference * weight if weight < 0.5 else b - difference * (1 - weight)


def _is_dask(image) -> bool:
    from .tiling import is_dask

    return is_dask(image)


def _exact_float(dtype: np.dtype) -> type:
    """float32 where it holds every value of ``dtype`` exactly (half the bytes to scan and
    partition), else float64."""
    return np.float32 if np.can_cast(dtype, np.float32) else np.float64


def _finite(values: np.ndarray) -> np.ndarray:
    """``values`` flattened, their finite ones only."""
    values = values.ravel()
    finite = np.isfinite(values)
    return values if finite.all() else values[finite]


def _sample(image: np.ndarray, channel_axis: int | None) -> np.ndarray:
    """The finite values of NumPy ``image``'s strided sample, flat, as :func:`_exact_float`.

    The strided view is copied in blocks on threads (6000x4000 RGBA: 9 ms on one thread).
    """
    view = image[_sample_slices(image.shape, channel_axis)]
    exact = _exact_float(view.dtype)
    return _finite(_elementwise(lambda b: np.asarray(b, exact), view, exact))


def _sample_keeps_dtype(sample: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``sample`` alone shows that ``value_range=None`` keeps ``"dtype"``: an
    integer sample above a quarter of the dtype's maximum (the image's maximum is no
    smaller), a float sample within -0.25..16 (its percentiles lie there too). Then
    neither every value nor the percentiles need reading (6000x4000 RGBA on 2 cores:
    float32 9.3-12.5 -> 5.0-5.8 ms, uint16 17.2-24.2 -> 3.7-5.0 ms;
    ``benchmarks/results/survey_fast_path_2core.txt``, ``survey_integers_2core.txt``)."""
    if sample.size == 0:
        return False
    if dtype.kind in "ui":
        return float(sample.max()) > _INTEGER_FRACTION * np.iinfo(dtype).max
    return float(sample.min()) >= -_NEGATIVE_FRACTION and float(sample.max()) <= _FLOAT_HIGH


def _survey(image, channel_axis: int | None, *, every_value: bool = True,
            sample: np.ndarray | None = None) -> _Survey | None:
    """Survey ``image`` (NumPy-like or dask); None without finite values.

    The percentiles come from a strided sample (``sample``, if already taken by
    :func:`_sample`). The extremes come from every value (a dask array is read once for
    both), or, with ``every_value=False`` and NumPy input, from the sample alone until
    :meth:`_Survey.read_extremes`.
    """
    lazy = _is_dask(image)
    if lazy:
        import dask

        sample, minimum, maximum = dask.compute(
            image[_sample_slices(image.shape, channel_axis)], image.min(), image.max())
        sample = _finite(np.asarray(sample, _exact_float(sample.dtype)))
    else:
        image = np.asarray(image)
        if sample is None:
            sample = _sample(image, channel_axis)
    if sample.size == 0:
        return None
    low, high = _tail_percentiles(sample)
    survey = _Survey(float(sample.min()), float(sample.max()), low, high)
    if lazy:  # with NaN or Inf (refused later, when processed) the sample's extremes stay
        return survey.with_extremes(minimum, maximum, read_all=False)
    return survey.read_extremes(image) if every_value else survey


def auto_range(image, channel_axis: int | None = None) -> tuple[float, float]:
    """Return the ``(lo, hi)`` that ``value_range="auto"`` maps to 0..1.

    ``hi`` is the 99.9th percentile; ``lo`` is the data's minimum, so negative values
    (background-subtracted data) are kept, unless the minimum lies more than one robust
    span ``p99.9 - p0.1`` below the 0.1th percentile (an outlier): then
    ``lo = p0.1 - span``. That is ``lo = max(min, p0.1 - (p99.9 - p0.1))``. Values
    above ``hi`` map above 1 (allowed); values below ``lo`` become ``lo`` (the solvers
    clip working values below 0).

    Parameters
    ----------
    image : array_like or dask.array.Array
        The image; only finite values count. The percentiles come from a strided
        subsample of at most about :data:`SAMPLE_SIZE` values (the same for NumPy and
        dask input), the minimum from all values. A dask array is computed now, once,
        so that all its chunks share one mapping.
    channel_axis : int, optional
        An axis sampled in full (every channel counts).

    Returns
    -------
    (float, float)
        ``(lo, hi)`` in the image's units, ``hi > lo``.

    Raises
    ------
    ValueError
        If the image has no finite values, or no spread (0.1th percentile = 99.9th
        percentile, e.g. a constant image).

    Examples
    --------
    >>> import numpy as np
    >>> from napari_diffuse.intensity import auto_range
    >>> counts = np.arange(-50.0, 9951.0)         # -50..9950
    >>> [round(v, 6) for v in auto_range(counts)]  # lo: the minimum, negatives kept
    [-50.0, 9940.0]
    >>> counts[0] = -1e6                           # an outlier: lo = p0.1 - span
    >>> [round(v, 6) for v in auto_range(counts)]
    [-10020.0, 9940.0]
    """
    return _auto_range(_survey(image, channel_axis))


def _auto_range(survey: _Survey | None) -> tuple[float, float]:
    if survey is None:
        raise ValueError("value_range='auto': the image has no finite values")
    return survey.auto_range()


def _detect(survey: _Survey | None, image, dtype: np.dtype,
            stacklevel: int) -> tuple[str | tuple[float, float], _Survey | None]:
    """``value_range=None``: ``"dtype"``, or :func:`auto_range` with a warning saying why;
    with the survey, whose extremes then come from every value of ``image``."""
    if survey is None or survey.high == survey.low:
        return "dtype", survey  # nothing to detect from (NaN/Inf are refused later), or constant
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        if survey.maximum > _INTEGER_FRACTION * info.max:
            return "dtype", survey
        found = (f"{dtype} image uses only {survey.minimum:.0f}..{survey.maximum:.0f} of "
                 f"{info.min}..{info.max}")
    else:
        if survey.high <= _FLOAT_HIGH and \
                survey.low >= -_NEGATIVE_FRACTION * max(1.0, survey.high):
            return "dtype", survey
        found = (f"{dtype} image spans {survey.low:.7g}..{survey.high:.7g} (0.1th to 99.9th "
                 "percentile), " + ("far beyond 0..1" if survey.high > _FLOAT_HIGH
                                    else "largely negative"))
        if survey.sampled:  # "auto" starts at the minimum of every value
            survey = survey.read_extremes(np.asarray(image))
    lo, hi = survey.auto_range()
    warnings.warn(
        f"{found}: using value_range='auto' = ({lo:.7g}, {hi:.7g}) instead, which maps "
        "that range to 0..1 and back. Pass value_range='auto' to choose this (and silence "
        "this warning), value_range=(lo, hi) for fixed units, or value_range='dtype' for "
        "the dtype's full range (floats as stored)", IntensityWarning, stacklevel=stacklevel)
    return (lo, hi), survey


def check_values(planes: np.ndarray, layout: Layout,
                 origin: tuple[int, int, int] | None = None) -> None:
    """Refuse NaN/Inf and working values beyond :data:`MAX_WORKING`, in one pass.

    ``planes`` are working values (:func:`to_planes` with ``check=False``). Nothing is
    read when the layout's known extremes already vouch for them. ``origin=(plane, row,
    col)`` says that ``planes`` is a chunk of the image starting there: the message then
    counts the chunk's values and gives the image's index.

    Raises
    ------
    ValueError
        Naming how many NaN/Inf values there are and where the first is, or how many
        values lie beyond the working range and how to map them into it.
    """
    if _known_in_range(layout):
        return
    peak = peak_magnitude(planes)
    if peak <= MAX_WORKING:
        return
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
            f"first is at index {position}. To treat them as missing data pass nan='inpaint' "
            "(fill them from their surroundings) or nan='keep' (fill them for the computation, "
            "put them back afterwards)")
    _check_working(planes, layout)


def _caller_index(index, layout: Layout) -> tuple[int, ...]:
    plane, row, col, channel = (int(i) for i in index)
    lead = np.unravel_index(plane, layout.leading_shape) if layout.leading_shape else ()
    position = [*(int(i) for i in lead), row, col]
    if layout.channel_axis is not None:
        position.insert(layout.channel_axis, channel)
    return tuple(position)


def to_planes(image, layout: Layout, *, check: bool = True) -> np.ndarray:
    """Return a float32 ``(planes, H, W, C)`` array in working units (0..1 nominal).

    A view of ``image`` when no conversion is needed (see :func:`to_working`, and its
    ``check``): read only.
    """
    return to_working(caller_planes(image, layout), layout, check=check)


def caller_planes(image, layout: Layout) -> np.ndarray:
    """Return ``image`` as ``(planes, H, W, C)`` in the caller's units and dtype (a view
    where the layout allows): :func:`to_planes` before the mapping."""
    data = np.asarray(image)
    if layout.channel_axis is not None:
        data = np.moveaxis(data, layout.channel_axis, -1)
    else:
        data = data[..., None]
    height, width = layout.spatial_shape
    return data.reshape(-1, height, width, layout.channels)


def maps_in_float32(layout: Layout) -> bool:
    """Whether :func:`to_working` maps this integer layout in float32 arithmetic
    (``(float32(value) - offset) / scale``, each step rounded to float32): integers of 8
    and 16 bits with an offset and scale float32 holds. A solver may then map them on its
    device and give the same working values bit for bit; :func:`from_working` computes in
    float64 for every dtype."""
    return layout.dtype.kind in "ui" and _float32_mapping(layout.dtype, layout)


def _float32_mapping(dtype, layout: Layout) -> bool:
    """Whether :func:`to_working` maps values of ``dtype`` in float32 arithmetic: 8- and
    16-bit types, with an offset and scale float32 holds."""
    return np.dtype(dtype).itemsize <= 2 and _fits_float32(layout.offset, layout.scale)


def to_plane(image, layout: Layout, index: int) -> np.ndarray:
    """Return plane ``index`` of :func:`to_planes`, ``(H, W, C)`` float32 working units,
    reading and converting that plane alone (not a stack's other planes, nor a dask
    array's other chunks)."""
    leading = len(layout.leading_shape)
    position = iter(np.unravel_index(index, layout.leading_shape) if leading else ())
    key, taken = [], 0
    for axis in range(len(layout.shape)):  # the leading axes are the first non-channel ones
        if axis != layout.channel_axis and taken < leading:
            key.append(int(next(position)))
            taken += 1
        else:
            key.append(slice(None))
    data = np.asarray(image[tuple(key)])
    if layout.channel_axis is None:
        data = data[..., None]
    else:  # the channel axis moved left by the leading axes before it
        data = np.moveaxis(data, layout.channel_axis - min(layout.channel_axis, leading), -1)
    return to_working(data, layout)


#: Largest magnitude a working value may have: the solvers compute in float32 (largest
#: finite value 3.4e38) and add, difference and square values, so they need headroom.
MAX_WORKING = 1e30
_F32_MAX = float(np.finfo(np.float32).max)


def _fits_float32(*numbers_: float) -> bool:
    return all(abs(v) <= _F32_MAX for v in numbers_)


def to_working(values, layout: Layout, *, check: bool = True) -> np.ndarray:
    """Return ``values`` (caller's units) as float32 in working units.

    Float32 values that need no mapping come back as they are (a view, not a copy):
    callers only read the result. The mapping is computed in float64 where float32
    would lose or overflow it (64-bit and 32-bit integer or float64 input, a value
    range beyond float32's), then cast. Elementwise, so it applies to a whole image or
    to any chunk of it.

    ``check=False`` leaves the working-range check of a float32 result to the caller
    (:func:`check_values`, or a solver that checks its input on its device); a result
    computed in float64 is always checked, before the cast that could make Inf of it.

    Raises
    ------
    ValueError
        If finite values map beyond :data:`MAX_WORKING` in working units (float32 itself
        ends at 3.4e38): the message names the mapping and how to fix it. NaN and Inf are
        left for :func:`check_values`.
    """
    values = np.asarray(values)
    trivial = layout.offset == 0.0 and layout.scale == 1.0
    if trivial and values.dtype == np.float32:
        work = values
    elif trivial and values.dtype.kind == "f" and values.dtype.itemsize > 4:
        _check_working(values, layout)
        return values.astype(np.float32)
    elif trivial or _float32_mapping(values.dtype, layout):
        offset, scale = np.float32(layout.offset), np.float32(layout.scale)

        def mapped(block: np.ndarray) -> np.ndarray:
            work = block.astype(np.float32, copy=True)
            if not trivial:
                work -= offset
                work /= scale
            return work

        work = _elementwise(mapped, values, np.float32)
    else:
        wide = (values.astype(np.float64) - layout.offset) / layout.scale
        _check_working(wide, layout)
        return wide.astype(np.float32)
    if check:
        _check_working(work, layout)
    return work


def peak_magnitude(a: np.ndarray) -> float:
    """The largest magnitude in ``a``; NaN if it holds a NaN (max and min propagate it).

    One pass of :func:`extremes` and no temporary array (unlike ``numpy.abs(a).max()``).
    """
    if not a.size:
        return 0.0
    low, high = extremes(a)
    return max(high, -low) if low == low and high == high else float("nan")


#: Arrays of at least this many elements are reduced by :func:`extremes` on several threads.
_PARALLEL_ELEMENTS = 1 << 22
#: Each thread of :func:`extremes` takes the min and the max of blocks of this many bytes:
#: the second read hits the core's cache, and the block is large enough that the two
#: NumPy calls per block do not dominate (``benchmarks/survey_blocks.py``, 16 cores:
#: 64x2048x2048 uint16 88.6 ms in 64K-element blocks, 18.9 ms in 1 MB blocks).
_BLOCK_BYTES = 1 << 20


@functools.cache
def _reduction_pool() -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1),
                                                 thread_name_prefix="napari-diffuse-scan")


#: :func:`_elementwise` maps blocks of about this many elements (their float64 temporaries,
#: 1 MB, stay in a core's cache; 2-core machine: 32K-element blocks took twice as long).
_MAP_BLOCK_ELEMENTS = 1 << 17


def _elementwise(function, values: np.ndarray, dtype) -> np.ndarray:
    """``function(values)`` for an elementwise ``function`` returning ``dtype``, computed
    block by block on the scan pool's threads into one new array: the same values as one
    call, without image-sized temporaries (6000x4000 RGBA uint16 to and from working
    units on 2 cores: 0.79 s in one call, 0.31 s in blocks)."""
    out = np.empty(values.shape, dtype)
    if values.size <= _MAP_BLOCK_ELEMENTS or values.ndim == 0:
        out[...] = function(values)
        return out
    # blocks: slices along the first axis whose trailing sub-arrays fit a block (rows of
    # a plane, usually), for every index of the axes before it (the planes of a stack)
    inner = [math.prod(values.shape[a + 1:]) for a in range(values.ndim)]
    axis = next(a for a, n in enumerate(inner) if n <= _MAP_BLOCK_ELEMENTS)
    step = max(1, _MAP_BLOCK_ELEMENTS // inner[axis])
    blocks = [(*lead, slice(start, start + step)) for lead in np.ndindex(values.shape[:axis])
              for start in range(0, values.shape[axis], step)]

    def run(block: tuple) -> None:
        out[block] = function(values[block])

    list(_reduction_pool().map(run, blocks))
    return out


def _block_extremes(flat: np.ndarray, start: int, stop: int) -> tuple[float, float]:
    lows, highs = [], []
    step = max(1, _BLOCK_BYTES // flat.itemsize)
    for a in range(start, stop, step):
        block = flat[a:min(a + step, stop)]
        lows.append(block.min())
        highs.append(block.max())
    return float(np.min(lows)), float(np.max(highs))


def extremes(a: np.ndarray) -> tuple[float, float]:
    """``(min, max)`` of a non-empty array in one pass (both NaN if it holds a NaN), on
    several threads for large contiguous arrays (NumPy releases the GIL in reductions)."""
    a = np.asarray(a)
    workers = min(16, os.cpu_count() or 1)
    if a.size < _PARALLEL_ELEMENTS or workers == 1 or not a.flags.c_contiguous:
        return float(a.min()), float(a.max())
    flat = a.reshape(-1)
    bounds = np.linspace(0, flat.size, 2 * workers + 1).astype(np.int64)
    parts = list(_reduction_pool().map(lambda b: _block_extremes(flat, *b),
                                       zip(bounds[:-1], bounds[1:], strict=True)))
    return float(np.min([p[0] for p in parts])), float(np.max([p[1] for p in parts]))


def _known_in_range(layout: Layout) -> bool:
    """Whether the image's known extremes (an integer image's: at worst its dtype's) map
    well inside :data:`MAX_WORKING` (with a margin for float32 rounding), so that no
    working value of it can exceed it."""
    bounds = layout.extremes
    if bounds is None and layout.dtype.kind in "ui":
        info = np.iinfo(layout.dtype)
        bounds = (info.min, info.max)
    if bounds is None:
        return False
    peak = max(abs((v - layout.offset) / layout.scale) for v in bounds)
    return peak <= 0.5 * MAX_WORKING


def _check_working(work: np.ndarray, layout: Layout) -> None:
    """Raise ``ValueError`` if finite working values exceed :data:`MAX_WORKING`."""
    if work.size == 0 or work.dtype.kind != "f" or _known_in_range(layout):
        return
    if peak_magnitude(work) <= MAX_WORKING:
        return
    over = np.isfinite(work) & (np.abs(work) > MAX_WORKING)
    count = int(over.sum())
    if count == 0:
        return  # only NaN/Inf: check_values names them
    peak = float(np.max(np.abs(work[over])))
    lo, hi = layout.offset, layout.offset + layout.scale
    beyond = ("beyond float32's range (largest finite value 3.4e38)" if peak > _F32_MAX
              else f"beyond the {MAX_WORKING:g} the float32 solvers accept (float32 ends at "
                   "3.4e38; the solvers need headroom)")
    raise ValueError(
        f"{count} value(s) of the image map to working values up to {peak:.3g}, {beyond}: "
        f"value_range maps {lo:.7g}..{hi:.7g} to the working range 0..1 (values are "
        "processed as float32, nominally 0..1). Pass value_range='auto' or "
        "value_range=(lo, hi) spanning the image's values, or rescale the image")


def from_working(values: np.ndarray, layout: Layout) -> np.ndarray:
    """Return working-unit ``values`` in the caller's units and dtype (rounded, clipped).

    Integers are rounded and clipped to their dtype's range; floats are clipped to their
    dtype's finite range (float16 ends at 65504), so the mapping never makes Inf.
    Elementwise, so it applies to a whole image or to any chunk of it.
    """
    mapped = layout.offset != 0.0 or layout.scale != 1.0
    if not mapped and values.dtype == layout.dtype:
        return values

    def caller_units(data: np.ndarray) -> np.ndarray:
        if mapped:  # in place on the float64 copy: no temporary per operation
            data = data.astype(np.float64)
            data *= layout.scale
            data += layout.offset
        if layout.dtype.kind in "ui":
            info = np.iinfo(layout.dtype)
            data = np.rint(data, out=data if mapped else None)
            np.clip(data, info.min, info.max, out=data)
        elif data.dtype != layout.dtype:
            limit = float(np.finfo(layout.dtype).max)
            if float(np.finfo(data.dtype).max) > limit:
                data = np.clip(data, -limit, limit)
        return data.astype(layout.dtype, copy=False)

    return _elementwise(caller_units, values, layout.dtype)


def above_threshold(work: np.ndarray, threshold: float) -> np.ndarray:
    """Return darktable's luminance mask of a working ``(..., C)`` array: bool ``(...)``.

    True where any colour channel is above ``threshold``: R, G, B of 3 or 4 channels
    (a 4th channel is alpha), every channel otherwise.
    """
    colour = work[..., :3] if work.shape[-1] in (3, 4) else work
    return (colour > np.float32(threshold)).any(axis=-1)


def from_planes(planes: np.ndarray, layout: Layout) -> np.ndarray:
    """Return the caller's shape and dtype from a working ``(planes, H, W, C)`` array."""
    return caller_shape(from_working(planes, layout), layout)


def caller_shape(planes: np.ndarray, layout: Layout) -> np.ndarray:
    """Return ``(planes, H, W, C)`` values already in the caller's units in the caller's
    shape (contiguous): :func:`from_planes` after the mapping."""
    data = planes.reshape(*layout.leading_shape, *layout.spatial_shape, layout.channels)
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
    accepted = list(dict.fromkeys([(height, width), (*layout.leading_shape, height, width)]))
    if tuple(mask.shape) not in accepted:
        raise ValueError(f"mask has shape {tuple(mask.shape)}; accepted: "
                         f"{' or '.join(map(str, accepted))} (the image's spatial shape"
                         f"{', optionally with its leading axes' if len(accepted) > 1 else ''})")
    if np.dtype(mask.dtype).kind not in "biu":
        raise TypeError(f"mask has dtype {mask.dtype}; pass a boolean (or 0/1 integer) array")
