"""The dock as a user meets it: its size, what stays visible, the menus' entries, defaults,
names, several layers at once, copy as Python (a real viewer under Xvfb, 1600x1000)."""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from qtpy.QtWidgets import QApplication  # noqa: E402
from test_widget import FAST, images, outputs, run_and_wait  # noqa: E402

from napari_diffuse import api  # noqa: E402
from napari_diffuse.presets import load_preset  # noqa: E402
from napari_diffuse.widget import DEFAULT_PRESETS, SELECTED  # noqa: E402

PLUGIN, WIDGET_NAME = "napari-diffuse", "diffuse or sharpen"


@pytest.fixture
def window(make_napari_viewer, qtbot):
    """A shown 1600x1000 viewer with a long-named layer and the docked widget."""
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1600, 1000)
    viewer.add_image(np.random.default_rng(0).random((64, 64), dtype=np.float32),
                     name="a layer with a rather long name, as microscopes write them")
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAME)
    qtbot.wait(100)
    return viewer, dock, widget


def test_the_dock_is_at_most_480_px_wide_and_run_is_always_visible(window, qtbot):
    viewer, dock, widget = window
    assert dock.width() <= 480, dock.width()
    scroll = widget.root_native_widget  # every control fits the width: no sideways scrolling
    assert not scroll.horizontalScrollBar().isVisible()
    assert scroll.viewport().width() >= scroll.widget().minimumSizeHint().width()
    for name in ("run_button", "cancel_button", "progress", "status"):
        control = getattr(widget, name).native
        bottom = control.mapTo(dock, control.rect().bottomLeft()).y()
        assert control.isVisible() and 0 < bottom <= dock.height(), name
        # outside the scroll area: scrolling the sections never hides them
        assert not widget.root_native_widget.isAncestorOf(control), name
    for name in ("iterations", "radius", "preset", "calibrate_button"):  # reachable
        assert widget.root_native_widget.isAncestorOf(getattr(widget, name).native)


def test_radii_in_physical_units_wrap_instead_of_widening_the_dock(window, qtbot):
    viewer, dock, widget = window
    layer = viewer.layers[0]
    layer.scale, layer.units = (0.1625, 0.1625), ("micrometer", "micrometer")
    widget.input.value = layer
    widget.radius.value = 512
    qtbot.wait(100)
    assert "83.2" in widget.radius_units.value  # 512 px of 0.1625 um
    scroll = widget.root_native_widget
    assert dock.width() <= 480, dock.width()
    assert not scroll.horizontalScrollBar().isVisible()
    assert scroll.viewport().width() >= scroll.widget().minimumSizeHint().width()


def test_progress_shows_in_naparis_activity_panel(window, qtbot):
    from napari.utils import progress

    viewer, _, widget = window
    widget.set_params(load_preset("denoise: fine").replace(iterations=64))
    widget.backend.value = "numpy"
    seen, texts = [], []
    worker = widget.run()
    assert worker is not None
    qtbot.waitUntil(lambda: (seen.extend(p.desc for p in progress._all_instances)
                             or any("diffuse" in d for d in seen)), timeout=30_000)
    bar = next(p for p in progress._all_instances if "diffuse" in p.desc)
    # the dock's bar says "42 % · 3 s left"; napari's (a tqdm) estimates from n of total
    qtbot.waitUntil(lambda: (texts.append(widget.progress.native.format())
                             or " left" in texts[-1]), timeout=60_000)
    assert bar.total == widget.progress.max and 0 < bar.n < bar.total
    qtbot.waitUntil(lambda: not widget.running, timeout=120_000)
    assert not any("diffuse" in p.desc for p in progress._all_instances)  # closed


def test_only_usable_layers_are_offered(widget):
    viewer = widget._viewer
    image = viewer.add_image(images()["gray"][0], name="cells")
    labels = viewer.add_labels(np.zeros((40, 48), np.uint8), name="holes")
    shapes = viewer.add_shapes(name="outline")
    inputs = widget.input.choices
    assert image in inputs and labels not in inputs and shapes not in inputs
    assert set(widget.mask.choices) == {None, labels, shapes}
    viewer.layers.remove(labels)
    viewer.layers.remove(shapes)
    assert widget.mask.choices == (None,) and widget.mask.native.currentText() == "none"


def test_an_empty_mask_is_refused_naming_it(widget):
    viewer = widget._viewer
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.mask.value = viewer.add_labels(np.zeros((40, 48), np.uint8), name="holes")
    assert widget.run() is None
    assert "'holes' is empty" in widget.status.value and len(viewer.layers) == 2


