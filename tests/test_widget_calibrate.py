"""The widget's calibrate action, in a real napari viewer (Xvfb via pytest-xvfb).

Calibrations run for real (``backend="numpy"``) on small regions, so that they take
seconds; the widget's result is compared with :func:`napari_diffuse.calibrate.calibrate`
on the same input and region.
"""

from __future__ import annotations

import numpy as np
import pytest

napari = pytest.importorskip("napari")

from test_widget import config_folder, messages  # noqa: E402,F401 - fixtures

from napari_diffuse.calibrate import calibrate  # noqa: E402
from napari_diffuse.presets import load_preset  # noqa: E402
from napari_diffuse.widget import CUSTOM  # noqa: E402
from napari_diffuse.widget_calibrate import (  # noqa: E402
    AUTOMATIC,
    CALIBRATED,
    CURRENT_VIEW,
    rectangle_region,
    view_region,
)

BOX = [[20, 24], [20, 59], [55, 59], [55, 24]]  # pixel centres 20..55 x 24..59
BOX_REGION = (20, 24, 56, 60)  # 36 x 36 pixels
HOLE = (slice(33, 40), slice(38, 46))


def noisy_image() -> np.ndarray:
    """96x96 float32: a checkerboard of 24-pixel squares plus Gaussian noise."""
    y, x = np.mgrid[:96, :96]
    clean = 0.3 + 0.4 * ((x // 24 + y // 24) % 2)
    noise = np.random.default_rng(0).normal(0, 0.08, clean.shape)
    return (clean + noise).astype(np.float32)


def calibrate_and_wait(widget, qtbot, timeout=300_000):
    worker = widget.calibrate()
    assert worker is not None, widget.status.value
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return worker


def test_calibrate_fills_every_control_with_calibrates_result(viewer, widget, qtbot,
                                                              messages):
    data = noisy_image()
    widget.input.value = viewer.add_image(data, name="noisy")
    widget.calibration_region.value = viewer.add_shapes([BOX], shape_type="rectangle",
                                                         name="box")
    widget.backend.value = "numpy"
    widget.preset.value = "bloom"
    assert CALIBRATED not in widget.preset.choices
    calibrate_and_wait(widget, qtbot)

    expected, report = calibrate(data, "denoise", region=BOX_REGION, backend="numpy",
                                 value_range=None, extra_output=True)
    assert report.region == BOX_REGION and report.loss < report.input_loss
    assert expected != load_preset("bloom")  # so the controls really changed
    assert widget.params == expected
    assert widget.preset.value == CALIBRATED
    status = widget.status.value
    assert status.startswith("calibrated in ")
    assert (f"self-supervised loss {report.loss:.3g} (input {report.input_loss:.3g}), "
            f"{report.evaluations} evaluations") in status
    assert not messages.texts("error") and not messages.texts("warning")
    assert widget.run_button.enabled and widget.calibrate_button.enabled
    assert widget.progress.value == widget.progress.max

    # "calibrated" stays in the menu: a change shows "custom", choosing it restores it
    widget.iterations.value = 1
    assert widget.preset.value == CUSTOM
    widget.preset.value = CALIBRATED
    assert widget.params == expected


def test_cancelled_calibration_of_the_current_view_changes_no_control(
        make_napari_viewer, qtbot, messages):
    from napari_diffuse.widget import DiffuseWidget

    viewer = make_napari_viewer(show=True)
    viewer.window.resize(1500, 900)
    layer = viewer.add_image(noisy_image(), name="noisy")
    widget = DiffuseWidget(viewer)
    viewer.window.add_dock_widget(widget)
    qtbot.waitUntil(lambda: np.asarray(layer.corner_pixels).any(), timeout=10_000)
    camera = viewer.scene.camera
    before = np.array(layer.corner_pixels)
    camera.zoom, camera.center = camera.zoom * 1.5, (48, 48)
    qtbot.waitUntil(lambda: not np.array_equal(layer.corner_pixels, before), timeout=10_000)
    region = view_region(viewer, layer, None)
    corners = np.asarray(layer.corner_pixels)  # napari's inclusive visible corners
    assert region == (*corners[0], *(corners[1] + 1))
    y0, x0, y1, x1 = region
    assert 0 <= y0 < 48 < y1 <= 96 and 0 <= x0 < 48 < x1 <= 96
    assert (y0, x0, y1, x1) != (0, 0, 96, 96)  # the zoomed view, not the whole image

    widget.input.value = layer
    widget.backend.value = "numpy"
    widget.preset.value = "denoise: fine"
    widget.edge_sensitivity.value = 0.25  # a custom setting must survive too
    shown = widget.params
    assert widget.calibration_region.value == CURRENT_VIEW
    worker = widget.calibrate()
    assert worker is not None, widget.status.value
    assert str(region) in widget.status.value  # the view's box is what it calibrates on
    assert not widget.run_button.enabled and not widget.calibrate_button.enabled
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=60_000)
    assert widget.run() is None  # one job at a time
    assert any("calibration is already running" in text for text in messages.texts("info"))
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)

    assert widget.progress.value < widget.progress.max  # it stopped mid-search
    assert widget.params == shown and widget.preset.value == CUSTOM
    assert CALIBRATED not in widget.preset.choices
    assert "calibration cancelled" in widget.status.value
    assert widget.run_button.enabled and widget.calibrate_button.enabled

    # panned to the image's corner, the view is clipped to the image
    before = np.array(layer.corner_pixels)
    camera.center = (0, 0)
    qtbot.waitUntil(lambda: not np.array_equal(layer.corner_pixels, before), timeout=10_000)
    corner = view_region(viewer, layer, None)
    assert corner[:2] == (0, 0)
    assert abs(corner[2] - (y1 - y0) / 2) <= 2 and abs(corner[3] - (x1 - x0) / 2) <= 2


