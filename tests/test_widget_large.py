"""Large and lazy layers in the real viewer (Xvfb via pytest-xvfb): computed in the
background chunk by chunk into a store, with progress and Cancel, without freezing napari."""

from __future__ import annotations

import gc
import threading
import time

import dask.array as da
import numpy as np
import pytest

napari = pytest.importorskip("napari")
zarr = pytest.importorskip("zarr")

from qtpy.QtCore import QTimer  # noqa: E402
from test_widget import config_folder, outputs  # noqa: E402,F401 - config_folder: a fixture

from napari_diffuse import api, result_store, tiling  # noqa: E402
from napari_diffuse.params import DiffuseParams  # noqa: E402
from napari_diffuse.widget import METADATA_KEY, SELECTED  # noqa: E402

#: One iteration of a light preset: a 4096x4096 run takes a few seconds on 2 CPU cores.
QUICK = DiffuseParams.from_preset("denoise: fine").replace(iterations=1)
#: Slow enough that Cancel lands mid-run on any machine.
SLOW = DiffuseParams.from_preset("denoise: medium").replace(iterations=20)
MAX_STALL = 0.5  # seconds the main thread may block


@pytest.fixture(autouse=True)
def store_folder(tmp_path, monkeypatch):
    """zarr stores go to a fresh folder (empty again once every store is gone)."""
    folder = tmp_path / "stores"
    monkeypatch.setattr(result_store, "STORE_FOLDER", folder)
    return folder


class MainThreadWatch:
    """A 50 ms QTimer on the main thread: the longest gap between its ticks is the longest
    stall; each tick also records the progress bar."""

    def __init__(self, widget):
        self.widget, self.ticks, self.progress = widget, [], []
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        self.ticks.append(time.perf_counter())
        self.progress.append((self.widget.progress.value, self.widget.progress.max,
                              self.widget.running))

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()

    @property
    def longest_stall(self) -> float:
        return float(np.diff(self.ticks).max())


def noise(shape, chunks, seed=0):
    return da.random.default_rng(seed).random(shape, dtype=np.float32, chunks=chunks)


def start(widget, layer, params, backend="numpy"):
    widget.input.value = layer
    widget.set_params(params)
    widget.backend.value = backend
    worker = widget.run()
    assert worker is not None, widget.status.value
    return worker


def stored(array) -> bool:
    return isinstance(array, (np.ndarray, zarr.Array))


def test_large_dask_layer_runs_in_the_background_into_a_store(viewer, widget, qtbot,
                                                              monkeypatch):
    lazy = noise((4096, 4096), 1024)
    layer = viewer.add_image(lazy, name="big", contrast_limits=(0, 1))
    qtbot.wait(200)
    with MainThreadWatch(widget) as watch:
        start(widget, layer, QUICK)
        qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
        qtbot.wait(1000)  # napari draws the result
    assert watch.longest_stall < MAX_STALL, watch.longest_stall
    during = [value / maximum for value, maximum, running in watch.progress
              if running and maximum > 1]
    assert any(0 < f < 1 for f in during), watch.progress  # it moved before the end
    assert sorted(during) == during  # and never went back

    result = outputs(viewer)["result"]
    assert not result.multiscale and isinstance(result.data, np.ndarray)
    crop = np.s_[900:2200, 900:2200]  # across chunk seams
    expected = api.diffuse(lazy, QUICK, value_range=None, backend="numpy")[crop].compute()
    np.testing.assert_array_equal(result.data[crop], expected)
    seconds = float(widget.status.value.split(" done in ")[1].split(" s")[0])
    assert seconds >= 0.3  # the real time of the run, not of building a graph

    calls = []
    real = tiling.get_solver
    monkeypatch.setattr(tiling, "get_solver", lambda *a, **k: (calls.append(a), real(*a, **k))[1])
    with MainThreadWatch(widget) as watch:
        viewer.reset_view()
        viewer.scene.camera.zoom *= 4
        qtbot.wait(500)
        viewer.layers.selection.active = result
        viewer.reset_view()
        qtbot.wait(500)
    assert calls == []  # drawing the result runs no solver
    assert watch.longest_stall < MAX_STALL, watch.longest_stall


