"""The napari plugin, driven in a real napari viewer (Xvfb via pytest-xvfb)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

napari = pytest.importorskip("napari")
npe2 = pytest.importorskip("npe2")

from magicgui.widgets import CheckBox  # noqa: E402
from napari.utils.notifications import notification_manager  # noqa: E402
from test_params import DARKTABLE_TABLE  # noqa: E402

from napari_diffuse import IntensityWarning, api  # noqa: E402
from napari_diffuse.params import FIELDS, DiffuseParams  # noqa: E402
from napari_diffuse.presets import list_presets, load_preset  # noqa: E402
from napari_diffuse.user_presets import (  # noqa: E402
    CONFIG_DIR_VARIABLE,
    list_user_presets,
    presets_dir,
    save_user_preset,
)
from napari_diffuse.widget import (  # noqa: E402
    CUSTOM,
    GROUP_TITLES,
    METADATA_KEY,
    DiffuseWidget,
    control_value,
    param_value,
)

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "napari-diffuse"
WIDGET_NAME = "diffuse or sharpen"
FAST = DiffuseParams.from_preset("denoise: fine").replace(iterations=2)
SECTION_TITLES = ["properties", "speed (sharpen ↔ diffuse)", "direction", "edge management",
                  "diffusion spatiality"]


@pytest.fixture(autouse=True)
def config_folder(tmp_path, monkeypatch):
    """User presets go to a fresh folder."""
    monkeypatch.setenv(CONFIG_DIR_VARIABLE, str(tmp_path / "config"))
    return tmp_path / "config"


class Messages:
    """napari notifications shown since the fixture started."""

    def __init__(self):
        self.start = len(notification_manager.records)

    @property
    def new(self):
        return notification_manager.records[self.start:]

    def texts(self, severity: str | None = None) -> list[str]:
        return [str(n.message) for n in self.new
                if severity is None or str(n.severity) == severity]


@pytest.fixture
def messages():
    return Messages()


def layer_names(viewer) -> list[str]:
    return [layer.name for layer in viewer.layers]


def outputs(viewer, source=None) -> dict:
    """The plugin's output layers by role ("result", "luminance mask", "variance map"), of
    ``source`` (an input layer) or of any input."""
    found = {}
    for layer in viewer.layers:
        info = layer.metadata.get(METADATA_KEY)
        if isinstance(info, dict) and "role" in info and (
                source is None or info["source"] == str(source.unique_id)):
            found[info["role"]] = layer
    return found


def run_and_wait(widget, qtbot, timeout=60_000):
    worker = widget.run()
    assert worker is not None, widget.status.value
    # the widget's own finished slot was connected before the worker started
    qtbot.waitUntil(lambda: not widget.running, timeout=timeout)
    return worker


def images():
    rng = np.random.default_rng(1)
    return {
        "gray": (rng.random((40, 48), dtype=np.float32), {}, None),
        "rgb": (rng.random((32, 40, 3), dtype=np.float32), {"rgb": True}, -1),
        "stack": (rng.random((3, 32, 36), dtype=np.float32), {}, None),
    }


# ----------------------------------------------------------------------------- manifest
def test_manifest_validates():
    done = subprocess.run([sys.executable, "-m", "npe2", "validate", str(ROOT / "napari.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (ROOT / "src" / "napari_diffuse" / "napari.yaml").resolve() == ROOT / "napari.yaml"


def test_manifest_contributions():
    manager = npe2.PluginManager.instance()
    manager.discover()
    manifest = manager.get_manifest(PLUGIN)
    (widget_contribution,) = manifest.contributions.widgets
    assert widget_contribution.display_name == WIDGET_NAME
    assert widget_contribution.get_callable() is DiffuseWidget
    menu_commands = [item.command for item in manifest.contributions.menus["napari/layers/filter"]]
    assert menu_commands == [widget_contribution.command]
    assert {s.key for s in manifest.contributions.sample_data} == {"fluorescence", "blurred",
                                                                   "stars"}


def test_widget_docks_through_npe2(viewer):
    _dock, docked = viewer.window.add_plugin_dock_widget(PLUGIN, WIDGET_NAME)
    assert isinstance(docked, DiffuseWidget)


def test_layers_filter_menu_opens_the_widget(viewer):
    from napari._app_model import get_app_model

    app = get_app_model()
    commands = [item.command.id for item in app.menus.get_menu("napari/layers/filter")
                if hasattr(item, "command")]
    assert "napari-diffuse.make_widget" in commands
    made, _title = app.commands.execute_command("napari-diffuse.make_widget").result()
    assert isinstance(made, DiffuseWidget)


@pytest.mark.parametrize("key, name, rgb", [("fluorescence", "noisy fluorescence", False),
                                            ("blurred", "blurred photo", True),
                                            ("stars", "saturated stars", False)])
def test_sample_data(viewer, key, name, rgb):
    viewer.open_sample(PLUGIN, key)
    (layer,) = viewer.layers
    assert layer.name == name and layer.rgb == rgb and layer.data.dtype == np.float32
    assert layer.metadata[METADATA_KEY]["suggested_preset"] in list_presets()


# ----------------------------------------------------------------------------- controls
#: The fields darktable's GUI shows in percent (speeds, anisotropies, sharpness, threshold).
PERCENT_FIELDS = {"first", "second", "third", "fourth", "anisotropy_first",
                  "anisotropy_second", "anisotropy_third", "anisotropy_fourth", "sharpness",
                  "luminance_threshold"}


def test_every_control_has_darktables_range_label_and_help(widget):
    for spec in FIELDS:
        control = getattr(widget, spec.name)
        # darktable's GUI label (the manual's, without its parenthesis); the tooltip has all
        short = spec.label.split(" (")[0]
        assert control.label == (f"{short} (px)" if spec.name.startswith("radius") else short)
        assert spec.label in control.tooltip and spec.help in control.tooltip
        assert control.value == control_value(spec, spec.default)
        if spec.kind is bool:  # keep_saturated: a check box, no range
            assert isinstance(control, CheckBox)
            continue
        _, low, high, default = DARKTABLE_TABLE[spec.name]  # darktable's, written out
        factor = 100 if spec.name in PERCENT_FIELDS else 1
        assert (control.min, control.max) == (low * factor, high * factor)
        assert control.value == default * factor
        if factor == 100:
            assert control.native.suffix() == " %"
    assert widget.params == DiffuseParams()


def test_bool_fields_are_check_boxes_that_reach_the_params(widget):
    flags = [spec for spec in FIELDS if spec.kind is bool]
    assert flags, "no bool field to test"
    widget.preset.value = "bloom"
    for spec in flags:
        getattr(widget, spec.name).value = not spec.default
        assert getattr(widget.params, spec.name) is (not spec.default)
    assert widget.preset.value == CUSTOM


def test_sections_are_darktables(widget):
    """darktable's sections as collapsible groups, open; the less used ones folded."""
    from superqt import QCollapsible

    groups = {g.text(): g for g in widget.native.findChildren(QCollapsible)}
    for title in SECTION_TITLES:
        assert groups[title].isExpanded(), title
    for title in ("input options", "output layers", "your presets"):
        assert not groups[title].isExpanded(), title


