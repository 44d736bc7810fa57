"""value_range: 'auto' makes other units behave like 0..1 data; None detects them and warns.

The reference is ``x01``, a 0..1 float32 image (a crop of skimage's ``cell``, rescaled,
plus noise). The same image in other units, diffused with ``value_range='auto'`` and
mapped back, must match ``x01`` diffused with ``'auto'``.
"""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest
import skimage.data

from napari_diffuse import diffuse, luminance_mask, tiling, variance_map
from napari_diffuse.intensity import SAMPLE_SIZE, IntensityWarning, auto_range, check_image

FINE = {"preset": "denoise: fine", "iterations": 4, "backend": "numpy"}
# Float cases: the other units differ from x01 by float32 rounding of the scaling (relative
# 6e-8 per value, and in the auto range); measured results differ by 2e-7 of the span.
# 1e-5 of the span leaves a 50x margin and is 2000x below what the 'dtype' control shows.
FLOAT_TOLERANCE = 1e-5


def _x01() -> np.ndarray:
    crop = skimage.data.cell()[200:328, 300:428].astype(np.float32)
    crop = (crop - crop.min()) / (crop.max() - crop.min())
    noise = np.random.default_rng(0).normal(0.0, 0.02, crop.shape)
    return (crop + noise).astype(np.float32)


X01 = _x01()
COUNTS = X01 * np.float32(1000)                          # (a) float counts
SUBTRACTED = X01 * np.float32(500) - np.float32(120)      # (c) with negatives
TWELVE_BIT = np.rint(np.clip(X01, 0, 1) * 4095).astype(np.uint16)  # (b) 12 bits in uint16
# scale, offset: caller's units = working-equivalent x01 units * scale + offset
FLOAT_CASES = {"counts": (COUNTS, 1000.0, 0.0),
               "background-subtracted": (SUBTRACTED, 500.0, -120.0)}


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return diffuse(X01, value_range="auto", **FINE)


def _span(image) -> float:
    lo, hi = auto_range(image)
    return hi - lo


@pytest.mark.parametrize("case", FLOAT_CASES)
def test_auto_makes_float_units_behave_like_0_1(case, reference):
    image, scale, offset = FLOAT_CASES[case]
    out = diffuse(image, value_range="auto", **FINE)
    back = (out.astype(np.float64) - offset) / scale
    np.testing.assert_allclose(back, reference, rtol=0, atol=FLOAT_TOLERANCE * _span(X01))


def test_negative_control_dtype_mapping_of_counts_differs(reference):
    # the comparison above can fail: counts taken as stored are not the 0..1 result
    out = diffuse(COUNTS, value_range="dtype", **FINE)
    assert np.abs(out / 1000.0 - reference).max() > 100 * FLOAT_TOLERANCE * _span(X01)


def test_auto_makes_12_bit_uint16_behave_like_0_1():
    quantised = TWELVE_BIT.astype(np.float32) / np.float32(4095)  # the same values in 0..1
    expected = diffuse(quantised, value_range="auto", **FINE).astype(np.float64) * 4095
    out = diffuse(TWELVE_BIT, value_range="auto", **FINE)
    assert out.dtype == np.uint16
    # float32 differences of ~1e-7 can move a value across a half-integer: at most 1
    # count, and rarely
    diff = out.astype(np.int64) - np.clip(np.rint(expected), 0, 65535).astype(np.int64)
    assert np.abs(diff).max() <= 1 and np.mean(diff != 0) < 0.01


@pytest.mark.parametrize("image, found", [
    (COUNTS, "float32 image spans"),
    (SUBTRACTED, "float32 image spans"),
    (TWELVE_BIT, f"uint16 image uses only 0..{TWELVE_BIT.max()} of 0..65535"),
], ids=["counts", "background-subtracted", "12-bit uint16"])
def test_none_detects_other_units_warns_once_and_uses_auto(image, found):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = diffuse(image, **FINE)
    assert [w.category for w in caught] == [IntensityWarning]
    message = str(caught[0].message)
    lo, hi = auto_range(image)
    for text in (found, f"value_range='auto' = ({lo:.7g}, {hi:.7g})", "value_range=(lo, hi)",
                 "value_range='dtype'"):
        assert text in message
    assert caught[0].filename == __file__  # names the caller's line
    np.testing.assert_array_equal(out, diffuse(image, value_range="auto", **FINE))