def test_cancel_stops_a_lazy_run_within_a_second_and_leaves_nothing(viewer, widget, qtbot,
                                                                    store_folder, monkeypatch):
    monkeypatch.setattr(result_store, "IN_MEMORY_BUDGET", 1)  # into a zarr store
    layer = viewer.add_image(noise((4096, 4096), 1024, seed=1), name="big",
                             contrast_limits=(0, 1))
    names = [lyr.name for lyr in viewer.layers]
    start(widget, layer, SLOW)
    qtbot.waitUntil(lambda: any(store_folder.glob("run-*")), timeout=30_000)
    qtbot.wait(500)
    with MainThreadWatch(widget) as watch:
        pressed = time.perf_counter()
        widget.cancel_button.native.click()
        qtbot.waitUntil(lambda: not widget.running, timeout=10_000)
        stopped = time.perf_counter() - pressed
        qtbot.wait(300)
    assert stopped < 1.0, stopped
    assert watch.longest_stall < MAX_STALL, watch.longest_stall
    assert [lyr.name for lyr in viewer.layers] == names  # no half result layer
    assert "cancelled" in widget.status.value
    assert list(store_folder.iterdir()) == []  # the zarr store is gone
    # the chunks that were computing stop at their next iteration, and write nothing
    qtbot.waitUntil(lambda: not any(t.name == "napari-diffuse store"
                                    for t in threading.enumerate()), timeout=60_000)
    assert time.perf_counter() - pressed < 3.0
    assert list(store_folder.iterdir()) == []


def pyramid(shape, chunks, levels=3, seed=2):
    base = noise(shape, chunks, seed)
    return [base] + [da.coarsen(np.mean, base, {0: 2 ** k, 1: 2 ** k}).astype(np.float32)
                     for k in range(1, levels)]


def test_multiscale_input_gives_a_multiscale_result(viewer, widget, qtbot):
    levels = pyramid((2048, 2048), 512)
    layer = viewer.add_image(levels, multiscale=True, name="pyramid", contrast_limits=(0, 1))
    widget.show_luminance_mask.value = True
    widget.show_variance_map.value = True
    start(widget, layer, QUICK)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    found = outputs(viewer)
    result = found["result"]
    shapes = [tuple(level.shape) for level in levels]
    assert result.multiscale and [tuple(s) for s in result.level_shapes] == shapes
    assert all(stored(level) for level in result.data)
    expected = api.diffuse(levels[0], QUICK, value_range=None, backend="numpy").compute()
    np.testing.assert_array_equal(result.data[0], expected)
    np.testing.assert_allclose(result.data[1], expected.reshape(1024, 2, 1024, 2).mean((1, 3)),
                               atol=1e-6)
    for role in ("luminance mask", "variance map"):
        extra = found[role]
        assert extra.multiscale and [tuple(s) for s in extra.level_shapes] == shapes, role
        assert all(stored(level) for level in extra.data), role
    assert found["luminance mask"].data[0].dtype == np.uint8


def test_zarr_store_gives_the_same_values_and_a_display_pyramid(viewer, widget, qtbot,
                                                                monkeypatch, store_folder,
                                                                tmp_path):
    monkeypatch.setattr(result_store, "IN_MEMORY_BUDGET", 1)
    lazy = noise((2048, 2048), 512, seed=3)
    layer = viewer.add_image(lazy, name="on disk", contrast_limits=(0, 1))
    picked = tmp_path / "picked"  # the user's store folder, chosen in the dock
    widget.store_folder.value = picked
    start(widget, layer, QUICK)
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    result = outputs(viewer)["result"]
    assert result.multiscale  # napari reads only what it shows of a stored result
    assert [tuple(s) for s in result.level_shapes] == [(2048, 2048), (1024, 1024)]
    assert all(isinstance(level, zarr.Array) for level in result.data)
    expected = api.diffuse(lazy, QUICK, value_range=None, backend="numpy").compute()
    np.testing.assert_array_equal(result.data[0][:], expected)
    (run,) = picked.glob("run-*")
    assert any(run.iterdir()) and not store_folder.exists()
    viewer.layers.remove(result)  # the store goes with its layer
    del result
    gc.collect()
    qtbot.waitUntil(lambda: not any(picked.iterdir()), timeout=10_000)  # run-* folder too


def test_a_zarr_backed_layer_is_an_input(viewer, widget, qtbot, tmp_path):
    data = np.random.default_rng(4).random((3, 300, 280), dtype=np.float32)
    on_disk = zarr.create_array(store=str(tmp_path / "in.zarr"), data=data, chunks=(1, 128, 128))
    layer = viewer.add_image(on_disk, name="zarr", contrast_limits=(0, 1))
    start(widget, layer, QUICK)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    result = outputs(viewer)["result"]
    assert isinstance(result.data, np.ndarray)
    expected = api.diffuse(da.from_array(on_disk, chunks=on_disk.chunks), QUICK,
                           value_range=None, backend="numpy").compute()
    np.testing.assert_array_equal(result.data, expected)