def test_percent_mapping_is_exact(widget):
    widget.first.value = -25.0
    widget.anisotropy_third.value = 250.0
    widget.luminance_threshold.value = 141.0
    shown = widget.params
    assert (shown.first, shown.anisotropy_third, shown.luminance_threshold) == (-0.25, 2.5, 1.41)
    for name in list_presets():
        for spec in FIELDS:
            value = getattr(load_preset(name), spec.name)
            assert param_value(spec, control_value(spec, value)) == value


@given(hundredths=st.integers(-100_000, 100_000))
def test_percent_mapping_round_trips_every_control_value(hundredths):
    anisotropy = next(spec for spec in FIELDS if spec.name == "anisotropy_first")
    shown = hundredths / 100  # what a 2-decimal percent spin box can hold
    assert control_value(anisotropy, param_value(anisotropy, shown)) == shown
    assert param_value(anisotropy, shown) == hundredths / 10_000


def test_script_can_set_controls_by_field_name(widget):
    widget.iterations.value = 8
    widget.radius.value = 3
    assert widget.params.iterations == 8 and widget.params.radius == 3


def test_preset_menu_groups_science_then_darktable_then_user_presets(widget):
    from qtpy.QtCore import Qt

    widget.set_params(FAST)
    widget.save_preset("my cells")
    science, darktable = list_presets("science"), list_presets("darktable")
    assert science and darktable
    titles = list(GROUP_TITLES.values())
    assert list(widget.preset.choices) == [CUSTOM, titles[0], *science, titles[1], *darktable,
                                           titles[2], "my cells"]
    combo = widget.preset.native
    for index in range(combo.count()):
        enabled = bool(combo.model().item(index).flags() & Qt.ItemFlag.ItemIsEnabled)
        assert enabled == (combo.itemText(index) not in titles), combo.itemText(index)
    widget.preset.value = titles[0]  # a script choosing a title changes nothing
    assert widget.params == FAST
    assert widget.save_preset(titles[0]) is None  # nor can a preset take a menu entry's name


