"""The public API: layouts, intensity mapping, masks, maps and clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from napari_diffuse import DiffuseParams, diffuse, luminance_mask, variance_map
from napari_diffuse.plan import make_plan, num_scales, reach_per_iteration

RNG = np.random.default_rng(1)
IMAGE = RNG.random((20, 30, 3), dtype=np.float32)
FAST = {"preset": "denoise: fine", "iterations": 2, "backend": "numpy"}


def test_leading_axes_are_independent_planes():
    stack = RNG.random((2, 3, 17, 23), dtype=np.float32)
    out = diffuse(stack, **FAST)
    assert out.shape == stack.shape and out.dtype == np.float32
    np.testing.assert_array_equal(out[1, 2], diffuse(stack[1, 2], **FAST))


def test_channel_axis_anywhere():
    first = np.moveaxis(IMAGE, -1, 0).copy()
    np.testing.assert_array_equal(
        np.moveaxis(diffuse(first, channel_axis=0, **FAST), 0, -1),
        diffuse(IMAGE, channel_axis=-1, **FAST))


def test_channels_are_independent():
    out = diffuse(IMAGE, channel_axis=2, **FAST)
    np.testing.assert_array_equal(out[..., 1], diffuse(IMAGE[..., 1], **FAST))


def test_dtypes_and_value_range():
    u16 = (IMAGE[..., 0] * 4095).astype(np.uint16)  # 12-bit data in uint16
    out = diffuse(u16, value_range=(0, 4095), **FAST)
    assert out.dtype == np.uint16 and out.max() <= 4095 + 1
    expected = diffuse(u16.astype(np.float32) / 4095, **FAST) * 4095
    np.testing.assert_allclose(out, np.clip(np.rint(expected), 0, 65535), atol=1)
    f64 = IMAGE.astype(np.float64) * 1000 - 200  # counts with negative background
    out64 = diffuse(f64, value_range=(-200, 800), channel_axis=-1, **FAST)
    assert out64.dtype == np.float64
    np.testing.assert_allclose(out64, diffuse(IMAGE, channel_axis=-1, **FAST) * 1000 - 200,
                               rtol=1e-5, atol=1e-3)


def test_user_mask_diffuses_only_inside():
    mask = np.zeros(IMAGE.shape[:2], bool)
    mask[5:12, 8:20] = True
    out = diffuse(IMAGE, preset="inpaint highlights", iterations=4, channel_axis=-1,
                  mask=mask, backend="numpy")
    np.testing.assert_allclose(out[~mask], IMAGE[~mask], atol=1e-6)
    assert np.abs(out[mask] - IMAGE[mask]).mean() > 1e-3


def test_luminance_mask_and_inpainting():
    bright = IMAGE.copy()
    bright[4:9, 4:9] = 3.0
    p = DiffuseParams.from_preset("inpaint highlights")
    mask = luminance_mask(bright, p, channel_axis=-1)
    assert mask.shape == bright.shape[:2] and mask.sum() == 25
    out = diffuse(bright, p, channel_axis=-1, backend="numpy")
    np.testing.assert_array_equal(out, diffuse(bright, p, channel_axis=-1, mask=mask,
                                               backend="numpy"))
    assert not luminance_mask(bright, preset="bloom", channel_axis=-1).any()


def test_rgba_mask_ignores_alpha_and_other_counts_use_every_channel():
    image = np.zeros((8, 8, 4), np.float32)
    image[..., 3] = 5.0
    assert not luminance_mask(image, luminance_threshold=1.0, channel_axis=-1).any()
    assert luminance_mask(image[..., 2:], luminance_threshold=1.0, channel_axis=-1).all()


def test_variance_map_is_darktables_edge_term():
    p = DiffuseParams(edge_sensitivity=2.0, edge_threshold=-0.5)
    vmap = variance_map(IMAGE, p, channel_axis=-1, backend="numpy")
    assert vmap.shape == IMAGE.shape[:2] and vmap.dtype == np.float32
    # direct computation: HF at the finest scale, 3x3 sum of squares, darktable's factors
    from scipy import ndimage

    kernel = np.array([1, 4, 6, 4, 1], np.float64) / 16
    low = np.maximum(ndimage.correlate1d(IMAGE.astype(np.float64), kernel, axis=0,
                                         mode="nearest"), 0)
    low = np.maximum(ndimage.correlate1d(low, kernel, axis=1, mode="nearest"), 0)
    detail = IMAGE - low
    box = ndimage.uniform_filter(detail ** 2, size=(3, 3, 1), mode="nearest") * 9
    sigma0 = 1.0553651328015339
    expected = (10**-0.5 + box * (10**2.0 - 1) * sigma0**2 / 9).mean(axis=-1)
    np.testing.assert_allclose(vmap, expected, rtol=1e-4)
    flat = variance_map(np.full((9, 9), 0.5, np.float32), p, backend="numpy")
    np.testing.assert_allclose(flat, 10**-0.5, rtol=1e-6)


def test_reach_follows_the_number_of_scales():
    assert num_scales(DiffuseParams.from_preset("denoise: medium")) == 5
    assert num_scales(DiffuseParams.from_preset("dehaze")) == 10
    assert reach_per_iteration(DiffuseParams.from_preset("dehaze")) == 3069
    assert make_plan(DiffuseParams(iterations=0)).iterations == 1


@pytest.mark.parametrize("image, kwargs, error, words", [
    (np.array([["a", "b"], ["c", "d"]]), {}, TypeError, "dtype <U1"),
    (np.ones((4, 4), np.complex64), {}, TypeError, "complex"),
    (np.ones((4, 4), bool), {}, TypeError, "mask"),
    (np.ones(5, np.float32), {}, ValueError, "at least 2 spatial dimensions"),
    (np.ones((4, 3), np.float32), {"channel_axis": -1}, ValueError, "2 spatial dimensions"),
    (np.ones((0, 4), np.float32), {}, ValueError, "empty"),
    (IMAGE, {"channel_axis": 3}, ValueError, "-3 to 2"),
    (IMAGE, {"channel_axis": -1, "mask": np.ones((3, 3), bool)}, ValueError, "(20, 30)"),
    (IMAGE, {"preset": "denoise: ultra"}, ValueError, "denoise: medium"),
    (IMAGE, {"backend": "cuda"}, ValueError, "'numpy'"),
    (IMAGE, {"iterations": 501}, ValueError, "0 to 500"),
    (IMAGE, {"value_range": (1, 1)}, ValueError, "hi > lo"),
    (IMAGE, {"depth": "bogus"}, ValueError, "'auto', 'full' or an int"),
])
def test_bad_input_gets_a_clear_error(image, kwargs, error, words):
    before = image.copy()
    with pytest.raises(error) as err:
        diffuse(image, **kwargs)
    assert words in str(err.value)
    np.testing.assert_array_equal(image, before)


def test_nan_and_inf_are_counted_and_located():
    image = IMAGE.copy()
    image[3, 4, 1] = np.nan
    image[5, 6, 0] = np.nan
    image[7, 8, 2] = np.inf
    with pytest.raises(ValueError) as err:
        diffuse(image, channel_axis=-1)
    message = str(err.value)
    assert "2 NaN and 1 infinite" in message and "(3, 4, 1)" in message


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.uint8, np.uint16])
@pytest.mark.parametrize("channel_axis", [0, 1, 2, -1])
def test_any_channel_axis_and_dtype_gives_the_channels_last_result(channel_axis, dtype):
    """scikit-image's matrix: the channel axis anywhere, float16 to float64 and integers;
    each gives the result of the same data with its channels last, in its own dtype."""
    rng = np.random.default_rng(7)
    last = rng.random((20, 22, 3))
    if np.dtype(dtype).kind == "u":
        last = (last * np.iinfo(dtype).max).round()
    last = last.astype(dtype)
    moved = np.moveaxis(last, -1, channel_axis)
    settings = dict(preset="bloom", backend="numpy", value_range="dtype")
    out = diffuse(moved, channel_axis=channel_axis, **settings)
    assert out.dtype == np.dtype(dtype) and out.shape == moved.shape
    expected = diffuse(last, channel_axis=-1, **settings)
    np.testing.assert_array_equal(np.moveaxis(out, channel_axis, -1), expected)
    assert not np.array_equal(out, moved)  # the run changed something: the check can fail


@pytest.mark.parametrize("shape, channel_axis", [((5, 6), None), ((3, 5, 6), None),
                                                 ((2, 3, 5, 6), None), ((3, 5, 6), 0),
                                                 ((2, 5, 6, 4), -1), ((2, 4, 3, 5, 6), 1)])
def test_one_plane_converts_like_the_whole_stack(shape, channel_axis):
    """intensity.to_plane(image, layout, i) is to_planes(image, layout)[i], for NumPy and
    dask input, with the channel axis anywhere."""
    import dask.array as da

    from napari_diffuse import intensity

    image = np.random.default_rng(2).integers(0, 4000, shape).astype(np.uint16)
    layout = intensity.check_image(image, channel_axis, "auto")
    planes = intensity.to_planes(image, layout)
    assert planes.shape[0] > 1 or len(shape) == 2 + (channel_axis is not None)
    for index in range(planes.shape[0]):
        np.testing.assert_array_equal(intensity.to_plane(image, layout, index), planes[index])
        lazy = da.from_array(image, chunks=2)
        np.testing.assert_array_equal(intensity.to_plane(lazy, layout, index), planes[index])
    if planes.shape[0] > 1:  # the comparison can fail: planes differ
        assert not np.array_equal(planes[0], planes[-1])
