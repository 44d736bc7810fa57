"""Self-calibration: parameters chosen from the noisy image alone beat every darktable preset."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from napari_diffuse import DiffuseParams, IntensityWarning, calibrate, diffuse, list_presets
from napari_diffuse.calibrate import estimate_noise

BACKEND = "opencl"  # PoCL in CI: the NumPy solver gives the same results, 17x slower


@pytest.fixture(autouse=True)
def _needs_opencl(request):
    if "numpy" not in request.node.name:
        request.getfixturevalue("opencl_device")


def psnr(truth, estimate):
    return 10 * np.log10(1.0 / np.mean((np.asarray(estimate, np.float64) - truth) ** 2))


def scene(size: int = 96) -> np.ndarray:
    """A 0..1 test scene: a bright blob, a step edge, a ramp and a fine stripe pattern."""
    yy, xx = np.mgrid[:size, :size] / size
    clean = 0.15 + 0.5 * np.exp(-((yy - 0.4) ** 2 + (xx - 0.45) ** 2) / 0.03) \
        + 0.25 * (xx > 0.7) + 0.1 * yy + 0.05 * np.sin(40 * yy) * (xx < 0.3)
    return clean.astype(np.float32)


def poisson_gaussian(clean: np.ndarray, peak: float, read_noise: float = 0.01,
                     seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noisy = rng.poisson(clean * peak) / peak + rng.normal(0.0, read_noise, clean.shape)
    return noisy.astype(np.float32)


@pytest.fixture(scope="module")
def denoise_case(opencl_device):
    clean = scene()
    noisy = poisson_gaussian(clean, peak=20)
    params, report = calibrate(noisy, backend=BACKEND, extra_output=True)
    return clean, noisy, params, report


def test_calibration_gains_6_db_and_beats_every_darktable_preset(denoise_case):
    clean, noisy, params, report = denoise_case
    calibrated = psnr(clean, diffuse(noisy, params, backend=BACKEND))
    assert calibrated >= psnr(clean, noisy) + 6.0
    presets = {name: psnr(clean, diffuse(noisy, preset=name, backend=BACKEND))
               for name in list_presets("darktable")}
    best_name = max(presets, key=presets.get)
    assert calibrated > presets[best_name], (calibrated, best_name, presets[best_name])
    assert report.loss < report.input_loss
    assert report.region == (0, 0, 96, 96) and report.evaluations >= 10


def test_the_self_supervised_loss_ranks_like_the_true_error(denoise_case):
    """The criterion, not luck: a 2x weaker and a 4x stronger run score worse on both."""
    clean, noisy, params, _ = denoise_case
    best = psnr(clean, diffuse(noisy, params, backend=BACKEND))
    for iterations in (max(1, params.iterations // 4), min(500, params.iterations * 8)):
        other = psnr(clean, diffuse(noisy, params.replace(iterations=iterations),
                                    backend=BACKEND))
        assert other < best


def test_calibration_is_deterministic(denoise_case):
    _, noisy, params, _ = denoise_case
    assert calibrate(noisy, backend=BACKEND) == params


def test_a_negative_control_the_identity_does_not_gain():
    """The 6 dB comparison can fail: darktable's default settings change nothing."""
    clean = scene()
    noisy = poisson_gaussian(clean, peak=20)
    assert psnr(clean, diffuse(noisy, DiffuseParams(), backend=BACKEND)) \
        < psnr(clean, noisy) + 0.1


def test_noise_model_is_recovered():
    clean = scene(192)
    gain, floor = estimate_noise(poisson_gaussian(clean, peak=10, read_noise=0.02))
    assert gain == pytest.approx(0.1, rel=0.25)
    assert floor < 0.005  # fine texture (the stripes) adds to the floor, not to the gain
    gain, floor = estimate_noise(clean + np.random.default_rng(1).normal(
        0, 0.05, clean.shape).astype(np.float32))
    assert gain < 0.005 and floor == pytest.approx(0.05 ** 2, rel=0.25)


def test_region_is_used_and_a_stack_calibrates_on_its_middle_plane():
    clean = scene(128)
    noisy = poisson_gaussian(clean, peak=20)
    params, report = calibrate(noisy, backend=BACKEND, region=(16, 16, 80, 96),
                               extra_output=True)
    assert report.region == (16, 16, 80, 96)
    stack = np.stack([np.zeros_like(noisy), noisy, np.ones_like(noisy)])
    assert calibrate(stack, backend=BACKEND, region=(16, 16, 80, 96)) == params


