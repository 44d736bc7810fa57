"""The napari dock widget: every control of darktable's module, presets, a background run.

The widget holds no algorithm: it builds a :class:`~napari_diffuse.params.DiffuseParams`
from its controls and calls :func:`napari_diffuse.diffuse` (and
:func:`~napari_diffuse.luminance_mask`, :func:`~napari_diffuse.variance_map`) in a napari
worker thread. Its *calibrate* action (:mod:`.widget_calibrate`) runs
:func:`napari_diffuse.calibrate.calibrate` the same way and shows the parameters it chose.

Controls and parameters
-----------------------
Each parameter control is named after its ``DiffuseParams`` field
(``widget.iterations``, ``widget.first``, ``widget.anisotropy_first``...), has
darktable's hard range and is grouped in darktable's sections. Where darktable shows a
percentage (speeds, anisotropies, sharpness, luminance masking threshold) the control
shows one too: its value is the percentage, with two decimals. The mapping is
``params value = round(control value / 100, 4)`` and ``control value =
round(params value * 100, 2)`` (see :func:`control_value` and :func:`param_value`), so
``widget.first.value = -25`` means ``first = -0.25``, and every parameter with at most
four decimals (all of darktable's presets) goes through the controls unchanged. The
other floats (edge sensitivity, edge threshold) are shown as they are, with three
decimals; integers as they are; booleans (``keep_saturated``) are check boxes.

Presets
-------
The preset menu lists the science presets, then darktable's photographic ones, then
the user's, each group under a title that cannot be chosen; ``"custom"`` (settings
that match no entry) and, after a calibration, ``"calibrated"`` come first.

Results
-------
A run writes ``"<input> [<preset>]"``, an Image layer with the input's scale,
translate, contrast limits, colormap and RGB flag; optionally ``"<input> [luminance
mask]"`` (Labels) and ``"<input> [variance map]"`` (Image, ``magma``). The layers carry
``metadata["napari_diffuse"] = {"source": <input layer's unique_id>, "role": ...}``: a
new run on the same input replaces their data instead of adding layers.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import napari.viewer
import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from napari.layers import Image, Labels, Layer, Shapes
from napari.qt.threading import FunctionWorker, create_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QObject, Qt, Signal
from qtpy.QtWidgets import QFileDialog, QLabel, QSizePolicy

from . import api, intensity, tiling
from .backends import BACKENDS
from .missing import NAN_POLICIES
from .params import FIELDS, DiffuseParams, FieldSpec
from .presets import GROUPS, list_presets, load_preset
from .user_presets import (
    PresetFileWarning,
    list_user_presets,
    load_user_preset,
    read_darktable_file,
    save_user_preset,
)
from .widget_calibrate import CALIBRATED, CalibrateMixin

__all__ = ["DiffuseWidget", "control_value", "param_value", "CUSTOM", "CALIBRATED",
           "GROUP_TITLES", "METADATA_KEY"]

#: The preset menu's entry for settings that match no preset.
CUSTOM = "custom"
#: The preset menu's group titles (entries that cannot be chosen), by preset group.
GROUP_TITLES = {"science": "— science —", "darktable": "— darktable (photographic) —",
                "user": "— your presets —"}
#: Key of the metadata that ties output layers to their input layer.
METADATA_KEY = "napari_diffuse"

#: Decimals of the percent controls (0.01 % = 1e-4, darktable's resolution for speeds).
PERCENT_DECIMALS = 2
#: Decimals of the other float controls (edge sensitivity, edge threshold).
PLAIN_DECIMALS = 3
_SECTIONS = {  # FieldSpec.section -> darktable's section title
    "properties": "properties",
    "speed": "speed (sharpen ↔ diffuse)",
    "direction": "direction",
    "edges": "edge management",
    "spatiality": "diffusion spatiality",
}
_STEPS = {"speed": 1.0, "direction": 10.0, "edges": 0.05, "spatiality": 1.0}
#: The intensities menu -> the api's ``value_range`` ("contrast limits": the layer's).
_VALUE_RANGES = {"detect": None, "auto": "auto", "as stored": "dtype"}


def control_value(spec: FieldSpec, value: float) -> float:
    """Return the value a control shows for the parameter value ``value``.

    Percent fields show ``value * 100`` rounded to :data:`PERCENT_DECIMALS`; other floats
    are rounded to :data:`PLAIN_DECIMALS`; integers and booleans are unchanged.
    """
    if spec.kind is bool:
        return bool(value)
    if spec.kind is int:
        return int(value)
    if spec.percent:
        return round(value * 100.0, PERCENT_DECIMALS)
    return round(value, PLAIN_DECIMALS)


def param_value(spec: FieldSpec, shown: float) -> float:
    """Return the parameter value of a control showing ``shown`` (see :func:`control_value`)."""
    if spec.kind is bool:
        return bool(shown)
    if spec.kind is int:
        return int(shown)
    if spec.percent:
        return round(shown / 100.0, PERCENT_DECIMALS + 2)
    return round(shown, PLAIN_DECIMALS)


def _make_control(spec: FieldSpec) -> SpinBox | FloatSpinBox | CheckBox:
    """The control of one field: a check box (bool), a spin box (int) or a float spin box."""
    origin = (f"darktable's '{spec.darktable_name}'" if spec.darktable_name is not None
              else "not in darktable")
    if spec.kind is bool:
        return CheckBox(name=spec.name, label=spec.label, value=bool(spec.default),
                        tooltip=f"{spec.help}\n\nOn or off; {origin}.")
    factor = 100.0 if spec.percent else 1.0
    unit = " %" if spec.percent else (" px" if spec.name.startswith("radius") else "")
    tooltip = (f"{spec.help}\n\nRange {spec.minimum * factor:g} to {spec.maximum * factor:g}"
               f"{unit}; {origin}.")
    common = dict(name=spec.name, label=spec.label, tooltip=tooltip,
                  min=spec.minimum * factor, max=spec.maximum * factor)
    if spec.kind is int:
        control = SpinBox(value=int(spec.default), step=1, **common)
    else:
        step = 1.0 if spec.name == "sharpness" else _STEPS[spec.section]
        decimals = PERCENT_DECIMALS if spec.percent else PLAIN_DECIMALS
        control = FloatSpinBox(value=control_value(spec, spec.default), step=step, **common)
        control.native.setDecimals(decimals)
        # setDecimals may have clipped the range's last digits; set it again
        control.min, control.max = common["min"], common["max"]
    if spec.percent:
        control.native.setSuffix(unit)  # integer spin boxes have no suffix: px is in the tooltip
    return control


class _Header(str):
    """A section title in the widget list; becomes a bold full-width QLabel."""


class _PresetMenu(ComboBox):
    """The preset menu: its group titles (:data:`GROUP_TITLES`) are shown but disabled.

    magicgui keeps the entries it already has where they are when the choices change
    (a new entry goes last); this menu is rebuilt in the order of its choices instead,
    keeping its value when it is still there.
    """

    def reset_choices(self, *_: Any) -> None:
        """Rebuild the entries from the choices callable, titles disabled."""
        value = self.value
        with self.changed.blocked():
            self.native.clear()
            super().reset_choices()
            if value in self.choices:
                self.value = value
        model = self.native.model()
        titles = set(GROUP_TITLES.values())
        for index in range(self.native.count()):
            if self.native.itemText(index) in titles:
                item = model.item(index)
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled
                              & ~Qt.ItemFlag.ItemIsSelectable)


class _Cancelled(Exception):
    """Raised from the progress callback when the user pressed Cancel."""


class _ProgressRelay(QObject):
    """Carries progress from the worker thread to the GUI thread (a queued signal)."""

    progressed = Signal(int, int)


@dataclasses.dataclass(frozen=True)
class _Source:
    """The input as the api takes it, read from the input controls (see ``_source``)."""

    layer: Layer
    channel_axis: int | None
    value_range: str | tuple[float, float]
    mask: np.ndarray | None
    backend: str
    nan: str


@dataclasses.dataclass(frozen=True)
class _Job:
    source: _Source
    params: DiffuseParams
    preset: str
    want_mask: bool
    want_variance: bool


@dataclasses.dataclass(frozen=True)
class _Outcome:
    result: Any
    luminance_mask: Any
    variance_map: Any
    variance_limits: tuple[float, float] | None
    seconds: float


def _cancellable(compute: Callable, job, progress: Callable[[int, int], None]):
    """The worker's task: ``compute(job, progress)``, or None when Cancel stopped it."""
    try:
        return compute(job, progress)
    except _Cancelled:
        return None


