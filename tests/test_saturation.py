"""``keep_saturated``: inpainted saturated star cores keep their level (issue 8).

A synthetic star field (small Gaussian stars, all brighter than the clipping level, on a
dim noisy background) is clipped at 1.0 and inpainted with the ``astro: saturated star
cores`` preset through the luminance mask (``mask=None``), with and without the flag, on
both solvers. Run with ``-s`` to see the figures (flux ratio per star over a 7x7 box, and
the minimum of each clipped region).
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest
from conftest import require_opencl
from scipy import ndimage

from napari_diffuse import DiffuseParams, diffuse, numpy_solver
from napari_diffuse.params import DARKTABLE_NAMES, FIELDS
from napari_diffuse.plan import make_plan

PRESET = "astro: saturated star cores"
CLIP = 1.0
BACKENDS = ["numpy", "opencl"]


@dataclasses.dataclass(frozen=True)
class StarField:
    truth: np.ndarray  #: before clipping
    image: np.ndarray  #: clipped at CLIP
    centres: np.ndarray  #: (n, 2) rounded star centres
    regions: np.ndarray  #: labels of the clipped regions
    count: int  #: number of clipped regions


@functools.cache
def star_field(seed: int = 8, size: int = 256, stars: int = 45) -> StarField:
    """Background 0.02, Gaussian stars (sigma 0.8-2 px, peak 1.4-5) at least 14 px apart,
    noise sigma 0.005, clipped at 1.0."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    centres: list[np.ndarray] = []
    while len(centres) < stars:
        centre = rng.uniform(8, size - 8, 2)
        if all(np.hypot(*(centre - other)) >= 14 for other in centres):
            centres.append(centre)
    truth = np.full((size, size), 0.02)
    for (cy, cx), sigma, peak in zip(centres, rng.uniform(0.8, 2.0, stars),
                                     rng.uniform(1.4, 5.0, stars), strict=True):
        truth += peak * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma * sigma))
    truth = (truth + rng.normal(0.0, 0.005, truth.shape)).astype(np.float32)
    image = np.minimum(truth, np.float32(CLIP))
    regions, count = ndimage.label(image >= CLIP)
    return StarField(truth, image, np.round(centres).astype(int), regions, count)


def flux_ratios(result: np.ndarray, field: StarField) -> np.ndarray:
    """Per star: the result's flux over a 7x7 box around it / the truth's."""
    boxes = [(slice(cy - 3, cy + 4), slice(cx - 3, cx + 4)) for cy, cx in field.centres]
    return np.array([result[b].sum() / field.truth[b].sum() for b in boxes])


def region_minima(result: np.ndarray, field: StarField) -> np.ndarray:
    """Per clipped region: the result's minimum."""
    return np.asarray(ndimage.minimum(result, field.regions, np.arange(1, field.count + 1)))


def _solver(backend: str):
    """The solver module; OpenCL needs a device (required in CI, skipped elsewhere)."""
    if backend == "numpy":
        return numpy_solver
    require_opencl()
    from napari_diffuse import opencl_solver

    return opencl_solver


@functools.cache
def _run(backend: str, keep: bool) -> np.ndarray:
    return diffuse(star_field().image, preset=PRESET, keep_saturated=keep, backend=backend)


def run(backend: str, keep: bool) -> np.ndarray:
    """The star field through the preset (luminance mask), with or without the flag."""
    _solver(backend)
    return _run(backend, keep)


def _threshold() -> float:
    return DiffuseParams.from_preset(PRESET).luminance_threshold


# -- the preset and the parameter -------------------------------------------------------

def test_preset_keeps_saturated_cores_below_the_clipping_level():
    params = DiffuseParams.from_preset(PRESET)
    assert params.keep_saturated is True
    assert 0.0 < params.luminance_threshold < CLIP  # clipped pixels (== 1.0) are masked
    inpaint = DiffuseParams.from_preset("inpaint highlights")
    assert params.keep_saturated != inpaint.keep_saturated  # the base preset is unchanged
    field = star_field()
    assert field.count == len(field.centres)  # every star is clipped, in one region


