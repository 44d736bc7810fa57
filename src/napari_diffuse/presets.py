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
import os
import re
import stat
from pathlib import Path
from typing import NamedTuple

from .params import DiffuseParams
from .resources import data_dir

__all__ = ["GROUPS", "Preset", "list_presets", "load_preset", "preset_description",
           "read_preset_file"]

#: Preset groups, in the order a user should meet them.
GROUPS = ("science", "darktable")


class Preset(NamedTuple):
    """One preset file's content."""

    name: str
    description: str
    params: DiffuseParams
    group: str


#: Largest preset JSON file read, in bytes; a larger one is refused without being read.
MAX_PRESET_FILE_BYTES = 1024 * 1024
#: Deepest JSON nesting accepted in a preset file (a real one nests 2 levels deep).
MAX_JSON_DEPTH = 32
_MAX_INTEGER_DIGITS = 18  # no parameter is near 10**18; Python ints have no bound
# A JSON string (to its closing quote, or to the end when unterminated: every match
# succeeds where it starts, so scanning is linear), or a bracket.
_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*(?:"|\\?\Z)|[][{}]', re.DOTALL)


def _read_regular_file(path: str | os.PathLike, limit: int) -> bytes:
    """Return the bytes of the regular file ``path``, at most ``limit`` of them.

    Raises ``ValueError`` (its message says what is wrong, not which file) when the file
    cannot be opened (a broken link, no permission), is not a regular file (a folder, a
    FIFO, a device: opened without blocking and never read), or is larger than ``limit``.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags)
    except OSError as err:
        raise ValueError(f"cannot read it: {err.strerror or err}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        if info.st_size > limit:
            raise ValueError(f"it is larger than {limit} bytes ({info.st_size} bytes)")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise ValueError(f"cannot read it: {err.strerror or err}") from None
    finally:
        os.close(fd)
    if size > limit:  # it grew after fstat
        raise ValueError(f"it is larger than {limit} bytes")
    return b"".join(chunks)


def _check_json_depth(text: str, limit: int = MAX_JSON_DEPTH) -> None:
    # json.loads recurses once per level: bound the depth before parsing.
    depth = 0
    for match in _JSON_TOKEN.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
        elif token in "]}":
            depth -= 1
        if depth > limit:
            raise ValueError(f"it is nested deeper than {limit} levels")


def read_preset_file(path: Path) -> Preset:
    """Read one preset file.

    The file must be a regular file of at most :data:`MAX_PRESET_FILE_BYTES` bytes of
    UTF-8 JSON nested at most :data:`MAX_JSON_DEPTH` levels deep.

    Raises
    ------
    ValueError
        If the file cannot be read, is not a regular file, is too large or too deeply
        nested, is not UTF-8 JSON or lacks ``name``/``params``, names an unknown group,
        or a parameter is invalid; the message names the file and the problem.
    """
    try:
        raw = _read_regular_file(path, MAX_PRESET_FILE_BYTES)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"it is not UTF-8 text ({err.reason} at byte {err.start})") from None
        _check_json_depth(text)
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("name"), str) \
                or not isinstance(data.get("params"), dict):
            raise ValueError('expected an object with a "name" string and a "params" object')
        group = data.get("group", "darktable")
        if group not in GROUPS:
            raise ValueError(f'"group" is {group!r}; accepted: {list(GROUPS)}')
        for key, value in data["params"].items():
            if isinstance(value, int) and len(str(abs(value))) > _MAX_INTEGER_DIGITS:
                raise ValueError(f"{key} is a {len(str(abs(value)))}-digit integer, "
                                 "far out of range")
        params = DiffuseParams.from_dict(data["params"])
    except (ValueError, TypeError, ArithmeticError, RecursionError) as err:
        # json.JSONDecodeError is a ValueError; the last two are a safety net.
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

    Raises
    ------
    ValueError
        If ``group`` is not one of :data:`GROUPS`.

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
    except (KeyError, TypeError):  # TypeError: not a name at all (a list, say)
        raise ValueError(f"unknown preset {name!r}; valid presets: {list_presets()}") from None


def preset_description(name: str) -> str:
    """Return the one-line description of the preset called ``name``."""
    load_preset(name)
    return _presets()[name].description


def preset_group(name: str) -> str:
    """Return the group (``"science"`` or ``"darktable"``) of the preset called ``name``."""
    load_preset(name)
    return _presets()[name].group
