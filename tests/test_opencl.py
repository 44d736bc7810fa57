"""The OpenCL solver on a real device (PoCL in CI): parity with NumPy, device selection,
tiling, progress, and the fallback and error paths.

darktable parity of every reference file through ``backend="opencl"`` is in
``test_reference.py``. The device is the default one (a GPU, else a CPU) unless
``NAPARI_DIFFUSE_OPENCL_DEVICE`` names another.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pytest

pytest.importorskip("pyopencl")

from napari_diffuse import (  # noqa: E402  # noqa: E402
    DiffuseParams,
    backends,
    diffuse,
    intensity,
    numpy_solver,
    opencl_devices,
    opencl_solver,
    opencl_transfer,
)
from napari_diffuse.plan import make_plan  # noqa: E402
from napari_diffuse.resources import data_dir  # noqa: E402


@pytest.fixture(scope="module")
def engine(opencl_device):
    """The shared engine: one context and one program build for the whole module."""
    opencl_solver.configure()
    return opencl_solver.engine()


@pytest.fixture
def restore_configuration(engine):
    """Give the shared engine back after a test that reconfigures it."""
    yield
    opencl_solver.configure()
    opencl_solver._engine = engine  # the module's engine, rebuilt at no cost


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


def _close(actual, expected, max_abs=2e-5, mean_abs=1e-6):
    difference = np.abs(actual - expected)
    assert difference.max() <= max_abs, difference.max()
    assert difference.mean() <= mean_abs, difference.mean()


# -- device selection -------------------------------------------------------------------

def test_list_devices_describes_the_devices(engine):
    devices = opencl_devices.list_devices()
    assert devices, "no OpenCL device listed"
    assert [d.index for d in devices] == list(range(len(devices)))
    for device in devices:
        assert device.kind in ("GPU", "CPU", "accelerator", "other")
        assert 0 < device.max_allocation <= device.global_memory
        assert device.name in str(device)


def test_list_devices_is_exported():
    import napari_diffuse

    assert napari_diffuse.list_devices is opencl_devices.list_devices


def test_device_choice_by_index_name_and_environment(engine, monkeypatch):
    first = opencl_devices.list_devices()[0]
    assert opencl_devices.select_device(0).name.strip() == first.name
    assert opencl_devices.select_device("0").name.strip() == first.name
    by_name = opencl_devices.select_device(first.name[-6:].upper())
    assert by_name.name.strip() == first.name
    monkeypatch.setenv(opencl_devices.DEVICE_VARIABLE, first.platform[:5])
    assert opencl_devices.select_device().platform.name.strip() == first.platform


@pytest.mark.parametrize("choice", [99, "no such device"])
def test_unknown_device_choice_is_refused_with_the_list(choice, opencl_device):
    with pytest.raises(opencl_devices.OpenCLUnavailable, match="devices: "):
        opencl_devices.select_device(choice)


def test_unknown_device_in_the_environment_makes_opencl_fail(monkeypatch,
                                                             restore_configuration):
    monkeypatch.setenv(opencl_devices.DEVICE_VARIABLE, "no such device")
    opencl_solver.configure()
    with pytest.raises(RuntimeError, match="no OpenCL device matches 'no such device'"):
        backends.get_solver("opencl")


# -- parity with the NumPy solver -------------------------------------------------------

RANDOM_SETTINGS = [
    dict(iterations=3, radius=12, radius_center=2, first=0.3, second=-0.2, third=0.25,
         fourth=-0.1, anisotropy_first=2.5, anisotropy_second=-1.5, anisotropy_third=0.0,
         anisotropy_fourth=4.0, sharpness=0.2, edge_sensitivity=1.5, edge_threshold=-0.5),
    dict(iterations=2, radius=40, radius_center=0, first=-0.25, second=0.1, third=-0.3,
         fourth=0.2, anisotropy_first=-3.0, anisotropy_second=1.0, anisotropy_third=-2.0,
         anisotropy_fourth=0.0, sharpness=-0.3, edge_sensitivity=0.0, edge_threshold=0.3),
]


@pytest.mark.parametrize("shape", [(37, 53, 1), (29, 41, 3), (33, 30, 4), (21, 19, 5),
                                   (1, 17, 2)])
@pytest.mark.parametrize("settings", range(len(RANDOM_SETTINGS)))
def test_matches_numpy_any_channels_and_size(engine, shape, settings):
    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[settings]))
    image = _image(shape, seed=settings)
    before = image.copy()
    out = opencl_solver.solve(image, plan)
    np.testing.assert_array_equal(image, before)
    assert out.shape == shape and out.dtype == np.float32
    _close(out, numpy_solver.solve(image, plan))


def test_the_device_holds_only_the_buffers_the_passes_use(engine):
    """One scale needs no second low-frequency buffer: a fresh engine allocates none, counts
    none in its bytes per pixel, and matches NumPy."""
    plan = make_plan(DiffuseParams(iterations=2, radius=0, radius_center=0, first=0.2))
    assert plan.scales == 1
    fresh = opencl_solver.Engine(engine.device)
    image = _image((31, 27, 3), seed=3)
    _close(fresh.solve(image, plan), numpy_solver.solve(image, plan))
    assert {"lf0", "hf0"} <= set(fresh._buffers) and "lf1" not in fresh._buffers
    assert opencl_solver.device_bytes_per_pixel(plan, 3) == 4 * 3 * (1 + 2) + 1


@pytest.mark.parametrize("vector_width", [1, 2, 4, 8])
@pytest.mark.parametrize("precise", [True, False])
def test_every_vector_width_gives_the_same_result(engine, vector_width, precise):
    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[0]))
    image = _image((23, 31, 3), seed=3)
    wide, narrow = (opencl_solver.Engine(engine.device, vector_width=width, precise=precise)
                    for width in (vector_width, 1))
    out = wide.solve(image, plan)
    np.testing.assert_array_equal(out, narrow.solve(image, plan))
    _close(out, numpy_solver.solve(image, plan), max_abs=2e-6, mean_abs=1e-7)


def test_mask_inpaints_with_the_numpy_noise(engine):
    plan = make_plan(DiffuseParams.from_preset("inpaint highlights").replace(iterations=4))
    image = _image((40, 52, 4), seed=5) * 2
    mask = image[..., :3].max(axis=-1) > 1.5
    assert 0 < mask.sum() < mask.size
    out = opencl_solver.solve(image, plan, mask, origin=(7, 11), full_width=300)
    expected = numpy_solver.solve(image, plan, mask, origin=(7, 11), full_width=300)
    _close(out, expected)
    # unmasked pixels are kept (hf + lf): equal up to the rounding of fused multiply-adds
    np.testing.assert_allclose(out[~mask], expected[~mask], rtol=0, atol=1e-6)


@pytest.mark.parametrize("channels", [1, 2, 3, 4, 5])
def test_luminance_mask_is_built_on_the_device(engine, channels):
    # mask=None with a threshold: darktable's luminance mask, here from a kernel
    plan = make_plan(DiffuseParams.from_preset("inpaint highlights").replace(iterations=3))
    image = _image((31, 43, channels), seed=channels) * 2
    colours = image[..., :3] if channels in (3, 4) else image
    masked = (colours > np.float32(1.41)).any(axis=-1)
    assert 0 < masked.sum() < masked.size
    out = opencl_solver.solve(image, plan)
    _close(out, numpy_solver.solve(image, plan))
    _close(out, opencl_solver.solve(image, plan, masked), max_abs=0, mean_abs=0)
    np.testing.assert_allclose(out[~masked], image[~masked], rtol=0, atol=1e-6)


def test_variance_map_matches_numpy(engine):
    plan = make_plan(DiffuseParams.from_preset("denoise: medium"))
    image = _image((45, 38, 3), seed=6)
    mask = image[..., 0] > 0.8
    for m in (None, mask):
        out = opencl_solver.variance_map(image, plan, m)
        assert out.shape == (45, 38) and out.dtype == np.float32
        np.testing.assert_allclose(out, numpy_solver.variance_map(image, plan, m), rtol=1e-5)


def test_api_runs_on_opencl(engine):
    image = (_image((30, 34, 3), seed=7) * 65535).astype(np.uint16)
    out = diffuse(image, preset="denoise: fine", iterations=3, channel_axis=-1,
                  backend="opencl")
    expected = diffuse(image, preset="denoise: fine", iterations=3, channel_axis=-1,
                       backend="numpy")
    assert out.dtype == np.uint16
    assert np.abs(out.astype(int) - expected).max() <= 1


@pytest.mark.parametrize(("dtype", "value_range", "channels"), [
    (np.uint16, "dtype", 3), (np.uint8, (10, 200), 1), (np.int16, (-3000, 9000), 4),
    (np.int8, "dtype", 2)])
def test_integers_are_mapped_on_the_device_bit_for_bit(engine, dtype, value_range, channels):
    """8- and 16-bit integers cross the bus in their own dtype and are mapped to and from
    working units on the device (kernels/units.cl): the same result, bit for bit, as
    mapping on the host, values below the range included; a caller's mask with
    keep_saturated uploads the input again, mapped too."""
    info = np.iinfo(dtype)
    image = np.random.default_rng(3).integers(info.min, info.max, (37, 45, channels),
                                              endpoint=True).astype(dtype)
    layout = intensity.check_image(image, -1, value_range)
    if not engine.maps_units(layout):
        pytest.skip("the device has no double precision (cl_khr_fp64)")
    profiled = opencl_solver.Engine(engine.device, profiling=True)
    mask = image[..., 0] > np.percentile(image[..., 0], 80)
    for params, plane_mask in ((DiffuseParams.from_preset("denoise: fine").replace(
            iterations=2), None), (DiffuseParams.from_preset("inpaint highlights").replace(
            iterations=2, keep_saturated=True), mask)):
        plan = make_plan(params)
        with profiled.profile() as profile:
            on_device = profiled.solve(image, plan, plane_mask, layout=layout)
        kinds = [kind for (kind, _), _event in profile.events]
        assert kinds.count("to_working") == 1 + (plane_mask is not None)
        assert kinds.count("from_working") == 1
        on_host = intensity.from_working(
            profiled.solve(intensity.to_working(image, layout), plan, plane_mask), layout)
        assert on_device.dtype == np.dtype(dtype) and on_device.shape == image.shape
        np.testing.assert_array_equal(on_device, on_host)
        if plane_mask is None and value_range != "dtype":  # the solver floors at 0
            assert on_device.min() >= value_range[0] > image.min()


@pytest.mark.parametrize(("dtype", "value_range"), [
    (np.uint16, "dtype"), (np.uint16, (100, 4000)), (np.int16, (-3000, 9000)),
    (np.int16, "dtype"), (np.uint8, (3, 250))])
def test_every_16_bit_value_maps_as_on_the_host(engine, dtype, value_range):
    """The device's mapping of every value of the dtype, and back from working values
    (halves between two integers included), equals the host's bit for bit: the division
    rounds correctly whatever the device's float division (NVIDIA's was 1 ulp off)."""
    import pyopencl as cl

    info = np.iinfo(dtype)
    values = np.arange(info.min, info.max + 1).astype(dtype)
    layout = intensity.check_image(values.reshape(1, -1), None, value_range)
    if not engine.maps_units(layout):
        pytest.skip("the device has no double precision (cl_khr_fp64)")
    working = cl.Buffer(engine.context, cl.mem_flags.READ_WRITE, values.size * 4)
    engine._upload_working(working, values, layout)
    mapped = np.empty(values.size, np.float32)
    cl.enqueue_copy(engine.queue, mapped, working)
    np.testing.assert_array_equal(mapped, intensity.to_working(values, layout))
    # back: the working values of every value and of every half between two
    halves = ((np.arange(info.min, info.max + 1) + 0.5 - layout.offset)
              / layout.scale).astype(np.float32)
    for back in (mapped, halves, np.float32([-1e9, -0.5, 0, 1, 2, 1e9])):
        cl.enqueue_copy(engine.queue, working, back)
        result = np.empty(back.size, values.dtype)
        engine._download_caller(result, working, layout)
        np.testing.assert_array_equal(result, intensity.from_working(back, layout))


@pytest.mark.parametrize("side", [26, 32])  # planes padded in the slot, or back to back
@pytest.mark.parametrize(("staged", "batch"), [(False, 1), (True, 3)])
def test_integer_stacks_are_mapped_on_the_device(engine, staged, batch, side, monkeypatch):
    """A stack of 16-bit planes streams in its own dtype, each plane mapped on the device
    after its upload and before its download: the result of mapping on the host, bit for
    bit, with the luminance mask or caller masks (keep_saturated uploads a plane again)."""
    monkeypatch.setattr(opencl_transfer.Staging, "CHUNK", 4096)
    planes = (_image((5, side, 31, 2), seed=12) * 65535).astype(np.uint16)
    layout = intensity.check_image(planes, -1, "dtype")
    if not engine.maps_units(layout):
        pytest.skip("the device has no double precision (cl_khr_fp64)")
    stream = opencl_solver.Engine(engine.device, staged=staged, stack_batch=batch,
                                  profiling=True)
    caller = intensity.caller_planes(planes, layout)
    given = [caller[p, ..., p % 2] > 40000 for p in range(5)]
    for params, masks in (
            (DiffuseParams.from_preset("inpaint highlights").replace(iterations=3), None),
            (DiffuseParams.from_preset("inpaint highlights").replace(
                iterations=2, keep_saturated=True), given)):
        plan = make_plan(params)
        with stream.profile() as profile:
            out = stream.solve_planes(caller, plan, masks, layout=layout)
        kinds = [kind for (kind, _), _event in profile.events]
        assert kinds.count("to_working") == 5 * (1 + (masks is not None))
        assert kinds.count("from_working") == 5
        packed = batch > 1 and _packs_planes(stream, caller[0].nbytes)
        assert kinds.count("download") == (-(-5 // batch) if packed else 5)
        on_host = intensity.from_working(
            stream.solve_planes(intensity.to_working(caller, layout), plan, masks), layout)
        assert out.dtype == np.uint16 and out.shape == caller.shape
        np.testing.assert_array_equal(out, on_host)


def test_integers_in_tiles_are_mapped_on_the_host(engine):
    """An integer image the device runs in tiles is mapped on the host (the tiles'
    overlaps), with the same result."""
    plan = make_plan(DiffuseParams(iterations=2, radius=2, first=0.3, third=-0.2))
    image = (_image((150, 90, 3), seed=8) * 65535).astype(np.uint16)
    layout = intensity.check_image(image, -1, "dtype")
    tiled = opencl_solver.Engine(engine.device, max_allocation=110 * 90 * 3 * 4,
                                 profiling=True)
    with tiled.profile() as profile:
        out = tiled.solve(image, plan, layout=layout)
    assert "to_working" not in {kind for (kind, _), _event in profile.events}
    np.testing.assert_array_equal(out, engine.solve(image, plan, layout=layout))


def test_api_maps_integers_on_the_device(engine, monkeypatch):
    """diffuse() hands a plane or a stack of 16-bit integers to the device as it is: the
    host's mapping is never called, and the result is the host-mapped one."""
    plan = make_plan(DiffuseParams.from_preset("denoise: fine").replace(iterations=2))
    options = dict(preset="denoise: fine", iterations=2, backend="opencl")
    plane = (_image((40, 52, 3), seed=5) * 65535).astype(np.uint16)
    stack = (_image((3, 40, 52), seed=6) * 65535).astype(np.uint16)
    cases = [(plane, -1), (stack, None)]
    expected = []
    for image, axis in cases:
        layout = intensity.check_image(image, axis, None)
        if not engine.maps_units(layout):
            pytest.skip("the device has no double precision (cl_khr_fp64)")
        work = intensity.to_planes(image, layout)
        expected.append(intensity.from_planes(
            np.stack([engine.solve(p, plan) for p in work]), layout))

    def refused(*args, **kwargs):
        raise AssertionError("mapped on the host")

    monkeypatch.setattr(intensity, "to_working", refused)
    monkeypatch.setattr(intensity, "from_working", refused)
    for (image, axis), result in zip(cases, expected, strict=True):
        np.testing.assert_array_equal(diffuse(image, channel_axis=axis, **options), result)