def test_a_new_input_starts_from_a_preset_that_does_something(widget):
    viewer = widget._viewer
    assert widget.params == widget.params.__class__()  # nothing chosen yet: darktable's
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    assert widget.preset.value == DEFAULT_PRESETS["other"]
    rgb = viewer.add_image(images()["rgb"][0], rgb=True, name="photo")
    widget.input.value = rgb
    assert widget.preset.value == DEFAULT_PRESETS["rgb"]
    widget.iterations.value = 3  # the user tunes: a new input no longer resets the controls
    widget.input.value = viewer.layers["cells"]
    assert widget.iterations.value == 3


def test_a_samples_suggested_preset_is_the_default(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "stars")
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAME)
    suggested = viewer.layers[-1].metadata["napari_diffuse"]["suggested_preset"]
    assert widget.preset.value == suggested


def test_radius_shows_pixels_and_physical_units(widget):
    viewer = widget._viewer
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells",
                                          scale=(0.25, 0.25), units=("micrometer",) * 2)
    widget.radius.value = 8
    widget.radius_center.value = 4
    assert widget.radius.label.endswith("(px)")
    assert widget.radius_units.value == ("radius span 8 px, central radius 4 px = 2 and 1 µm "
                                         "(1 px = 0.25 µm)")


def test_one_run_over_several_selected_layers(widget, qtbot):
    """napari splits channels into layers: select them, run once, get a result for each."""
    viewer = widget._viewer
    channels = [viewer.add_image(np.random.default_rng(i).random((32, 36), dtype=np.float32),
                                 name=f"channel {i}") for i in range(3)]
    assert SELECTED not in widget.input.choices
    viewer.layers.selection = set(channels)  # the menu offers them at once
    assert f"{SELECTED} (3)" in [widget.input.native.itemText(i)
                                 for i in range(widget.input.native.count())]
    widget.input.value = SELECTED
    widget.set_params(FAST)
    run_and_wait(widget, qtbot)
    assert widget.progress.value == widget.progress.max == 3 * FAST.iterations
    for layer in channels:
        result = outputs(viewer, layer)["result"]
        np.testing.assert_array_equal(result.data, api.diffuse(layer.data, FAST,
                                                               value_range=None))


def test_cancel_resets_the_progress_bar(widget, qtbot):
    viewer = widget._viewer
    widget.input.value = viewer.add_image(
        np.random.default_rng(3).random((256, 256), dtype=np.float32), name="big")
    widget.set_params(load_preset("denoise: medium").replace(iterations=500))
    widget.backend.value = "numpy"
    widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)
    widget.cancel()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert widget.progress.value == 0 and len(viewer.layers) == 1


def test_copy_as_python_runs_the_same_call(widget, qtbot):
    viewer = widget._viewer
    data = images()["gray"][0]
    widget.input.value = viewer.add_image(data, name="cells")
    widget.preset.value = "denoise: fine"
    widget.iterations.value = 2
    widget.value_range.value = "auto"
    code = widget.copy_as_python()
    assert QApplication.clipboard().text() == code
    namespace = {"viewer": viewer}
    exec(code, namespace)  # the snippet a script would paste, run for real
    expected = api.diffuse(data, preset="denoise: fine", iterations=2, value_range="auto")
    np.testing.assert_array_equal(namespace["result"], expected)
    assert viewer.layers[-1].name == "cells [denoise: fine, iterations 2]"


def test_copy_as_python_with_an_rgb_layer_and_a_shapes_mask(widget, qtbot):
    viewer = widget._viewer
    data = np.random.default_rng(1).random((50, 60, 3), dtype=np.float32)
    widget.input.value = viewer.add_image(data, name="photo", rgb=True)
    viewer.add_shapes([[(10, 12), (30, 40)]], shape_type="rectangle", name="holes")
    widget.mask.value = viewer.layers["holes"]
    widget.preset.value = "fill gaps under a mask"
    widget.iterations.value = 4
    namespace = {"viewer": viewer}
    exec(widget.copy_as_python(), namespace)
    mask = np.zeros((50, 60), bool)
    mask[10:31, 12:41] = True
    expected = api.diffuse(data, preset="fill gaps under a mask", iterations=4,
                           channel_axis=-1, mask=viewer.layers["holes"].to_labels(
                               labels_shape=(50, 60)) != 0, value_range=None)
    np.testing.assert_array_equal(namespace["result"], expected)
    assert namespace["mask"][mask].all()


def test_the_mask_menu_offers_no_output_layer(widget, qtbot):
    viewer = widget._viewer
    layer = viewer.add_image(np.random.default_rng(0).random((32, 36), dtype=np.float32),
                             name="cells")
    painted = viewer.add_labels(np.zeros((32, 36), np.uint8), name="holes")
    widget.input.value = layer
    widget.show_luminance_mask.value = True
    widget.set_params(FAST)
    run_and_wait(widget, qtbot)
    assert "luminance mask" in outputs(viewer, layer)
    assert [choice for choice in widget.mask.choices if choice is not None] == [painted]
