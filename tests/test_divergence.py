"""Diverging settings raise DivergenceError, identically on both solvers (issue 12)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from napari_diffuse import DiffuseParams, diffuse, numpy_solver
from napari_diffuse.errors import DivergenceError
from napari_diffuse.plan import DIVERGENCE_BOUND, Checkpoints, divergence_checks, make_plan

pyopencl = pytest.importorskip("pyopencl")
from napari_diffuse import opencl_solver  # noqa: E402

BACKENDS = ("numpy", "opencl")
SHARPEN_LONG = dict(iterations=200, sharpness=1)
NEGATIVE_SPEEDS = dict(first=-1, second=-1, third=-1, fourth=-1, anisotropy_first=10,
                       anisotropy_second=-10, anisotropy_third=10, anisotropy_fourth=-10,
                       radius=64, iterations=50, sharpness=1, edge_threshold=-2)
CASES = {"sharpen 200 iterations": SHARPEN_LONG, "negative speeds": NEGATIVE_SPEEDS}


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).random((32, 40), dtype=np.float32)


def _error(image, backend, **settings_) -> DivergenceError:
    original = image.copy()
    with pytest.raises(DivergenceError) as info:
        diffuse(image, backend=backend, **settings_)
    np.testing.assert_array_equal(image, original)  # the caller's array is unmodified
    assert isinstance(info.value, ValueError)
    return info.value


@pytest.mark.parametrize("case", CASES)
def test_both_solvers_raise_at_the_same_iteration(image, case):
    errors = [_error(image, backend, **CASES[case]) for backend in BACKENDS]
    assert errors[0].iteration == errors[1].iteration
    assert errors[0].iteration in divergence_checks(CASES[case]["iterations"])
    assert errors[0].iteration < CASES[case]["iterations"]  # stopped early


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", CASES)
def test_integer_input_raises_never_an_all_zero_image(image, case, backend):
    counts = (image * 65535).astype(np.uint16)
    error = _error(counts, backend, **CASES[case])
    assert error.iteration == _error(image, backend, **CASES[case]).iteration


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_message_names_iteration_settings_and_remedy(image, backend):
    error = _error(image, backend, **NEGATIVE_SPEEDS)
    message = str(error)
    assert f"iteration {error.iteration} of 50" in message
    for text in ("iterations=50", "first=-1", "fourth=-1", "anisotropy_first=10",
                 "sharpness=1", "edge_threshold=-2", "Lower the iterations", "negative speeds",
                 "raise edge_threshold"):
        assert text in message
    assert error.peak > error.bound == pytest.approx(DIVERGENCE_BOUND)
    message = str(_error(image, backend, **SHARPEN_LONG))
    assert "sharpness=1" in message and "iterations=200" in message


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("settings_", [
    dict(SHARPEN_LONG, iterations=16),
    dict(NEGATIVE_SPEEDS, first=-0.25, second=-0.25, third=-0.25, fourth=-0.25,
         edge_threshold=0, sharpness=0),
    dict(NEGATIVE_SPEEDS, edge_threshold=1, sharpness=0, iterations=10),
], ids=["fewer iterations", "milder speeds", "higher edge threshold"])
def test_milder_settings_run_fine(image, backend, settings_):
    for img in (image, (image * 65535).astype(np.uint16)):
        out = diffuse(img, backend=backend, **settings_)
        assert out.dtype == img.dtype and out.shape == img.shape
        assert np.isfinite(out).all()
    assert diffuse(image, backend=backend, **settings_).max() < DIVERGENCE_BOUND


@pytest.mark.parametrize("solver", [numpy_solver, opencl_solver], ids=BACKENDS)
def test_checkpoints_never_see_diverged_values(image, solver):
    plan = make_plan(DiffuseParams(**NEGATIVE_SPEEDS))
    seen = []

    def handle(done, current):
        assert np.isfinite(current).all() and current.max() <= DIVERGENCE_BOUND
        seen.append(done)
        return True

    with pytest.raises(DivergenceError) as info:
        solver.solve(image[:, :, None], plan, checkpoints=Checkpoints(frozenset({2, 4, 6}),
                                                                      handle))
    assert info.value.iteration in {2, 4, 6, 8}
    assert all(done < info.value.iteration for done in seen)


def test_checkpoints_give_the_same_iteration_on_both_solvers(image):
    plan = make_plan(DiffuseParams(**NEGATIVE_SPEEDS))
    iterations = []
    for solver in (numpy_solver, opencl_solver):
        with pytest.raises(DivergenceError) as info:
            solver.solve(image[:, :, None], plan,
                         checkpoints=Checkpoints(frozenset({1, 2, 3, 4}), lambda d, c: True))
        iterations.append(info.value.iteration)
    assert iterations[0] == iterations[1]


def test_the_schedule():
    assert divergence_checks(1) == {1}
    assert divergence_checks(20) == {8, 16, 20}
    assert divergence_checks(16) == {8, 16}
    assert make_plan(DiffuseParams(iterations=30)).divergence_checks == {8, 16, 24, 30}


def test_the_error_pickles():
    import pickle

    error = DivergenceError("diverged", iteration=8, peak=1e30, bound=1e6)
    copy = pickle.loads(pickle.dumps(error))
    assert (str(copy), copy.iteration, copy.peak, copy.bound) == ("diverged", 8, 1e30, 1e6)


sizes = st.integers(min_value=3, max_value=20)
speeds = st.floats(-1, 1)


@settings(max_examples=30, deadline=None)
@given(image=st.tuples(sizes, sizes).flatmap(
           lambda s: arrays(np.float32, s, elements=st.floats(0, 1, width=32))),
       p=st.builds(DiffuseParams, iterations=st.integers(1, 12), radius=st.integers(0, 32),
                   first=speeds, second=speeds, third=speeds, fourth=speeds,
                   anisotropy_first=st.floats(-10, 10), anisotropy_second=st.floats(-10, 10),
                   anisotropy_third=st.floats(-10, 10), anisotropy_fourth=st.floats(-10, 10),
                   sharpness=st.floats(-1, 1), edge_sensitivity=st.floats(0, 4),
                   edge_threshold=st.floats(-2, 2)),
       integer=st.booleans())
def test_finite_result_or_divergence_error(image, p, integer):
    if integer:
        image = (image * 65535).astype(np.uint16)
    original = image.copy()
    outcomes = []
    for backend in BACKENDS:
        try:
            out = diffuse(image, p, backend=backend, value_range="dtype")
        except DivergenceError as error:
            assert error.iteration in divergence_checks(p.iterations)
            outcomes.append((error.iteration, error.peak))
        else:
            assert out.dtype == image.dtype and out.shape == image.shape
            assert np.isfinite(out).all()
            outcomes.append(None)
        np.testing.assert_array_equal(image, original)
    # the solvers agree, unless the largest value ended within float32 rounding of the bound
    if outcomes[0] != outcomes[1] and None not in outcomes:
        assert outcomes[0][0] == outcomes[1][0]
    elif (outcomes[0] is None) != (outcomes[1] is None):
        peak = next(o for o in outcomes if o is not None)[1]
        assert peak == pytest.approx(DIVERGENCE_BOUND, rel=1e-3)