def test_integer_masks_warn_as_floats_do(engine):
    """The check for inpainted values left far outside the input's range reads an integer
    image mapped on the device from its extremes and the masked pixels alone: it warns
    for settings too gentle to fill the mask and stays silent for the inpainting preset,
    as for the same image in float32."""
    from napari_diffuse.errors import InpaintingWarning

    yy, xx = np.mgrid[:64, :64]
    # 0..2000 counts mapped from 0..1000: 0..2 in working units, as test_validation's image
    image = np.rint((1.0 + np.sin(xx / 6.0) * np.cos(yy / 9.0)) * 1000).astype(np.uint16)
    mask = np.zeros(image.shape, bool)
    mask[20:30, 10:50] = True
    options = dict(mask=mask, backend="opencl", value_range=(0, 1000))
    assert engine.maps_units(intensity.check_image(image, None, (0, 1000)))
    with pytest.warns(InpaintingWarning, match="fill gaps under a mask"):
        diffuse(image, preset="denoise: fine", **options)
    with warnings.catch_warnings():
        warnings.simplefilter("error", InpaintingWarning)
        diffuse(image, preset="fill gaps under a mask", **options)


# -- the engine's lifetime --------------------------------------------------------------

def test_engine_and_kernels_are_built_once(engine):
    kernels = {width: dict(program.kernels) for width, program in engine._programs.items()}
    assert opencl_solver.engine() is engine
    opencl_solver.solve(_image((20, 20, 4)), make_plan(DiffuseParams(iterations=2)))
    assert {width: program.kernels for width, program in engine._programs.items()
            if width in kernels} == kernels