def _compute(job: _Job, progress: Callable[[int, int], None]) -> _Outcome:
    """Run the api on the job's input.

    Dask data is passed through: the api returns lazy arrays, computed when napari
    shows them, so there is no progress to report (nor anything to cancel) here.
    """
    start = time.perf_counter()
    source = job.source
    data = source.layer.data
    common = dict(channel_axis=source.channel_axis, value_range=source.value_range,
                  nan=source.nan)
    lazy = tiling.is_dask(data)
    result = api.diffuse(data, job.params, mask=source.mask, backend=source.backend,
                         progress=None if lazy else progress, **common)
    mask = api.luminance_mask(data, job.params, **common) if job.want_mask else None
    variance = limits = None
    if job.want_variance:
        variance = api.variance_map(data, job.params, mask=source.mask,
                                    backend=source.backend, **common)
        first_plane = np.asarray(variance[(0,) * (variance.ndim - 2)])
        low, high = np.percentile(first_plane, [0.5, 99.5])
        limits = (float(low), float(max(high, low + 1e-6)))
    return _Outcome(result, mask, variance, limits, time.perf_counter() - start)


def _rasterise(mask_layer: Labels | Shapes, spatial: tuple[int, ...], full: tuple[int, ...]):
    if isinstance(mask_layer, Labels):
        return np.asarray(mask_layer.data) != 0
    shape = full if mask_layer.ndim == len(full) else spatial
    if mask_layer.ndim != len(shape):
        raise ValueError(f"the Shapes layer {mask_layer.name!r} is {mask_layer.ndim}-D; the mask "
                         f"must be drawn in 2-D (shape {spatial}) or in the image's "
                         f"{len(full)} non-channel dimensions")
    if len(mask_layer.data) == 0:
        return np.zeros(shape, bool)
    return mask_layer.to_labels(labels_shape=shape) != 0


