"""Issue 12: no silent garbage, no internal tracebacks (ranges, arguments, identity)."""

from __future__ import annotations

import warnings
from fractions import Fraction

import numpy as np
import pytest

from napari_diffuse import DiffuseParams, diffuse
from napari_diffuse.intensity import IntensityWarning

da = pytest.importorskip("dask.array")

RNG = np.random.default_rng(12)
R = RNG.random((32, 32)).astype(np.float32)


# --- 1. the intensity mapping fits float32 -------------------------------------------

def test_float32_near_its_maximum_as_stored_is_refused_plainly():
    with pytest.raises(ValueError) as err:
        diffuse(R * np.float32(3e38), preset="denoise: fine", value_range="dtype",
                backend="numpy")
    message = str(err.value)
    assert "value_range" in message and "3.4e38" in message and "1e+30" in message


def test_float32_near_its_maximum_with_a_range_is_finite():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", IntensityWarning)
        out = diffuse(R * np.float32(3e38), preset="denoise: fine", iterations=2,
                      backend="numpy")
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_float16_near_its_maximum_never_comes_back_infinite():
    image = (R * 65504).astype(np.float16)
    out = diffuse(image, preset="sharpen demosaicing: AA filter", value_range=(0, 65504),
                  backend="numpy")
    assert out.dtype == np.float16 and np.isfinite(out).all()
    assert out.max() == np.float16(65504)  # sharpening overshoot saturates


def test_a_value_range_wider_than_float32_is_mapped_in_float64():
    image = (R.astype(np.float64) * 4e38 - 1e38).astype(np.float32)
    out = diffuse(image, preset="denoise: fine", iterations=2, value_range=(-1e38, 3e38),
                  backend="numpy")
    assert np.isfinite(out).all()
    assert np.abs(out.astype(np.float64) - image).max() < 0.1 * 4e38
    assert np.unique(out).size > 100  # not every pixel -1e38


def test_float64_beyond_float32_is_reported_as_out_of_range_not_infinite():
    image = R.astype(np.float64) * 1e39
    with pytest.raises(ValueError, match="beyond float32's range") as err:
        diffuse(image, preset="denoise: fine", value_range="dtype", backend="numpy")
    assert "infinite" not in str(err.value)


# --- 2. arguments name themselves -----------------------------------------------------

@pytest.mark.parametrize("chunks", [2.5, (0, 5), "a", (4,), True, (4, 2.0)])
def test_bad_chunks_are_refused_up_front(chunks):
    with pytest.raises(ValueError, match="chunks="):
        diffuse(R, chunks=chunks, backend="numpy")


def test_a_progress_that_is_not_callable_is_refused():
    with pytest.raises(TypeError, match="progress=5 is not callable"):
        diffuse(R, preset="denoise: fine", progress=5, backend="numpy")


@pytest.mark.parametrize("exact", ["no", 1, None])
def test_exact_takes_only_a_boolean(exact):
    """A string such as 'no' would be truthy: refused instead of silently meaning True."""
    with pytest.raises(TypeError, match=f"exact={exact!r} is not a boolean"):
        diffuse(R, preset="denoise: fine", exact=exact, backend="numpy")


@pytest.mark.parametrize("depth", [-1, "x", 2.0, True])
def test_bad_depth_is_refused(depth):
    with pytest.raises(ValueError, match="depth="):
        diffuse(R, preset="denoise: fine", depth=depth, backend="numpy")


@pytest.mark.parametrize("field, value", [
    ("iterations", 10**400), ("first", -10**400), ("radius", Fraction(10**400, 3)),
    ("sharpness", np.float64(np.inf)), ("edge_threshold", np.float32(np.nan)),
    ("keep_saturated", 10**400)])
def test_huge_or_odd_numbers_give_the_usual_error(field, value):
    with pytest.raises(ValueError) as err:
        DiffuseParams(**{field: value})
    message = str(err.value)
    assert message.startswith(f"{field}=") and len(message) < 200
    assert "accepted" in message


def test_numbers_real_of_any_kind_are_accepted():
    p = DiffuseParams(iterations=Fraction(6, 2), first=Fraction(1, 2), second=np.float16(0.25),
                      radius=np.uint8(4))
    assert (p.iterations, p.first, p.second, p.radius) == (3, 0.5, 0.25, 4)
    assert type(p.iterations) is int and type(p.first) is float


# --- 3. dask arrays with unknown chunk sizes ----------------------------------------

def test_unknown_dask_chunk_sizes_are_refused_up_front():
    x = da.from_array(R, chunks=16)
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        diffuse(x[x[:, 0] > .5], preset="denoise: fine", backend="numpy")