@pytest.mark.parametrize("image", [X01, skimage.data.camera()[::4, ::4]],
                         ids=["0..1 float", "full-range uint8"])
def test_none_keeps_0_1_and_full_range_data_as_stored(image):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = diffuse(image, **FINE)
    np.testing.assert_array_equal(out, diffuse(image, value_range="dtype", **FINE))
    mapping = {vr: (layout.offset, layout.scale) for vr in (None, "dtype", "auto")
               for layout in [check_image(image, None, vr)]}
    assert mapping[None] == mapping["dtype"] != mapping["auto"]


@pytest.mark.parametrize("image, found", [
    (np.array([[0, 16383], [7, 9]], np.uint16), "uint16 image uses only 0..16383 of 0..65535"),
    (np.array([[0, 16384], [7, 9]], np.uint16), None),       # above 1/4 of 65535
    (np.array([[-100, 3000], [7, 9]], np.int16), "int16 image uses only -100..3000 of "
                                                 "-32768..32767"),  # the positive max counts
    (np.array([[-30000, 30000], [7, 9]], np.int16), None),
    (np.linspace(0, 10, 1000, dtype=np.float32).reshape(20, 50), None),  # HDR, as stored
    (np.linspace(0, 20, 1000, dtype=np.float32).reshape(20, 50), "far beyond 0..1"),
    (np.linspace(-0.2, 1, 1000, dtype=np.float32).reshape(20, 50), None),
    (np.linspace(-0.5, 1, 1000, dtype=np.float32).reshape(20, 50), "largely negative"),
    (np.full((8, 8), 100.0, np.float32), None),              # constant: nothing to map
    # outliers beyond the bounds, percentiles within them: as stored
    (np.concatenate([np.linspace(0, 1, 4998), [100, -5]]).reshape(50, 100), None),
], ids=["uint16 quarter", "uint16 above", "int16", "int16 full", "float 10", "float 20",
        "float -0.2", "float -0.5", "constant", "float outliers"])
def test_detection_thresholds(image, found):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        layout = check_image(image, None)
    messages = [str(w.message) for w in caught]
    if found is None:
        assert messages == []
        expected = check_image(image, None, "dtype")
    else:
        assert len(messages) == 1 and found in messages[0]
        expected = check_image(image, None, "auto")
    assert (layout.offset, layout.scale) == (expected.offset, expected.scale)


def test_negatives_survive_auto(reference):
    out = diffuse(SUBTRACTED, value_range="auto", **FINE)
    negative = SUBTRACTED < -5.0
    assert negative.sum() > 1000
    assert np.all(out[negative] < 0) and out.min() < -100
    # as stored ('dtype'), negatives come out as 0, as in darktable
    assert diffuse(SUBTRACTED, value_range="dtype", **FINE).min() == 0.0
    # and the outlier rule does not apply: lo is the data's minimum
    assert auto_range(SUBTRACTED)[0] == pytest.approx(float(SUBTRACTED.min()))


def test_auto_clips_a_far_outlier():
    image = COUNTS.copy()
    image[0, 0] = -1e6
    (p_lo, p_hi), (lo, hi) = np.percentile(image, [0.1, 99.9]), auto_range(image)
    assert hi == pytest.approx(p_hi) and lo == pytest.approx(p_lo - (p_hi - p_lo))


def test_dask_shares_one_range_across_chunks():
    lazy = da.from_array(COUNTS, chunks=32)
    assert auto_range(lazy) == auto_range(COUNTS)
    out = diffuse(lazy, value_range="auto", chunks=32, **FINE)
    assert out.numblocks == (4, 4)
    whole = diffuse(COUNTS, value_range="auto", **FINE)
    # the automatic overlap keeps seams within tiling.TOLERANCE (working units)
    np.testing.assert_allclose(out.compute(), whole, rtol=0, atol=tiling.TOLERANCE * _span(COUNTS))
    # control: a range per 64x64 quadrant would differ from the shared one by far more
    lo, hi = auto_range(COUNTS)
    worst = 0.0
    for rows in (slice(0, 64), slice(64, 128)):
        for cols in (slice(0, 64), slice(64, 128)):
            own = diffuse(COUNTS[rows, cols], value_range="auto", **FINE)
            shared = diffuse(COUNTS[rows, cols], value_range=(lo, hi), **FINE)
            worst = max(worst, np.abs(own - shared).max())
    assert worst > 10 * tiling.TOLERANCE * (hi - lo)