def test_each_preset_sets_every_control(widget):
    for name in list_presets():
        widget.preset.value = name
        assert widget.params == load_preset(name), name
        assert widget.preset.value == name
    widget.sharpness.value = 5.0
    assert widget.preset.value == CUSTOM
    assert widget.params.sharpness == 0.05


# ----------------------------------------------------------------------------- runs
@pytest.mark.parametrize("kind", ["gray", "rgb", "stack"])
def test_run_matches_diffuse(viewer, widget, qtbot, kind, messages):
    data, kwargs, channel_axis = images()[kind]
    layer = viewer.add_image(data, name="cells", scale=(2.0,) * (data.ndim - (channel_axis == -1)),
                             translate=(5.0,) * (data.ndim - (channel_axis == -1)),
                             contrast_limits=(0.1, 0.9), **kwargs)
    widget.input.value = layer
    widget.preset.value = "denoise: fine"
    widget.show_variance_map.value = True
    widget.show_luminance_mask.value = True
    run_and_wait(widget, qtbot)
    params = load_preset("denoise: fine")

    # the extra layers sit below the result, which is on top
    assert layer_names(viewer) == ["cells", "cells [luminance mask]", "cells [variance map]",
                                   "cells [denoise: fine]"]
    found = outputs(viewer, layer)
    result, mask, variance = (found[r] for r in ("result", "luminance mask", "variance map"))
    expected = api.diffuse(data, params, channel_axis=channel_axis, value_range=None)
    np.testing.assert_array_equal(result.data, expected)
    assert result.rgb == layer.rgb
    np.testing.assert_array_equal(result.scale, layer.scale)
    np.testing.assert_array_equal(result.translate, layer.translate)
    assert tuple(result.contrast_limits) == (0.1, 0.9)
    assert result.metadata[METADATA_KEY] == {"source": str(layer.unique_id), "role": "result",
                                             "name": "cells [denoise: fine]"}
    common = dict(channel_axis=channel_axis, value_range=None)  # the widget's default
    # at a luminance threshold of 0 % darktable diffuses everywhere: the mask says so
    assert np.asarray(mask.data).all() and mask.data.shape == data.shape[:data.ndim - (
        channel_axis == -1)]
    np.testing.assert_array_equal(variance.data, api.variance_map(data, params, **common))
    assert isinstance(mask, napari.layers.Labels)
    assert variance.colormap.name == "magma"
    np.testing.assert_array_equal(variance.scale, layer.scale)
    assert not messages.texts("error")
    assert "done" in widget.status.value


def test_multichannel_uses_the_chosen_channel_axis(viewer, widget, qtbot):
    data = np.random.default_rng(2).random((2, 24, 28), dtype=np.float32)
    layer = viewer.add_image(data, name="channels", scale=(1.0, 0.5, 0.25))
    widget.input.value = layer
    widget.set_params(FAST)
    widget.channel_axis.value = 0
    widget.show_variance_map.value = True
    run_and_wait(widget, qtbot)
    result, variance = outputs(viewer)["result"], outputs(viewer)["variance map"]
    np.testing.assert_array_equal(result.data, api.diffuse(data, FAST, channel_axis=0,
                                                           value_range=None))
    assert variance.data.shape == (24, 28)
    np.testing.assert_array_equal(variance.scale, (0.5, 0.25))