# --- 4. identity settings return the input exactly ---------------------------------

@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64,
                                   np.uint64, np.float16, np.float32, np.float64])
def test_identity_settings_return_an_exact_copy(dtype):
    if np.dtype(dtype).kind in "ui":
        info = np.iinfo(dtype)
        image = RNG.integers(info.min, info.max, (16, 16), dtype=dtype, endpoint=True)
    else:
        image = (RNG.random((16, 16)) * 3 - 1).astype(dtype)  # negatives too
    out = diffuse(image, DiffuseParams(iterations=3, anisotropy_first=5, edge_threshold=1),
                  value_range="dtype", backend="numpy")
    assert out is not image and out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)


def test_identity_with_an_empty_mask_is_exact_and_a_mask_is_not_identity():
    image = RNG.integers(0, 2**31 - 1, (16, 16), dtype=np.int32)
    empty = np.zeros((16, 16), bool)
    np.testing.assert_array_equal(diffuse(image, mask=empty, backend="numpy"), image)
    some = empty.copy()
    some[4:8, 4:8] = True
    assert not np.array_equal(diffuse(image, mask=some, backend="numpy"), image)


def test_identity_on_dask_is_lazy_and_exact():
    image = RNG.integers(-2**40, 2**40, (24, 24), dtype=np.int64)
    out = diffuse(da.from_array(image, chunks=8), value_range="dtype", backend="numpy")
    assert isinstance(out, da.Array)
    np.testing.assert_array_equal(out.compute(), image)


def test_identity_still_refuses_nan_and_reports_progress():
    bad = R.copy()
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        diffuse(bad, backend="numpy")
    calls = []
    diffuse(np.stack([R, R]), backend="numpy", progress=lambda d, t: calls.append((d, t)))
    assert calls == [(2, 2)]


def test_identity_on_dask_refuses_nan_when_computed():
    bad = R.copy()
    bad[3, 4] = np.nan
    out = diffuse(da.from_array(bad, chunks=16), value_range="dtype", backend="numpy")
    with pytest.raises(ValueError, match="1 NaN"):
        out.compute()


def test_the_nan_message_gives_a_remedy_that_works():
    """NaN is refused by default even under a mask; the remedy the message gives (nan=)
    runs and fills them."""
    image = np.random.default_rng(3).random((40, 40), dtype=np.float32)
    image[10:14, 20:24] = np.nan
    holes = ~np.isfinite(image)
    with pytest.raises(ValueError) as err:
        diffuse(image, preset="fill gaps under a mask", mask=holes, backend="numpy")
    message = str(err.value)
    assert "nan='inpaint'" in message and "nan='keep'" in message
    filled = diffuse(image, preset="fill gaps under a mask", mask=holes, backend="numpy",
                     nan="inpaint")
    assert np.isfinite(filled).all() and 0.2 < filled[holes].mean() < 0.8


def test_a_mask_with_settings_too_gentle_to_fill_it_warns():
    """darktable's start noise in a mask survives a denoise preset: say so (a 0..2 image)."""
    from napari_diffuse.errors import InpaintingWarning

    yy, xx = np.mgrid[:64, :64]
    image = (1.0 + np.sin(xx / 6.0) * np.cos(yy / 9.0)).astype(np.float32)  # 0..2
    mask = np.zeros(image.shape, bool)
    mask[20:30, 10:50] = True
    with pytest.warns(InpaintingWarning, match="fill gaps under a mask"):
        diffuse(image, preset="denoise: fine", mask=mask, backend="numpy")
    with warnings.catch_warnings():
        warnings.simplefilter("error", InpaintingWarning)
        filled = diffuse(image, preset="fill gaps under a mask", mask=mask, backend="numpy")
    assert filled[mask].max() <= image.max() + 0.1


def test_a_luminance_mask_too_gentle_to_fill_warns_too():
    """The same overshoot inpainting above ``luminance_threshold`` (no caller mask) warns,
    naming the threshold; diffusing everywhere (threshold 0) does not."""
    from napari_diffuse.errors import InpaintingWarning

    image = np.full((32, 32), 0.3, np.float32)
    image[8:24, 8:24] = 0.8
    with pytest.warns(InpaintingWarning, match="threshold=0.5 is inpainted: more iterations"):
        out = diffuse(image, preset="denoise: fine", luminance_threshold=0.5, backend="numpy")
    assert out[8:24, 8:24].max() > 1.3  # the overshoot the warning is about
    with warnings.catch_warnings():
        warnings.simplefilter("error", InpaintingWarning)
        diffuse(image, preset="denoise: fine", backend="numpy")
