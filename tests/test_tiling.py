"""Chunked processing with dask: seams within 1e-4, stacks, lazy arrays, masks, clusters."""

from __future__ import annotations

import warnings

import dask.array as da
import numpy as np
import pytest

from napari_diffuse import DiffuseParams, diffuse, luminance_mask, tiling, variance_map
from napari_diffuse.api import resolve_params
from napari_diffuse.params import FIELDS
from napari_diffuse.plan import make_plan
from napari_diffuse.sample_data import noisy_fluorescence

TOLERANCE = 1e-4
NUMPY = {"backend": "numpy"}


def _image(shape, channels=None, seed=0):
    """Fluorescence-like values 0..1 (structures and noise), optionally several channels."""
    if channels is None:
        return noisy_fluorescence(shape, seed=seed).clip(0, 1)
    return np.stack([noisy_fluorescence(shape, seed=seed + c).clip(0, 1)
                     for c in range(channels)], axis=-1)


def _tiling(image, chunks=None, channel_axis=None, **settings):
    params = resolve_params(**settings)
    axes = [a for a in range(image.ndim) if channel_axis is None or a != channel_axis % image.ndim]
    spatial = tuple(image.shape[a] for a in axes[-2:])
    channels = 1 if channel_axis is None else image.shape[channel_axis]
    return tiling.plan_tiling(spatial, channels, params, make_plan(params), chunks=chunks)