def test_outputs_are_placed_and_described_as_the_input_is(viewer, widget, qtbot):
    """Units, axis labels, rotation, shear, affine, blending, opacity and metadata carry
    over: each output pixel lands where the input's does (a channel axis dropped from the
    extra layers); a re-run refreshes the looks; an extra layer no longer asked for goes."""
    data = np.random.default_rng(3).random((2, 24, 28), dtype=np.float32)
    layer = viewer.add_image(
        data, name="tissue", scale=(1.0, 0.5, 0.25), translate=(0, 10, 20), rotate=30,
        shear=[0.0, 0.0, 0.2], units=("um", "um", "um"), axis_labels=("c", "y", "x"),
        metadata={"acquisition": 7}, blending="additive", opacity=0.8)
    widget.input.value = layer
    widget.set_params(FAST)
    widget.channel_axis.value = 0
    widget.show_luminance_mask.value = True
    widget.show_variance_map.value = True
    run_and_wait(widget, qtbot)
    found = outputs(viewer)
    result = found["result"]
    pixel = np.array([1, 10, 10])
    np.testing.assert_allclose(result.data_to_world(pixel), layer.data_to_world(pixel))
    assert result.units == layer.units and result.axis_labels == ("c", "y", "x")
    assert (result.blending, result.opacity) == ("additive", 0.8)
    assert result.metadata["acquisition"] == 7 and METADATA_KEY in result.metadata
    for role in ("luminance mask", "variance map"):
        extra = found[role]
        assert extra.axis_labels == ("y", "x") and extra.units == layer.units[1:]
        np.testing.assert_allclose(extra.data_to_world(pixel[1:]),
                                   layer.data_to_world(pixel)[1:])
    layer.colormap, layer.gamma = "cyan", 0.5
    widget.show_luminance_mask.value = False
    run_and_wait(widget, qtbot)
    found = outputs(viewer)
    assert found["result"] is result and "luminance mask" not in found
    assert (result.colormap.name, result.gamma) == ("cyan", 0.5)


def test_a_crop_is_placed_where_it_lies_in_a_rotated_sheared_input():
    """The preview's placement: a crop starting at ``offset`` lands on the input's pixels
    under rotation, shear, scale, translate and affine (``translate + offset * scale``
    would not)."""
    from napari_diffuse.widget_layers import placement

    layer = napari.layers.Image(np.zeros((3, 40, 50), np.float32), scale=(2.0, 0.5, 0.25),
                                translate=(1, 10, 20), rotate=25, shear=[0.1, 0.0, 0.3],
                                affine=np.diag([1.0, 1.5, 1.0, 1.0]))
    offset = np.array([1, 12, 7])
    crop = napari.layers.Image(np.zeros((1, 8, 9), np.float32), **placement(layer, offset=offset))
    for pixel in ([0, 0, 0], [0, 5, 3]):
        np.testing.assert_allclose(crop.data_to_world(pixel),
                                   layer.data_to_world(np.add(pixel, offset)), atol=1e-9)


def test_nan_pixels_can_be_kept_as_missing_data(viewer, widget, qtbot, messages):
    """The NaN / Inf menu reaches the api: "error" refuses, "keep" runs and puts NaN back;
    the extra layers see the started image."""
    data = np.random.default_rng(5).random((32, 36), dtype=np.float32)
    data[10:13, 5:30] = np.nan
    layer = viewer.add_image(data, name="frame")
    widget.input.value = layer
    widget.set_params(FAST)
    widget.show_variance_map.value = True
    assert widget.nan.value == "error"
    run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["frame"] and "nan='keep'" in widget.status.value
    widget.nan.value = "keep"
    run_and_wait(widget, qtbot)
    result, variance = outputs(viewer)["result"], outputs(viewer)["variance map"]
    expected = api.diffuse(data, FAST, value_range=None, nan="keep")
    np.testing.assert_array_equal(result.data, expected)
    assert np.array_equal(np.isnan(result.data), np.isnan(data))
    assert np.isfinite(variance.data).all()
    assert np.array_equal(layer.data, data, equal_nan=True)  # the input is untouched


def test_contrast_limits_can_set_the_value_range(viewer, widget, qtbot):
    counts = np.random.default_rng(4).integers(100, 4000, (32, 32)).astype(np.uint16)
    widget.input.value = viewer.add_image(counts, name="camera", contrast_limits=(100, 4095))
    widget.set_params(FAST)
    widget.value_range.value = "contrast limits"
    run_and_wait(widget, qtbot)
    result = outputs(viewer)["result"].data
    assert result.dtype == np.uint16
    np.testing.assert_array_equal(result, api.diffuse(counts, FAST, value_range=(100, 4095)))
    assert not np.array_equal(result, api.diffuse(counts, FAST, value_range="dtype"))


@pytest.mark.parametrize("choice, value_range", [("detect", None), ("auto", "auto"),
                                                 ("as stored", "dtype")])
