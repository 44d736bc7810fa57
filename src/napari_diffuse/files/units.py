"""Unit names between formats: ImageJ (``micron``, ``\\u00B5m``), OME (``µm``) and OME-Zarr
(UDUNITS-2 names, ``micrometer``).

Units not in the table pass through unchanged.
"""

from __future__ import annotations

__all__ = ["long_name", "short_name"]

# long (OME-Zarr / UDUNITS-2) name -> short symbol (OME-XML, ImageJ)
_SHORT = {
    "angstrom": "Å", "nanometer": "nm", "micrometer": "µm", "millimeter": "mm",
    "centimeter": "cm", "meter": "m", "kilometer": "km", "parsec": "pc",
    "nanosecond": "ns", "microsecond": "µs", "millisecond": "ms", "second": "s",
    "minute": "min", "hour": "h", "degree": "deg", "arcminute": "arcmin",
    "arcsecond": "arcsec",
}
_ALIASES = {
    "micron": "micrometer", "microns": "micrometer", "um": "micrometer",
    "\\u00b5m": "micrometer", "μm": "micrometer", "sec": "second", "msec": "millisecond",
}
_LONG = {short.lower(): long for long, short in _SHORT.items()}


def long_name(unit: str | None) -> str | None:
    """The OME-Zarr (UDUNITS-2) name of ``unit``: ``"µm"``, ``"micron"``, ``"um"`` ->
    ``"micrometer"``; unknown units unchanged; None stays None.

    Parameters
    ----------
    unit : str or None
        A unit name or symbol; matched ignoring case and surrounding spaces.

    Returns
    -------
    str or None
        The lowercase long name of a known unit, an unknown ``unit`` as given, or None.
    """
    if unit is None:
        return None
    key = unit.strip().lower()
    if key in _SHORT:
        return key
    return _ALIASES.get(key) or _LONG.get(key) or unit


def short_name(unit: str | None) -> str | None:
    """The OME-XML / ImageJ symbol of ``unit``: ``"micrometer"``, ``"micron"`` -> ``"µm"``;
    unknown units unchanged; None stays None.

    Parameters
    ----------
    unit : str or None
        A unit name or symbol; matched as in :func:`long_name`.

    Returns
    -------
    str or None
        The symbol of a known unit (``"µm"``, ``"s"``, ``"deg"``...), an unknown ``unit``
        as given, or None.
    """
    if unit is None:
        return None
    return _SHORT.get(long_name(unit), unit)
