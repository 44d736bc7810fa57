"""The napari dock widget: every control of darktable's module, presets, a background run.

The widget holds no algorithm: it builds a :class:`~napari_diffuse.params.DiffuseParams`
from its controls and calls :func:`napari_diffuse.diffuse` (and
:func:`~napari_diffuse.luminance_mask`, :func:`~napari_diffuse.variance_map`) in a napari
worker thread. This module assembles the dock; each concern has its own module:

- :mod:`.widget_controls`: the parameter controls (named after their ``DiffuseParams``
  field, darktable's ranges, percentages where darktable shows them), the preset menu,
  the collapsible sections and the layout (Run, Cancel, progress and status always
  visible below the scrolling sections);
- :mod:`.widget_jobs`: what a run reads from the controls and computes in the worker;
- :mod:`.widget_runner`: the background runner shared by Run, the preview and calibration
  (progress, Cancel, napari's activity panel);
- :mod:`.widget_layers`: the output layers, their names and where they go;
- :mod:`.widget_presets`: saving user presets, importing darktable's;
- :mod:`.widget_preview`: the live preview;
- :mod:`.widget_calibrate`: the *calibrate* action.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import napari.viewer
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
)
from napari.layers import Image, Labels, Layer, Shapes
from napari.qt.threading import FunctionWorker
from napari.utils.notifications import notification_manager, show_error, show_info
from qtpy.QtWidgets import QApplication, QSizePolicy

from .backends import BACKENDS
from .missing import NAN_POLICIES
from .params import FIELDS, DiffuseParams
from .presets import list_presets
from .widget_calibrate import CALIBRATED, CalibrateMixin
from .widget_controls import (
    CUSTOM,
    GROUP_TITLES,
    SECTIONS,
    VALUE_RANGES,
    PresetMenu,
    Section,
    arrange,
    control_value,
    make_control,
    param_value,
)
from .widget_jobs import Job, Outcome, Source, compute_all, job_total, make_source
from .widget_layers import METADATA_KEY, publish, role_of, settings_label
from .widget_presets import PresetsMixin
from .widget_preview import PreviewMixin
from .widget_runner import Runner

#: The input menu's entry that runs every selected Image layer.
SELECTED = "selected layers"
_NOT_INPUTS = ("luminance mask", "variance map", "preview")
_UNIT_SYMBOLS = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "meter": "m",
                 "second": "s", "millisecond": "ms"}
#: The preset a new input starts from when it suggests none (and the user has not tuned).
DEFAULT_PRESETS = {"rgb": "denoise: medium", "other": "fluorescence: moderate light"}


def _suggested_preset(layer) -> str | None:
    """The preset for a new input: its own suggestion (the samples carry one), else
    :data:`DEFAULT_PRESETS` by kind; None for no layer."""
    if not isinstance(layer, Layer):
        return None
    info = layer.metadata.get(METADATA_KEY)
    if isinstance(info, dict) and info.get("suggested_preset") in list_presets():
        return info["suggested_preset"]
    return DEFAULT_PRESETS["rgb" if getattr(layer, "rgb", False) else "other"]


__all__ = ["DiffuseWidget", "control_value", "param_value", "CUSTOM", "CALIBRATED",
           "GROUP_TITLES", "METADATA_KEY"]


class DiffuseWidget(CalibrateMixin, PresetsMixin, PreviewMixin, Container):
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

    _dock = None  # the dock's widget, once the controls are laid out

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__(scrollable=True)
        self._viewer = viewer
        self._applying_preset = False
        self._tuned = False  # the user changed a control or chose a preset
        self._base_preset: str | None = None  # the last preset chosen, and its settings
        self._base_params: DiffuseParams | None = None
        self._shown: DiffuseParams | None = None  # the exact values set_params last showed
        self._calibrated: DiffuseParams | None = None  # the last calibration's result
        self._runner = Runner(on_progress=self._on_progress, on_busy=self._on_busy,
                              on_error=self._on_errored)
        self._jobs: list[Job] = []  # the running jobs (their inputs' removal cancels them)

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
            choices=[*VALUE_RANGES, "contrast limits"],
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
        self.preset = PresetMenu(
            name="preset", label="preset", value=CUSTOM, choices=self._preset_choices,
            tooltip="Presets for science (microscopy, astronomy), darktable's photographic "
                    "ones, your own, and after a calibration 'calibrated' (its result). "
                    "Choosing one sets every control; changing a control afterwards shows "
                    "'custom'.")
        self.preset.reset_choices()  # disables the group titles
        self.preset.changed.connect(self._on_preset_chosen)
        self.input.changed.connect(self._on_input_chosen)

        controls = {}
        for spec in FIELDS:
            control = make_control(spec)
            control.changed.connect(self._on_control_changed)
            controls.setdefault(spec.section, []).append(control)
        self.radius_units = Label(name="radius_units", value="", label="")
        self.radius_units.native.setWordWrap(True)  # wraps instead of widening the dock
        self.radius_units.native.setSizePolicy(QSizePolicy.Policy.Ignored,
                                               QSizePolicy.Policy.Preferred)
        controls["spatiality"].append(self.radius_units)

        self.show_luminance_mask = CheckBox(
            name="show_luminance_mask", value=False, label="luminance mask layer",
            tooltip="Also add the luminance mask (where the luminance masking threshold "
                    "lets diffusion happen; everywhere at 0 %; the inpaint mask when one is "
                    "chosen) as a Labels layer, below the result.")
        self.show_variance_map = CheckBox(
            name="show_variance_map", value=False, label="variance map layer",
            tooltip="Also add darktable's edge-variance term as an Image layer below the "
                    "result: bright = edges protected by edge sensitivity, dark = flat areas "
                    "diffused at full speed. Use it to tune edge sensitivity and edge "
                    "threshold.")
        self.keep_results = CheckBox(
            name="keep_results", value=False, label="keep each result",
            tooltip="On: every run adds a new result layer (to compare settings). Off: a run "
                    "replaces its input's previous result, unless you renamed that layer.")
        self.store_folder = FileEdit(
            name="store_folder", mode="d", value=None, nullable=True, label="store folder",
            tooltip="Where the result of a large (dask, zarr or multiscale) layer goes when it "
                    "does not fit in memory: a zarr store in a new run-* folder in it, removed "
                    "when the result layer is deleted and at exit. Empty: a temporary folder.")
        self.copy_button = PushButton(
            name="copy_button", text="copy as Python",
            tooltip="Put the equivalent napari_diffuse.diffuse(...) call, with the current "
                    "settings, on the clipboard.")
        self.copy_button.changed.connect(lambda: self.copy_as_python())
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

        sections = [
            Section(None, [self.input, self.preset, *self._make_preview_controls()]),
            Section("input options", [self.channel_axis, self.mask, self.value_range,
                                      self.nan, self.backend, self.device], folded=True),
            *(Section(title, controls[key]) for key, title in SECTIONS.items()),
            Section("calibrate", self._make_calibrate_controls()),
            Section("output layers", [self.keep_results, self.show_luminance_mask,
                                      self.show_variance_map, self.store_folder,
                                      self.copy_button], folded=True),
            Section("your presets", self._make_preset_controls(), folded=True),
        ]
        footer = [Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                            labels=False, label=""), self.progress, self.status]
        for combo in (self.input, self.channel_axis, self.mask, self.value_range, self.nan,
                      self.backend, self.preset, self.device, self.calibration_task,
                      self.calibration_region):
            if combo is not None:  # let long layer and preset names shrink with the dock
                combo.native.setSizeAdjustPolicy(
                    combo.native.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
                combo.native.setMinimumContentsLength(10)
        self._dock = arrange(self, sections, footer)
        self.radius.changed.connect(self._show_radius_units)
        self.radius_center.changed.connect(self._show_radius_units)
        scroll = self.root_native_widget  # napari's style widens the controls after this
        scroll.setHorizontalScrollBarPolicy(scroll.horizontalScrollBarPolicy().ScrollBarAsNeeded)
        for event in ("inserted", "removed", "reordered", "moved"):
            emitter = getattr(viewer.layers.events, event, None)
            if emitter is not None:
                emitter.connect(self._on_layers_changed)
        viewer.layers.events.removed.connect(self._on_layer_removed)
        # the viewer closing deletes the controls: stop a run rather than report into them
        self.progress.native.destroyed.connect(self._on_closed)
        # "selected layers" appears in the input menu once several layers are selected
        viewer.layers.selection.events.changed.connect(self._on_selection_changed)
        self._on_input_chosen(self.input.value)

    @property
    def native(self):
        """The dock's widget: the scroll area of sections above *Run*, *Cancel*, the
        progress bar and the status line, which stay visible (what napari docks).

        napari docks a widget's ``.native``, which for a scrollable magicgui container is
        the inner widget: the scroll area would be dropped (pyapp-kit/magicgui#431) and the
        tall widget would push the window off short screens.
        """
        return self._dock if self._dock is not None else Container.native.fget(self)

    # ------------------------------------------------------------------ choices
    def _input_choices(self, _widget=None) -> list[tuple[str, Layer]]:
        layers = [(layer.name, layer) for layer in self._viewer.layers
                  if isinstance(layer, Image) and role_of(layer) not in _NOT_INPUTS]
        selected = self._selected_images()
        if len(selected) > 1:
            layers.append((f"{SELECTED} ({len(selected)})", SELECTED))
        return layers

    def _selected_images(self) -> list[Image]:
        """The Image layers selected in the layer list that can be inputs."""
        return [layer for layer in self._viewer.layers.selection
                if isinstance(layer, Image) and role_of(layer) not in _NOT_INPUTS]

    def _mask_choices(self, _widget=None) -> list[tuple[str, Layer]]:
        """Labels and Shapes layers, but not this plugin's own outputs (its luminance
        masks)."""
        return [(layer.name, layer) for layer in self._viewer.layers
                if isinstance(layer, (Labels, Shapes)) and role_of(layer) is None]

    def _channel_choices(self, _widget=None) -> list[tuple[str, int]]:
        layer = self.input.value
        if not isinstance(layer, Layer) or getattr(layer, "rgb", False):
            return []
        return [(f"axis {axis} (size {size})", axis) for axis, size in enumerate(layer.data.shape)]

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

    def reset_choices(self, *_: Any) -> None:
        """Refresh the menus that depend on the layers (napari calls this on every layer
        event); the preset menu, which reads the user preset folder, refreshes itself
        when a preset is saved, imported or calibrated."""
        for menu in (self.input, self.channel_axis, self.mask, self.preview_region,
                     self.calibration_region):
            menu.reset_choices()

    def _on_layers_changed(self, _event=None) -> None:
        self.reset_choices()

    def _on_layer_removed(self, event) -> None:
        """Cancel a run whose input layer was removed: its results would have no place."""
        if any(job.source.layer is event.value for job in self._jobs):
            self.cancel()
            self.status.value = f"cancelling: the input {event.value.name!r} was removed"

    def _on_closed(self, _object=None) -> None:
        self._runner.close()
        self._preview_runner.close()

    def _on_selection_changed(self, _event=None) -> None:
        self.input.reset_choices()

    def _on_input_chosen(self, layer: Layer | str | None) -> None:
        layer = None if layer == SELECTED else layer
        rgb = bool(getattr(layer, "rgb", False))
        self.channel_axis.enabled = layer is not None and not rgb
        self.channel_axis.null_string = "RGB colour axis (automatic)" if rgb else "none"
        self.channel_axis.reset_choices()
        self.channel_axis.value = None
        suggested = _suggested_preset(layer)
        if suggested is not None and not self._tuned:
            self.preset.value = suggested  # the sample's own preset, until the user tunes
            self._tuned = False
        self._show_radius_units()
        self._preview_settings_changed()

    def _show_radius_units(self, _value=None) -> None:
        """The radii in pixels and, when the input has a physical scale, in its unit."""
        span, centre = self.radius.value, self.radius_center.value
        text = f"radius span {span} px, central radius {centre} px"
        layer = self.input.value
        if isinstance(layer, Layer):
            size, unit = float(layer.scale[-1]), str(getattr(layer, "units", ("",))[-1])
            if size != 1.0 or unit not in ("", "pixel", "dimensionless"):
                short = _UNIT_SYMBOLS.get(unit, unit)
                text += (f" = {span * size:.4g} and {centre * size:.4g} {short} "
                         f"(1 px = {size:.4g} {short})")
        self.radius_units.value = text


    # ------------------------------------------------------------------ parameters
    @property
    def params(self) -> DiffuseParams:
        """The :class:`DiffuseParams` the controls show: where a control still shows the
        value :meth:`set_params` gave it (a preset's, a calibration's), that exact value,
        not its rounding to the control's decimals."""
        values = {}
        for spec in FIELDS:
            chosen = param_value(spec, getattr(self, spec.name).value)
            exact = None if self._shown is None else getattr(self._shown, spec.name)
            unchanged = exact is not None and param_value(spec, control_value(spec, exact)) \
                == chosen
            values[spec.name] = exact if unchanged else chosen
        return DiffuseParams(**values)

    def set_params(self, params: DiffuseParams) -> None:
        """Show ``params`` in the controls (the preset menu then shows "custom"); values
        finer than a control's decimals are kept while the control is left as it is."""
        for spec in FIELDS:
            getattr(self, spec.name).value = control_value(spec, getattr(params, spec.name))
        self._shown = params

    def _on_control_changed(self, _value=None) -> None:
        if not self._applying_preset:
            self._tuned = True
            self.preset.value = CUSTOM
        self._preview_settings_changed()

    def _run_label(self) -> str:
        """What the controls would run, for a result's name."""
        return settings_label(self.preset.value, self._base_preset, self._base_params,
                              self.params)

    def copy_as_python(self) -> str:
        """Put the ``diffuse(...)`` call that runs the current settings on the input on the
        clipboard (for scripted sessions), and return it."""
        layer = self.input.value
        name = layer.name if isinstance(layer, Layer) else "my image"
        params = self.params
        changed = {f.name: getattr(params, f.name) for f in FIELDS
                   if getattr(params, f.name) != f.default}
        arguments = ", ".join(f"{key}={value!r}" for key, value in changed.items())
        lines = ["from napari_diffuse import DiffuseParams, diffuse", "",
                 f"params = DiffuseParams({arguments})",
                 f"image = viewer.layers[{name!r}].data"
                 + ("[0]  # full resolution" if getattr(layer, "multiscale", False) else "")]
        options = []
        try:
            source = self._source()
        except (ValueError, TypeError):
            source = None
        if source is not None and source.channel_axis is not None:
            options.append(f"channel_axis={source.channel_axis}")
        if self.mask.value is not None:
            mask = self.mask.value
            # the mask's own shape: the image's spatial (or non-channel) shape
            shape = repr(source.mask_drawn.shape) if source is not None else "image.shape[-2:]"
            lines.append(f"mask = viewer.layers[{mask.name!r}].data != 0" if isinstance(
                mask, Labels) else f"mask = viewer.layers[{mask.name!r}].to_labels("
                                   f"labels_shape={shape}) != 0")
            options.append("mask=mask")
        value_range = source.value_range if source is not None else \
            VALUE_RANGES.get(self.value_range.value)
        if value_range is not None:
            options.append(f"value_range={value_range!r}")
        if self.nan.value != "error":
            options.append(f"nan={self.nan.value!r}")
        if self.backend.value != "auto":
            options.append(f"backend={self.backend.value!r}")
        lines.append(f"result = diffuse(image, params{''.join(', ' + o for o in options)})")
        lines.append(f"viewer.add_image(result, name={name + ' [' + self._run_label() + ']'!r})")
        code = "\n".join(lines) + "\n"
        QApplication.clipboard().setText(code)
        self._say("copied the diffuse(...) call to the clipboard")
        return code

    # ------------------------------------------------------------------ running
    @property
    def running(self) -> bool:
        """True while a run or a calibration is in progress."""
        return self._runner.running

    def run(self) -> FunctionWorker | None:
        """Start diffusing the input layer (or every selected layer) in a worker thread.

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
            jobs = [Job(source=source, params=self.params, preset=self._run_label(),
                        want_mask=self.show_luminance_mask.value,
                        want_variance=self.show_variance_map.value,
                        store_folder=self.store_folder.value)
                    for source in self._sources()]
        except (ValueError, TypeError) as err:
            self._fail(str(err))
            return None
        names = ", ".join(job.source.layer.name for job in jobs)
        total = sum(job_total(job) for job in jobs)
        self._jobs = jobs
        return self._start(compute_all, jobs, lambda outcomes: self._on_returned(jobs, outcomes),
                           busy_with="diffuse or sharpen", total=total,
                           status=f"running {jobs[0].preset} on {names}…")

    def _sources(self) -> list[Source]:
        """The input (or every selected layer), read from the controls; raise ValueError
        naming what is wrong, e.g. an empty inpaint mask."""
        if self.input.value == SELECTED:
            layers = self._selected_images()
            if not layers:
                raise ValueError("no Image layer is selected in the layer list")
            sources = [self._source(layer) for layer in layers]
        else:
            sources = [self._source()]
        for source in sources:
            if source.mask_drawn is not None and source.mask_drawn.is_empty():
                raise ValueError(f"the inpaint mask {self.mask.value.name!r} is empty: paint "
                                 "or draw the pixels to fill first, or choose 'none'")
        return sources

    def cancel(self) -> None:
        """Ask the running worker to stop after its current iteration (or evaluation)."""
        if self._runner.running:
            self._runner.cancel()
            self.status.value = "cancelling…"

    def _refused_while_busy(self) -> bool:
        """True, after saying so, while a worker is going."""
        if not self._runner.running:
            return False
        show_info(f"{self._runner.busy_with} is already running; wait for it or press Cancel")
        return True

    def _start(self, compute: Callable, job, on_returned: Callable, *, busy_with: str,
               total: int, status: str) -> FunctionWorker:
        """Run ``compute(job, progress)`` in the widget's runner (progress bar, Cancel);
        shared by :meth:`run` and :meth:`calibrate`; a live preview's run is stopped."""
        self._stop_preview()
        self.progress.max = max(1, total)
        self.progress.value = 0
        self.status.value = status
        return self._runner.start(compute, job, on_returned, busy_with=busy_with, total=total)

    def _source(self, layer: Layer | None = None) -> Source:
        """Read the input controls (for ``layer``, default: the input menu's); raise
        ValueError/TypeError naming what is wrong."""
        layer = self.input.value if layer is None else layer
        if layer is None or layer == SELECTED:
            raise ValueError("choose an input Image layer first")
        return make_source(layer, channel_axis=self.channel_axis.value,
                           value_range=self.value_range.value, mask_layer=self.mask.value,
                           backend=self.backend.value, nan=self.nan.value)

    def _on_progress(self, done: int, total: int, left: str) -> None:
        self.progress.max = max(1, total)
        self.progress.value = min(done, total)
        self.progress.native.setFormat(f"%p % · {left}" if left else "%p %")

    def _on_returned(self, jobs: list[Job], outcomes: list[Outcome] | None) -> None:
        self._jobs = []
        names = ", ".join(repr(job.source.layer.name) for job in jobs)
        gone = [job.source.layer for job in jobs if job.source.layer not in self._viewer.layers]
        if outcomes is not None and gone:
            for outcome in outcomes:
                outcome.discard()
            outcomes = None
        if outcomes is None:
            self.progress.value = 0
            why = f" (the input {gone[0].name!r} was removed)" if gone else ""
            self._say(f"cancelled{why}: {jobs[0].preset} on {names}; no layer was changed")
            return
        for job, outcome in zip(jobs, outcomes, strict=True):
            publish(self._viewer, job.source.layer, job.source.channel_axis, job.preset,
                    outcome, keep=self.keep_results.value)
        self.progress.value = self.progress.max
        seconds = sum(outcome.seconds for outcome in outcomes)
        self._say(f"{names} [{jobs[0].preset}] done in {seconds:.1f} s")

    def _on_errored(self, busy_with: str, err: Exception) -> None:
        if isinstance(err, (ValueError, TypeError, RuntimeError, MemoryError)):
            self._fail(f"{busy_with} failed: {err}")
        else:  # a bug: napari shows it with its traceback (raising here, in a Qt slot,
            # would abort a scripted session that has no exception hook)
            self.status.value = f"internal error: {err!r}"
            notification_manager.receive_error(type(err), err, err.__traceback__)

    def _on_busy(self, busy: bool) -> None:
        self.run_button.enabled = self.calibrate_button.enabled = not busy
        self.cancel_button.enabled = busy
        if not busy:
            self.progress.native.setFormat("%p %")

    def _say(self, message: str) -> None:
        self.status.value = message
        show_info(message)

    def _fail(self, message: str) -> None:
        self.status.value = message
        show_error(message)