def test_an_error_in_a_lazy_run_is_reported_and_leaves_no_store(viewer, widget, qtbot,
                                                                monkeypatch, store_folder):
    from napari.utils.notifications import notification_manager

    monkeypatch.setattr(result_store, "IN_MEMORY_BUDGET", 1)
    data = np.random.default_rng(5).random((512, 512), dtype=np.float32)
    data[400, 300] = np.nan
    layer = viewer.add_image(da.from_array(data, chunks=256), name="holes",
                             contrast_limits=(0, 1))
    seen = len(notification_manager.records)
    start(widget, layer, QUICK)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    errors = [n for n in notification_manager.records[seen:] if str(n.severity) == "error"]
    assert errors and "NaN" in str(errors[0].message)
    assert [lyr.name for lyr in viewer.layers] == ["holes"]
    assert list(store_folder.iterdir()) == []


def test_a_large_numpy_result_is_shown_through_a_pyramid(viewer, widget, qtbot, monkeypatch):
    monkeypatch.setattr(result_store, "PYRAMID_ABOVE", 256 * 256)  # "large" made small
    monkeypatch.setattr(result_store, "PYRAMID_SMALLEST", 256)
    data = np.random.default_rng(6).random((1024, 1000), dtype=np.float32)
    layer = viewer.add_image(data, name="numpy", contrast_limits=(0, 1))
    widget.show_luminance_mask.value = True
    start(widget, layer, QUICK)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    found = outputs(viewer)
    shapes = [(1024, 1000), (512, 500), (256, 250)]
    assert [tuple(s) for s in found["result"].level_shapes] == shapes
    assert [tuple(s) for s in found["luminance mask"].level_shapes] == shapes
    expected = api.diffuse(data, QUICK, value_range=None, backend="numpy")
    np.testing.assert_array_equal(found["result"].data[0], expected)


def test_one_run_over_lazy_and_numpy_layers_counts_one_progress(viewer, widget, qtbot):
    lazy = viewer.add_image(noise((1024, 1024), 256, seed=7), name="lazy",
                            contrast_limits=(0, 1))
    plain = viewer.add_image(np.random.default_rng(8).random((300, 200), dtype=np.float32),
                             name="plain", contrast_limits=(0, 1))
    viewer.layers.selection = {lazy, plain}
    widget.input.value = SELECTED
    widget.set_params(QUICK)
    widget.backend.value = "numpy"
    with MainThreadWatch(widget) as watch:
        assert widget.run() is not None
        qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    steps = [value / maximum for value, maximum, running in watch.progress if running]
    assert sorted(steps) == steps and widget.progress.value == widget.progress.max
    results = {layer.name: layer for layer in viewer.layers
               if layer.metadata.get(METADATA_KEY, {}).get("role") == "result"}
    assert len(results) == 2 and all(isinstance(r.data, np.ndarray) for r in results.values())


def test_a_shapes_mask_on_a_large_layer_is_rasterised_off_the_main_thread(viewer, widget,
                                                                         qtbot):
    layer = viewer.add_image(np.random.default_rng(9).random((4096, 4096), dtype=np.float32),
                             name="big", contrast_limits=(0, 1))
    holes = viewer.add_shapes([[(1000, 1000), (1400, 1600)], [(3000, 200), (3300, 900)]],
                              shape_type=["rectangle", "ellipse"], name="holes")
    qtbot.wait(200)
    widget.mask.value = holes
    fill = DiffuseParams.from_preset("fill gaps under a mask").replace(iterations=1)
    with MainThreadWatch(widget) as watch:
        start(widget, layer, fill)
        qtbot.waitUntil(lambda: not widget.running, timeout=180_000)
        qtbot.wait(300)
    assert watch.longest_stall < MAX_STALL, watch.longest_stall  # napari's to_labels: ~2 s
    result = outputs(viewer)["result"].data
    mask = holes.to_labels(labels_shape=(4096, 4096)) != 0
    # only the holes change (outside: float32 rounding of the working-unit round trip)
    np.testing.assert_allclose(result[~mask], layer.data[~mask], rtol=0, atol=1e-6)
    assert np.abs(result[mask] - layer.data[mask]).mean() > 0.05