def test_transfers_through_pinned_staging(engine, monkeypatch):
    monkeypatch.setattr(opencl_transfer.Staging, "CHUNK", 4096)  # many chunks, a partial last
    monkeypatch.setattr(opencl_solver.Engine, "PREFAULT_BYTES", 1)  # outputs touched ahead
    staged = opencl_solver.Engine(engine.device, staged=True)
    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[1]))
    image = _image((57, 43, 3), seed=4)
    mask = image[..., 0] > 0.6
    np.testing.assert_array_equal(staged.solve(image, plan, mask), engine.solve(image, plan, mask))
    np.testing.assert_array_equal(staged.variance_map(image, plan),
                                  engine.variance_map(image, plan))


def test_staging_moves_chunks_and_reports_failures(engine):
    import pyopencl as cl

    staging = opencl_transfer.Staging(engine.context, engine.queue)
    try:
        assert len(staging._starts(1000)) == 1  # one chunk, on the calling thread
        starts = staging._starts(70 << 20)
        assert starts.step <= staging.CHUNK and len(starts) >= staging.workers
        data = np.random.default_rng(5).random((70 << 20) // 4, dtype=np.float32)
        buffer = cl.Buffer(engine.context, cl.mem_flags.READ_WRITE, data.nbytes)
        staging.upload(buffer, data)
        back = np.zeros_like(data)
        staging.download(back, buffer)
        np.testing.assert_array_equal(back, data)
        # a download after an event another thread completes later starts after it
        done, completed = cl.UserEvent(engine.context), []
        timer = threading.Timer(0.05, lambda: (completed.append(True), done.set_status(
            cl.command_execution_status.COMPLETE)))
        timer.start()
        back[:] = 0
        staging.download(back, buffer, wait_for=[done])
        assert completed
        np.testing.assert_array_equal(back, data)
        timer.join()
        # a buffer too small for the last chunks: the device's error, once every chunk ended
        small = cl.Buffer(engine.context, cl.mem_flags.READ_WRITE, data.nbytes // 2)
        with pytest.raises(cl.Error):
            staging.upload(small, data)
        with pytest.raises(cl.Error):
            staging.download(back, small)
    finally:
        staging.close()


def test_an_upload_waits_for_the_last_copy_out_of_each_slot_it_refills(engine, monkeypatch):
    """``Staging.upload`` returns while copies may still read its pinned slots (NVIDIA runs
    them later; PoCL before the enqueue returns, so a deferred copy stands in for the
    device): the next upload waits for a slot's last copy before it refills the slot."""
    import pyopencl as cl

    real_copy = cl.enqueue_copy
    deferred = []

    class DeferredCopy:
        """A non-blocking upload that reads its slot only when waited for."""

        def __init__(self, args, kwargs):
            self.args, self.kwargs, self.done = args, {**kwargs, "is_blocking": True}, False

        def wait(self):
            if not self.done:
                real_copy(*self.args, **self.kwargs)
                self.done = True

    def enqueue_copy(*args, **kwargs):
        if kwargs.get("is_blocking", True):
            return real_copy(*args, **kwargs)
        deferred.append(DeferredCopy(args, kwargs))
        return deferred[-1]

    monkeypatch.setattr(opencl_transfer.Staging, "CHUNK", 4096)
    monkeypatch.setattr(opencl_transfer.Staging, "MIN_CHUNK", 4096)
    monkeypatch.setattr(cl, "enqueue_copy", enqueue_copy)
    staging = opencl_transfer.Staging(engine.context, engine.queue)
    planes = np.random.default_rng(6).integers(0, 256, (3, (staging.SLOTS + 4) * 4096), np.uint8)
    buffers = [cl.Buffer(engine.context, cl.mem_flags.READ_WRITE, plane.nbytes) for plane in planes]
    try:
        for plane, buffer in zip(planes, buffers, strict=True):
            staging.upload(buffer, plane)  # 20 chunks: the slots wrap within and across calls
        assert sum(not copy.done for copy in deferred) == staging.SLOTS  # the last call's
        for copy in deferred:
            copy.wait()  # the device catches up
        for plane, buffer in zip(planes, buffers, strict=True):
            back = np.zeros_like(plane)
            staging.download(back, buffer)
            np.testing.assert_array_equal(back, plane)
    finally:
        staging.close()


def test_progress_reports_every_iteration(engine):
    plan = make_plan(DiffuseParams(iterations=5, radius=4, first=0.2))
    calls = []
    opencl_solver.solve(_image((24, 24, 2)), plan, progress=lambda *a: calls.append(a))
    assert calls == [(i, 5) for i in range(1, 6)]


def test_progress_can_abort_and_the_engine_still_works(engine):
    plan = make_plan(DiffuseParams(iterations=6, radius=4, first=0.2))
    image = _image((24, 24, 2))

    before = opencl_solver.solve(image, plan)

    def stop(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        opencl_solver.solve(image, plan, progress=stop)
    np.testing.assert_array_equal(opencl_solver.solve(image, plan), before)
    np.testing.assert_allclose(before, numpy_solver.solve(image, plan), atol=1e-5)


# -- tiling -----------------------------------------------------------------------------

def test_tiles_cover_the_image_once():
    tiles = opencl_solver.plan_tiles(100, 70, 9, lambda h, w: h * w <= 40 * 40)
    assert len(tiles) > 1
    covered = np.zeros((100, 70), int)
    for tile in tiles:
        padded = covered[tile.rows, tile.cols]
        padded[tile.core_rows, tile.core_cols] += 1
        assert padded.shape[0] * padded.shape[1] <= 40 * 40
    assert (covered == 1).all()
    assert opencl_solver.plan_tiles(100, 70, 30, lambda h, w: h * w <= 40 * 40) is None


def test_oversized_image_is_tiled_with_the_whole_image_result(engine, restore_configuration):
    plan = make_plan(DiffuseParams(iterations=2, radius=2, first=0.3, third=-0.2,
                                   anisotropy_first=2.0, edge_sensitivity=1.0))
    image = _image((150, 90, 3), seed=8)
    mask = image[..., 1] > 0.7
    whole = engine.solve(image, plan, mask)
    limit = 110 * 90 * 3 * 4  # bytes: a 110-row buffer, less than the image's 150 rows
    opencl_solver.configure(max_allocation=limit)
    tiled_engine = opencl_solver.engine()
    assert tiled_engine is not engine and tiled_engine.buffer_limit == limit
    assert plan.full_reach == plan.iterations * 3 * ((1 << plan.scales) - 1)
    assert len(tiled_engine._tiles(image.shape, plan.full_reach, plan)) > 1
    calls = []
    tiled = opencl_solver.solve(image, plan, mask, progress=lambda *a: calls.append(a))
    np.testing.assert_array_equal(tiled, whole)
    assert calls[-1][0] == calls[-1][1] > plan.iterations
    np.testing.assert_array_equal(opencl_solver.variance_map(image, plan, mask),
                                  engine.variance_map(image, plan, mask))


def test_image_beyond_any_tiling_falls_back_to_numpy(engine, restore_configuration):
    plan = make_plan(DiffuseParams(iterations=4, radius=30, first=0.2))
    image = _image((40, 40, 1), seed=9)
    opencl_solver.configure(max_allocation=64)
    with pytest.warns(RuntimeWarning, match="using the NumPy solver"):
        out = opencl_solver.solve(image, plan)
    np.testing.assert_array_equal(out, numpy_solver.solve(image, plan))


# -- errors and fallback ----------------------------------------------------------------

def test_kernel_build_error(engine, tmp_path, restore_configuration):
    for name in opencl_solver.KERNEL_FILES:
        shutil.copy(data_dir("kernels") / name, tmp_path / name)
    with open(tmp_path / "pde.cl", "a") as source:
        source.write("\nkernel void broken(global float *x) { x[0] = undeclared_name; }\n")
    with pytest.raises(opencl_devices.OpenCLUnavailable, match="failed to build"):
        opencl_solver.Engine(engine.device, tmp_path)

    opencl_solver.configure(kernel_dir=tmp_path)
    with pytest.raises(RuntimeError, match="failed to build"):
        backends.get_solver("opencl")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = backends.get_solver("auto")
        second = backends.get_solver("auto")
    assert first is second is numpy_solver
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "failed to build" in messages[0] and "NumPy" in messages[0]


@pytest.mark.parametrize("units", ["missing", "broken"])
def test_integers_without_the_units_program_are_mapped_on_the_host(engine, tmp_path, units):
    """A kernel folder without a working units.cl (an older copy, a broken edit) still
    runs integer images: the host maps them, with the same result."""
    for name in opencl_solver.KERNEL_FILES:
        shutil.copy(data_dir("kernels") / name, tmp_path / name)
    if units == "broken":
        (tmp_path / "units.cl").write_text("kernel void to_working(undeclared x) {}\n")
    other = opencl_solver.Engine(engine.device, tmp_path, profiling=True)
    image = (_image((30, 34, 3), seed=7) * 65535).astype(np.uint16)
    layout = intensity.check_image(image, -1, "dtype")
    assert not other.maps_units(layout)
    plan = make_plan(DiffuseParams.from_preset("denoise: fine").replace(iterations=2))
    with other.profile() as profile:
        out = other.solve(image, plan, layout=layout)
    assert "to_working" not in {kind for (kind, _), _event in profile.events}
    stack = intensity.caller_planes(image, layout)  # (1, H, W, C)
    np.testing.assert_array_equal(out, intensity.from_working(
        engine.solve(intensity.to_working(image, layout), plan), layout))
    np.testing.assert_array_equal(other.solve_planes(np.concatenate([stack, stack]), plan,
                                                     layout=layout)[1], out)


def test_missing_kernel_files_are_reported(engine, tmp_path):
    with pytest.raises(opencl_devices.OpenCLUnavailable, match="cannot read the OpenCL kernels"):
        opencl_solver.Engine(engine.device, tmp_path)


def test_device_choice_of_a_wrong_type_is_refused():
    with pytest.raises(TypeError, match="device index"):
        opencl_solver.configure(device=1.5)


def test_invalid_allocation_limit_is_refused():
    with pytest.raises(ValueError, match="positive number of bytes"):
        opencl_solver.configure(max_allocation=0)


NO_PLATFORM_SCRIPT = textwrap.dedent("""
    import json, warnings
    import numpy as np
    from napari_diffuse import backends, diffuse
    from napari_diffuse.opencl_devices import list_devices
    report = {"devices": len(list_devices())}
    try:
        backends.get_solver("opencl")
    except RuntimeError as error:
        report["opencl_error"] = str(error)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report["auto"] = backends.get_solver("auto").__name__
        image = np.random.default_rng(0).random((16, 16), dtype=np.float32)
        same = np.array_equal(diffuse(image, iterations=2, radius=3, first=0.2),
                              diffuse(image, iterations=2, radius=3, first=0.2, backend="numpy"))
    report["same"] = same
    report["warnings"] = [str(w.message) for w in caught]
    print(json.dumps(report))
""")


def test_no_platform_falls_back_or_raises(tmp_path):
    """A process whose ICD loader finds no vendor file: no platform at all."""
    empty = tmp_path / "vendors"
    empty.mkdir()
    env = dict(os.environ, OCL_ICD_VENDORS=str(empty), OPENCL_VENDOR_PATH=str(empty),
               POCL_CACHE_DIR=str(tmp_path / "pocl-cache"))
    env.pop(opencl_devices.DEVICE_VARIABLE, None)
    run = subprocess.run([sys.executable, "-c", NO_PLATFORM_SCRIPT], env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["devices"] == 0
    assert "no OpenCL platform" in report["opencl_error"]
    assert report["auto"] == "napari_diffuse.numpy_solver" and report["same"]
    assert len(report["warnings"]) == 1
    assert "no OpenCL platform" in report["warnings"][0] and "NumPy" in report["warnings"][0]


# -- rows per work item, stacks, profiling ----------------------------------------------

@pytest.mark.parametrize("rows", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(37, 53, 1), (29, 41, 3), (6, 33, 4)])
def test_every_rows_per_item_gives_the_same_result(engine, rows, shape):
    """Rows per work item change which loads are shared, never the arithmetic; short
    images (fewer rows than the coarse dilations) take the border paths."""
    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[0]))
    image = _image(shape, seed=rows)
    mask = image[..., 0] > 0.7
    one, many = (opencl_solver.Engine(engine.device, rows=r, vector_width=4, precise=False)
                 for r in (1, rows))
    np.testing.assert_array_equal(many.solve(image, plan), one.solve(image, plan))
    np.testing.assert_array_equal(many.solve(image, plan, mask), one.solve(image, plan, mask))
    np.testing.assert_array_equal(many.variance_map(image, plan), one.variance_map(image, plan))


@pytest.mark.parametrize(("height", "mult", "local"), [
    (4000, 1, (32, 4, 1)), (4000, 512, (64, 2, 1)), (300, 256, (128, 1, 1)),
    (37, 64, (128, 1, 1))])
def test_coarse_dilations_trade_work_group_rows_for_packs(engine, height, mult, local):
    """A row class with fewer blocks of rows than the work-group has rows (8 rows at
    dilation 512 in 4000: 2 blocks of 4) gets a work-group of the same size with more
    packs, so that no work item waits idle for a row."""
    program = opencl_solver.Engine(engine.device, rows=4, vector_width=4, local_size=(32, 4),
                                   precise=False)._program_for(4)
    assert program.local["bspline_level"] == (32, 4)
    size, fitted, _ = program.rows_geometry("bspline_level", height, 600, 4, mult)
    assert fitted == local
    assert all(n % m == 0 for n, m in zip(size, fitted, strict=True))
    rows_per_class = math.ceil(height / min(mult, height))
    assert size[1] - math.ceil(rows_per_class / 4) < fitted[1]


def test_rows_per_item_is_checked(engine):
    with pytest.raises(ValueError, match="rows per work item"):
        opencl_solver.Engine(engine.device, rows=9)


def _packs_planes(engine, plane_bytes: int) -> bool:
    """Whether planes of ``plane_bytes`` lie back to back in a stack's device slot."""
    return plane_bytes % max(1, engine.device.mem_base_addr_align // 8) == 0


@pytest.mark.parametrize("side", [26, 32])  # planes padded in the slot, or back to back
@pytest.mark.parametrize(("staged", "batch"), [(False, 1), (True, 1), (False, 2), (True, 3)])
def test_stack_streams_with_the_plane_results(engine, staged, batch, side, monkeypatch):
    """A stack's planes come back as each plane's own solve; a batch whose planes lie back
    to back moves as one copy each way, one with gaps as one copy per plane."""
    monkeypatch.setattr(opencl_transfer.Staging, "CHUNK", 4096)
    streaming = opencl_solver.Engine(engine.device, staged=staged, stack_batch=batch,
                                     profiling=True)
    plan = make_plan(DiffuseParams.from_preset("inpaint highlights").replace(iterations=3))
    planes = _image((5, side, 31, 2), seed=11) * 2
    with streaming.profile() as profile:
        streaming.solve_planes(planes, plan)
    copies = 5 if batch == 1 or not _packs_planes(engine, planes[0].nbytes) else -(-5 // batch)
    kinds = [kind for (kind, _), _event in profile.events]
    assert (kinds.count("upload"), kinds.count("download")) == (copies, copies)
    given = [planes[p, ..., p % 2] > 1.5 for p in range(5)]
    mixed = [None, given[1], None, given[3], None]
    for masks in (None, given, mixed):  # luminance masks, caller masks, one then the other
        out = streaming.solve_planes(planes, plan, masks)
        assert out.shape == planes.shape and out.dtype == np.float32
        for p in range(5):
            np.testing.assert_array_equal(
                out[p], engine.solve(planes[p], plan, None if masks is None else masks[p]))
    calls = []
    with_progress = streaming.solve_planes(planes, plan, given,
                                           progress=lambda *a: calls.append(a))
    assert calls == [(i, 15) for i in range(1, 16)]
    np.testing.assert_array_equal(with_progress[2], engine.solve(planes[2], plan, given[2]))
    keep = make_plan(DiffuseParams.from_preset("inpaint highlights").replace(
        iterations=2, keep_saturated=True))
    assert keep.keep_saturated
    kept = streaming.solve_planes(planes, keep, given)
    for p in range(5):
        np.testing.assert_array_equal(kept[p], engine.solve(planes[p], keep, given[p]))
    # the module function, on the shared engine
    np.testing.assert_array_equal(opencl_solver.solve_planes(planes[:2], keep, given[:2]),
                                  kept[:2])


def test_the_stack_pipeline_refills_a_slot_only_after_its_download(engine):
    """Batches through :class:`StackPipeline` with no compute between them come back as
    they went; with slow downloads, no upload overwrites a slot before the batch it held
    has been downloaded."""
    import time

    import pyopencl as cl

    from napari_diffuse.opencl_stack import SLOTS, StackPipeline
    from napari_diffuse.opencl_transfer import Transfers

    planes = _image((7, 12, 10, 2), seed=21)
    groups = [range(b, min(b + 2, 7)) for b in range(0, 7, 2)]  # 4 batches of 2, 2, 2, 1
    nbytes = planes[0].nbytes
    views = [[cl.Buffer(engine.context, cl.mem_flags.READ_WRITE, nbytes) for _ in range(2)]
             for _ in range(SLOTS)]
    events, lock = [], threading.Lock()

    class Logged(Transfers):
        def upload(self, buffer, host, record=None):
            with lock:
                events.append(("upload", buffer.int_ptr))
            return super().upload(buffer, host, record)

        def download(self, host, buffer, wait_for=None, record=None):
            time.sleep(0.02)  # the download lags: uploads run ahead if nothing holds them
            super().download(host, buffer, wait_for, record)
            with lock:
                events.append(("downloaded", buffer.int_ptr))

    transfers = tuple(Logged(engine.context, cl.CommandQueue(engine.context), staged=False)
                      for _ in range(2))
    out = np.zeros_like(planes)
    pipeline = StackPipeline(planes, out, groups, views, transfers)
    try:
        for g in range(len(groups)):
            cl.enqueue_barrier(engine.queue, wait_for=pipeline.uploaded(g))
            pipeline.download(g, cl.enqueue_marker(engine.queue))
        pipeline.finish()
    finally:
        pipeline.close()
    np.testing.assert_array_equal(out, planes)
    # batch 3 refills slot 0: only after batch 0's two planes came back
    first_reuse = events.index(("upload", views[0][0].int_ptr), 1)
    assert events[:first_reuse].count(("downloaded", views[0][0].int_ptr)) == 1
    assert ("downloaded", views[0][1].int_ptr) in events[:first_reuse]


@pytest.mark.parametrize("batch", [1, 3])
def test_stack_divergence_stops_the_stream(engine, batch):
    from napari_diffuse.errors import DivergenceError

    plan = make_plan(DiffuseParams(
        first=-1, second=-1, third=-1, fourth=-1, anisotropy_first=10, anisotropy_second=-10,
        anisotropy_third=10, anisotropy_fourth=-10, radius=64, iterations=50, sharpness=1,
        edge_threshold=-2))
    planes = _image((4, 48, 48, 1), seed=12)
    streaming = opencl_solver.Engine(engine.device, stack_batch=batch)
    with pytest.raises(DivergenceError):
        streaming.solve_planes(planes, plan)
    # the engine still works afterwards
    small = make_plan(DiffuseParams(iterations=2, radius=2, first=0.2))
    np.testing.assert_array_equal(streaming.solve_planes(planes, small)[1],
                                  engine.solve(planes[1], small))


def test_profile_records_every_pass_and_transfer(engine):
    profiled = opencl_solver.Engine(engine.device, profiling=True)
    plan = make_plan(DiffuseParams(iterations=3, radius=8, first=0.2))
    with profiled.profile() as profile:
        profiled.solve(_image((40, 40, 4)), plan)
    seconds = profile.seconds()
    assert {key for key in seconds} == {("upload", -1), ("download", -1),
                                         *((kind, s) for kind in ("bspline", "pde")
                                           for s in range(plan.scales))}
    assert sum(1 for (kind, _), _ in profile.events if kind == "pde") == 3 * plan.scales
    assert all(value >= 0 for value in seconds.values())
    with pytest.raises(ValueError, match="profiling=True"):
        with engine.profile():
            pass


def test_each_kernel_has_its_own_shape(engine):
    from napari_diffuse.opencl_program import KernelShape

    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[1]))
    image = _image((35, 27, 4), seed=13)
    mixed = opencl_solver.Engine(engine.device, vector_width=4, rows=3, local_size=(16, 2),
                                 pde=KernelShape(1, 2, (32, 4)), precise=False)
    assert mixed.shapes["pde_step"] == (1, 2, (32, 4), 0)
    assert mixed.shapes["bspline_level"] == (4, 3, (16, 2), 0)
    plain = opencl_solver.Engine(engine.device, vector_width=1, rows=1, precise=False)
    assert plain.shapes["pde_step"] == plain.shapes["bspline_level"]
    np.testing.assert_array_equal(mixed.solve(image, plan), plain.solve(image, plan))
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        opencl_solver.Engine(engine.device, pde=KernelShape(3, 1, (8, 8)))


def test_fast_math_stays_close_and_equal_across_shapes(engine):
    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[0]))
    image = _image((31, 29, 4), seed=14)
    fast = [opencl_solver.Engine(engine.device, vector_width=width, precise=False,
                                 fast_math=True) for width in (1, 4)]
    out = fast[0].solve(image, plan)
    np.testing.assert_array_equal(out, fast[1].solve(image, plan))
    np.testing.assert_array_equal(fast[0].solve(image[..., :1], plan), out[..., :1])
    _close(out, numpy_solver.solve(image, plan))