def test_intensities_choose_the_value_range(viewer, widget, qtbot, messages, choice,
                                            value_range):
    counts = np.random.default_rng(5).integers(100, 4000, (32, 32)).astype(np.uint16)
    widget.input.value = viewer.add_image(counts, name="camera")
    widget.set_params(FAST)
    assert widget.value_range.value == "detect"  # the default
    widget.value_range.value = choice
    run_and_wait(widget, qtbot)
    result = outputs(viewer)["result"].data
    if value_range is None:  # detect: 12-bit data -> auto, with a warning (the widget's notice)
        assert any("value_range='auto'" in text for text in messages.texts("warning"))
        with pytest.warns(IntensityWarning):
            expected = api.diffuse(counts, FAST, value_range=value_range)
    else:
        expected = api.diffuse(counts, FAST, value_range=value_range)
    np.testing.assert_array_equal(result, expected)
    other = "auto" if value_range == "dtype" else "dtype"
    assert not np.array_equal(result, api.diffuse(counts, FAST, value_range=other))


def test_rgb_layers_use_their_colour_axis_automatically(viewer, widget):
    widget.input.value = viewer.add_image(np.zeros((8, 8, 3), np.float32), rgb=True)
    assert not widget.channel_axis.enabled and widget._source().channel_axis == -1


@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_an_rgba_layer_keeps_its_alpha(viewer, widget, qtbot, lazy):
    """napari's 4th colour is alpha: the colours are diffused, the alpha comes back as it
    was (as the CLI does for RGBA pictures), and the variance map is the colours'."""
    rng = np.random.default_rng(8)
    rgba = rng.random((40, 48, 4), dtype=np.float32)
    rgba[..., 3] = 0.0
    rgba[10:30, 12:36, 3] = 1.0  # an opaque square
    if lazy:
        import dask.array as da

        data = da.from_array(rgba, chunks=(20, 24, 4))
    else:
        data = rgba
    widget.input.value = viewer.add_image(data, rgb=True, name="rgba")
    widget.set_params(load_preset("bloom"))
    widget.show_variance_map.value = True
    run_and_wait(widget, qtbot)
    found = outputs(viewer)
    result = np.asarray(found["result"].data)
    assert result.shape == rgba.shape
    np.testing.assert_array_equal(result[..., 3], rgba[..., 3])
    colours = api.diffuse(rgba[..., :3], load_preset("bloom"), channel_axis=-1,
                          value_range=None)
    np.testing.assert_allclose(result[..., :3], colours, atol=1e-6 if lazy else 0)
    np.testing.assert_allclose(np.asarray(found["variance map"].data), api.variance_map(
        rgba[..., :3], load_preset("bloom"), channel_axis=-1, value_range=None), rtol=1e-6)


def test_rerun_replaces_the_result_layer(viewer, widget, qtbot):
    data = images()["gray"][0]
    layer = viewer.add_image(data, name="cells")
    widget.input.value = layer
    widget.preset.value = "denoise: fine"
    widget.iterations.value = 2
    run_and_wait(widget, qtbot)
    first = viewer.layers[1]
    assert first.name == "cells [denoise: fine, iterations 2]"  # what ran, not "custom"
    widget.preset.value = "bloom"
    widget.run_button.native.click()  # the button starts the same run
    assert widget.running
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert layer_names(viewer) == ["cells", "cells [bloom]"]
    assert viewer.layers[1] is first
    np.testing.assert_array_equal(first.data, api.diffuse(data, load_preset("bloom"),
                                                          value_range=None))


def test_a_renamed_result_is_never_overwritten(viewer, widget, qtbot):
    data = images()["gray"][0]
    widget.input.value = viewer.add_image(data, name="cells")
    widget.preset.value = "bloom"
    run_and_wait(widget, qtbot)
    first = viewer.layers[1]
    first.name = "my favourite"
    kept = np.array(first.data)
    widget.preset.value = "denoise: fine"
    run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["cells", "my favourite", "cells [denoise: fine]"]
    np.testing.assert_array_equal(first.data, kept)


def test_extra_layers_follow_the_new_result_when_the_old_one_was_renamed(viewer, widget,
                                                                         qtbot):
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.show_variance_map.value = True
    widget.preset.value = "bloom"
    run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["cells", "cells [variance map]", "cells [bloom]"]
    viewer.layers["cells [bloom]"].name = "my favourite"
    widget.preset.value = "denoise: fine"
    run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["cells", "my favourite", "cells [variance map]",
                                   "cells [denoise: fine]"]


