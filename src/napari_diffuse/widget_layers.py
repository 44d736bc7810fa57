"""The dock widget's output layers: where results go in the layer list, and their names.

A run writes ``"<input> [<what ran>]"``, an Image layer placed as the input is
(:func:`placement`: scale, translate, rotation, shear, affine, units, axis labels), with
its contrast limits, gamma, colormap, blending, opacity, RGB flag and metadata, and
optionally ``"<input> [luminance
mask]"`` (Labels: where the run diffused) and ``"<input> [variance map]"`` (Image,
``magma``), stacked just below the result. The layers carry ``metadata["napari_diffuse"] =
{"source": <input layer's unique_id>, "role": ..., "name": <the name given>}``: a new run
on the same input replaces its previous layers' data, unless the user renamed a layer
(it is then left alone and a new layer is added) or asked to keep every result; an extra
layer the new run no longer makes is removed with it then.
"""

from __future__ import annotations

import numpy as np
from napari.layers import Image, Labels, Layer
from napari.utils.transforms.transform_utils import shear_to_matrix

from .params import FIELDS, DiffuseParams
from .widget_controls import CUSTOM

__all__ = ["METADATA_KEY", "placement", "publish", "settings_label", "role_of"]

#: Key of the metadata that ties output layers to their input layer.
METADATA_KEY = "napari_diffuse"
_MAX_CHANGES = 3  # at most this many changes are named after the preset, else the settings


def role_of(layer: Layer) -> str | None:
    """The role of one of this plugin's output layers ("result", "luminance mask",
    "variance map", "preview"), or None for any other layer."""
    info = layer.metadata.get(METADATA_KEY)
    return info.get("role") if isinstance(info, dict) else None


def placement(layer: Layer, axes: list[int] | None = None,
              offset: list[int] | None = None) -> dict:
    """Where data derived from ``layer`` goes in the world: the layer properties that place
    it as ``layer`` is placed.

    Parameters
    ----------
    layer : napari.layers.Layer
        The input layer.
    axes : list of int, optional
        The input's axes the new data keeps (default: all); the others (a channel axis)
        are dropped from every property.
    offset : list of int, optional
        Where the new data starts in the input's data, in pixels per axis (a crop):
        moved along the input's rotation and shear.

    Returns
    -------
    dict
        ``scale``, ``translate``, ``rotate``, ``shear`` (matrices), ``affine``, ``units``
        and ``axis_labels``, for a layer's constructor or ``setattr``.
    """
    ndim = layer.ndim
    axes = list(range(ndim)) if axes is None else list(axes)
    scale = np.asarray(layer.scale, float)
    translate = np.asarray(layer.translate, float)
    rotate = np.asarray(layer.rotate, float)
    shear = shear_to_matrix(layer.shear, ndim=ndim)
    if offset is not None:
        translate = translate + rotate @ shear @ (scale * np.asarray(offset, float))
    kept = np.ix_(axes, axes)
    homogeneous = [*axes, ndim]
    return dict(scale=scale[axes], translate=translate[axes], rotate=rotate[kept],
                shear=shear[kept],
                affine=layer.affine.affine_matrix[np.ix_(homogeneous, homogeneous)],
                units=[layer.units[i] for i in axes],
                axis_labels=[layer.axis_labels[i] for i in axes])


def settings_label(preset: str, base: str | None, base_params: DiffuseParams | None,
                   params: DiffuseParams) -> str:
    """What ran, for a layer name: the preset, or the preset it came from plus the (at most
    three) fields changed since (``"denoise: medium, iterations 8"``), or else the main
    settings themselves (``"8 it, radius 3, speeds 0.05/0/0.05/0"``)."""
    if preset != CUSTOM:
        return preset
    if base is not None and base_params is not None:
        changed = [f for f in FIELDS if getattr(params, f.name) != getattr(base_params, f.name)]
        if len(changed) <= _MAX_CHANGES:
            return ", ".join([base, *(f"{f.name} {getattr(params, f.name):g}" for f in changed)])
    speeds = "/".join(f"{getattr(params, n):g}" for n in ("first", "second", "third", "fourth"))
    return f"{params.iterations} it, radius {params.radius}, speeds {speeds}"


def _mine(layer: Layer, source: str, role: str) -> bool:
    """Whether ``layer`` is ``source``'s ``role`` layer, still under the name it was given."""
    info = layer.metadata.get(METADATA_KEY)
    return (isinstance(info, dict) and info.get("source") == source and info.get("role") == role
            and info.get("name", layer.name) == layer.name)


