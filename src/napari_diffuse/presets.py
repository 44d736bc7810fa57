"""darktable's presets, read from the JSON files in ``presets/``.

Each file holds ``{"name": ..., "description": ..., "params": {field: value}}`` with
the fields of :class:`~napari_diffuse.params.DiffuseParams` (missing ones take their
defaults).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from .params import DiffuseParams
from .resources import data_dir

__all__ = ["list_presets", "load_preset", "preset_description", "read_preset_file"]


def read_preset_file(path: Path) -> tuple[str, str, DiffuseParams]:
    """Read one preset file and return ``(name, description, params)``.

    Raises
    ------
    ValueError
        If the file is not valid JSON or lacks ``name``/``params``, or a parameter is
        invalid; the message names the file and the problem.
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or not isinstance(data.get("params"), dict):
            raise ValueError('expected an object with a "name" string and a "params" object')
        params = DiffuseParams.from_dict(data["params"])
    except (ValueError, TypeError) as err:  # json.JSONDecodeError is a ValueError
        raise ValueError(f"malformed preset file {path}: {err}") from None
    return data["name"], str(data.get("description", "")), params


@functools.cache
def _presets() -> dict[str, tuple[str, DiffuseParams]]:
    table = {}
    for path in sorted(data_dir("presets").glob("*.json")):
        name, description, params = read_preset_file(path)
        table[name] = (description, params)
    return table


def list_presets() -> list[str]:
    """Return the names of the bundled presets (darktable's 17), sorted.

    Examples
    --------
    >>> "denoise: medium" in list_presets()
    True
    """
    return sorted(_presets())


def load_preset(name: str) -> DiffuseParams:
    """Return the parameters of the preset called ``name``.

    Raises
    ------
    ValueError
        If no preset has that name; the message lists the valid names.
    """
    try:
        return _presets()[name][1]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; valid presets: {list_presets()}") from None


def preset_description(name: str) -> str:
    """Return the one-line description of the preset called ``name``."""
    load_preset(name)
    return _presets()[name][0]