def test_large_arrays_are_subsampled_alike_in_numpy_and_dask():
    image = np.random.default_rng(2).gamma(2.0, 100.0, (1500, 2001)).astype(np.float32)
    assert image.size > SAMPLE_SIZE
    lo, hi = auto_range(image)
    assert (lo, hi) == auto_range(da.from_array(image, chunks=(300, 500)))
    assert lo == float(image.min())  # the exact minimum, not the sample's
    assert hi == pytest.approx(float(np.percentile(image, 99.9)), rel=0.01)


@pytest.mark.parametrize(("shape", "dtype", "slices"), [
    ((301, 207, 4), np.float32, np.s_[::3, ::2, :]),
    ((5, 97, 83), np.uint16, np.s_[:, ::4, ::5]),
    ((2, 3, 64, 40), np.float64, np.s_[::1, :, ::7, ::3]),
    ((41, 1000), np.int8, np.s_[::2, ::9]),
])
def test_the_sample_is_gathered_on_threads_as_numpy_copies_it(shape, dtype, slices,
                                                              monkeypatch):
    """The survey's strided sample, copied in blocks on the scan pool's threads, equals
    numpy's copy of it value for value, whichever axis is longest."""
    from napari_diffuse import intensity

    rng = np.random.default_rng(9)
    image = (rng.random(shape) * 200).astype(dtype)
    view = image[slices]
    exact = np.float32 if np.can_cast(dtype, np.float32) else np.float64
    monkeypatch.setattr(intensity, "_MAP_BLOCK_ELEMENTS", 50)  # many blocks
    gathered = intensity._elementwise(lambda b: np.asarray(b, exact), view, exact)
    assert gathered.dtype == exact and gathered.flags.c_contiguous
    np.testing.assert_array_equal(gathered, np.asarray(view, exact))


@pytest.mark.parametrize(("dtype", "value_range"), [
    (np.uint16, "dtype"), (np.uint16, (100, 4000)), (np.uint8, (0, 255)), (np.int16, "dtype"),
    (np.int16, (-2000, 3000)), (np.float16, "dtype"), (np.float16, (-1, 60000)),
    (np.float32, (2, 5)), (np.float64, "dtype"), (np.int32, (0, 1e6)),
])
def test_the_mapping_in_blocks_on_threads_equals_one_call(dtype, value_range, monkeypatch):
    """to_working and from_working map large arrays block by block on several threads:
    the same values, bit for bit, as one call over the whole array (rounding, clipping
    to the dtype, values beyond the range, a channel-first view)."""
    from napari_diffuse import intensity

    rng = np.random.default_rng(4)
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "ui" else np.finfo(dtype)
    lo, hi = max(float(info.min), -7e4), min(float(info.max), 7e4)
    image = rng.uniform(lo, hi, (3, 37, 29)).astype(dtype)
    layout = check_image(image, 0, value_range)
    working = rng.normal(0.5, 2.0, (1, 37, 29, 3)).astype(np.float32)  # beyond 0..1 too

    def both():
        return (intensity.to_planes(image, layout, check=False),
                intensity.from_working(working, layout))

    monkeypatch.setattr(intensity, "_MAP_BLOCK_ELEMENTS", 1 << 40)
    whole = both()
    monkeypatch.setattr(intensity, "_MAP_BLOCK_ELEMENTS", 100)  # many blocks
    blocks = both()
    for one, many in zip(whole, blocks, strict=True):
        assert one.dtype == many.dtype and one.shape == many.shape
        np.testing.assert_array_equal(many, one)
    assert blocks[1].dtype == np.dtype(dtype) and blocks[0].dtype == np.float32


@pytest.mark.parametrize("kind", ["uniform", "normal", "ties", "half zeros", "every 16th low",
                                  "small"])