# one plan of each structure the presets have, and two random ones (every order active)
_STRUCTURES = ["denoise: medium", "astro: denoise faint frames", "inpaint highlights",
               "local contrast", "local contrast: fast", "sharpen demosaicing: AA filter",
               "simulate line drawing", "simulate watercolor", "bloom"]


@pytest.mark.parametrize("precise", [True, False])
def test_the_specialised_pde_gives_the_general_result(engine, monkeypatch, precise):
    """The PDE built for each plan's structure (the default) against the general program:
    bit for bit in precise arithmetic; with fast math, where a compiler may fuse a product
    and a sum (FMA) in one program and not the other (NVIDIA does), within 1e-6 (PoCL:
    bit for bit too). Every preset structure, random settings, a mask, a stack batch and
    an odd channel count. The negative control: a program built for another structure
    (orders 2 and 4 left out) fails the same comparison."""
    from napari_diffuse import opencl_engine
    from napari_diffuse.opencl_program import plan_options

    plans = [make_plan(DiffuseParams.from_preset(name).replace(iterations=2))
             for name in _STRUCTURES]
    plans += [make_plan(DiffuseParams(**settings)) for settings in RANDOM_SETTINGS[:2]]
    assert len({plan_options(plan) for plan in plans}) == len(plans)  # all different
    image = _image((37, 45, 4), seed=31)
    mask = np.random.default_rng(32).random((37, 45)) > 0.4
    stack = _image((3, 21, 26, 3), seed=33)
    general, specialised = (opencl_solver.Engine(engine.device, precise=precise,
                                                 fast_math=not precise, specialized=flag)
                            for flag in (False, True))

    def same(actual, expected):
        if precise:
            np.testing.assert_array_equal(actual, expected)
        else:
            _close(actual, expected, max_abs=1e-6, mean_abs=1e-7)

    for plan in plans:
        for args in ((image, plan), (image, plan, mask)):
            same(specialised.solve(*args), general.solve(*args))
        same(specialised.solve_planes(stack, plan), general.solve_planes(stack, plan))
    sharpen = plans[5]
    assert all(speed != 0 for speed in sharpen.steps[0].speeds)
    monkeypatch.setattr(opencl_engine, "plan_options", lambda plan: plan_options(plans[0]))
    wrong = opencl_solver.Engine(engine.device, precise=precise, fast_math=not precise)
    with pytest.raises(AssertionError):
        same(wrong.solve(image, sharpen), general.solve(image, sharpen))