def test_params_round_trip_keeps_the_flag():
    params = DiffuseParams.from_preset(PRESET)
    assert DiffuseParams.from_dict(params.to_dict()) == params
    assert DiffuseParams.from_json(params.to_json()) == params
    assert '"keep_saturated": true' in params.to_json()
    dt = params.to_darktable()
    assert "keep_saturated" not in dt and len(dt) == 15 and set(dt) == set(DARKTABLE_NAMES)
    # darktable has no such field: back from darktable it takes its default
    assert DiffuseParams.from_darktable(dt) == params.replace(keep_saturated=False)
    spec = next(f for f in FIELDS if f.name == "keep_saturated")
    assert (spec.kind, spec.darktable_name, spec.default, spec.section) == \
        (bool, None, False, "spatiality")


def test_plan_carries_the_flag_only_with_a_threshold():
    params = DiffuseParams.from_preset(PRESET)
    assert make_plan(params).keep_saturated is True
    assert make_plan(params.replace(keep_saturated=False)).keep_saturated is False
    assert make_plan(params.replace(luminance_threshold=0.0)).keep_saturated is False
    # nothing else in the plan depends on the flag
    assert dataclasses.replace(make_plan(params), keep_saturated=False) == \
        make_plan(params.replace(keep_saturated=False))


# -- measured on the star field ---------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_every_clipped_pixel_ends_at_or_above_the_threshold(backend):
    field, threshold = star_field(), np.float32(_threshold())
    kept, plain = run(backend, True), run(backend, False)
    clipped = field.image >= CLIP
    assert (kept[clipped] >= threshold).all()
    # negative control: without the flag the cores sink below it (the rings of issue 8)
    assert (plain[clipped] < threshold).any()
    assert (region_minima(plain, field) < threshold).mean() > 0.5
    assert (region_minima(kept, field) >= threshold).all()

    ratios_kept, ratios_plain = flux_ratios(kept, field), flux_ratios(plain, field)
    assert np.median(ratios_kept) > np.median(ratios_plain) + 0.1
    assert (ratios_kept >= ratios_plain).all()
    below = lambda result: (region_minima(result, field) < threshold).mean()  # noqa: E731
    print(f"\n[{backend}] {len(field.centres)} stars, {field.count} clipped regions, "
          f"{int(clipped.sum())} clipped pixels; clipped input: median flux ratio "
          f"{np.median(flux_ratios(field.image, field)):.3f}")
    for name, result, ratios in (("keep_saturated", kept, ratios_kept),
                                 ("without", plain, ratios_plain)):
        minima = region_minima(result, field)
        print(f"[{backend}] {name:>14}: flux ratio median {np.median(ratios):.3f} "
              f"(min {ratios.min():.3f}, max {ratios.max():.3f}); clipped regions ending below "
              f"the threshold {below(result):.1%} (lowest minimum {minima.min():.3f})")


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_flag_only_raises_clipped_pixels_to_the_threshold(backend):
    field, threshold = star_field(), np.float32(_threshold())
    kept, plain = run(backend, True), run(backend, False)
    # the luminance mask: the clipped pixels and the few just below the clip (>= threshold)
    saturated = field.image >= threshold
    assert (saturated >= (field.image >= CLIP)).all()
    np.testing.assert_array_equal(kept[~saturated], plain[~saturated])  # the rest: untouched
    np.testing.assert_array_equal(kept[saturated], np.maximum(plain[saturated], threshold))


def test_solvers_agree():
    for keep in (True, False):
        np.testing.assert_allclose(run("opencl", keep), run("numpy", keep), rtol=0, atol=1e-4)


# -- the solvers directly: channels, masks, off ------------------------------------------

