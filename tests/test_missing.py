"""NaN and infinite values as missing data: ``diffuse(..., nan="inpaint" | "keep")``."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
from skimage import data as skdata

from napari_diffuse import diffuse, luminance_mask, variance_map
from napari_diffuse.missing import FILL_DEPTH, fill_iterations

FAST = dict(preset="denoise: fine", iterations=4)


def clean_and_holes(seed: int = 0):
    """A real image (``camera``) with noise, a 6-px NaN band, a NaN block and one Inf."""
    clean = skdata.camera()[100:196, 120:216].astype(np.float32) / 255
    noisy = clean + np.random.default_rng(seed).normal(0, 0.03, clean.shape).astype(np.float32)
    holed = noisy.copy()
    holed[40:46, :] = np.nan
    holed[70:80, 10:20] = np.nan
    holed[5, 90] = np.inf
    return clean, noisy, holed


def test_inpaint_fills_every_missing_pixel_from_its_surroundings():
    clean, _, holed = clean_and_holes()
    missing = ~np.isfinite(holed)
    out = diffuse(holed, **FAST, nan="inpaint", backend="numpy", value_range="dtype")
    assert out.dtype == holed.dtype and np.isfinite(out).all()
    error = np.sqrt(np.mean((out[missing] - clean[missing]) ** 2))
    flat = np.sqrt(np.mean((np.nanmean(holed[np.isfinite(holed)]) - clean[missing]) ** 2))
    assert error < 0.5 * flat  # far better than the image's mean (a negative control)
    assert np.isnan(holed[40:46]).all()  # the caller's array is untouched


def test_keep_puts_every_non_finite_value_back_and_nothing_leaks():
    _, _, holed = clean_and_holes()
    out = diffuse(holed, **FAST, nan="keep", backend="numpy", value_range="dtype")
    assert np.array_equal(np.isnan(out), np.isnan(holed))
    assert np.array_equal(np.isposinf(out), np.isposinf(holed))
    assert np.isfinite(out[np.isfinite(holed)]).all()


def test_missing_pixels_do_not_disturb_their_neighbourhood():
    """Far from a hole, "keep" gives what the complete image gives; near it, values stay in
    the image's range (a fill of zeros would pull them down: the negative control)."""
    _, noisy, _ = clean_and_holes()
    holed = noisy.copy()
    holed[40:46, :] = np.nan
    params = dict(preset="denoise: fine", iterations=1)
    whole = diffuse(noisy, **params, backend="numpy", value_range="dtype")
    kept = diffuse(holed, **params, backend="numpy", value_range="dtype", nan="keep")
    zeros = diffuse(np.nan_to_num(holed), **params, backend="numpy", value_range="dtype")
    far = np.r_[0:20, 66:96]
    np.testing.assert_allclose(kept[far], whole[far], atol=2e-3)
    near = np.r_[36:40, 46:50]
    assert np.abs(kept[near] - whole[near]).mean() < 0.5 * np.abs(zeros[near] - whole[near]).mean()


def test_a_pixel_missing_in_one_channel_is_missing_in_all():
    _, noisy, _ = clean_and_holes()
    rgb = np.stack([noisy, noisy * 0.8, noisy * 0.6], axis=-1)
    rgb[30:34, 30:60, 1] = np.nan
    kept = diffuse(rgb, **FAST, channel_axis=-1, nan="keep", backend="numpy",
                   value_range="dtype")
    assert np.array_equal(np.isnan(kept), np.isnan(rgb))
    filled = diffuse(rgb, **FAST, channel_axis=-1, nan="inpaint", backend="numpy",
                     value_range="dtype")
    assert np.isfinite(filled).all()
    assert not np.array_equal(filled[30:34, 30:60, 0], rgb[30:34, 30:60, 0])  # refilled too


def test_missing_pixels_join_the_callers_mask():
    _, noisy, holed = clean_and_holes()
    mask = np.zeros(noisy.shape, bool)
    mask[60:64, 40:50] = True
    out = diffuse(holed, preset="fill gaps under a mask", mask=mask, nan="inpaint",
                  backend="numpy", value_range="dtype")
    outside = ~mask & np.isfinite(holed)
    np.testing.assert_allclose(out[outside], holed[outside], atol=1e-6)  # mask semantics
    assert np.isfinite(out).all()
    # a nested list, as diffuse() takes one without nan=: the same result
    as_list = diffuse(holed, preset="fill gaps under a mask", mask=mask.tolist(),
                      nan="inpaint", backend="numpy", value_range="dtype")
    np.testing.assert_array_equal(as_list, out)


def test_both_solvers_agree_on_missing_data(opencl_device):
    _, _, holed = clean_and_holes()
    by_numpy = diffuse(holed, **FAST, nan="inpaint", backend="numpy", value_range="dtype")
    by_opencl = diffuse(holed, **FAST, nan="inpaint", backend="opencl", value_range="dtype")
    np.testing.assert_allclose(by_opencl, by_numpy, atol=1e-4)


