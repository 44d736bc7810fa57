"""Physical properties of the solver, checked on random images and settings (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_diffuse import DiffuseParams, diffuse

SETTINGS = settings(max_examples=25, deadline=None)
sizes = st.integers(min_value=3, max_value=24)


ONE_OR_THREE = st.sampled_from([1, 3])


def images(low=0.0, high=1.0, channels=ONE_OR_THREE):
    return st.tuples(sizes, sizes, channels).flatmap(lambda s: arrays(
        np.float32, s, elements=st.floats(low, high, width=32)))


def params(**fixed):
    base = st.builds(
        DiffuseParams,
        iterations=st.integers(1, 3), radius=st.integers(0, 16), radius_center=st.integers(0, 8),
        anisotropy_first=st.floats(-10, 10), anisotropy_second=st.floats(-10, 10),
        anisotropy_third=st.floats(-10, 10), anisotropy_fourth=st.floats(-10, 10),
        edge_sensitivity=st.floats(0, 4), edge_threshold=st.floats(-2, 2))
    return base.map(lambda p: p.replace(**fixed))


def gradient_energy(image):
    gy, gx = np.gradient(image.astype(np.float64), axis=(0, 1))
    return float(np.sum(gx * gx + gy * gy))


@SETTINGS
@given(image=images(-0.5, 2.0), p=params(first=0, second=0, third=0, fourth=0, sharpness=0))
def test_zero_speeds_and_sharpness_return_the_input_exactly(image, p):
    out = diffuse(image, p, channel_axis=-1, backend="numpy", value_range="dtype")
    assert out is not image and out.dtype == image.dtype
    np.testing.assert_array_equal(out, image)


@SETTINGS
@given(value=st.floats(0, 4, width=32), shape=st.tuples(sizes, sizes),
       p=params(first=0.3, second=-0.2, third=0.5, fourth=-0.4, sharpness=0.5))
def test_a_constant_image_stays_constant(value, shape, p):
    image = np.full(shape, value, np.float32)
    np.testing.assert_allclose(diffuse(image, p, backend="numpy"), value, rtol=1e-6, atol=1e-6)


def _isotropic(speed, iterations):
    return DiffuseParams(iterations=iterations, radius=4, first=speed, second=speed,
                         third=speed, fourth=speed)


@SETTINGS
@given(image=images(0.25, 0.75), speed=st.floats(0.05, 0.25), iterations=st.integers(1, 3))
def test_positive_isotropic_speeds_lower_the_gradient_energy(image, speed, iterations):
    out = diffuse(image, _isotropic(speed, iterations), channel_axis=-1, backend="numpy")
    assert gradient_energy(out) <= gradient_energy(image) * (1 + 1e-6) + 1e-9


@SETTINGS
@given(image=images(0.25, 0.75), speed=st.floats(0.05, 0.25))
def test_negative_isotropic_speeds_raise_the_gradient_energy(image, speed):
    out = diffuse(image, _isotropic(-speed, 1), channel_axis=-1, backend="numpy")
    assert gradient_energy(out) >= gradient_energy(image) * (1 - 1e-6) - 1e-9


@SETTINGS
@given(image=images(0.0, 3.0), p=params(first=0.2, third=-0.3, luminance_threshold=1.0))
@pytest.mark.filterwarnings("ignore::napari_diffuse.errors.InpaintingWarning")  # random settings
def test_the_input_array_is_never_modified(image, p):
    before = image.copy()
    diffuse(image, p, channel_axis=-1, backend="numpy")
    np.testing.assert_array_equal(image, before)


@SETTINGS
@given(dtype=st.sampled_from([np.uint8, np.uint16, np.int16, np.int32]),
       shape=st.tuples(st.integers(1, 3), sizes, sizes), seed=st.integers(0, 2**16))
def test_integer_round_trips_keep_dtype_and_shape(dtype, shape, seed):
    info = np.iinfo(dtype)
    image = np.random.default_rng(seed).integers(info.min, info.max, shape, dtype=dtype,
                                                 endpoint=True)
    identity = diffuse(image, DiffuseParams(), value_range=(info.min, info.max),
                       backend="numpy")
    assert identity.dtype == image.dtype and identity.shape == image.shape
    # float32 working precision: exact up to 16 bits, within 2**-23 of the range beyond
    tolerance = 0 if info.bits <= 16 else 2.0**-23 * (float(info.max) - info.min)
    np.testing.assert_allclose(identity.astype(np.float64), image, rtol=0, atol=tolerance)
    blurred = diffuse(image, preset="bloom", backend="numpy")
    assert blurred.dtype == image.dtype and blurred.shape == image.shape