def test_inpaint_calibration_uses_the_labels_mask(viewer, widget, qtbot, messages):
    data = noisy_image()
    holes = np.zeros(data.shape, np.uint8)
    holes[HOLE] = 2
    widget.input.value = viewer.add_image(data, name="damaged")
    widget.mask.value = viewer.add_labels(holes, name="holes")
    widget.calibration_region.value = viewer.add_shapes([BOX], shape_type="rectangle")
    widget.calibration_task.value = "inpaint"
    widget.backend.value = "numpy"
    calibrate_and_wait(widget, qtbot)

    expected, report = calibrate(data, "inpaint", mask=holes != 0, region=BOX_REGION,
                                 backend="numpy", value_range=None, extra_output=True)
    assert widget.params == expected and widget.preset.value == CALIBRATED
    assert f"loss {report.loss:.3g} (input {report.input_loss:.3g})" in widget.status.value
    assert not messages.texts("error")


def test_inpaint_without_a_mask_is_refused(viewer, widget, messages):
    widget.input.value = viewer.add_image(noisy_image(), name="noisy")
    widget.calibration_task.value = "inpaint"
    shown = widget.params
    assert widget.calibrate() is None
    (error,) = messages.texts("error")
    assert "inpaint mask" in error and "inpaint mask" in widget.status.value
    assert widget.params == shown and not widget.running


def test_bad_region_is_reported_and_changes_nothing(viewer, widget, qtbot, messages):
    widget.input.value = viewer.add_image(noisy_image(), name="noisy")
    widget.calibration_region.value = viewer.add_shapes(
        [[[0, 0], [0, 10], [10, 10], [10, 0]]], shape_type="rectangle", name="tiny")
    widget.preset.value = "dehaze"
    calibrate_and_wait(widget, qtbot)
    (error,) = messages.texts("error")
    assert "calibration failed" in error and "at least 32x32" in error
    assert widget.params == load_preset("dehaze") and widget.preset.value == "dehaze"


def test_current_view_needs_the_2d_view(viewer, widget, messages):
    layer = viewer.add_image(np.stack([noisy_image()] * 3), name="stack")
    widget.input.value = layer
    viewer.dims.ndisplay = 3
    assert widget.calibrate() is None
    assert "2-D view" in messages.texts("error")[0]


def test_region_menu_lists_shapes_layers(viewer, widget):
    assert widget.calibration_region.choices == (CURRENT_VIEW, AUTOMATIC)
    shapes = viewer.add_shapes(name="roi")
    assert widget.calibration_region.choices == (CURRENT_VIEW, AUTOMATIC, shapes)


# ----------------------------------------------------------------------------- rectangles
@pytest.mark.parametrize("corners, shape, channel_axis, expected", [
    ([[20, 24], [55, 59]], (96, 96), None, (20, 24, 56, 60)),
    ([[19.6, 23.4], [55.5, 59.9]], (96, 96), None, (20, 24, 56, 60)),  # centres inside
    ([[-5, -5], [200, 40]], (96, 96), None, (0, 0, 96, 41)),  # clipped to the image
    ([[10, 20], [40, 50]], (64, 96, 3), -1, (10, 20, 41, 51)),  # channels last
    ([[10, 20], [40, 50]], (2, 64, 96), 0, (10, 20, 41, 51)),  # channels first
], ids=["integers", "fractions", "clipped", "channels last", "channels first"])
def test_rectangle_region(corners, shape, channel_axis, expected):
    (top, left), (bottom, right) = corners
    shapes = napari.layers.Shapes([[[top, left], [top, right], [bottom, right],
                                    [bottom, left]]], shape_type="rectangle")
    assert rectangle_region(shapes, shape, channel_axis) == expected


def test_rectangle_region_in_a_stack_and_refusals():
    stack_box = [[1, 10, 20], [1, 10, 50], [1, 40, 50], [1, 40, 20]]
    shapes = napari.layers.Shapes([stack_box], shape_type="rectangle")
    assert rectangle_region(shapes, (3, 64, 96), None) == (10, 20, 41, 51)
    # a 4-D layer over a (Z, Y, X, C) image: the channel column is ignored
    with_channels = napari.layers.Shapes([[[*vertex, 0] for vertex in stack_box]],
                                         shape_type="rectangle")
    assert rectangle_region(with_channels, (3, 64, 96, 2), 3) == (10, 20, 41, 51)
    polygon = napari.layers.Shapes([[[0, 0], [0, 9], [9, 9]]], shape_type="polygon",
                                   name="not a box")
    with pytest.raises(ValueError, match="'not a box' holds no rectangle"):
        rectangle_region(polygon, (96, 96), None)
    outside = napari.layers.Shapes([[[200, 200], [200, 300], [300, 300], [300, 200]]],
                                   shape_type="rectangle")
    with pytest.raises(ValueError, match="holds no pixel"):
        rectangle_region(outside, (96, 96), None)