def test_keep_each_result_adds_layers_to_compare(viewer, widget, qtbot):
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.keep_results.value = True
    for preset in ("bloom", "denoise: fine", "bloom"):
        widget.preset.value = preset
        run_and_wait(widget, qtbot)
    assert len(viewer.layers) == 4 and viewer.layers[1].name == "cells [bloom]"
    assert viewer.layers[2].name == "cells [denoise: fine]"
    assert viewer.layers[3].name.startswith("cells [bloom]")  # napari makes it unique
    widget.keep_results.value = False  # the newest is replaced again
    widget.preset.value = "denoise: fine"
    run_and_wait(widget, qtbot)
    assert len(viewer.layers) == 4


def test_results_of_two_inputs_are_kept_apart(viewer, widget, qtbot):
    inputs = []
    for name in ("a", "b"):
        inputs.append(viewer.add_image(images()["gray"][0], name=name))
        widget.input.value = inputs[-1]
        widget.preset.value = "bloom"
        run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["a", "a [bloom]", "b", "b [bloom]"]
    assert outputs(viewer, inputs[0])["result"].name == "a [bloom]"


@pytest.mark.filterwarnings("ignore::napari_diffuse.errors.InpaintingWarning")  # FAST
def test_mask_layers_inpaint(viewer, widget, qtbot):
    data = images()["gray"][0]
    layer = viewer.add_image(data, name="cells")
    shapes = viewer.add_shapes([[[4, 6], [4, 20], [15, 20], [15, 6]]], shape_type="polygon",
                               name="hole")
    widget.input.value = layer
    widget.set_params(FAST)
    widget.mask.value = shapes
    run_and_wait(widget, qtbot)
    expected_mask = np.zeros(data.shape, bool)
    expected_mask[4:16, 6:21] = True
    shown = outputs(viewer)["result"].data
    np.testing.assert_array_equal(shown, api.diffuse(data, FAST, mask=expected_mask,
                                                     value_range=None))
    # outside the mask the image is kept (to float32 rounding: it goes through the wavelets)
    np.testing.assert_allclose(shown[~expected_mask], data[~expected_mask], atol=1e-6)
    assert not np.allclose(shown[expected_mask], data[expected_mask], atol=1e-3)

    labels = viewer.add_labels(expected_mask.astype(np.uint8) * 3, name="label mask")
    widget.mask.value = labels
    run_and_wait(widget, qtbot)
    np.testing.assert_array_equal(outputs(viewer)["result"].data, shown)


# ----------------------------------------------------------------------------- refusals
def test_cancel_mid_run_leaves_the_layers_as_they_were(viewer, widget, qtbot, messages):
    viewer.add_image(images()["gray"][0], name="old result")
    layer = viewer.add_image(np.random.default_rng(3).random((256, 256), dtype=np.float32),
                             name="big")
    before = [(lyr.name, lyr.data) for lyr in viewer.layers]
    widget.input.value = layer
    widget.set_params(load_preset("denoise: medium").replace(iterations=500))
    widget.backend.value = "numpy"  # seconds per run: cancel lands mid-run on any machine
    worker = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)

    assert widget.run() is None  # a second run is refused visibly
    assert not widget.run_button.enabled
    assert any("already running" in text for text in messages.texts("info"))

    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert worker.abort_requested is False  # stopped by the progress callback, not by Qt
    assert widget.progress.value < widget.progress.max  # it really stopped mid-run
    assert [(lyr.name, lyr.data) for lyr in viewer.layers] == before
    assert "cancelled" in widget.status.value
    assert any("cancelled" in text for text in messages.texts("info"))
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def _start_a_long_run(viewer, widget, qtbot, name="big"):
    layer = viewer.add_image(np.random.default_rng(3).random((256, 256), dtype=np.float32),
                             name=name)
    widget.input.value = layer
    widget.set_params(load_preset("denoise: medium").replace(iterations=500))
    widget.backend.value = "numpy"  # seconds per run: the event lands mid-run
    widget.show_luminance_mask.value = True
    worker = widget.run()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=30_000)
    return layer, worker


def test_removing_the_input_mid_run_cancels_it(viewer, widget, qtbot, messages):
    """No orphan layers appear for an input that is gone; the run stops early."""
    viewer.add_image(images()["gray"][0], name="other")
    layer, _ = _start_a_long_run(viewer, widget, qtbot)
    viewer.layers.remove(layer)
    qtbot.waitUntil(lambda: not widget.running, timeout=60_000)
    assert layer_names(viewer) == ["other"]
    assert widget.progress.value < widget.progress.max  # stopped mid-run
    assert "'big' was removed" in widget.status.value
    assert widget.run_button.enabled and not messages.texts("error")