def test_dask_input_gives_a_lazy_result_like_numpys():
    _, _, holed = clean_and_holes()
    lazy = diffuse(da.from_array(holed, chunks=48), **FAST, nan="keep", backend="numpy",
                   value_range="dtype")
    assert isinstance(lazy, da.Array)
    out = lazy.compute()
    whole = diffuse(holed, **FAST, nan="keep", backend="numpy", value_range="dtype")
    assert np.array_equal(np.isnan(out), np.isnan(holed))
    # holes narrower than FILL_DEPTH: each block sees the same start; the fill's iterations
    # follow each block's own widest hole, so the filled values differ slightly
    assert FILL_DEPTH > 10
    np.testing.assert_allclose(out[np.isfinite(holed)], whole[np.isfinite(holed)], atol=0.05)


@pytest.mark.parametrize("chunks", [50, 20])  # one block; blocks of a 50-px image
def test_dask_images_smaller_than_the_fill_overlap_run(chunks):
    """An image narrower than :data:`FILL_DEPTH` (dask refuses a larger overlap): the same
    result as the NumPy path, its missing pixels kept, for the mask and variance map too."""
    assert FILL_DEPTH > 50
    _, _, holed = clean_and_holes()
    small = holed[30:80, 40:90]
    lazy = da.from_array(small, chunks=chunks)
    out = diffuse(lazy, **FAST, nan="keep", backend="numpy", value_range="dtype").compute()
    whole = diffuse(small, **FAST, nan="keep", backend="numpy", value_range="dtype")
    assert np.array_equal(np.isnan(out), np.isnan(small))
    np.testing.assert_allclose(out[np.isfinite(small)], whole[np.isfinite(small)], atol=0.05)
    for make_map in (luminance_mask, variance_map):
        lazy_map = np.asarray(make_map(lazy, **FAST, nan="keep", value_range="dtype"))
        whole_map = make_map(small, **FAST, nan="keep", value_range="dtype")
        assert lazy_map.shape == whole_map.shape and np.isfinite(lazy_map).all()


def test_value_range_detection_ignores_missing_pixels():
    """Counts with NaN: 'auto' finds the range of the finite values (no NaN percentiles)."""
    _, noisy, holed = clean_and_holes()
    counts = holed * 1000 + 200
    out = diffuse(counts, **FAST, nan="keep", backend="numpy", value_range="auto")
    finite = np.isfinite(counts)
    assert np.isfinite(out[finite]).all()
    assert 0.8 < out[finite].mean() / counts[finite].mean() < 1.2


def test_extra_outputs_accept_the_nan_policy():
    _, _, holed = clean_and_holes()
    assert np.isfinite(variance_map(holed, **FAST, nan="keep", backend="numpy",
                                    value_range="dtype")).all()
    mask = luminance_mask(holed, **FAST, luminance_threshold=0.5, nan="inpaint",
                          value_range="dtype")
    assert mask.dtype == bool and mask.shape == holed.shape
    with pytest.raises(ValueError, match="nan='inpaint'"):
        variance_map(holed, **FAST, backend="numpy", value_range="dtype")


@pytest.mark.parametrize("nan", ["Keep", None, 1, "fill"])
def test_unknown_policies_are_refused_naming_the_accepted_ones(nan):
    _, _, holed = clean_and_holes()
    with pytest.raises(ValueError, match=r"accepted: 'error'.*'inpaint'.*'keep'"):
        diffuse(holed, **FAST, nan=nan)


def test_policies_check_every_argument_before_any_work():
    _, _, holed = clean_and_holes()
    with pytest.raises(ValueError, match="iterations"):
        diffuse(holed, **FAST | {"iterations": 9999}, nan="keep")
    with pytest.raises(ValueError, match="mask has shape"):
        diffuse(holed, **FAST, mask=np.ones((3, 3), bool), nan="keep")
    with pytest.raises(TypeError, match="progress"):
        diffuse(holed, **FAST, progress=5, nan="keep")


def test_a_plane_without_any_finite_value_is_refused():
    stack = np.random.default_rng(0).random((2, 32, 32), dtype=np.float32)
    stack[1] = np.nan
    with pytest.raises(ValueError, match="no finite value"):
        diffuse(stack, **FAST, nan="inpaint", backend="numpy", value_range="dtype")


def test_integer_images_and_complete_images_run_as_usual():
    ints = (np.random.default_rng(0).random((32, 32)) * 255).astype(np.uint8)
    np.testing.assert_array_equal(diffuse(ints, **FAST, nan="keep", backend="numpy"),
                                  diffuse(ints, **FAST, backend="numpy"))
    _, noisy, _ = clean_and_holes()
    np.testing.assert_array_equal(diffuse(noisy, **FAST, nan="inpaint", backend="numpy"),
                                  diffuse(noisy, **FAST, backend="numpy"))


def test_progress_covers_the_fill_and_the_run():
    _, _, holed = clean_and_holes()
    calls = []
    diffuse(holed, **FAST, nan="inpaint", backend="numpy", value_range="dtype",
            progress=lambda done, total: calls.append((done, total)))
    fill = fill_iterations(5.0, "inpaint")
    assert calls[-1][0] == calls[-1][1] and calls[-1][1] >= fill + 4
    assert all(b[0] >= a[0] for a, b in zip(calls, calls[1:], strict=False))
