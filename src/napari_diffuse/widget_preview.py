"""The dock widget's live preview: the current settings on the visible part of the input.

:class:`PreviewMixin` gives :class:`~napari_diffuse.widget.DiffuseWidget` a *live preview*
check box (``widget.live_preview``) and a region menu (``widget.preview_region``), at the
top of the dock. While the box is checked, every change of a parameter control, of the
preset, of the input or of an input option (channel axis, inpaint mask, intensities,
NaN / Inf, backend, OpenCL device), and every pan, zoom or plane change of the viewer,
re-runs the current settings on a crop of the input:

- the region: ``"current view"`` is the part of the input the canvas shows
  (:func:`~napari_diffuse.widget_calibrate.view_region`), cut down to at most
  :data:`MAX_SIZE` x :data:`MAX_SIZE` pixels around its centre; a Shapes layer gives the
  pixels inside its first rectangle
  (:func:`~napari_diffuse.widget_calibrate.rectangle_region`), as drawn (not cut down);
- the plane: for stacks, the plane the viewer shows (the dims sliders' position on every
  leading axis); every channel of a channel axis (colour axis included);
- the intensities: the range the full run would use, resolved once per input layer (and
  intensities, channel axis and NaN choices) on the *whole* layer, in the background,
  then passed to :func:`napari_diffuse.diffuse` on the crop as an explicit ``(lo, hi)``,
  so that the preview's values are the full run's (a warning of the ``detect`` choice is
  shown in the status line, not as a notification); the inpaint mask is cropped alike.

The crop is diffused with the widget's backend in a worker thread of the preview's own
:class:`~napari_diffuse.widget_runner.Runner`: the progress bar, *Run* and *Cancel*
belong to full runs and calibrations and are not touched. Changes are debounced
(:data:`DEBOUNCE_MS`): a burst of changes (a dragged slider) starts one run, with the
last settings; a change while a preview runs cancels it (at its next iteration) and the
new one starts once it has stopped, so only the last settings are ever shown. A full run
or a calibration cancels a running preview (the widget calls
:meth:`PreviewMixin._stop_preview` before starting one); no preview starts while a run or
a calibration is going, and the preview catches up when it ends.

The result goes into one Image layer, ``"<input> [preview]"``, placed above every other
Image layer (the input, results; Shapes, Points and Labels layers above them stay above,
so a rectangle being drawn stays visible) and updated in place, moved back up when a
result was added over it: placed as the input is
(:func:`~napari_diffuse.widget_layers.placement`), its translate moved to the crop's
corner along the input's rotation and shear, with its contrast limits, gamma, colormap
and RGB flag; stacks keep their leading axes, one plane long, at the plane shown, so the
preview is only visible on the plane it was computed for. Its metadata
(``metadata["napari_diffuse"]["role"] == "preview"``) keeps it out of the input menu. A
preview layer the user renamed is left alone (a new one is added). Unchecking the box
removes the layer; removing the layer by hand unchecks the box; removing the input removes
its preview. ``widget.previewing`` is True while a preview runs or a change waits for one.
A preview that fails (invalid settings, a diverging run, a region
outside the image, the 3-D view) says why in the status line, without a traceback, and
leaves the previous preview in place.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import CheckBox, ComboBox
from napari.layers import Image, Layer, Shapes
from qtpy.QtCore import QTimer

from . import api, intensity, tiling
from .missing import started
from .params import DiffuseParams
from .widget_calibrate import CURRENT_VIEW, rectangle_region, view_region
from .widget_jobs import as_dask, colours, spatial_axes, with_alpha, without_channel
from .widget_layers import METADATA_KEY, placement
from .widget_runner import Runner

if TYPE_CHECKING:
    from .widget_jobs import MaskDrawing, Source

__all__ = ["MAX_SIZE", "DEBOUNCE_MS", "PREVIEW_ROLE", "PreviewJob", "PreviewOutcome",
           "PreviewMixin", "clip_box", "crop_index", "compute_preview", "resolve_range"]

#: The current view is cut down to at most this many pixels per side, around its centre.
MAX_SIZE = 512
#: A change waits this long for the next one before the preview runs.
DEBOUNCE_MS = 150
#: How often a preview waiting for a full run or a calibration checks whether it ended.
_POLL_MS = 250
#: The role of the preview layer in its metadata (see ``widget_layers.role_of``).
PREVIEW_ROLE = "preview"
_log = logging.getLogger(__name__)

Box = tuple[int, int, int, int]


def clip_box(box: Box, max_size: int = MAX_SIZE) -> Box:
    """Cut ``(y0, x0, y1, x1)`` down to at most ``max_size`` pixels per side, keeping its
    centre.

    Parameters
    ----------
    box : tuple of int
        ``(y0, x0, y1, x1)``, ends excluded.
    max_size : int
        The longest side allowed.

    Returns
    -------
    tuple of int
        The box, unchanged along a side no longer than ``max_size``.

    Examples
    --------
    >>> clip_box((0, 100, 1024, 300))
    (256, 100, 768, 300)
    """
    def side(start: int, stop: int) -> tuple[int, int]:
        if stop - start <= max_size:
            return start, stop
        first = (start + stop - max_size) // 2
        return first, first + max_size

    (y0, y1), (x0, x1) = side(box[0], box[2]), side(box[1], box[3])
    return y0, x0, y1, x1


def crop_index(shape: tuple[int, ...], channel_axis: int | None, box: Box,
               plane: dict[int, int]) -> tuple[slice, ...]:
    """The index of an image's crop: ``box`` on the spatial axes, one plane of each leading
    axis, every channel.

    Parameters
    ----------
    shape : tuple of int
        The image's shape (channel axis included).
    channel_axis : int or None
        The image's channel axis (``-1`` for an RGB layer's colour axis).
    box : tuple of int
        ``(y0, x0, y1, x1)`` on the two spatial axes (the last two non-channel axes).
    plane : dict
        The index to take on each leading axis (axis number: index), clipped to the axis;
        0 for an axis not given.

    Returns
    -------
    tuple of slice
        One slice per axis; leading axes keep a length of 1.
    """
    ndim = len(shape)
    channel = None if channel_axis is None else channel_axis % ndim
    spatial = spatial_axes(ndim, channel_axis)
    index = []
    for axis, size in enumerate(shape):
        if axis == channel:
            index.append(slice(0, size))
        elif axis in spatial:
            low, high = (box[0], box[2]) if axis == spatial[0] else (box[1], box[3])
            index.append(slice(low, high))
        else:
            at = min(max(int(plane.get(axis, 0)), 0), size - 1)
            index.append(slice(at, at + 1))
    return tuple(index)


def resolve_range(data, channel_axis: int | None, value_range, nan: str) -> tuple[float, float]:
    """The ``(lo, hi)`` a full run of ``diffuse(data, ..., value_range=value_range, nan=nan)``
    maps to 0..1.

    Parameters
    ----------
    data : array_like or dask.array.Array
        The whole image (read for ``None`` and ``"auto"``).
    channel_axis : int or None
        Its channel axis.
    value_range : None, "auto", "dtype" or (float, float)
        As :func:`napari_diffuse.diffuse` takes it.
    nan : str
        The NaN policy: with ``"inpaint"`` or ``"keep"`` a NumPy float image's missing
        pixels are started from their nearest finite pixel first, as the full run does
        (a dask image is surveyed over its finite values).

    Returns
    -------
    (float, float)

    Warns
    -----
    IntensityWarning
        With ``value_range=None`` when the data is not on a 0..1 scale (as the full run).
    """
    if value_range is not None and not isinstance(value_range, str):
        lo, hi = intensity.check_value_range(value_range)
        return lo, hi
    if not isinstance(data, np.ndarray):  # zarr and the like: read as the full run reads it
        data = as_dask(data, channel_axis)
    if nan != "error" and np.dtype(data.dtype).kind == "f" and not tiling.is_dask(data):
        data = started(data, channel_axis)
    layout = intensity.check_image(data, channel_axis, value_range, stacklevel=3)
    return float(layout.offset), float(layout.offset + layout.scale)


@dataclasses.dataclass(frozen=True)
class PreviewJob:
    """One preview: what :func:`compute_preview` runs, read in the GUI thread."""

    data: Any  #: the whole input array
    index: tuple[slice, ...]  #: the crop (:func:`crop_index`)
    channel_axis: int | None
    value_range: Any  #: the resolved ``(lo, hi)``, or the choice to resolve on ``data``
    resolved: bool
    mask: MaskDrawing | None  #: the inpaint mask (rasterised in the worker)
    mask_index: tuple[slice, ...]  #: the crop of the mask
    params: DiffuseParams
    backend: str
    nan: str
    alpha: bool = False  #: an RGBA layer: its alpha is kept, not diffused


@dataclasses.dataclass(frozen=True)
class PreviewOutcome:
    """A preview's result, the range it used, the warnings raised, and its time."""

    result: np.ndarray
    value_range: tuple[float, float]
    warnings: list[str]
    seconds: float