def test_progress_is_reported_and_can_cancel():
    noisy = poisson_gaussian(scene(64), peak=20)
    seen = []

    def progress(done, total):
        seen.append((done, total))
        if len(seen) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(noisy, backend=BACKEND, progress=progress)
    assert [done for done, _ in seen] == [1, 2, 3]
    assert all(done <= total for done, total in seen)


def holes(shape, seed=3, fraction=0.05):
    """Discs 4 to 12 px wide covering about ``fraction`` of the image."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, bool)
    yy, xx = np.ogrid[:shape[0], :shape[1]]
    while mask.mean() < fraction:
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= rng.integers(2, 7) ** 2
    return mask


def test_inpaint_fills_every_hole():
    clean = scene(128)
    mask = holes(clean.shape)
    damaged = np.where(mask, 0.0, clean).astype(np.float32)
    params = calibrate(damaged, "inpaint", mask=mask, backend=BACKEND)
    filled = diffuse(damaged, params, mask=mask, backend=BACKEND)
    # no hole is left at its seed (0 here; the truth is 0.15 to 0.9 everywhere)
    assert filled[mask].min() > 0.1
    labels, count = ndimage.label(mask)
    for hole in range(1, count + 1):
        inside = labels == hole
        assert abs(filled[inside].mean() - clean[inside].mean()) < 0.05
    bundled = diffuse(damaged, preset="inpaint highlights", mask=mask, backend=BACKEND)
    assert psnr(clean[mask], filled[mask]) > psnr(clean[mask], bundled[mask]) + 6
    radius = ndimage.distance_transform_edt(mask).max()
    assert params.iterations >= 8 * radius


@pytest.mark.parametrize("call, message", [
    (lambda: calibrate(np.full((64, 64), 0.5, np.float32)), "constant"),
    (lambda: calibrate(np.random.default_rng(0).random((20, 64), np.float32)), "at least 32x32"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32),
                       region=(0, 0, 16, 64)), "at least 32x32"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32),
                       region=(0, 0, 80, 64)), "outside the image"),
    (lambda: calibrate(np.where(np.eye(64, dtype=bool), np.nan, 0.5).astype(np.float32)
                       + np.random.default_rng(0).random((64, 64), np.float32)), "NaN"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32), "inpaint",
                       mask=np.ones((64, 64), bool)), "True everywhere"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32), "inpaint",
                       mask=np.zeros((64, 64), bool)), "nothing to inpaint"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32), "inpaint"),
     "needs mask"),
    (lambda: calibrate(np.random.default_rng(0).random((64, 64), np.float32), "deblur"),
     "task='deblur'"),
])
def test_bad_input_is_refused_clearly(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_calibration_works_in_the_same_units_as_diffuse():
    """Float counts (x 1000) calibrate, under the default mapping, like their 0..1 version
    under value_range='auto', and the chosen settings give the same result."""
    clean = scene()
    noisy = poisson_gaussian(clean, peak=20)
    counts = noisy * np.float32(1000)
    with pytest.warns(IntensityWarning, match="value_range='auto'"):
        params = calibrate(counts, backend=BACKEND)
    assert params == calibrate(noisy, backend=BACKEND, value_range="auto")
    with pytest.warns(IntensityWarning):
        out = diffuse(counts, params, backend=BACKEND)
    reference = diffuse(noisy, params, backend=BACKEND, value_range="auto")
    np.testing.assert_allclose(out / 1000, reference, atol=1e-5)


@pytest.mark.parametrize("backend", ["numpy", "opencl"])
def test_checkpoints_hand_over_what_separate_runs_give(backend):
    """One run with checkpoints equals a run per iteration count, and can stop early."""
    from napari_diffuse.backends import get_solver
    from napari_diffuse.plan import Checkpoints, make_plan

    solver = get_solver(backend)
    image = poisson_gaussian(scene(48), peak=20)[..., None]
    params = DiffuseParams.from_preset("denoise: fine").replace(iterations=6)
    seen = {}

    def handle(done, current):
        seen[done] = current.copy()
        return done < 4

    last = solver.solve(image, make_plan(params), checkpoints=Checkpoints(frozenset({2, 4, 6}),
                                                                          handle))
    assert sorted(seen) == [2, 4]  # stopped after 4
    for done, current in seen.items():
        separate = solver.solve(image, make_plan(params.replace(iterations=done)))
        np.testing.assert_allclose(current, separate, atol=1e-6)
    np.testing.assert_array_equal(last, seen[4])
    assert not np.allclose(seen[2], seen[4], atol=1e-4)  # the comparison can fail