def test_the_percentiles_from_the_tails_equal_numpy_percentile(kind, monkeypatch):
    """The survey's percentiles read the sample's tails only (_tail_percentiles) and equal
    numpy.percentile bit for bit; a sample whose coarse subsample (every 16th value) is
    not like the rest (its bounds miss the order statistics) and small samples fall back
    to numpy.percentile, which the others must not call."""
    from napari_diffuse import intensity

    rng = np.random.default_rng(5)
    n = 1_234_567
    sample = {"uniform": rng.random(n), "normal": rng.normal(size=n) * 1e3,
              "ties": rng.integers(0, 20, n).astype(np.float64),
              "half zeros": np.concatenate([np.zeros(n // 2), rng.random(n - n // 2)]),
              "every 16th low": rng.random(n) + 1,
              "small": rng.random(intensity._TAIL_MIN - 1)}[kind]
    if kind == "every 16th low":
        sample[::16] = rng.random(sample[::16].size) * 1e-3
    original = sample.copy()
    expected = tuple(float(v) for v in np.percentile(sample, [0.1, 99.9]))
    single = sample.astype(np.float32)  # the survey keeps float32 data in float32
    expected_single = tuple(float(v) for v in np.percentile(single.astype(np.float64),
                                                            [0.1, 99.9]))
    if kind not in ("every 16th low", "small"):
        monkeypatch.setattr(np, "percentile", None)  # the tails alone must do
    assert intensity._tail_percentiles(sample) == expected
    np.testing.assert_array_equal(sample, original)
    assert intensity._tail_percentiles(single) == expected_single


def test_dask_none_warns_once_and_computes_the_range_eagerly():
    with pytest.warns(IntensityWarning) as caught:
        out = diffuse(da.from_array(TWELVE_BIT, chunks=64), **FINE)
    assert len(caught) == 1
    np.testing.assert_array_equal(out.compute(), diffuse(TWELVE_BIT, value_range="auto", **FINE))


def test_maps_and_masks_use_the_same_mapping():
    span = _span(X01)
    np.testing.assert_allclose(variance_map(COUNTS, value_range="auto", **FINE),
                               variance_map(X01, value_range="auto", **FINE), rtol=1e-4)
    bright = {"preset": "inpaint highlights", "luminance_threshold": 0.5}
    np.testing.assert_array_equal(
        luminance_mask(COUNTS, value_range=(0, 1000 * span), **bright),
        luminance_mask(X01, value_range=(0, span), **bright))
    with pytest.warns(IntensityWarning):
        luminance_mask(COUNTS, **bright)


@pytest.mark.parametrize("value_range, error", [
    ((0, 1, 2), ValueError), (5, TypeError), (("a", "b"), TypeError),
    ((0, 10**400), ValueError), ((1, 1), ValueError), ((2, 1), ValueError),
    ((float("nan"), 1), ValueError), ("percentiles", ValueError), ([True, False], TypeError),
])
def test_bad_value_range_is_refused_by_name(value_range, error):
    with pytest.raises(error, match=r"value_range=.*accepted: None .*'auto'.*'dtype'.*\(lo, hi\)"):
        diffuse(X01, value_range=value_range, **FINE)


def test_pairs_in_any_sequence_are_accepted():
    expected = diffuse(TWELVE_BIT, value_range=(0, 4095), **FINE)
    for pair in ([0, 4095], np.array([0.0, 4095.0]), (np.uint16(0), np.int64(4095))):
        np.testing.assert_array_equal(diffuse(TWELVE_BIT, value_range=pair, **FINE), expected)


def test_auto_refuses_a_constant_image():
    with pytest.raises(ValueError, match="value_range='auto'.*constant"):
        diffuse(np.full((32, 32), 7.0, np.float32), value_range="auto", **FINE)


def test_non_finite_values_are_still_reported_as_such():
    image = COUNTS.copy()
    image[3, 4] = np.nan
    for value_range in (None, "auto"):
        with pytest.raises(ValueError, match="1 NaN"), warnings.catch_warnings():
            warnings.simplefilter("ignore", IntensityWarning)
            diffuse(image, value_range=value_range, **FINE)


# ----------------------------------------------------------- passes over the input
def _count_full_passes(monkeypatch, size: int) -> list[int]:
    """Record every :func:`intensity.extremes` pass over ``size`` values or more."""
    from napari_diffuse import intensity

    passes = []
    real = intensity.extremes
    monkeypatch.setattr(intensity, "extremes",
                        lambda a: (passes.append(a.size) if a.size >= size else None,
                                   real(a))[1])
    return passes


def test_a_float_sample_within_the_bounds_needs_no_percentiles(monkeypatch):
    """Percentiles lie between the sample's extremes: a sample within -0.25..16 decides
    "dtype" without them; one value beyond sends the sample to the percentiles."""
    from napari_diffuse import intensity

    found = []
    real = intensity._tail_percentiles
    monkeypatch.setattr(intensity, "_tail_percentiles",
                        lambda sample: found.append(sample.size) or real(sample))
    image = np.random.default_rng(3).random((300, 200, 3), dtype=np.float32) * 16.0
    image[0, 0] = -0.25
    assert (check_image(image, -1).offset, found) == (0.0, [])
    image[0, 0] = 16.5
    assert (check_image(image, -1).offset, found) == (0.0, [image.size])


def test_an_integer_sample_above_a_quarter_needs_no_full_read(monkeypatch):
    """A uint16 sample above a quarter of 65535 keeps "dtype" without reading every value;
    a maximum the sample misses is still found by reading them all."""
    rng = np.random.default_rng(4)
    full = rng.integers(0, 65536, (2048, 2048), dtype=np.uint16)  # sampled every 2nd row/col
    passes = _count_full_passes(monkeypatch, full.size)
    layout = check_image(full, None)
    assert (layout.offset, layout.scale, passes) == (0.0, 65535.0, [])
    dim = rng.integers(0, 1000, (2048, 2048), dtype=np.uint16)
    dim[1, 1] = 60000  # off the sample's grid
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no IntensityWarning: it keeps "dtype"
        layout = check_image(dim, None)
    assert (layout.offset, layout.scale, passes) == (0.0, 65535.0, [dim.size])


def test_integer_planes_need_no_working_range_pass(monkeypatch):
    """Every value of an integer image lies within its dtype's range, so a mapping that
    keeps that range within the working limit needs no pass over the working values; one
    that may not still gets it, and refuses what lies beyond."""
    from napari_diffuse import intensity

    peaks = []
    real = intensity.peak_magnitude
    monkeypatch.setattr(intensity, "peak_magnitude", lambda a: peaks.append(a.size) or real(a))
    counts = np.random.default_rng(5).integers(0, 4096, (64, 48), dtype=np.uint16)
    for value_range in ("dtype", (0, 4095)):
        layout = check_image(counts, None, value_range)
        intensity.check_values(intensity.to_planes(counts, layout, check=False), layout)
    assert peaks == []
    layout = check_image(counts, None, (0, 1e-27))  # 65535 would map to 6.6e31
    with pytest.raises(ValueError, match="map to working values up to"):
        intensity.check_values(intensity.to_planes(counts, layout, check=False), layout)
    assert peaks and set(peaks) == {counts.size}  # read, on the way to the refusal


def test_the_survey_reads_every_value_only_when_it_needs_them(monkeypatch):
    image = np.random.default_rng(0).random((3, 96, 80), dtype=np.float32)
    passes = _count_full_passes(monkeypatch, image.size)
    # a float image's detection needs only the sample's percentiles
    assert check_image(image, 0, None).extremes is None and passes == []
    # an integer's needs its maximum, "auto" its minimum: then the extremes are known
    counts = np.rint(image * 1000).astype(np.uint16)
    with pytest.warns(IntensityWarning):  # 0..1000 of 0..65535
        assert check_image(counts, 0, None).extremes == (float(counts.min()),
                                                         float(counts.max()))
    assert check_image(image, 0, "auto").extremes == (float(image.min()), float(image.max()))
    with pytest.warns(IntensityWarning):  # far beyond 0..1: "auto" replaces "dtype"
        far = check_image(image * 1000, 0, None)
    assert far.extremes == (float((image * 1000).min()), float((image * 1000).max()))
    assert len(passes) == 3
    # what reads no values, or not all of them, knows nothing
    assert check_image(image, 0, "dtype").extremes is None
    assert check_image(image, 0, (0, 2)).extremes is None
    assert check_image(da.from_array(image), 0, None).extremes is None
    holed = image.copy()
    holed[1, 5, 7] = np.inf
    assert check_image(holed, 0, "auto").extremes is None


def test_the_numpy_path_reads_the_input_once_for_its_checks(monkeypatch):
    image = np.random.default_rng(0).random((3, 96, 80), dtype=np.float32)
    passes = _count_full_passes(monkeypatch, image.size)
    for value_range in (None, "dtype"):
        out = diffuse(image, preset="denoise: fine", iterations=1, channel_axis=0,
                      backend="numpy", value_range=value_range)
        # one pass checks NaN/Inf and the working range at once; the solver's divergence
        # check reads the input's peak and the result's
        assert passes == [image.size] * 3, (value_range, passes)
        passes.clear()
    np.testing.assert_array_equal(out, diffuse(image, preset="denoise: fine", iterations=1,
                                               channel_axis=0, backend="numpy"))
    holed = image.copy()
    holed[1, 5, 7] = np.inf
    with pytest.raises(ValueError, match=r"1 infinite value\(s\); the first is at index "
                                         r"\(1, 5, 7\)"):
        diffuse(holed, preset="denoise: fine", iterations=1, channel_axis=0, backend="numpy")


@pytest.mark.parametrize("layout", ["plane", "stack"])
def test_the_opencl_path_checks_the_input_on_its_device(opencl_device, monkeypatch, layout):
    """No host pass over a float32 input: the device's reduction of the uploaded input
    refuses NaN, Inf and values beyond the working range, and the message is still the
    host's, naming the count and the first index (the negative control: the NumPy
    solver, which needs the host's pass)."""
    from napari_diffuse.intensity import MAX_WORKING

    image = np.random.default_rng(1).random((3, 64, 48), dtype=np.float32)
    if layout == "plane":
        image = image[0]
    at = (1, 5, 7) if layout == "stack" else (5, 7)
    run = {"preset": "denoise: fine", "iterations": 2, "channel_axis": None}
    passes = _count_full_passes(monkeypatch, image.size)
    out = diffuse(image, backend="opencl", **run)
    assert passes == []
    np.testing.assert_allclose(out, diffuse(image, backend="numpy", **run), atol=2e-6)
    assert passes[:1] == [image.size]  # the control: the NumPy path's check reads it all
    for bad, message in ((np.nan, r"1 NaN and 0 infinite"), (-np.inf, r"0 NaN and 1 infinite"),
                         (np.float32(4 * MAX_WORKING), r"1 value\(s\) of the image map to "
                                                        r"working values up to 4e\+30")):
        holed = image.copy()
        holed[at] = bad
        with pytest.raises(ValueError, match=message) as refused:
            diffuse(holed, backend="opencl", **run)
        if np.isnan(bad) or np.isinf(bad):
            assert f"the first is at index {at}" in str(refused.value)
        np.testing.assert_array_equal(holed[at], bad)  # the caller's array is untouched


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int32, np.float32, np.float64])
def test_threaded_extremes_match_numpy_wherever_the_extremes_lie(dtype):
    """The threaded, blocked scan of a large array returns NumPy's min and max exactly,
    with the extremes in the first, the last or a block-straddling position, and NaN
    wherever it lies; a large strided view sees only its own elements."""
    from napari_diffuse import intensity

    size = intensity._PARALLEL_ELEMENTS + 12345  # parts and blocks end unevenly
    block = intensity._BLOCK_BYTES // np.dtype(dtype).itemsize
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    base = np.full(size, 3, dtype)
    for low_at, high_at in ((0, size - 1), (block - 1, block), (size - 1, size // 2 + 5)):
        a = base.copy()
        a[low_at], a[high_at] = info.min, info.max
        assert intensity.extremes(a) == (float(info.min), float(info.max))
        # a large strided view: its extremes are 1 and 5; the dtype's extremes sit
        # between its elements, where a scan of the underlying buffer would find them
        wide = np.full(2 * size, 3, dtype)
        wide[2 * low_at], wide[2 * high_at] = 1, 5
        wide[2 * low_at + 1], wide[2 * high_at + 1] = info.min, info.max
        assert intensity.extremes(wide[::2]) == (1.0, 5.0)
    if np.dtype(dtype).kind == "f":
        for nan_at in (0, block, size - 1):
            a = base.copy()
            a[nan_at] = np.nan
            low, high = intensity.extremes(a)
            assert np.isnan(low) and np.isnan(high), nan_at
