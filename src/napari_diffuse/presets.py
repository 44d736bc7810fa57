"""Bundled presets, read from the JSON files in ``presets/``.

Each file holds ``{"name": ..., "group": ..., "description": ..., "params": {field: value}}``
with the fields of :class:`~napari_diffuse.params.DiffuseParams` (missing ones take their
defaults). ``group`` is ``"science"`` for the presets made for microscopy and astronomy
(derived from :func:`napari_diffuse.calibrate` on varied data) and ``"darktable"`` (the
default when absent) for darktable's 17 photographic presets, kept unchanged.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import NamedTuple

from .params import DiffuseParams
from .resources import data_dir

__all__ = ["GROUPS", "Preset", "list_presets", "load_preset", "preset_description",
           "preset_group", "read_preset_file"]

#: Preset groups, in the order a user should meet them.
GROUPS = ("science", "darktable")


class Preset(NamedTuple):
    """One preset file's content."""

    name: str
    description: str
    params: DiffuseParams
    group: str


def read_preset_file(path: Path) -> Preset:
    """Read one preset file.

    Raises
    ------
    ValueError
        If the file is not valid JSON or lacks ``name``/``params``, names an unknown
        group, or a parameter is invalid; the message names the file and the problem.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or not isinstance(data.get("params"), dict):
            raise ValueError('expected an object with a "name" string and a "params" object')
        group = data.get("group", "darktable")
        if group not in GROUPS:
            raise ValueError(f'"group" is {group!r}; accepted: {list(GROUPS)}')
        params = DiffuseParams.from_dict(data["params"])
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"malformed preset file {path}: {err}") from None
    return Preset(data["name"], str(data.get("description", "")), params, group)


@functools.cache
def _presets() -> dict[str, Preset]:
    table = {}
    for path in sorted(data_dir("presets").glob("*.json")):
        preset = read_preset_file(path)
        table[preset.name] = preset
    return table


def list_presets(group: str | None = None) -> list[str]:
    """Return the names of the bundled presets, sorted.

    Parameters
    ----------
    group : {"science", "darktable"}, optional
        Only the presets of this group; ``None`` lists every group, science presets
        first, each group sorted.

    Examples
    --------
    >>> "denoise: medium" in list_presets("darktable")
    True
    """
    if group is not None and group not in GROUPS:
        raise ValueError(f"unknown preset group {group!r}; accepted: {list(GROUPS)}")
    groups = GROUPS if group is None else (group,)
    return [name for g in groups
            for name in sorted(n for n, p in _presets().items() if p.group == g)]


def load_preset(name: str) -> DiffuseParams:
    """Return the parameters of the preset called ``name``.

    Raises
    ------
    ValueError
        If no preset has that name; the message lists the valid names.
    """
    try:
        return _presets()[name].params
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid presets: {list_presets()}") from None


def preset_description(name: str) -> str:
    """Return the one-line description of the preset called ``name``."""
    load_preset(name)
    return _presets()[name].description


def preset_group(name: str) -> str:
    """Return the group (``"science"`` or ``"darktable"``) of the preset called ``name``."""
    load_preset(name)
    return _presets()[name].group
