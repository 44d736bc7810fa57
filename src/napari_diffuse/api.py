"""The public Python API: :func:`diffuse`, :func:`luminance_mask`, :func:`variance_map`.

Data path: caller's array -> :mod:`.intensity` (dtype, value range, channel axis) ->
``(planes, H, W, C)`` float32 -> a solver from :mod:`.backends`, plane by plane ->
back to the caller's shape and dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import intensity
from .backends import get_solver
from .params import DiffuseParams
from .plan import make_plan

__all__ = ["diffuse", "luminance_mask", "variance_map", "resolve_params"]

Progress = Callable[[int, int], None]


def resolve_params(params: DiffuseParams | None = None, preset: str | None = None,
                   **overrides: Any) -> DiffuseParams:
    """Combine a params object or a preset name with field overrides.

    Raises
    ------
    ValueError
        If both ``params`` and ``preset`` are given, the preset is unknown, or an
        override names no field or has an invalid value.
    """
    if params is not None and preset is not None:
        raise ValueError("give either params or preset, not both")
    if preset is not None:
        params = DiffuseParams.from_preset(preset)
    elif params is None:
        params = DiffuseParams()
    elif not isinstance(params, DiffuseParams):
        raise TypeError(f"params must be a DiffuseParams, got {type(params).__name__}")
    return params.replace(**overrides) if overrides else params


def _luminance(planes: np.ndarray, threshold: float) -> np.ndarray:
    # darktable looks at R, G, B (any above the threshold); a 4th channel is alpha.
    colour = planes[..., :3] if planes.shape[-1] in (3, 4) else planes
    return (colour > np.float32(threshold)).any(axis=-1)


def _prepare(image, params, preset, channel_axis, value_range, overrides):
    params = resolve_params(params, preset, **overrides)
    if not hasattr(image, "dtype") or not hasattr(image, "shape"):
        image = np.asarray(image)
    layout = intensity.check_image(image, channel_axis, value_range)
    planes = intensity.to_planes(image, layout)
    intensity.check_finite(planes, layout)
    return params, layout, planes


def _masks(planes, layout, params, mask) -> list[np.ndarray | None]:
    if mask is not None:
        return list(intensity.check_mask(mask, layout))
    if params.luminance_threshold > 0.0:
        return list(_luminance(planes, params.luminance_threshold))
    return [None] * planes.shape[0]


def diffuse(image, params: DiffuseParams | None = None, *, preset: str | None = None,
            channel_axis: int | None = None, mask=None, backend: str = "auto",
            value_range: Sequence[float] | None = None, progress: Progress | None = None,
            **overrides: Any) -> np.ndarray:
    """Diffuse or sharpen an image with darktable's multiscale anisotropic heat model.

    Parameters
    ----------
    image : array_like
        2-D or more. The last two non-channel axes are the spatial axes (height,
        width); leading axes (Z, T, ...) are processed as independent planes. Float
        values are used as they are (nominally 0..1, above 1 allowed, negatives become
        0); integers are mapped from their dtype's range to 0..1 and back.
    params : DiffuseParams, optional
        The settings; default: darktable's defaults (the identity).
    preset : str, optional
        A preset name instead of ``params`` (see :func:`list_presets`).
    channel_axis : int, optional
        The axis holding channels (RGB, RGBA, fluorescence channels...); ``None`` means
        a single channel. Channels are diffused independently, with the same settings.
    mask : array_like of bool, optional
        Replaces the luminance mask: diffuse only where True, starting inside from
        seeded noise (inpainting); elsewhere the image is kept. Shape ``(H, W)`` or the
        image's leading plus spatial shape.
    backend : {"auto", "numpy", "opencl"}
        The solver. ``"auto"`` prefers a working OpenCL device, else NumPy.
    value_range : (float, float), optional
        Map ``lo..hi`` to 0..1 (and back) instead of the default mapping.
    progress : callable, optional
        Called as ``progress(done, total)`` after each iteration of each plane; it may
        raise an exception to stop the run.
    **overrides
        Any :class:`DiffuseParams` field, e.g. ``iterations=8``.

    Returns
    -------
    numpy.ndarray
        A new array with the input's shape and dtype.

    Raises
    ------
    ValueError, TypeError
        For invalid images, masks, parameters, presets or backends; the caller's array
        is never modified.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_diffuse import diffuse
    >>> noisy = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    >>> diffuse(noisy, preset="denoise: fine", iterations=2).shape
    (64, 64)
    """
    params, layout, planes = _prepare(image, params, preset, channel_axis, value_range, overrides)
    solver = get_solver(backend)
    plan = make_plan(params)
    masks = _masks(planes, layout, params, mask)
    total = planes.shape[0] * plan.iterations
    out = np.empty_like(planes)
    for p, (plane, plane_mask) in enumerate(zip(planes, masks)):
        report = None if progress is None else (
            lambda done, _total, p=p: progress(p * plan.iterations + done, total))
        out[p] = solver.solve(plane, plan, plane_mask, progress=report)
    return intensity.from_planes(out, layout)


def luminance_mask(image, params: DiffuseParams | None = None, *, preset: str | None = None,
                   channel_axis: int | None = None, value_range: Sequence[float] | None = None,
                   **overrides: Any) -> np.ndarray:
    """Return the luminance mask: where :func:`diffuse` would inpaint.

    True where any colour channel (R, G, B; the 4th of 4 channels is alpha; every
    channel otherwise) is above ``luminance_threshold``, in working units. All False
    when the threshold is 0 (darktable then diffuses everywhere).

    Returns
    -------
    numpy.ndarray of bool
        The image's leading plus spatial shape.
    """
    params, layout, planes = _prepare(image, params, preset, channel_axis, value_range, overrides)
    if params.luminance_threshold > 0.0:
        masks = _luminance(planes, params.luminance_threshold)
    else:
        masks = np.zeros(planes.shape[:-1], bool)
    return masks.reshape(*layout.leading_shape, *layout.spatial_shape)


def variance_map(image, params: DiffuseParams | None = None, *, preset: str | None = None,
                 channel_axis: int | None = None, mask=None, backend: str = "auto",
                 value_range: Sequence[float] | None = None, **overrides: Any) -> np.ndarray:
    """Return darktable's edge-variance term: what slows diffusion down near edges.

    ``10**edge_threshold + (10**edge_sensitivity - 1) * sigma_0**2 / 9 * sum_3x3(HF**2)``
    at the finest wavelet scale of the first iteration, averaged over channels. Every
    speed is divided by it: bright areas of the map (edges, texture) are protected,
    dark areas (flat regions, values near ``10**edge_threshold``) diffuse at full speed.
    Use it to tune *edge sensitivity* and *edge threshold*.

    Returns
    -------
    numpy.ndarray of float32
        The image's leading plus spatial shape.
    """
    params, layout, planes = _prepare(image, params, preset, channel_axis, value_range, overrides)
    solver = get_solver(backend)
    plan = make_plan(params)
    masks = _masks(planes, layout, params, mask)
    maps = np.stack([solver.variance_map(plane, plan, plane_mask)
                     for plane, plane_mask in zip(planes, masks)])
    return maps.reshape(*layout.leading_shape, *layout.spatial_shape)