def _previous(viewer, source: str, role: str) -> Layer | None:
    """``source``'s ``role`` layer from an earlier run, if still under its given name."""
    return next((other for other in viewer.layers if _mine(other, source, role)), None)


def _put(viewer, source: str, role: str, kind: type[Layer], data, *, keep: bool,
         below: Layer | None = None, metadata: dict | None = None,
         **properties) -> Layer:
    """Replace the data and properties of ``source``'s ``role`` layer, or add a layer
    (below ``below``).

    ``data`` is an array, or a list of arrays (largest first) for a multiscale layer; a
    multiscale layer is always replaced by a new one. ``metadata`` (the input's) is
    carried over beside this plugin's own key."""
    metadata = {**(metadata or {}),
                METADATA_KEY: {"source": source, "role": role, "name": properties["name"]}}
    existing = None if keep else _previous(viewer, source, role)
    multiscale = isinstance(data, list)
    fits = (isinstance(existing, kind) and not multiscale and not existing.multiscale
            and existing.data.shape == data.shape
            and getattr(existing, "rgb", False) == properties.get("rgb", False))
    if fits:
        existing.data = data
        for key, value in properties.items():
            if key != "rgb":  # fixed by the data, and equal here
                setattr(existing, key, value)
        existing.metadata = {**metadata,
                             METADATA_KEY: {**metadata[METADATA_KEY], "name": existing.name}}
        if below is not None and viewer.layers.index(existing) != viewer.layers.index(below) - 1:
            # the result is a new layer (the old one was renamed): follow it
            viewer.layers.remove(existing)
            viewer.layers.insert(viewer.layers.index(below), existing)
        return existing
    new = kind(data, metadata=metadata, multiscale=multiscale, **properties)
    if existing is not None:
        index = viewer.layers.index(existing)
        viewer.layers.remove(existing)
        viewer.layers.insert(index, new)
    elif below is not None:
        viewer.layers.insert(viewer.layers.index(below), new)
    else:
        viewer.add_layer(new)
    new.name = properties["name"]  # napari may have made it unique: remember that one
    new.metadata = {**metadata, METADATA_KEY: {**metadata[METADATA_KEY], "name": new.name}}
    return new


def publish(viewer, layer: Image, channel_axis: int | None, label: str, outcome, *,
            keep: bool) -> Layer:
    """Show a run's outcome: the result, then its extra layers just below it.

    Parameters
    ----------
    viewer : napari.viewer.Viewer
        Where the layers go.
    layer : napari.layers.Image
        The input layer.
    channel_axis : int or None
        The input's channel axis (the extra layers have none).
    label : str
        What ran (:func:`settings_label`), for the names.
    outcome : widget_jobs.Outcome
        The run's arrays (NumPy, zarr, or lists of levels: multiscale layers).
    keep : bool
        Add new layers instead of replacing the previous run's.

    Returns
    -------
    napari.layers.Layer
        The result layer.
    """
    source = str(layer.unique_id)
    kept_axes = [i for i in range(layer.ndim)
                 if layer.rgb or channel_axis is None or i != channel_axis % layer.ndim]
    metadata = {k: v for k, v in layer.metadata.items() if k != METADATA_KEY}
    result = _put(viewer, source, "result", Image, outcome.result, keep=keep,
                  metadata=metadata, name=f"{layer.name} [{label}]", rgb=layer.rgb,
                  contrast_limits=layer.contrast_limits, gamma=layer.gamma,
                  colormap=layer.colormap, blending=layer.blending, opacity=layer.opacity,
                  **placement(layer))
    reduced = placement(layer, kept_axes)
    extras = {
        "luminance mask": (Labels, outcome.luminance_mask, dict(opacity=0.5)),
        "variance map": (Image, outcome.variance_map,
                         dict(colormap="magma", contrast_limits=outcome.variance_limits)),
    }
    for role, (kind, data, look) in extras.items():
        if data is not None:
            _put(viewer, source, role, kind, data, keep=keep, below=result, metadata=metadata,
                 name=f"{layer.name} [{role}]", **look, **reduced)
        elif not keep and (stale := _previous(viewer, source, role)) is not None:
            viewer.layers.remove(stale)  # the previous run's, no longer this run's
    return result