def compute_preview(job: PreviewJob, progress: Callable[[int, int], None]) -> PreviewOutcome:
    """Run :func:`napari_diffuse.diffuse` on the job's crop (in the worker thread).

    Parameters
    ----------
    job : PreviewJob
        The crop, the settings, the range (resolved here on the whole image first when
        the job does not carry it).
    progress : callable
        ``progress(done, total)``; it raises to cancel the run.

    Returns
    -------
    PreviewOutcome
        The warnings raised on the way are returned, not shown.
    """
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value_range = job.value_range if job.resolved else resolve_range(
            colours(job.data, job.alpha), job.channel_axis, job.value_range, job.nan)
        crop = job.data[job.index]
        crop = crop.compute() if tiling.is_dask(crop) else np.asarray(crop)
        mask = None if job.mask is None else job.mask.rasterise()[job.mask_index]
        result = api.diffuse(colours(crop, job.alpha), job.params,
                             channel_axis=job.channel_axis, mask=mask, backend=job.backend,
                             value_range=value_range, nan=job.nan, progress=progress)
        result = with_alpha(result, crop, job.alpha)
    messages = list(dict.fromkeys(str(w.message) for w in caught))
    return PreviewOutcome(np.asarray(result), value_range, messages,
                          time.perf_counter() - start)