def test_closing_the_viewer_mid_run_stops_it_quietly(make_napari_viewer, qtbot, messages):
    """The controls are gone with the viewer: the run is cancelled, nothing reports into
    deleted widgets (each progress report did, one error notification each)."""
    viewer = make_napari_viewer()
    widget = DiffuseWidget(viewer)
    viewer.window.add_dock_widget(widget, name=WIDGET_NAME)
    _, worker = _start_a_long_run(viewer, widget, qtbot)
    finished = []
    worker.finished.connect(lambda: finished.append(True))
    viewer.close()
    qtbot.waitUntil(lambda: bool(finished), timeout=60_000)
    assert widget._runner.cancelled
    assert not messages.texts("error")


def test_an_internal_error_is_reported_not_raised(viewer, widget, qtbot, messages,
                                                  monkeypatch):
    """A bug in a run (a KeyError, standing in for one: it cannot be caused for real)
    becomes napari's error report with its traceback; raising it in the Qt slot would
    abort a script without napari's exception hook. The viewer is left as it was."""
    from napari_diffuse import widget_jobs

    def broken(*_args, **_kwargs):
        raise KeyError("a bug")

    monkeypatch.setattr(widget_jobs.api, "diffuse", broken)
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.set_params(FAST)
    run_and_wait(widget, qtbot)
    assert layer_names(viewer) == ["cells"] and "internal error" in widget.status.value
    assert any("a bug" in text for text in messages.texts("error"))
    assert widget.run_button.enabled


@pytest.mark.parametrize("make_input, channel_axis, message", [
    (lambda viewer: viewer.add_image(np.ones((4, 50), np.float32), name="profile"), 0,
     "needs at least 2 spatial dimensions"),
], ids=["1-D profiles"])
def test_bad_input_is_refused_with_a_clear_message(viewer, widget, messages, make_input,
                                                    channel_axis, message):
    layer = make_input(viewer)
    names = layer_names(viewer)
    widget.input.value = layer
    if channel_axis is not None:
        widget.channel_axis.value = channel_axis
    assert widget.run() is None
    (error,) = messages.new
    assert message in str(error.message) and str(error.severity) == "error"
    assert type(error).__name__ == "Notification"  # a message, not an exception report
    assert message in widget.status.value
    assert layer_names(viewer) == names and widget.run_button.enabled


def test_error_in_the_worker_is_reported_without_traceback(viewer, widget, qtbot, messages):
    data = images()["gray"][0].copy()
    data[3, 4] = np.nan
    widget.input.value = viewer.add_image(data, name="holes")
    widget.set_params(FAST)
    run_and_wait(widget, qtbot)
    (error,) = [n for n in messages.new if str(n.severity) == "error"]
    assert "NaN" in str(error.message) and type(error).__name__ == "Notification"
    assert layer_names(viewer) == ["holes"]


def test_no_input_layer(widget, messages):
    assert widget.run() is None
    assert "choose an input Image layer" in messages.texts("error")[0]


# ----------------------------------------------------------------------------- user presets
def test_save_and_choose_a_user_preset(widget, config_folder):
    widget.set_params(FAST.replace(sharpness=0.125))
    path = widget.save_preset("my cells")
    assert path.parent == config_folder / "presets"
    assert list_user_presets() == ["my cells"] and "my cells" in widget.preset.choices
    widget.preset.value = "bloom"
    widget.preset.value = "my cells"
    assert widget.params == FAST.replace(sharpness=0.125)


def test_a_user_preset_whose_file_went_says_so(widget, messages):
    path = save_user_preset("gone", FAST)
    widget.preset.reset_choices()
    widget.set_params(load_preset("bloom"))
    path.unlink()
    before = widget.params
    widget.preset.value = "gone"
    assert widget.preset.value == CUSTOM and widget.params == before  # the menu does not lie
    assert any("'gone' could not be loaded" in text for text in messages.texts("error"))
    assert "gone" not in widget.preset.choices