def test_gpu_odd_channel_counts_take_the_narrow_shapes(engine):
    from napari_diffuse.opencl_program import NARROW_SHAPE

    plan = make_plan(DiffuseParams(**RANDOM_SETTINGS[0]))
    gpu_like = opencl_solver.Engine(engine.device, precise=False)
    gpu_like._gpu = True  # as on a GPU: 4-float packs of 1 or 3 channels would load unaligned
    for name in ("bspline_level", "pde_step"):
        assert gpu_like._program_for(1, name).shape == NARROW_SHAPE[name]
        assert gpu_like._program_for(3, name).shape.vector_width == 2
        assert gpu_like._program_for(8, name).shape == gpu_like.shapes[name]
    explicit = opencl_solver.Engine(engine.device, vector_width=4, rows=3, precise=False)
    explicit._gpu = True
    assert explicit._program_for(3, "pde_step").shape == (2, 3, explicit.local_size, 0)
    scalar = opencl_solver.Engine(engine.device, vector_width=1, rows=1, precise=False)
    for channels in (1, 3):
        image = _image((33, 41, channels), seed=15)
        np.testing.assert_array_equal(gpu_like.solve(image, plan), scalar.solve(image, plan))


def test_register_caps_follow_the_program_and_the_device(engine):
    from napari_diffuse.opencl_program import PDE_SHAPE, KernelShape, pde_shape

    plans = {name: make_plan(DiffuseParams.from_preset(name))
             for name in ("denoise: medium", "bloom", "local contrast: fast",
                          "lens deblur: medium", "sharpen demosaicing: AA filter")}
    capped = PDE_SHAPE["GPU"]
    assert capped.registers == 128
    assert pde_shape(capped, specialized=True) == capped
    assert pde_shape(capped, specialized=False) == capped._replace(registers=0)

    image = _image((29, 37, 4), seed=17)
    shape = KernelShape(4, 2, (16, 4), 64)
    caps = opencl_solver.Engine(engine.device, pde=shape, precise=False)
    plain = opencl_solver.Engine(engine.device, pde=shape._replace(registers=0), precise=False)
    program = caps._program_for(4, "pde_step", plans["denoise: medium"])
    assert program.shape == shape
    # the cap reaches NVIDIA's compiler only (PoCL has no cl_nv_compiler_options)
    nvidia = "cl_nv_compiler_options" in engine.device.extensions
    assert ("-cl-nv-maxrregcount=64" in program.options) == nvidia
    assert not any("maxrregcount" in option for option in
                   plain._program_for(4, "pde_step", plans["denoise: medium"]).options)
    for plan in plans.values():
        np.testing.assert_array_equal(caps.solve(image, plan), plain.solve(image, plan))


def test_stack_batch_shrinks_to_fit_the_device(engine, monkeypatch):
    plan = make_plan(DiffuseParams(iterations=2, radius=2, first=0.2))
    planes = _image((6, 20, 24, 2), seed=16)
    streaming = opencl_solver.Engine(engine.device, stack_batch=4)
    # room for a batch of 2 planes, not 4
    streaming.memory_limit = 20 * 24 * opencl_solver.device_bytes_per_pixel(plan, 2, 6, 2)
    batches = []
    iterate = streaming._iterate

    def recording(*args, **kwargs):
        batches.append(kwargs["batch"][0])
        return iterate(*args, **kwargs)

    monkeypatch.setattr(streaming, "_iterate", recording)
    out = streaming.solve_planes(planes, plan)
    assert batches == [2, 2, 2]
    for p in range(6):
        np.testing.assert_array_equal(out[p], engine.solve(planes[p], plan))
