"""The dock widget's *calibrate* action: parameters chosen from the image itself.

:class:`CalibrateMixin` gives :class:`~napari_diffuse.widget.DiffuseWidget` a task menu
(``widget.calibration_task``: denoise or inpaint), a region menu
(``widget.calibration_region``) and a *Calibrate* button (``widget.calibrate_button``,
or :meth:`CalibrateMixin.calibrate` from a script). Calibrating runs
:func:`napari_diffuse.calibrate.calibrate` on the input layer, with the widget's channel
axis, intensities and backend, in the widget's worker (progress bar, Cancel). On
success every parameter control shows the parameters found and the preset menu shows
:data:`CALIBRATED`; the status line gives the self-supervised loss reached against the
input's. A cancelled or failed calibration changes no control.

Regions
-------
The calibration runs on a spatial box ``(y0, x0, y1, x1)`` of the input's pixels:

- ``"current view"``: the part of the input layer the canvas shows (napari's
  ``layer.corner_pixels`` at the last draw), clipped to the image; needs the 2-D view
  showing the image's two spatial axes;
- ``"automatic"``: a representative crop chosen by ``calibrate`` itself;
- a Shapes layer: its first rectangle, in the Shapes layer's data coordinates (draw it
  on the image without moving either layer); the box holds the pixels whose centres
  lie inside the rectangle.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from magicgui.widgets import ComboBox, PushButton
from napari.layers import Layer, Shapes
from napari.qt.threading import FunctionWorker

from .calibrate import Calibration, calibrate
from .missing import started
from .params import DiffuseParams
from .widget_jobs import colours, spatial_axes

if TYPE_CHECKING:
    import napari.viewer

    from .widget_jobs import Source

__all__ = ["CALIBRATED", "TASKS", "CURRENT_VIEW", "AUTOMATIC", "CalibrateMixin",
           "rectangle_region", "view_region"]

#: The preset menu's entry for the last calibration's result.
CALIBRATED = "calibrated"
#: The calibration tasks (``calibrate``'s ``task``).
TASKS = ("denoise", "inpaint")
#: The region menu's entries besides Shapes layers.
CURRENT_VIEW = "current view"
AUTOMATIC = "automatic"

Region = tuple[int, int, int, int]


def view_region(viewer: napari.viewer.Viewer, layer: Layer,
                channel_axis: int | None) -> Region:
    """Return the part of ``layer`` the canvas shows, as ``(y0, x0, y1, x1)`` pixels.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        The viewer showing ``layer``.
    layer : napari.layers.Layer
        The input layer.
    channel_axis : int or None
        The layer's channel axis (None for none or for an RGB layer's colour axis, which
        is not a layer dimension).

    Raises
    ------
    ValueError
        In the 3-D view, or when the view does not show the layer's two spatial axes.
    """
    if viewer.dims.ndisplay != 2:
        raise ValueError("the 'current view' region needs the 2-D view: switch the viewer to "
                         "2-D, or choose a Shapes rectangle as the region (or, to "
                         "calibrate, 'automatic')")
    axes = spatial_axes(layer.ndim, None if layer.rgb else channel_axis)
    offset = viewer.dims.ndim - layer.ndim  # layer axes are the last world axes
    if {offset + axis for axis in axes} != set(viewer.dims.displayed):
        raise ValueError(f"the current view does not show the spatial axes of "
                         f"{layer.name!r} (layer axes {axes}); show them, or choose a "
                         "Shapes rectangle as the region (or, to calibrate, 'automatic')")
    corners = np.asarray(layer.corner_pixels)[:, axes]  # inclusive, clipped to the image
    (y0, x0), (y1, x1) = corners[0], corners[1] + 1
    if getattr(layer, "multiscale", False):  # corners of the level drawn: to level 0
        fy, fx = np.asarray(layer.downsample_factors[layer.data_level])[axes]
        height, width = np.asarray(layer.level_shapes[0])[axes]
        y0, x0 = np.floor(y0 * fy), np.floor(x0 * fx)
        y1, x1 = min(height, np.ceil(y1 * fy)), min(width, np.ceil(x1 * fx))
    return int(y0), int(x0), int(y1), int(x1)


def rectangle_region(shapes: Shapes, shape: tuple[int, ...],
                     channel_axis: int | None) -> Region:
    """Return the pixels inside the first rectangle of ``shapes`` as ``(y0, x0, y1, x1)``.

    Parameters
    ----------
    shapes : napari.layers.Shapes
        The layer holding the rectangle, drawn in the image's data coordinates.
    shape : tuple of int
        The image's shape (channel axis included).
    channel_axis : int or None
        The image's channel axis.

    Returns
    -------
    tuple of int
        The box of the pixels whose centres lie inside the rectangle (its bounding box,
        if rotated), clipped to the image.

    Raises
    ------
    ValueError
        If the layer has no rectangle, or the rectangle holds no pixel of the image.
    """
    rectangles = [data for kind, data in zip(shapes.shape_type, shapes.data, strict=True)
                  if kind == "rectangle"]
    if not rectangles:
        raise ValueError(f"the Shapes layer {shapes.name!r} holds no rectangle; draw one with "
                         "its rectangle tool, or choose another region")
    vertices = np.asarray(rectangles[0], dtype=float)
    # a Shapes layer drawn over the whole array has a column for the channel axis too
    columns = spatial_axes(vertices.shape[1],
                            channel_axis if vertices.shape[1] == len(shape) else None)
    low, high = vertices[:, columns].min(axis=0), vertices[:, columns].max(axis=0)
    height, width = (shape[i] for i in spatial_axes(len(shape), channel_axis))
    y0, x0 = (max(0, math.ceil(v)) for v in low)
    y1, x1 = min(height, math.floor(high[0]) + 1), min(width, math.floor(high[1]) + 1)
    if y1 <= y0 or x1 <= x0:
        raise ValueError(f"the first rectangle of {shapes.name!r} holds no pixel of the "
                         f"{height}x{width} image; draw it on the image")
    return y0, x0, y1, x1


@dataclasses.dataclass(frozen=True)
class _CalibrationJob:
    """What a calibration runs on, read from the controls in the GUI thread."""

    source: Source
    task: str
    region: Region | None


def _calibrate(job: _CalibrationJob,
               progress: Callable[[int, int], None]) -> tuple[DiffuseParams, Calibration]:
    """The worker's task: :func:`calibrate` on the job's input (the mask for inpainting)."""
    source = job.source
    data = colours(source.data, source.alpha)  # an RGBA layer's alpha is not image data
    if source.nan != "error":  # missing pixels take their nearest finite pixel's values
        data = started(data, source.channel_axis)
    return calibrate(data, job.task,
                     mask=source.mask if job.task == "inpaint" else None,
                     channel_axis=source.channel_axis, value_range=source.value_range,
                     backend=source.backend, region=job.region, progress=progress,
                     extra_output=True)


class CalibrateMixin:
    """The calibrate action of :class:`~napari_diffuse.widget.DiffuseWidget`.

    It uses the widget's ``_viewer``, ``input``, ``_source()``, ``_start()``,
    ``_refused_while_busy()``, ``preset``, ``_calibrated``, ``_on_preset_chosen()``,
    ``progress``, ``_say()`` and ``_fail()``.
    """

    def _make_calibrate_controls(self) -> list:
        """Create the task and region menus and the Calibrate button; return them."""
        self.calibration_task = ComboBox(
            name="calibration_task", label="task", value="denoise", choices=list(TASKS),
            tooltip="denoise: a self-supervised search (the image recorrupted with its own "
                    "estimated noise predicts itself) for pixel-independent noise, "
                    "Poisson-Gaussian included.\n"
                    "inpaint: fill the inpaint mask's pixels; radius and iterations from "
                    "the largest hole, the rest by predicting known pixels around it.")
        self.calibration_region = ComboBox(
            name="calibration_region", label="region", value=CURRENT_VIEW,
            choices=self._region_choices,
            tooltip="Where to calibrate (at least 32x32 pixels; small regions are fast):\n"
                    "current view: the part of the input the canvas shows;\n"
                    "automatic: a representative 256x256 crop;\n"
                    "a Shapes layer: its first rectangle, drawn on the image.")
        self.calibrate_button = PushButton(
            name="calibrate_button", text="Calibrate",
            tooltip="Choose every parameter from the input itself; the preset menu then "
                    "shows 'calibrated'.")
        self.calibrate_button.changed.connect(self.calibrate)
        return [self.calibration_task, self.calibration_region, self.calibrate_button]

    def _region_choices(self, _widget=None) -> list[tuple[str, Any]]:
        shapes = [(f"first rectangle of {layer.name}", layer) for layer in self._viewer.layers
                  if isinstance(layer, Shapes)]
        return [(CURRENT_VIEW, CURRENT_VIEW), (AUTOMATIC, AUTOMATIC), *shapes]

    def calibrate(self) -> FunctionWorker | None:
        """Start calibrating on the input layer in a worker thread.

        Returns
        -------
        FunctionWorker or None
            The started worker (its ``finished`` signal fires once the controls show
            the result), or None when refused: a run or a calibration is going, or the
            input, mask or region is not valid (the reason is shown in napari's
            notifications).
        """
        if self._refused_while_busy():
            return None
        try:
            job = self._calibration_job()
        except (ValueError, TypeError) as err:
            self._fail(f"calibration refused: {err}")
            return None
        where = "automatic region" if job.region is None else f"region {job.region}"
        return self._start(_calibrate, job, self._on_calibrated,
                           busy_with="calibration", total=1,
                           status=f"calibrating ({job.task}) on {job.source.layer.name}, "
                                  f"{where}…")

    def _calibration_job(self) -> _CalibrationJob:
        source = self._source()
        task = self.calibration_task.value
        if task == "inpaint" and source.mask_drawn is None:
            raise ValueError("inpaint calibration needs the holes: choose a Labels or Shapes "
                             "layer as 'inpaint mask'")
        choice = self.calibration_region.value
        data = source.data
        if choice == AUTOMATIC:
            region = None
        elif choice == CURRENT_VIEW:
            region = view_region(self._viewer, source.layer, source.channel_axis)
        else:
            region = rectangle_region(choice, data.shape, source.channel_axis)
        return _CalibrationJob(source, task, region)

    def _on_calibrated(self, outcome: tuple[DiffuseParams, Calibration] | None) -> None:
        if outcome is None:
            self._say("calibration cancelled; no control was changed")
            return
        params, report = outcome
        self._calibrated = params
        self.preset.reset_choices()
        if self.preset.value == CALIBRATED:  # no change event: show the new result here
            self._on_preset_chosen(CALIBRATED)
        else:
            self.preset.value = CALIBRATED  # sets the controls, not "custom"
        self.progress.value = self.progress.max
        self._say(report.summary())
