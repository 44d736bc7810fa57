"""The module's parameters: :class:`DiffuseParams`, its field table and validation.

Field names, ranges and defaults follow darktable's ``dt_iop_diffuse_params_t``
(``src/iop/diffuse.c``, params version 2). Three fields carry clearer names here
than in darktable: ``edge_sensitivity`` (darktable's ``regularization``),
``edge_threshold`` (``variance_threshold``) and ``luminance_threshold``
(``threshold``). One field is not darktable's: ``keep_saturated`` (its
``darktable_name`` is ``None``; darktable conversions leave it out).
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["DiffuseParams", "FieldSpec", "FIELDS", "DARKTABLE_NAMES"]


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """How one parameter is typed, bounded, labelled and explained."""

    name: str
    darktable_name: str | None  #: ``None`` for fields darktable does not have
    label: str
    section: str
    kind: type  #: int, float or bool
    minimum: float
    maximum: float
    default: float
    percent: bool
    help: str


_SPEED_HELP = (
    "Speed of diffusion of the {layers} wavelet layers in the direction set by the "
    "{order} order anisotropy. Positive values apply diffusion, negative values undo "
    "diffusion, zero does nothing."
)
_ANISO_HELP = (
    "Direction of diffusion of the {layers} wavelet layers relative to the orientation "
    "of the gradient. Zero is isotropic, negative values make diffusion follow "
    "gradients more closely, positive values make diffusion follow isophotes more closely."
)

#: Every field, in the order of darktable's manual and GUI.
FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("iterations", "iterations", "iterations", "properties", int, 0, 500, 1, False,
              "The number of times the algorithm runs on top of itself. High values slow "
              "it down but allow more accurate reconstructions provided the diffusion "
              "speeds are low enough."),
    FieldSpec("radius_center", "radius_center", "central radius", "properties", int, 0, 1024, 0,
              False, "The scale, in pixels, where diffusion is strongest: the centre of the "
              "band of wavelet scales that are diffused."),
    FieldSpec("radius", "radius", "radius span", "properties", int, 0, 2048, 8, False,
              "The width, in pixels, of the band of scales around the central radius that "
              "is diffused: the maximal distance of diffusion."),
    FieldSpec("first", "first", "1st order speed (gradient)", "speed", float, -1.0, 1.0, 0.0,
              True, _SPEED_HELP.format(layers="low-frequency", order="1st")),
    FieldSpec("second", "second", "2nd order speed (laplacian)", "speed", float, -1.0, 1.0, 0.0,
              True, _SPEED_HELP.format(layers="low-frequency", order="2nd")),
    FieldSpec("third", "third", "3rd order speed (gradient of laplacian)", "speed", float,
              -1.0, 1.0, 0.0, True, _SPEED_HELP.format(layers="high-frequency", order="3rd")),
    FieldSpec("fourth", "fourth", "4th order speed (laplacian of laplacian)", "speed", float,
              -1.0, 1.0, 0.0, True, _SPEED_HELP.format(layers="high-frequency", order="4th")),
    FieldSpec("anisotropy_first", "anisotropy_first", "1st order anisotropy", "direction", float,
              -10.0, 10.0, 0.0, True, _ANISO_HELP.format(layers="low-frequency")),
    FieldSpec("anisotropy_second", "anisotropy_second", "2nd order anisotropy", "direction",
              float, -10.0, 10.0, 0.0, True, _ANISO_HELP.format(layers="low-frequency")),
    FieldSpec("anisotropy_third", "anisotropy_third", "3rd order anisotropy", "direction", float,
              -10.0, 10.0, 0.0, True, _ANISO_HELP.format(layers="high-frequency")),
    FieldSpec("anisotropy_fourth", "anisotropy_fourth", "4th order anisotropy", "direction",
              float, -10.0, 10.0, 0.0, True, _ANISO_HELP.format(layers="high-frequency")),
    FieldSpec("sharpness", "sharpness", "sharpness", "edges", float, -1.0, 1.0, 0.0, True,
              "Apply a gain on wavelet details, regardless of diffusion properties. Zero "
              "does nothing, positive values sharpen, negative values blur."),
    FieldSpec("edge_sensitivity", "regularization", "edge sensitivity", "edges", float, 0.0, 4.0,
              0.0, False, "Apply a penalty over the diffusion speeds when edges are detected, "
              "using the local variance around each pixel. Zero disables the penalty, higher "
              "values make it stronger. Increase if you notice fringes and halos."),
    FieldSpec("edge_threshold", "variance_threshold", "edge threshold", "edges", float, -2.0,
              2.0, 0.0, False, "A variance threshold: pixels with a local variance below it "
              "have their diffusion speeds amplified, pixels above it are penalized. Use "
              "carefully for large blurs, as it may increase noise in flat areas."),
    FieldSpec("luminance_threshold", "threshold", "luminance masking threshold", "spatiality",
              float, 0.0, 8.0, 0.0, True, "For values greater than 0 %, diffusion only "
              "happens in regions whose luminance is greater than this setting (inpaint "
              "highlights)."),
    FieldSpec("keep_saturated", None, "keep saturated cores", "spatiality", bool, 0, 1, False,
              False, "Inpainted channels that were at or above the luminance masking "
              "threshold (clipped highlights, saturated star cores) stay at least at that "
              "threshold, so star cores keep their flux instead of turning into rings. Only "
              "acts when the luminance masking threshold is above 0 %."),
)

_BY_NAME = {f.name: f for f in FIELDS}
#: darktable's field name -> our field name (fields darktable does not have are left out).
DARKTABLE_NAMES: dict[str, str] = {f.darktable_name: f.name for f in FIELDS
                                   if f.darktable_name is not None}


def _check_bool(spec: FieldSpec, value: Any) -> bool:
    """Return ``value`` as a bool: True, False (NumPy's too) or the numbers 0 and 1."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Real) and not math.isnan(_as_float(value)) and value in (0, 1):
        return bool(value)
    raise ValueError(f"{spec.name}={_show(value)} is not a boolean "
                     "(accepted values: True, False, 0 or 1)")


def _as_float(value: numbers.Real) -> float:
    """``float(value)``, with +-inf for numbers beyond float's range and NaN for a
    signalling Decimal NaN (never raises for a :class:`numbers.Real`)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf
    except (ValueError, ArithmeticError):
        return math.nan


def _show(value: Any) -> str:
    """``repr(value)``, abbreviated when huge (``10**400`` has 401 digits)."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:16]}...{text[-8:]} ({len(text)} characters)"


def _check(spec: FieldSpec, value: Any) -> int | float | bool:
    """Return ``value`` converted to the field's type, or raise ``ValueError``.

    Any :class:`numbers.Real` is accepted (int, float, NumPy scalars, Fraction; not
    Decimal, which is not a ``numbers.Real``);
    huge values, NaN and infinities give the same ``ValueError`` as any out-of-range value.
    """
    if spec.kind is bool:
        return _check_bool(spec, value)
    accepted = f"accepted range: {spec.minimum:g} to {spec.maximum:g}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise ValueError(f"{spec.name}={_show(value)} is not a number ({accepted})")
    number = _as_float(value)
    if math.isnan(number) or not spec.minimum <= number <= spec.maximum:
        raise ValueError(f"{spec.name}={_show(value)} is out of range ({accepted})")
    if spec.kind is int:
        if not number.is_integer():
            raise ValueError(f"{spec.name}={_show(value)} is not a whole number ({accepted})")
        return int(number)
    return number


#: The defaults, from :data:`FIELDS` (their one source).
_DEFAULTS = {f.name: f.kind(f.default) for f in FIELDS}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiffuseParams:
    """Parameters of darktable's *diffuse or sharpen* module.

    Immutable and keyword-only; every field is validated against darktable's hard range
    on creation.
    Defaults are darktable's (one iteration, radius span 8, everything else 0: the
    identity; ``keep_saturated``, not darktable's, is False). See :data:`FIELDS` for
    each field's range, label and meaning.

    Raises
    ------
    ValueError
        If a value is not a number, not whole for an integer field, NaN or out of range,
        or, for ``keep_saturated``, not True, False, 0 or 1. The message names the
        field, the value and the accepted range or values.
    """

    iterations: int = _DEFAULTS["iterations"]
    radius_center: int = _DEFAULTS["radius_center"]
    radius: int = _DEFAULTS["radius"]
    first: float = _DEFAULTS["first"]
    second: float = _DEFAULTS["second"]
    third: float = _DEFAULTS["third"]
    fourth: float = _DEFAULTS["fourth"]
    anisotropy_first: float = _DEFAULTS["anisotropy_first"]
    anisotropy_second: float = _DEFAULTS["anisotropy_second"]
    anisotropy_third: float = _DEFAULTS["anisotropy_third"]
    anisotropy_fourth: float = _DEFAULTS["anisotropy_fourth"]
    sharpness: float = _DEFAULTS["sharpness"]
    edge_sensitivity: float = _DEFAULTS["edge_sensitivity"]
    edge_threshold: float = _DEFAULTS["edge_threshold"]
    luminance_threshold: float = _DEFAULTS["luminance_threshold"]
    keep_saturated: bool = _DEFAULTS["keep_saturated"]

    def __post_init__(self) -> None:
        for spec in FIELDS:
            object.__setattr__(self, spec.name, _check(spec, getattr(self, spec.name)))

    def replace(self, **changes: Any) -> DiffuseParams:
        """Return a copy with some fields changed (validated like the constructor).

        Raises
        ------
        ValueError
            If a name is not a field, or a value is invalid.
        """
        unknown = sorted(set(changes) - set(_BY_NAME))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; valid names: {list(_BY_NAME)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, int | float | bool]:
        """Return the fields as a plain dict under our names."""
        return {f.name: getattr(self, f.name) for f in FIELDS}

    @classmethod
    def from_dict(cls, mapping: Mapping[str, Any]) -> DiffuseParams:
        """Build from a dict under our names; missing fields take their defaults.

        Raises
        ------
        ValueError
            On unknown names or invalid values.
        """
        mapping = dict(mapping)
        odd = [name for name in mapping if not isinstance(name, str)]
        if odd:  # ** would raise TypeError
            raise ValueError(f"parameter names must be strings, not {odd!r}; valid names: "
                             f"{list(_BY_NAME)}")
        return cls().replace(**mapping)

    def to_json(self) -> str:
        """Return the fields as a JSON object string."""
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DiffuseParams:
        """Parse a JSON object written by :meth:`to_json`."""
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object of parameters, got {type(data).__name__}")
        return cls.from_dict(data)

    @classmethod
    def from_darktable(cls, mapping: Mapping[str, Any]) -> DiffuseParams:
        """Build from darktable's 15 field names (``regularization``, ``threshold``...).

        Missing fields take darktable's defaults; fields darktable does not have
        (``keep_saturated``) take theirs.

        Raises
        ------
        ValueError
            On names that are not darktable's, or invalid values.
        """
        unknown = sorted(set(mapping) - set(DARKTABLE_NAMES))
        if unknown:
            raise ValueError(
                f"unknown darktable parameter(s) {unknown}; valid names: {list(DARKTABLE_NAMES)}")
        return cls.from_dict({DARKTABLE_NAMES[k]: v for k, v in mapping.items()})

    def to_darktable(self) -> dict[str, int | float]:
        """Return darktable's 15 fields under darktable's names (``keep_saturated``, not
        darktable's, is left out)."""
        return {f.darktable_name: getattr(self, f.name) for f in FIELDS
                if f.darktable_name is not None}

    @classmethod
    def from_preset(cls, name: str) -> DiffuseParams:
        """Load a preset by name (see :func:`napari_diffuse.list_presets`).

        Raises
        ------
        ValueError
            If no preset has that name (the message lists the valid ones).
        """
        from .presets import load_preset

        return load_preset(name)