def _rgb_stars() -> tuple[np.ndarray, np.ndarray]:
    """Three channels of the star field, scaled differently: some pixels clip in some
    channels only."""
    truth = star_field().truth[:96, :96]
    rgb = np.stack([truth, truth * 0.6, truth * 0.3], axis=-1)
    return np.minimum(rgb, np.float32(CLIP)).astype(np.float32), truth


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("use_mask", [False, True], ids=["luminance-mask", "callers-mask"])
def test_only_saturated_channels_of_masked_pixels_are_floored(backend, use_mask):
    solver = _solver(backend)
    image, _ = _rgb_stars()
    params = DiffuseParams.from_preset(PRESET).replace(iterations=8)
    threshold = np.float32(params.luminance_threshold)
    if use_mask:  # a mask that misses some saturated pixels and holds unsaturated ones
        mask = np.zeros(image.shape[:2], bool)
        mask[:, :60] = (image[:, :60] > 0.3).any(axis=-1)
    else:
        mask = (image > threshold).any(axis=-1)
    assert ((image >= threshold) & ~mask[..., None]).any() == use_mask
    kept = solver.solve(image, make_plan(params), mask if use_mask else None)
    plain = solver.solve(image, make_plan(params.replace(keep_saturated=False)),
                         mask if use_mask else None)
    floored = (image >= threshold) & mask[..., None]
    assert floored.any() and (floored != (image >= threshold)).any() == use_mask
    assert (plain[floored] < threshold).any()  # the flag changes something here
    np.testing.assert_array_equal(kept[~floored], plain[~floored])
    np.testing.assert_array_equal(kept[floored], np.maximum(plain[floored], threshold))


@pytest.mark.parametrize("backend", BACKENDS)
def test_off_is_the_solver_without_the_step(backend, monkeypatch):
    """keep_saturated=False (or a 0 threshold) runs exactly the solver as it was."""
    solver = _solver(backend)
    image, _ = _rgb_stars()
    params = DiffuseParams.from_preset(PRESET).replace(iterations=4)
    off = solver.solve(image, make_plan(params.replace(keep_saturated=False)))
    zero = solver.solve(image, make_plan(params.replace(luminance_threshold=0.0)))
    mask = (image > 0.5).any(axis=-1)
    masked_zero = solver.solve(image, make_plan(params.replace(luminance_threshold=0.0)), mask)
    monkeypatch.setattr(numpy_solver, "keep_saturated", lambda *args: None)
    if solver is not numpy_solver:
        monkeypatch.setattr(solver.Engine, "_keep_saturated", lambda *args: None)
    old = make_plan(params.replace(keep_saturated=False))
    np.testing.assert_array_equal(off, solver.solve(image, old))
    np.testing.assert_array_equal(zero, solver.solve(image, make_plan(
        params.replace(luminance_threshold=0.0, keep_saturated=False))))
    np.testing.assert_array_equal(masked_zero, solver.solve(image, make_plan(
        params.replace(luminance_threshold=0.0, keep_saturated=False)), mask))


# -- OpenCL: tiles on the device, staged transfers ---------------------------------------

def test_opencl_tiles_and_staging_floor_like_the_whole_image():
    shared = _solver("opencl").engine()
    from napari_diffuse import opencl_solver

    image, _ = _rgb_stars()
    image = np.ascontiguousarray(np.concatenate([image, image[::-1]], axis=0)[:150, :90])
    plan = make_plan(DiffuseParams.from_preset(PRESET).replace(iterations=2, radius=2))
    assert plan.keep_saturated
    whole = shared.solve(image, plan)
    limit = 110 * 90 * 3 * 4  # a buffer of 110 of the 150 rows: tiles
    tiled_engine = opencl_solver.Engine(shared.device, max_allocation=limit, profiling=True)
    assert len(tiled_engine._tiles(image.shape, plan.full_reach, plan)) > 1
    with tiled_engine.profile() as profile:
        np.testing.assert_array_equal(tiled_engine.solve(image, plan), whole)
    assert sum(kind == "keep" for (kind, _), _ in profile.events) > 1  # once per tile
    staged = opencl_solver.Engine(shared.device, staged=True)
    np.testing.assert_array_equal(staged.solve(image, plan), whole)
    threshold = np.float32(plan.luminance_threshold)
    assert (whole[image >= threshold] >= threshold).all()