class DiffuseWidget(CalibrateMixin, Container):
    """darktable's *diffuse or sharpen* as a napari dock widget.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer whose layers it reads and writes.

    Examples
    --------
    >>> widget = DiffuseWidget(viewer)            # doctest: +SKIP
    >>> widget.input.value = viewer.layers["cells"]  # doctest: +SKIP
    >>> widget.preset.value = "denoise: medium"   # doctest: +SKIP
    >>> widget.iterations.value = 8               # doctest: +SKIP
    >>> worker = widget.run()                     # doctest: +SKIP
    >>> worker = widget.calibrate()               # doctest: +SKIP
    """

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=True)
        self._viewer = viewer
        self._applying_preset = False
        self._calibrated: DiffuseParams | None = None  # the last calibration's result
        self._worker: FunctionWorker | None = None
        self._busy_with = ""  # what the worker does, for "already running" messages
        self._cancel = threading.Event()
        self._relay = _ProgressRelay()
        self._relay.progressed.connect(self._on_progress)

        self.input = ComboBox(name="input", label="input", choices=self._input_choices,
                              tooltip="The Image layer to diffuse or sharpen.")
        self.channel_axis = ComboBox(
            name="channel_axis", label="channel axis", choices=self._channel_choices,
            nullable=True,
            tooltip="The axis holding channels (fluorescence channels...), diffused "
                    "independently. RGB/RGBA layers use their colour axis automatically.")
        self.channel_axis.null_string = "none"
        self.mask = ComboBox(
            name="mask", label="inpaint mask", choices=self._mask_choices, nullable=True,
            tooltip="Optional Labels or Shapes layer: diffuse only inside it (non-zero labels, "
                    "the shapes' insides), starting from noise (inpainting). It replaces the "
                    "luminance mask. Draw it in the image's data coordinates.")
        self.mask.null_string = "none"
        self.value_range = ComboBox(
            name="value_range", label="intensities", value="detect",
            choices=[*_VALUE_RANGES, "contrast limits"],
            tooltip="How pixel values map to the module's 0..1 working range.\n"
                    "detect: as stored when the data is on a 0..1 scale (darktable's "
                    "results), else auto, with a warning saying so.\n"
                    "auto: robust percentiles of the data (0.1 % to 99.9 %, negatives "
                    "kept) become 0..1: for any units (counts, photons, 12-bit data).\n"
                    "as stored: floats as they are, integers by their type's full range.\n"
                    "contrast limits: the layer's contrast limits become 0..1.")
        self.nan = ComboBox(
            name="nan", label="NaN / Inf", value="error", choices=list(NAN_POLICIES),
            tooltip="What NaN and infinite pixels mean (astro frames mark missing data so).\n"
                    "error: refuse them, saying where the first is.\n"
                    "inpaint: missing data, filled from their surroundings.\n"
                    "keep: filled for the computation so they disturb nothing around them, "
                    "NaN again in the result.")
        self.backend = ComboBox(
            name="backend", label="backend", value="auto", choices=list(BACKENDS),
            tooltip="auto: a working OpenCL device if there is one, else NumPy.")
        self.device = self._make_device_control()
        self.preset = _PresetMenu(
            name="preset", label="preset", value=CUSTOM, choices=self._preset_choices,
            tooltip="Presets for science (microscopy, astronomy), darktable's photographic "
                    "ones, your own, and after a calibration 'calibrated' (its result). "
                    "Choosing one sets every control; changing a control afterwards shows "
                    "'custom'.")
        self.preset.reset_choices()  # disables the group titles
        self.preset.changed.connect(self._on_preset_chosen)
        self.input.changed.connect(self._on_input_chosen)

        widgets = [_Header("input"), self.input, self.channel_axis, self.mask,
                   self.value_range, self.nan, self.backend]
        widgets += [self.device, self.preset]
        for section, title in _SECTIONS.items():
            widgets.append(_Header(title))
            for spec in (f for f in FIELDS if f.section == section):
                control = _make_control(spec)
                control.changed.connect(self._on_control_changed)
                widgets.append(control)

        self.show_luminance_mask = CheckBox(
            name="show_luminance_mask", value=False, label="luminance mask layer",
            tooltip="Also add the luminance mask (where the luminance masking threshold "
                    "lets diffusion happen) as a Labels layer.")
        self.show_variance_map = CheckBox(
            name="show_variance_map", value=False, label="variance map layer",
            tooltip="Also add darktable's edge-variance term as an Image layer: bright = "
                    "edges protected by edge sensitivity, dark = flat areas diffused at full "
                    "speed. Use it to tune edge sensitivity and edge threshold.")
        self.run_button = PushButton(name="run_button", text="Run")
        self.cancel_button = PushButton(name="cancel_button", text="Cancel", enabled=False)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.progress = ProgressBar(name="progress", value=0, min=0, max=1, label="progress")
        self.status = Label(name="status", value="", label="status")
        self.status.native.setWordWrap(True)
        # long messages wrap in the width there is instead of widening the dock
        self.status.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                         QSizePolicy.Policy.Preferred)
        self.preset_name = LineEdit(
            name="preset_name", label="preset name",
            tooltip="The name under which 'save preset' stores the current settings.")
        self.save_button = PushButton(name="save_button", text="save preset")
        self.import_button = PushButton(
            name="import_button", text="import from darktable…",
            tooltip="Import the diffuse settings of a darktable .dtpreset file or XMP sidecar "
                    "as user presets.")
        self.save_button.changed.connect(lambda: self.save_preset())
        self.import_button.changed.connect(self._ask_darktable_file)

        widgets += [
            _Header("calibrate"), *self._make_calibrate_controls(),
            _Header("output"), self.show_luminance_mask, self.show_variance_map,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False, label=""),
            self.progress, self.status,
            _Header("your presets"), self.preset_name, self.save_button, self.import_button,
        ]
        self._add_with_headers(widgets)
        for combo in (self.input, self.channel_axis, self.mask, self.value_range, self.nan,
                      self.backend, self.preset, self.device, self.calibration_task,
                      self.calibration_region):
            if combo is not None:  # let long layer and preset names shrink with the dock
                combo.native.setSizeAdjustPolicy(
                    combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.native.setMinimumContentsLength(10)
        scroll = self.root_native_widget  # napari's style widens the controls after this
        scroll.setHorizontalScrollBarPolicy(scroll.horizontalScrollBarPolicy().ScrollBarAsNeeded)
        for event in ("inserted", "removed", "reordered", "moved"):
            emitter = getattr(viewer.layers.events, event, None)
            if emitter is not None:
                emitter.connect(self._on_layers_changed)
        self._on_input_chosen(self.input.value)

    def _add_with_headers(self, items: list) -> None:
        # Headers go straight into the Qt layout, spanning both columns like darktable's
        # section labels; magicgui's list holds only the controls.
        self.extend([item for item in items if not isinstance(item, _Header)])
        layout = Container.native.fget(self).layout()
        for index, item in enumerate(items):
            if isinstance(item, _Header):
                header = QLabel(f"<b>{item}</b>")
                header.setContentsMargins(0, 6, 0, 0)
                layout.insertWidget(index, header)

    @property
    def native(self):
        """The scroll area holding the controls (what napari docks).

        napari docks a widget's ``.native``, which for a scrollable magicgui container is
        the inner widget: the scroll area would be dropped (pyapp-kit/magicgui#431) and the
        tall widget would push the window off short screens.
        """
        return self.root_native_widget

    # ------------------------------------------------------------------ choices
    def _input_choices(self, _widget=None) -> list[tuple[str, Layer]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, (Image, Labels)) and self._role(layer) != "luminance mask"]

    def _mask_choices(self, _widget=None) -> list[tuple[str, Layer]]:
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, (Labels, Shapes))]

    def _channel_choices(self, _widget=None) -> list[tuple[str, int]]:
        layer = self.input.value
        if layer is None or getattr(layer, "rgb", False):
            return []
        return [(f"axis {axis} (size {size})", axis) for axis, size in enumerate(layer.data.shape)]

    def _preset_choices(self, _widget=None) -> list[str]:
        choices = [CUSTOM] + ([CALIBRATED] if self._calibrated is not None else [])
        for group in GROUPS:
            choices += [GROUP_TITLES[group], *list_presets(group)]
        with warnings.catch_warnings(record=True) as skipped:
            warnings.simplefilter("always", PresetFileWarning)
            user = list_user_presets()
        for warning in skipped:  # a broken preset file: a notification, not a traceback
            show_warning(str(warning.message))
        return choices + ([GROUP_TITLES["user"], *user] if user else [])

    def _make_device_control(self) -> ComboBox:
        from .opencl_devices import list_devices

        device = ComboBox(
            name="device", label="OpenCL device", nullable=True,
            choices=[(str(info), info.index) for info in list_devices()],
            tooltip="The OpenCL device of the opencl and auto backends. Default: "
                    "$NAPARI_DIFFUSE_OPENCL_DEVICE if set, else the first GPU, else a CPU.")
        device.null_string = "default"
        device.reset_choices()
        device.value = None
        device.changed.connect(self._on_device_chosen)
        return device

    @staticmethod
    def _on_device_chosen(index: int | None) -> None:
        from . import opencl_solver

        opencl_solver.configure(device=index)  # the next OpenCL run builds on this device

    def _on_layers_changed(self, _event=None) -> None:
        self.reset_choices()

    def _on_input_chosen(self, layer: Layer | None) -> None:
        rgb = bool(getattr(layer, "rgb", False))
        self.channel_axis.enabled = layer is not None and not rgb
        self.channel_axis.null_string = "RGB colour axis (automatic)" if rgb else "none"
        self.channel_axis.reset_choices()
        self.channel_axis.value = None

    @staticmethod
    def _role(layer: Layer) -> str | None:
        info = layer.metadata.get(METADATA_KEY)
        return info.get("role") if isinstance(info, dict) else None

    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> DiffuseParams:
        """The :class:`DiffuseParams` the controls show."""
        return DiffuseParams(**{spec.name: param_value(spec, getattr(self, spec.name).value)
                                for spec in FIELDS})

    def set_params(self, params: DiffuseParams) -> None:
        """Show ``params`` in the controls (the preset menu then shows "custom")."""
        for spec in FIELDS:
            getattr(self, spec.name).value = control_value(spec, getattr(params, spec.name))

    def _on_preset_chosen(self, name: str) -> None:
        if name == CUSTOM or name in GROUP_TITLES.values():
            return
        if name == CALIBRATED:
            params = self._calibrated
        elif name in list_presets():
            params = load_preset(name)
        else:
            params = load_user_preset(name)
        self._applying_preset = True
        try:
            self.set_params(params)
        finally:
            self._applying_preset = False

    def _on_control_changed(self, _value=None) -> None:
        if not self._applying_preset:
            self.preset.value = CUSTOM

    # ------------------------------------------------------------------ user presets
    def save_preset(self, name: str | None = None) -> Path | None:
        """Save the current settings as the user preset ``name`` (default: the name box).

        Returns the file written, or None after showing why it could not be saved.
        """
        name = (self.preset_name.value if name is None else name).strip()
        try:
            if name in (CUSTOM, CALIBRATED, *GROUP_TITLES.values()):
                raise ValueError(f"{name!r} is an entry of the preset menu; choose another name")
            path = save_user_preset(name, self.params)
        except (ValueError, TypeError, OSError) as err:
            self._fail(f"preset not saved: {err}")
            return None
        self.preset.reset_choices()
        self.preset.value = name
        self._say(f"saved preset {name!r} to {path}")
        return path

    def import_darktable(self, path: str | Path) -> list[str]:
        """Import darktable's diffuse settings from a ``.dtpreset`` or XMP file.

        Each preset or history item becomes a user preset (a bundled preset's name gets
        " (darktable)" appended); the last one is chosen, which sets the controls.

        Returns
        -------
        list of str
            The names of the presets saved (empty after showing why nothing was read).
        """
        try:
            entries = read_darktable_file(path)
            names = []
            for name, params in entries:
                name = f"{name} (darktable)" if name in list_presets() else name
                save_user_preset(name, params, description=f"imported from {Path(path).name}")
                names.append(name)
        except (ValueError, OSError) as err:
            self._fail(f"darktable import failed: {err}")
            return []
        self.preset.reset_choices()
        self.preset.value = names[-1]
        self._say(f"imported {len(names)} darktable setting(s) from {Path(path).name}: "
                  + ", ".join(names))
        return names

    def _ask_darktable_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self.native, "Import darktable diffuse settings", str(Path.home()),
            "darktable presets and sidecars (*.dtpreset *.xmp *.XMP);;all files (*)")
        if path:
            self.import_darktable(path)

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a run or a calibration is in progress."""
        return self._worker is not None

    def run(self) -> FunctionWorker | None:
        """Start diffusing the input layer in a worker thread.

        Returns
        -------
        FunctionWorker or None
            The started worker (its ``finished`` signal fires when results are in
            place), or None when the run was refused: a run or a calibration is already
            going, or the input is not valid (the reason is shown in napari's
            notifications).
        """
        if self._refused_while_busy():
            return None
        try:
            job = _Job(source=self._source(), params=self.params, preset=self.preset.value,
                       want_mask=self.show_luminance_mask.value,
                       want_variance=self.show_variance_map.value)
        except (ValueError, TypeError) as err:
            self._fail(str(err))
            return None
        return self._start(_compute, job, lambda outcome: self._on_returned(job, outcome),
                           busy_with="diffuse or sharpen", total=job.params.iterations,
                           status=f"running {job.preset} on {job.source.layer.name}…")

    def cancel(self) -> None:
        """Ask the running worker to stop after its current iteration (or evaluation)."""
        if self._worker is not None:
            self._cancel.set()
            self.status.value = "cancelling…"

    def _refused_while_busy(self) -> bool:
        """True, after saying so, while a worker is going."""
        if self._worker is None:
            return False
        show_info(f"{self._busy_with} is already running; wait for it or press Cancel")
        return True

    def _start(self, compute: Callable, job, on_returned: Callable, *, busy_with: str,
               total: int, status: str) -> FunctionWorker:
        """Run ``compute(job, progress)`` in a worker thread, with progress and Cancel.

        Shared by :meth:`run` and :meth:`calibrate`. ``progress(done, total)`` moves the
        progress bar and raises ``_Cancelled`` once Cancel is pressed, which ends the
        worker with None. In the GUI thread, ``on_returned`` gets ``compute``'s result
        (or None); errors are reported as "<busy_with> failed: ..."; warnings become
        napari notifications.
        """
        self._cancel.clear()
        relay = self._relay

        def progress(done: int, total: int) -> None:
            relay.progressed.emit(done, total)
            if self._cancel.is_set():
                raise _Cancelled

        worker = create_worker(  # connecting "errored" here stops the default re-raise
            _cancellable, compute, job, progress, _start_thread=False,
            _connect={"returned": on_returned,
                      "errored": lambda err: self._on_errored(busy_with, err),
                      "finished": self._on_finished,
                      "warned": lambda warning: show_warning(str(warning[0]))})
        self._worker = worker
        self._busy_with = busy_with
        self.run_button.enabled = self.calibrate_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.max = max(1, total)
        self.progress.value = 0
        self.status.value = status
        worker.start()
        return worker

    def _source(self) -> _Source:
        """Read the input controls; raise ValueError/TypeError naming what is wrong."""
        layer = self.input.value
        if layer is None:
            raise ValueError("choose an input Image layer first")
        if not isinstance(layer, Image):
            raise TypeError(f"the input {layer.name!r} is a {type(layer).__name__} layer; "
                            "choose an Image layer (a Labels layer holds label ids, not "
                            "intensities: convert it to an Image layer first)")
        if layer.multiscale:
            raise ValueError(f"the input {layer.name!r} is a multiscale (pyramid) layer; "
                             "add its full-resolution level as its own Image layer")
        channel_axis = -1 if layer.rgb else self.channel_axis.value
        data = layer.data
        # bad shapes and dtypes, before any work ("dtype" reads no data)
        intensity.check_image(data, channel_axis, "dtype")
        if self.value_range.value == "contrast limits":
            value_range = tuple(float(v) for v in layer.contrast_limits)
        else:
            value_range = _VALUE_RANGES[self.value_range.value]
        mask = None
        if self.mask.value is not None:
            axis = None if channel_axis is None else channel_axis % data.ndim
            full = tuple(n for i, n in enumerate(data.shape) if i != axis)
            mask = _rasterise(self.mask.value, full[-2:], full)
        return _Source(layer=layer, channel_axis=channel_axis, value_range=value_range,
                       mask=mask, backend=self.backend.value, nan=self.nan.value)

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.max = max(1, total)
        self.progress.value = min(done, total)

    def _on_returned(self, job: _Job, outcome: _Outcome | None) -> None:
        layer = job.source.layer
        if outcome is None:
            self._say(f"cancelled: {job.preset} on {layer.name!r}; no layer was changed")
            return
        self._publish(job, outcome)
        self.progress.value = self.progress.max
        self._say(f"{layer.name} [{job.preset}] done in {outcome.seconds:.1f} s")

    def _on_errored(self, busy_with: str, err: Exception) -> None:
        if isinstance(err, (ValueError, TypeError, RuntimeError, MemoryError)):
            self._fail(f"{busy_with} failed: {err}")
        else:  # a bug: let napari show it with its traceback
            self.status.value = f"internal error: {err!r}"
            raise err

    def _on_finished(self) -> None:
        self._worker = None
        self.run_button.enabled = self.calibrate_button.enabled = True
        self.cancel_button.enabled = False

    def _say(self, message: str) -> None:
        self.status.value = message
        show_info(message)

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_error(message)

    # ------------------------------------------------------------------ output layers
    def _publish(self, job: _Job, outcome: _Outcome) -> None:
        layer = job.source.layer
        channel_axis = job.source.channel_axis
        source = str(layer.unique_id)
        kept_axes = [i for i in range(layer.ndim)
                     if layer.rgb or channel_axis is None or i != channel_axis % layer.ndim]
        placement = dict(scale=layer.scale, translate=layer.translate)
        reduced = dict(scale=[layer.scale[i] for i in kept_axes],
                       translate=[layer.translate[i] for i in kept_axes])
        self._put(source, "result", Image, outcome.result, name=f"{layer.name} [{job.preset}]",
                  rgb=layer.rgb, contrast_limits=layer.contrast_limits, gamma=layer.gamma,
                  colormap=layer.colormap, **placement)
        if outcome.luminance_mask is not None:
            self._put(source, "luminance mask", Labels, outcome.luminance_mask.astype(np.uint8),
                      name=f"{layer.name} [luminance mask]", opacity=0.5, **reduced)
        if outcome.variance_map is not None:
            self._put(source, "variance map", Image, outcome.variance_map,
                      name=f"{layer.name} [variance map]", colormap="magma",
                      contrast_limits=outcome.variance_limits, **reduced)

    def _put(self, source: str, role: str, kind: type[Layer], data, **properties) -> Layer:
        """Replace the data of ``source``'s ``role`` layer, or add it."""
        metadata = {METADATA_KEY: {"source": source, "role": role}}
        existing = next((other for other in self._viewer.layers
                         if other.metadata.get(METADATA_KEY) == metadata[METADATA_KEY]), None)
        fits = (isinstance(existing, kind) and existing.data.shape == data.shape
                and getattr(existing, "rgb", False) == properties.get("rgb", False))
        if fits:
            existing.data = data
            for key in ("name", "contrast_limits", "scale", "translate"):
                if key in properties:
                    setattr(existing, key, properties[key])
            return existing
        new = kind(data, metadata=metadata, **properties)
        if existing is not None:
            index = self._viewer.layers.index(existing)
            self._viewer.layers.remove(existing)
            self._viewer.layers.insert(index, new)
        else:
            self._viewer.add_layer(new)
        return new