def _assert_chunked_equals_whole(image, chunks, channel_axis=None, mask=None, **settings):
    """Chunked (dask input and NumPy input) results equal the whole image's within 1e-4."""
    cut = _tiling(image, chunks, channel_axis, **settings)
    assert all(len(sizes) >= 2 for sizes in cut.chunks), cut  # real seams on both axes
    assert cut.depth == (cut.wanted_depth, cut.wanted_depth)  # the full automatic overlap
    whole = diffuse(image, channel_axis=channel_axis, mask=mask, **NUMPY, **settings)
    odd_chunks = tuple(max(1, n // 3 + 1) for n in image.shape)  # uneven input chunks
    lazy = diffuse(da.from_array(image, chunks=odd_chunks), channel_axis=channel_axis, mask=mask,
                   chunks=chunks, **NUMPY, **settings)
    assert isinstance(lazy, da.Array)
    np.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=TOLERANCE)
    chunked = diffuse(image, channel_axis=channel_axis, mask=mask, chunks=chunks, **NUMPY,
                      **settings)
    assert isinstance(chunked, np.ndarray)
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("shape, chunks, channels, settings", [
    ((161, 109), 53, None, {"preset": "denoise: medium", "iterations": 2}),
    ((241, 223), 111, None, {"preset": "lens deblur: medium", "iterations": 2}),
    ((157, 151), 74, 3, {"preset": "sharpen demosaicing: AA filter"}),  # full preset
    ((181, 175), 87, None, {"preset": "denoise: fine"}),  # full preset, 32 iterations
], ids=["denoise-medium", "lens-deblur-medium", "AA-filter-full", "denoise-fine-full"])
def test_chunked_equals_whole(shape, chunks, channels, settings):
    image = _image(shape, channels)
    _assert_chunked_equals_whole(image, chunks, None if channels is None else -1, **settings)


def _stars(shape, seed=3):
    """RGB image with saturated discs above the inpaint-highlights threshold (1.41)."""
    image = _image(shape, 3, seed) * 0.8
    rows, cols = np.ogrid[:shape[0], :shape[1]]
    rng = np.random.default_rng(seed)
    for r, c in rng.integers(0, min(shape), (12, 2)):
        image[(rows - r) ** 2 + (cols - c) ** 2 < 36] = (1.9, 1.7, 1.6)
    return image


@pytest.mark.filterwarnings("ignore::napari_diffuse.errors.InpaintingWarning")  # a test card
def test_inpaint_highlights_chunked_equals_whole():
    image = _stars((139, 131))
    assert luminance_mask(image, preset="inpaint highlights", channel_axis=-1).sum() > 300
    _assert_chunked_equals_whole(image, 65, -1, preset="inpaint highlights", iterations=4)


@pytest.mark.filterwarnings("ignore::napari_diffuse.errors.InpaintingWarning")  # few iterations
def test_user_mask_chunked_equals_whole():
    image = _image((133, 127), 2, seed=5)
    mask = np.zeros(image.shape[:2], bool)
    mask[60:75, 10:120] = True  # crosses the seams
    mask[::17, ::13] = True
    _assert_chunked_equals_whole(image, 60, -1, mask=mask, preset="denoise: fine",
                                 iterations=4)
    lazy_mask = da.from_array(mask, chunks=(40, 50))
    whole = diffuse(image, channel_axis=-1, mask=mask, preset="denoise: fine", iterations=4,
                    **NUMPY)
    lazy = diffuse(da.from_array(image, chunks=(70, 64, 2)), channel_axis=-1, mask=lazy_mask,
                   preset="denoise: fine", iterations=4, chunks=60, **NUMPY)
    np.testing.assert_allclose(lazy.compute(), whole, rtol=0, atol=TOLERANCE)


def _random_params(seed: int) -> DiffuseParams:
    """Any field in its full range, except few iterations and radii, no luminance mask."""
    rng = np.random.default_rng(seed)
    values = {}
    for field in FIELDS:
        if field.name == "iterations":
            values[field.name] = int(rng.integers(1, 4))
        elif field.name in ("radius", "radius_center"):
            values[field.name] = int(rng.integers(0, 13))
        elif field.name == "luminance_threshold":
            values[field.name] = 0.0
        elif field.kind is bool:
            values[field.name] = bool(rng.integers(0, 2))
        else:
            values[field.name] = float(rng.uniform(field.minimum, field.maximum))
    return DiffuseParams(**values)


@pytest.mark.parametrize("seed", [0, 8, 11])
def test_random_params_chunked_equals_whole(seed):
    params = _random_params(seed)
    depth = tiling.influence_depth(params, make_plan(params))
    image = _image((2 * depth + 13, 2 * depth + 7), seed=seed)
    _assert_chunked_equals_whole(image, depth + 1, params=params)


def test_too_small_overlap_shows_seams():
    """The comparison can fail: with a 2 px overlap the seams differ by more than 1e-4."""
    image = _image((161, 109))
    settings = {"preset": "lens deblur: medium", "iterations": 2, **NUMPY}
    whole = diffuse(image, **settings)
    seams = diffuse(image, chunks=53, depth=2, **settings)
    assert np.abs(seams - whole).max() > 2 * TOLERANCE


def test_stack_of_planes_equals_separate_calls():
    stack = np.stack([_image((121, 113), seed=s) for s in range(3)])
    settings = {"preset": "denoise: medium", "iterations": 2, **NUMPY}
    lazy = diffuse(da.from_array(stack, chunks=(2, 121, 113)), chunks=60, **settings)
    assert lazy.chunks == ((2, 1), (121,), (113,))  # the input's chunks, leading ones too
    result = lazy.compute()
    for plane, image in zip(result, stack, strict=True):
        np.testing.assert_allclose(plane, diffuse(image, **settings), rtol=0, atol=TOLERANCE)
    chunked = diffuse(stack, chunks=60, **settings)
    np.testing.assert_allclose(chunked, result, rtol=0, atol=0)


def test_dask_input_is_lazy_with_its_chunks_and_dtype():
    image = (_image((97, 88), 3) * 65535).astype(np.uint16)
    source = da.from_array(np.moveaxis(image, -1, 0), chunks=(1, 50, 40))  # channels split
    lazy = diffuse(source, preset="denoise: fine", iterations=1, channel_axis=0, **NUMPY)
    assert isinstance(lazy, da.Array)
    assert lazy.dtype == np.uint16 and lazy.shape == source.shape
    assert lazy.chunks == source.chunks
    expected = diffuse(np.moveaxis(image, -1, 0), preset="denoise: fine", iterations=1,
                       channel_axis=0, **NUMPY)
    assert np.abs(lazy.compute().astype(int) - expected).max() <= 1


def test_dask_nan_raises_when_computed_not_before():
    image = _image((90, 80))
    image[70, 33] = np.nan
    lazy = diffuse(da.from_array(image, chunks=45), preset="denoise: fine", iterations=1,
                   **NUMPY)  # no error yet: nothing is read
    with pytest.raises(ValueError, match=r"NaN.*index \(70, 33\)"):
        lazy.compute()


def test_large_numpy_input_is_chunked(monkeypatch):
    image = _image((301, 287))
    settings = {"preset": "denoise: medium", "iterations": 2, **NUMPY}
    whole = diffuse(image, **settings)
    # a budget below one plane but above one block: diffuse() must cut the image itself
    params = resolve_params(preset="denoise: medium", iterations=2)
    per_pixel = tiling.solver_bytes_per_pixel(make_plan(params), 1)
    monkeypatch.setattr(tiling, "MEMORY_BUDGET", 301 * 287 * per_pixel - 1)
    monkeypatch.setattr(tiling, "DEFAULT_CHUNK", 100)
    reports = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the full overlap fits: no SeamWarning
        chunked = diffuse(image, progress=lambda done, total: reports.append((done, total)),
                          **settings)
    blocks = 3 * 3  # rows 100, 100, 101; columns 100, 100, 87
    assert reports[-1] == (blocks * 2, blocks * 2)  # progress counts every block's iterations
    np.testing.assert_allclose(chunked, whole, rtol=0, atol=TOLERANCE)


def test_dask_progress_counts_chunks_and_can_stop():
    image = _image((120, 100))
    source = da.from_array(image, chunks=(60, 50))
    settings = {"preset": "denoise: medium", "iterations": 3, **NUMPY}
    reports = []
    lazy = diffuse(source, progress=lambda done, total: reports.append((done, total)),
                   **settings)
    assert reports == []  # nothing runs before compute
    np.testing.assert_allclose(lazy.compute(scheduler="threads"),
                               diffuse(source, **settings).compute(), rtol=0, atol=0)
    total = reports[0][1]  # every block's 3 iterations, one report each
    assert total % 3 == 0 and len(reports) == total
    assert sorted(reports) == [(done, total) for done in range(1, total + 1)]

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop

    with pytest.raises(Stop):
        diffuse(source, progress=stop, **settings).compute(scheduler="synchronous")


def test_opencl_is_not_chunked_on_the_host(monkeypatch, opencl_device):
    # the OpenCL solver tiles on its device: a small host budget must not cut the image
    image = _image((301, 287))
    monkeypatch.setattr(tiling, "MEMORY_BUDGET", 1)
    reports = []
    diffuse(image, preset="denoise: fine", iterations=2, backend="opencl",
            progress=lambda done, total: reports.append((done, total)))
    assert reports[-1] == (2, 2)


def test_reach_beyond_budget_warns_and_exact_has_no_seams(monkeypatch):
    image = _image((130, 120))
    settings = {"preset": "local contrast: fast", **NUMPY}
    params = resolve_params(preset="local contrast: fast")
    per_pixel = tiling.solver_bytes_per_pixel(make_plan(params), 1)
    monkeypatch.setattr(tiling, "MEMORY_BUDGET", 90 * 90 * per_pixel)
    source = da.from_array(image, chunks=40)
    with pytest.warns(tiling.SeamWarning, match=r"preset 'local contrast: fast'.*3069 px per "
                                                r"iteration.*using 30 px"):
        diffuse(source, **settings)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        exact = diffuse(source, exact=True, **settings)
    np.testing.assert_array_equal(exact.compute(), diffuse(image, exact=True, **settings))


def test_lazy_luminance_mask_and_variance_map():
    image = _stars((101, 97))
    source = da.from_array(image, chunks=(40, 50, 3))
    lazy_mask = luminance_mask(source, preset="inpaint highlights", channel_axis=-1)
    assert isinstance(lazy_mask, da.Array)
    np.testing.assert_array_equal(
        lazy_mask.compute(), luminance_mask(image, preset="inpaint highlights", channel_axis=-1))
    lazy_map = variance_map(source, preset="inpaint highlights", channel_axis=-1, **NUMPY)
    assert isinstance(lazy_map, da.Array) and lazy_map.dtype == np.float32
    np.testing.assert_allclose(
        lazy_map.compute(),
        variance_map(image, preset="inpaint highlights", channel_axis=-1, **NUMPY),
        rtol=1e-6, atol=0)
    off = luminance_mask(source, preset="denoise: fine", channel_axis=-1)
    assert not off.compute().any()


@pytest.mark.parametrize("kwargs, error, match", [
    ({"depth": -1}, ValueError, "depth=-1"),
    ({"depth": "most"}, ValueError, "accepted: 'auto', 'full'"),
    ({"chunks": 0}, ValueError, "chunks=0"),
    ({"chunks": (10, 10, 10)}, ValueError, r"\(rows, cols\)"),
    ({"progress": 3}, TypeError, r"progress=3 is not callable"),
])
def test_bad_chunking_arguments(kwargs, error, match):
    source = da.zeros((40, 30), chunks=20, dtype=np.float32)
    with pytest.raises(error, match=match):
        diffuse(source, preset="denoise: fine", **NUMPY, **kwargs)


def test_bad_lazy_mask_shape():
    source = da.zeros((40, 30), chunks=20, dtype=np.float32)
    with pytest.raises(ValueError, match=r"mask has shape \(30, 40\)"):
        diffuse(source, mask=da.zeros((30, 40), dtype=bool), **NUMPY)


def test_distributed_cluster():
    distributed = pytest.importorskip("distributed")
    image = _image((121, 109))
    settings = {"preset": "denoise: medium", "iterations": 2, **NUMPY}
    mask = np.zeros(image.shape, bool)
    mask[50:70, 20:90] = True
    expected = diffuse(image, mask=mask, **settings)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        lazy = diffuse(da.from_array(image, chunks=55), mask=mask, **settings)
        result = client.compute(lazy).result()
        assert len(client.scheduler_info()["workers"]) == 2
    np.testing.assert_allclose(result, expected, rtol=0, atol=TOLERANCE)


def test_auto_overlap_is_within_the_strict_reach():
    """The automatic overlap never exceeds the strict reach, iterations x 3 x (2**scales - 1)."""
    # scales: the first s with the B-spline sigma at s >= 2 (radius + centre), plus one, <= 10
    for name, scales in (("denoise: medium", 5), ("dehaze", 10), ("bloom", 7)):
        params = DiffuseParams.from_preset(name)
        plan = make_plan(params)
        assert plan.scales == scales
        strict = params.iterations * 3 * (2 ** scales - 1)
        cut = tiling.plan_tiling((100, 100), 1, params, plan, depth="auto")
        assert cut.full_reach == strict
        assert 0 < tiling.influence_depth(params, plan) == cut.wanted_depth < strict


@pytest.mark.parametrize("radius, workspaces", [
    (0, ("lf0", "hf0")), (4, ("lf0", "hf0", "lf1", "hf1", "hf2", "hf3"))])
def test_the_host_budget_counts_only_the_buffers_the_passes_use(radius, workspaces):
    """``Plan.workspaces`` names every buffer of ``Plan.passes`` but the image's, and the
    NumPy solver's bytes per pixel count those (one scale: no second low-frequency buffer)."""
    plan = make_plan(DiffuseParams(iterations=2, radius=radius, radius_center=0, first=0.2))
    assert plan.workspaces == workspaces
    used = {name for step in plan.passes for name in (*step.reads, *step.writes)}
    assert used == {"input", "output", *workspaces}
    two_scales = make_plan(DiffuseParams(iterations=2, radius=1, radius_center=0, first=0.2))
    assert (tiling.solver_bytes_per_pixel(two_scales, 1) - tiling.solver_bytes_per_pixel(plan, 1)
            == 4 * (len(two_scales.workspaces) - len(workspaces)))