def test_presets_keep_values_finer_than_the_controls(widget):
    """A user preset (or a calibration) finer than a control's decimals runs exactly while
    that control is left alone; a control the user sets gives its own value."""
    precise = FAST.replace(first=0.12345, edge_threshold=-0.4321, anisotropy_first=2.34567)
    save_user_preset("precise", precise)
    widget.preset.reset_choices()
    widget.preset.value = "precise"
    assert widget.params == precise
    widget.iterations.value = 3
    assert widget.params == precise.replace(iterations=3)
    widget.first.value = 20.0
    assert widget.params == precise.replace(iterations=3, first=0.2)


def test_layer_events_do_not_reread_the_preset_folder(viewer, widget, messages):
    """Adding and removing layers refreshes the layer menus only: a broken preset file
    is reported when the preset menu is read, not on every layer event."""
    presets_dir().mkdir(parents=True, exist_ok=True)
    (presets_dir() / "broken.json").write_text("{")
    widget.preset.reset_choices()
    reported = len(messages.texts("warning"))
    assert reported >= 1
    for index in range(4):
        layer = viewer.add_image(np.zeros((8, 8), np.float32), name=f"l{index}")
        assert layer in widget.input.choices
        viewer.layers.remove(layer)
    assert len(messages.texts("warning")) == reported


def test_saving_under_a_bundled_name_is_refused(widget, messages):
    assert widget.save_preset("dehaze") is None
    assert "bundled preset" in messages.texts("error")[0]


def test_import_darktable_preset(widget, tmp_path):
    blob = bytes.fromhex("0a0000000000000000020000000020400000803e00000040000000000000"
                         "00400000000000000000cdcc4cbecdcccc3dcdcc4cbecdcccc3d00000000")
    path = tmp_path / "haze.dtpreset"
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<darktable_preset version="1.0"><preset><name>my haze</name>
<operation>diffuse</operation><op_params>{blob.hex()}</op_params><op_version>2</op_version>
</preset></darktable_preset>""")
    assert widget.import_darktable(path) == ["my haze"]
    assert widget.preset.value == "my haze" and widget.params == load_preset("dehaze")


def test_import_of_a_broken_file_is_refused(widget, tmp_path, messages):
    path = tmp_path / "broken.xmp"
    path.write_text("<html/>")
    assert widget.import_darktable(path) == []
    assert "darktable import failed" in messages.texts("error")[0]


# ----------------------------------------------------------------------------- devices
def test_device_menu_lists_and_chooses_opencl_devices(viewer):
    from napari_diffuse import opencl_devices, opencl_solver

    devices = opencl_devices.list_devices()
    assert devices, "the tests need an OpenCL device (PoCL in CI)"
    made = DiffuseWidget(viewer)
    assert set(made.device.choices) == {None, *[info.index for info in devices]}
    assert made.device.value is None
    try:
        made.device.value = devices[-1].index
        assert opencl_solver.engine().device.name.strip() == devices[-1].name
    finally:
        opencl_solver.configure(device=None)


@pytest.fixture
def missing_device():
    """Point the OpenCL solver at a device that does not exist, then restore the default."""
    from napari_diffuse import backends, opencl_solver

    opencl_solver.configure(device="no device is called this")
    backends._warned.clear()  # the fallback warns once per reason and process
    yield
    opencl_solver.configure(device=None)


def test_backend_fallback_warning_reaches_the_notifications(viewer, widget, qtbot, messages,
                                                            missing_device):
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.set_params(FAST)
    run_and_wait(widget, qtbot)
    assert any("using the NumPy solver" in text for text in messages.texts("warning"))
    assert len(viewer.layers) == 2 and "result" in outputs(viewer)


def test_opencl_backend_without_device_is_an_error_message(viewer, widget, qtbot, messages,
                                                           missing_device):
    widget.input.value = viewer.add_image(images()["gray"][0], name="cells")
    widget.set_params(FAST)
    widget.backend.value = "opencl"
    run_and_wait(widget, qtbot)
    assert any("OpenCL backend is not available" in text for text in messages.texts("error"))
    assert layer_names(viewer) == ["cells"]


def test_a_broken_user_preset_is_a_notification_not_a_traceback(viewer, config_folder,
                                                                messages):
    from napari_diffuse.user_presets import presets_dir, save_user_preset

    save_user_preset("good", DiffuseParams(iterations=3))
    (presets_dir() / "broken.json").write_text("{not json")
    made = DiffuseWidget(viewer)
    assert "good" in made.preset.choices
    assert any("broken.json" in text for text in messages.texts("warning"))
    assert not messages.texts("error")
