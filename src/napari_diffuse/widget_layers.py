"""The dock widget's output layers: where results go in the layer list, and their names.

A run writes ``"<input> [<what ran>]"``, an Image layer with the input's scale,
translate, contrast limits, colormap and RGB flag, and optionally ``"<input> [luminance
mask]"`` (Labels: where the run diffused) and ``"<input> [variance map]"`` (Image,
``magma``), stacked just below the result. The layers carry ``metadata["napari_diffuse"] =
{"source": <input layer's unique_id>, "role": ..., "name": <the name given>}``: a new run
on the same input replaces its previous layers' data, unless the user renamed a layer
(it is then left alone and a new layer is added) or asked to keep every result.
"""

from __future__ import annotations

from napari.layers import Image, Labels, Layer

from .params import FIELDS, DiffuseParams
from .widget_controls import CUSTOM

__all__ = ["METADATA_KEY", "publish", "settings_label", "role_of"]

#: Key of the metadata that ties output layers to their input layer.
METADATA_KEY = "napari_diffuse"
_MAX_CHANGES = 3  # at most this many changes are named after the preset, else the settings


def role_of(layer: Layer) -> str | None:
    """The role of one of this plugin's output layers ("result", "luminance mask",
    "variance map", "preview"), or None for any other layer."""
    info = layer.metadata.get(METADATA_KEY)
    return info.get("role") if isinstance(info, dict) else None


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


def _put(viewer, source: str, role: str, kind: type[Layer], data, *, keep: bool,
         below: Layer | None = None, **properties) -> Layer:
    """Replace the data of ``source``'s ``role`` layer, or add a layer (below ``below``).

    ``data`` is an array, or a list of arrays (largest first) for a multiscale layer; a
    multiscale layer is always replaced by a new one."""
    metadata = {METADATA_KEY: {"source": source, "role": role, "name": properties["name"]}}
    existing = None if keep else next(
        (other for other in viewer.layers if _mine(other, source, role)), None)
    multiscale = isinstance(data, list)
    fits = (isinstance(existing, kind) and not multiscale and not existing.multiscale
            and existing.data.shape == data.shape
            and getattr(existing, "rgb", False) == properties.get("rgb", False))
    if fits:
        existing.data = data
        for key in ("name", "contrast_limits", "scale", "translate"):
            if key in properties:
                setattr(existing, key, properties[key])
        existing.metadata = {METADATA_KEY: {**metadata[METADATA_KEY], "name": existing.name}}
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
    new.metadata = {METADATA_KEY: {**metadata[METADATA_KEY], "name": new.name}}
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
    placement = dict(scale=layer.scale, translate=layer.translate)
    reduced = dict(scale=[layer.scale[i] for i in kept_axes],
                   translate=[layer.translate[i] for i in kept_axes])
    result = _put(viewer, source, "result", Image, outcome.result, keep=keep,
                  name=f"{layer.name} [{label}]", rgb=layer.rgb,
                  contrast_limits=layer.contrast_limits, gamma=layer.gamma,
                  colormap=layer.colormap, **placement)
    if outcome.luminance_mask is not None:
        _put(viewer, source, "luminance mask", Labels, outcome.luminance_mask, keep=keep,
             below=result,
             name=f"{layer.name} [luminance mask]", opacity=0.5, **reduced)
    if outcome.variance_map is not None:
        _put(viewer, source, "variance map", Image, outcome.variance_map, keep=keep,
             below=result, name=f"{layer.name} [variance map]", colormap="magma",
             contrast_limits=outcome.variance_limits, **reduced)
    return result