def _range_key(layer: Layer, data, value_range, channel_axis: int | None, nan: str) -> tuple:
    """What the resolved range of a layer depends on (its data, the choices)."""
    return layer.unique_id, id(data), repr(value_range), channel_axis, nan


def _above_images(layers, preview: Layer) -> int:
    """The index just above every Image layer but ``preview`` (Shapes, Points and Labels
    layers above them stay above the preview: a rectangle being drawn stays visible)."""
    images = [i for i, other in enumerate(layers) if isinstance(other, Image)
              and other is not preview]
    return max(images) + 1 if images else 0


def _alive(viewer, layer: Layer | None) -> bool:
    return layer is not None and any(other is layer for other in viewer.layers)


class PreviewMixin:
    """The live preview of :class:`~napari_diffuse.widget.DiffuseWidget` (see the module).

    It uses the widget's ``_viewer``, ``input``, ``params``, ``_source()``, ``_runner``
    (the full runs'), ``_selected_images()``, ``status`` and the input option menus.
    """

    _preview_layer: Image | None = None

    def _make_preview_controls(self) -> list:
        """Create the live preview check box and its region menu; return them.

        Called once the input and input option menus exist: it also connects their
        changes, the camera's and the dims' to the preview.
        """
        self.live_preview = CheckBox(
            name="live_preview", value=False, label="live preview",
            tooltip="Re-run the current settings on the region below after every change, "
                    "into the layer '<input> [preview]' placed over it (the current "
                    f"plane of a stack; at most {MAX_SIZE}x{MAX_SIZE} pixels of the "
                    "current view). Unchecking removes that layer.")
        self.preview_region = ComboBox(
            name="preview_region", label="preview region", value=CURRENT_VIEW,
            choices=self._preview_region_choices,
            tooltip=f"current view: the part of the input the canvas shows (at most "
                    f"{MAX_SIZE}x{MAX_SIZE} pixels around its centre; pan and zoom move "
                    "it);\na Shapes layer: its first rectangle, drawn on the image.")
        combo = self.preview_region.native  # long layer names shrink with the dock
        combo.setSizeAdjustPolicy(combo.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(10)
        self._preview_runner = Runner(on_progress=lambda *_: None,
                                      on_busy=self._on_preview_busy,
                                      on_error=self._on_preview_error, activity=False)
        self._preview_timer = QTimer(self.live_preview.native)
        self._preview_timer.setSingleShot(True)
        self._preview_timer.timeout.connect(self._refresh_preview)
        self._preview_dirty = False  # a refresh is wanted
        self._preview_forced = False  # ...for new settings (not only a new view)
        self._preview_shown: tuple | None = None  # (layer, crop) of the preview shown
        self._preview_running: tuple | None = None  # (layer, crop) of the preview running
        self._preview_ranges: dict[tuple, tuple[float, float]] = {}
        self._preview_shapes: Shapes | None = None  # the region's layer, watched
        self.live_preview.changed.connect(self._on_live_preview_toggled)
        self.preview_region.changed.connect(self._on_preview_region_chosen)
        for name in ("channel_axis", "mask", "value_range", "nan", "backend", "device"):
            control = getattr(self, name, None)
            if control is not None:
                control.changed.connect(self._preview_settings_changed)
        scene = getattr(self._viewer, "scene", None)  # napari >= 0.9: viewer.scene.camera
        camera = scene.camera if scene is not None else self._viewer.camera
        camera.events.connect(self._on_preview_view_changed)
        self._viewer.layers.events.removed.connect(self._on_preview_layer_removed)
        for event in ("current_step", "ndisplay", "order"):
            getattr(self._viewer.dims.events, event).connect(self._on_preview_view_changed)
        return [self.live_preview, self.preview_region]

    def _preview_region_choices(self, _widget=None) -> list[tuple[str, Any]]:
        shapes = [(f"first rectangle of {layer.name}", layer) for layer in self._viewer.layers
                  if isinstance(layer, Shapes)]
        return [(CURRENT_VIEW, CURRENT_VIEW), *shapes]

    # ------------------------------------------------------------------ triggers
    def _preview_settings_changed(self, _value=None) -> None:
        """A control or an input option changed: refresh the preview when it is on."""
        self._request_preview(force=True)

    def _on_preview_view_changed(self, _event=None) -> None:
        """The camera or the dims moved: refresh if the crop shown is no longer the one."""
        self._request_preview(force=False)

    def _on_preview_layer_removed(self, event) -> None:
        """The preview layer removed by hand turns the preview off; the input removed takes
        its preview with it (at the next refresh)."""
        if self._preview_layer is not None and event.value is self._preview_layer:
            self._preview_layer = self._preview_shown = None
            self.live_preview.value = False
        else:
            self._request_preview(force=False)

    def _on_preview_region_chosen(self, choice) -> None:
        if self._preview_shapes is not None:
            self._preview_shapes.events.data.disconnect(self._on_preview_view_changed)
            self._preview_shapes = None
        if isinstance(choice, Shapes):
            self._preview_shapes = choice
            choice.events.data.connect(self._on_preview_view_changed)
        self._request_preview(force=False)

    def _on_live_preview_toggled(self, on: bool) -> None:
        if on:
            self._request_preview(force=True)
            return
        self._preview_timer.stop()
        self._preview_dirty = self._preview_forced = False
        self._preview_runner.cancel()
        self._remove_preview_layer()

    def _request_preview(self, *, force: bool) -> None:
        """Refresh the preview after :data:`DEBOUNCE_MS` without another request."""
        if getattr(self, "_preview_runner", None) is None or not self.live_preview.value:
            return
        self._preview_dirty = True
        self._preview_forced = self._preview_forced or force
        self._preview_timer.start(DEBOUNCE_MS)

    def _stop_preview(self) -> None:
        """Cancel a preview run (before a full run); it runs again once the run ends."""
        runner = getattr(self, "_preview_runner", None)
        if runner is None:
            return
        if runner.running and not runner.cancelled and self.live_preview.value:
            self._preview_dirty = self._preview_forced = True  # it was not shown: catch up
            self._preview_timer.start(_POLL_MS)
        runner.cancel()

    @property
    def previewing(self) -> bool:
        """True while a preview is running or about to run (a change is pending)."""
        return self._preview_runner.running or (
            self._preview_dirty and self.live_preview.value)

    # ------------------------------------------------------------------ running
    def _refresh_preview(self) -> None:
        """The debounce timer fired: start the preview, or make way for it."""
        if not self.live_preview.value or not self._preview_dirty:
            return
        if self._runner.running:  # a full run or a calibration: wait for it
            self._preview_timer.start(_POLL_MS)
            return
        running = self._preview_runner.running
        if not running:
            self._drop_orphan_preview()
        try:
            job, layer = self._preview_job()
        except (ValueError, TypeError) as err:
            self._preview_dirty = self._preview_forced = False
            self._preview_shown = None  # the next request runs, whatever the crop
            self._preview_runner.cancel()
            self.status.value = f"preview: {err}"
            return
        crop = (layer, job.index)
        if not self._preview_forced and crop == (
                self._preview_running if running else self._preview_shown) and (
                running or self._current_preview_layer(layer) is not None):
            self._preview_dirty = False  # the same crop, the same settings: nothing to do
            return
        if running:  # stale: stop it, start again when it has
            self._preview_runner.cancel()
            return
        self._preview_dirty = self._preview_forced = False
        self._preview_running = crop
        key = () if job.resolved else _range_key(layer, job.data, job.value_range,
                                                   job.channel_axis, job.nan)
        self._preview_runner.start(
            compute_preview, job,
            lambda outcome: self._on_preview_returned(layer, job, key, outcome),
            busy_with="preview", total=max(1, job.params.iterations))

    def _preview_input(self) -> Layer:
        """The layer to preview: the input, or with several selected layers the active one
        (else the first)."""
        layer = self.input.value
        if isinstance(layer, Layer):
            return layer
        selected = self._selected_images()
        if not selected:
            raise ValueError("choose an input Image layer first")
        active = self._viewer.layers.selection.active
        return active if active in selected else selected[0]

    def _preview_job(self) -> tuple[PreviewJob, Layer]:
        """Read the controls, the region and the plane; raise ValueError naming what is
        wrong."""
        source: Source = self._source(self._preview_input())
        layer, data = source.layer, source.data
        choice = self.preview_region.value
        if isinstance(choice, Shapes):
            box = rectangle_region(choice, data.shape, source.channel_axis)
        else:
            box = clip_box(self._view_box(layer, source.channel_axis))
        position = layer.world_to_data(self._viewer.dims.point)
        plane = {axis: int(np.round(position[axis])) for axis in range(layer.ndim)}
        index = crop_index(data.shape, source.channel_axis, box, plane)
        drawn, mask_index = source.mask_drawn, ()
        if drawn is not None:
            mask_index = without_channel(index, source.channel_axis)[-len(drawn.shape):]
        value_range = source.value_range
        resolved = self._preview_ranges.get(
            _range_key(layer, data, value_range, source.channel_axis, source.nan))
        job = PreviewJob(data=data, index=index, channel_axis=source.channel_axis,
                         value_range=resolved if resolved is not None else value_range,
                         resolved=resolved is not None, mask=drawn, mask_index=mask_index,
                         params=self.params, backend=source.backend, nan=source.nan,
                         alpha=source.alpha)
        return job, layer

    def _view_box(self, layer: Layer, channel_axis: int | None) -> Box:
        """The current view's box; the whole image before the canvas has drawn it."""
        if not np.asarray(layer.corner_pixels).any():  # never drawn (a hidden viewer)
            height, width = without_channel(layer.data.shape, channel_axis)[-2:]
            return 0, 0, height, width
        return view_region(self._viewer, layer, channel_axis)

    def _on_preview_returned(self, layer: Layer, job: PreviewJob, key: tuple,
                             outcome: PreviewOutcome | None) -> None:
        if outcome is None:
            return
        if key:
            if len(self._preview_ranges) > 32:
                self._preview_ranges.clear()
            self._preview_ranges[key] = outcome.value_range
        if self._preview_runner.cancelled or not self.live_preview.value \
                or not _alive(self._viewer, layer):
            return  # stale: a newer preview is on its way, or none is wanted
        self._show_preview(layer, job, outcome.result)
        self._preview_shown = (layer, job.index)
        if not self._runner.running:
            height, width = self._crop_size(job)
            text = f"preview of {layer.name!r}: {height}x{width} px in {outcome.seconds:.1f} s"
            if outcome.warnings:
                text += "; " + "; ".join(outcome.warnings)
            self.status.value = text

    @staticmethod
    def _crop_size(job: PreviewJob) -> tuple[int, int]:
        rows, columns = without_channel(job.index, job.channel_axis)[-2:]
        return rows.stop - rows.start, columns.stop - columns.start

    def _on_preview_error(self, _busy_with: str, err: BaseException) -> None:
        if not isinstance(err, (ValueError, TypeError, RuntimeError, MemoryError,
                                ArithmeticError)):
            _log.error("the preview failed", exc_info=err)
        self._preview_shown = None
        self.status.value = f"preview failed: {err}"

    def _on_preview_busy(self, busy: bool) -> None:
        if not busy and self._preview_dirty and self.live_preview.value:
            self._preview_timer.start(0)  # the stale run has stopped: start the new one

    # ------------------------------------------------------------------ the layer
    def _current_preview_layer(self, layer: Layer) -> Image | None:
        """The preview layer of ``layer``, if it is still there under the name it was given."""
        preview = self._preview_layer
        if not _alive(self._viewer, preview):
            return None
        info = preview.metadata.get(METADATA_KEY, {})
        if info.get("source") != str(layer.unique_id) or info.get("name") != preview.name:
            return None
        return preview

    def _show_preview(self, layer: Image, job: PreviewJob, result: np.ndarray) -> None:
        """Put ``result`` into the preview layer, over the crop; add the layer if needed."""
        name = f"{layer.name} [preview]"
        offset = [job.index[axis].start for axis in range(layer.ndim)]
        placed = dict(placement(layer, offset=offset), contrast_limits=layer.contrast_limits,
                      gamma=layer.gamma)
        preview = self._current_preview_layer(layer)
        if preview is not None and (preview.rgb != layer.rgb or preview.ndim != layer.ndim):
            self._remove_preview_layer()
            preview = None
        metadata = {METADATA_KEY: {"source": str(layer.unique_id), "role": PREVIEW_ROLE,
                                   "name": name}}
        if preview is not None:
            preview.data = result
            for key, value in placed.items():
                setattr(preview, key, value)
            if not layer.rgb:
                preview.colormap = layer.colormap
            if preview.name != name:  # the input was renamed
                preview.name = name
                preview.metadata = {METADATA_KEY: {**metadata[METADATA_KEY],
                                                   "name": preview.name}}
            layers = self._viewer.layers
            top = _above_images(layers, preview)
            if layers.index(preview) < top - 1:  # a result went on top of it: back above
                layers.move(layers.index(preview), top)
            return
        if self._current_preview_layer_of_any() is not None:
            self._remove_preview_layer()  # another input's: one preview at a time
        selection = self._viewer.layers.selection
        selected, active = set(selection), selection.active
        colour = {} if layer.rgb else {"colormap": layer.colormap}
        preview = Image(result, name=name, rgb=layer.rgb, metadata=metadata, **colour,
                        **placed)
        self._viewer.layers.insert(_above_images(self._viewer.layers, preview), preview)
        preview.metadata = {METADATA_KEY: {**metadata[METADATA_KEY], "name": preview.name}}
        self._preview_layer = preview
        if active is not None:  # adding a layer selects it: give the user's selection back
            selection.active = active
        else:
            selection.clear()
            selection.update(selected)

    def _current_preview_layer_of_any(self) -> Image | None:
        preview = self._preview_layer
        if not _alive(self._viewer, preview):
            return None
        info = preview.metadata.get(METADATA_KEY, {})
        return preview if info.get("name") == preview.name else None

    def _drop_orphan_preview(self) -> None:
        """Remove the preview layer when its input layer left the viewer."""
        preview = self._current_preview_layer_of_any()
        if preview is None:
            return
        source = preview.metadata[METADATA_KEY].get("source")
        if not any(str(other.unique_id) == source for other in self._viewer.layers):
            self._remove_preview_layer()

    def _remove_preview_layer(self) -> None:
        preview = self._current_preview_layer_of_any()
        self._preview_layer, self._preview_shown = None, None
        if preview is not None:
            self._viewer.layers.remove(preview)
