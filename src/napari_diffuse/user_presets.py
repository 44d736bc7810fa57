"""Presets users make: saved settings in the user's config folder, and darktable imports.

User presets are JSON files in the format of the bundled ones (``presets/*.json``:
``{"name", "description", "params"}``), stored in :func:`presets_dir`:
``$NAPARI_DIFFUSE_CONFIG_DIR/presets`` when that variable is set, else the platform's
user config folder (``platformdirs.user_config_dir("napari-diffuse")``, on Linux
``~/.config/napari-diffuse``) ``/presets``.

darktable's own settings come in as the module's parameter blob: 60 little-endian bytes
in darktable's version 2 layout (version 1: the first 56, without ``radius_center``),
written as hex, or as ``"gz"`` + two digits + base64 of the zlib-compressed blob. That
blob is the ``<op_params>`` of a ``.dtpreset`` file (darktable's preset export) and the
``darktable:params`` of a ``darktable:history`` item in an XMP sidecar.

Files are read defensively: a preset file that cannot be read or parsed (not a regular
file, over :data:`MAX_PRESET_FILE_BYTES`, not UTF-8, nested deeper than
:data:`~napari_diffuse.presets.MAX_JSON_DEPTH`, an invalid parameter) is skipped with a
:class:`PresetFileWarning` naming it; darktable files are limited to
:data:`MAX_DARKTABLE_FILE_BYTES` and ``gz`` blobs stop inflating past
:data:`MAX_INFLATED_BYTES`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import struct
import warnings
import xml.etree.ElementTree as ElementTree
import zlib
from pathlib import Path

import numpy as np

from .params import DiffuseParams
from .presets import MAX_PRESET_FILE_BYTES, _read_regular_file, list_presets, read_preset_file

__all__ = [
    "CONFIG_DIR_VARIABLE", "MAX_DARKTABLE_FILE_BYTES", "MAX_INFLATED_BYTES",
    "MAX_PRESET_FILE_BYTES", "PresetFileWarning", "config_dir", "presets_dir",
    "list_user_presets", "load_user_preset", "save_user_preset", "decode_darktable_params",
    "read_darktable_file",
]

#: Environment variable that overrides the config folder (tests point it at a tmp dir).
CONFIG_DIR_VARIABLE = "NAPARI_DIFFUSE_CONFIG_DIR"
#: Largest darktable ``.dtpreset`` or XMP file read, in bytes (refused unread beyond).
MAX_DARKTABLE_FILE_BYTES = 16 * 1024 * 1024
#: Most bytes a ``gz`` parameter blob may inflate to (the blob itself is 60 bytes);
#: inflating stops as soon as it is passed, so a zip bomb costs no memory.
MAX_INFLATED_BYTES = 4096


class PresetFileWarning(UserWarning):
    """A file in the user preset folder was skipped: it cannot be read or parsed."""

# darktable's dt_iop_diffuse_params_t, version 2 (src/iop/diffuse.c), in memory order.
_DARKTABLE_ORDER = (
    "iterations", "sharpness", "radius", "regularization", "variance_threshold",
    "anisotropy_first", "anisotropy_second", "anisotropy_third", "anisotropy_fourth",
    "threshold", "first", "second", "third", "fourth", "radius_center",
)
_LAYOUTS = {  # darktable modversion -> (struct format, field names)
    2: ("<ifi" + "f" * 11 + "i", _DARKTABLE_ORDER),
    1: ("<ifi" + "f" * 11, _DARKTABLE_ORDER[:-1]),  # v2 added radius_center (0 for v1)
}
_RDF = "{http://www.w3.org/1999/02/22-rdf-syntax-ns#}"
_DT = "{http://darktable.sf.net/}"


def config_dir() -> Path:
    """Return napari-diffuse's config folder (it may not exist yet).

    ``$NAPARI_DIFFUSE_CONFIG_DIR`` when set, else ``platformdirs.user_config_dir``
    (``~/.config/napari-diffuse`` without platformdirs).
    """
    override = os.environ.get(CONFIG_DIR_VARIABLE)
    if override:
        return Path(override).expanduser()
    try:
        import platformdirs
    except ImportError:
        return Path.home() / ".config" / "napari-diffuse"
    return Path(platformdirs.user_config_dir("napari-diffuse", appauthor=False))


def presets_dir() -> Path:
    """Return the folder holding the user's presets (``config_dir() / "presets"``)."""
    return config_dir() / "presets"


def _scan() -> tuple[dict[str, Path], dict[Path, str]]:
    """Return {preset name: file} and {unusable file: why} for the preset folder."""
    folder = presets_dir()
    table, problems = {}, {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            name = read_preset_file(path).name
        except ValueError as err:  # a broken file must not hide the others
            problems[path] = str(err)
            continue
        table[name] = path
    return table, problems


def list_user_presets() -> list[str]:
    """Return the names of the user's saved presets, sorted.

    A file that cannot be read or parsed is skipped with one :class:`PresetFileWarning`
    naming it and the problem.
    """
    table, problems = _scan()
    for problem in problems.values():
        warnings.warn(f"skipped user preset file: {problem}", PresetFileWarning, stacklevel=2)
    return sorted(table)


def load_user_preset(name: str) -> DiffuseParams:
    """Return the parameters of the user preset called ``name``.

    Raises
    ------
    ValueError
        If there is no such preset (the message lists the saved ones and the folder),
        or the file that would hold it cannot be read (the message names it and why).
    TypeError
        If ``name`` is not a str.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    table, problems = _scan()
    path = table.get(name)
    if path is None:
        stem = _file_stem(name.strip())
        for broken, problem in problems.items():
            if re.fullmatch(re.escape(stem) + r"(-[0-9]+)?", broken.stem):
                raise ValueError(f"user preset {name!r} cannot be loaded: {problem}")
        skipped = f" ({len(problems)} unreadable file(s) skipped)" if problems else ""
        raise ValueError(f"no user preset called {name!r} in {presets_dir()}; "
                         f"saved presets: {sorted(table)}{skipped}")
    return read_preset_file(path).params


def _file_stem(name: str) -> str:
    stem = re.sub(r"[^0-9A-Za-z._-]+", "-", name).strip("-.")
    return stem or "preset"


def save_user_preset(name: str, params: DiffuseParams, description: str = "") -> Path:
    """Save ``params`` as the user preset ``name`` and return the file written.

    A preset of the same name is replaced. The file has the bundled presets' format,
    so :func:`napari_diffuse.presets.read_preset_file` reads it.

    Unreadable files in the folder are left alone: a new preset never takes the path of
    an existing file, folder or link (even a broken one), it gets a numbered file name.

    Raises
    ------
    TypeError
        If ``name`` or ``description`` is not a str, or ``params`` is not a
        :class:`DiffuseParams`.
    ValueError
        If the name is empty or is a bundled preset's name.
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not isinstance(params, DiffuseParams):
        raise TypeError(f"params must be a DiffuseParams, got {type(params).__name__}")
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")
    name = name.strip()
    if not name:
        raise ValueError("a preset needs a name (it was empty)")
    if name in list_presets():
        raise ValueError(f"{name!r} is a bundled preset; choose another name")
    folder = presets_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = _scan()[0].get(name)
    if path is None:
        path = folder / f"{_file_stem(name)}.json"
        counter = 2
        while os.path.lexists(path):  # another preset's file, a broken file or link
            path = folder / f"{_file_stem(name)}-{counter}.json"
            counter += 1
    record = {"name": name, "description": description, "params": params.to_dict()}
    path.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return path


def _float32_decimal(value: float) -> float:
    # The shortest decimal that is the same float32: darktable's -0.2f reads as -0.2.
    return float(np.format_float_positional(np.float32(value), unique=True, trim="0"))


def decode_darktable_params(encoded: str | bytes, version: int = 2) -> DiffuseParams:
    """Decode darktable's *diffuse or sharpen* parameter blob.

    Parameters
    ----------
    encoded : str or bytes
        The raw blob (bytes), or its text form in darktable files: hex, or ``"gz"``
        plus a two-digit compression factor plus base64 of the zlib-compressed blob.
    version : {2, 1}
        darktable's module version (``op_version`` / ``darktable:modversion``).

    Returns
    -------
    DiffuseParams
        Floats are darktable's float32 values written as their shortest decimal
        (``-0.2f`` becomes ``-0.2``), so darktable's presets decode to the bundled ones.

    Raises
    ------
    TypeError
        If ``encoded`` is not str or bytes, or ``version`` is not an int.
    ValueError
        For another version, a blob of the wrong size, text that is neither hex nor
        ``gz`` data, ``gz`` data inflating past :data:`MAX_INFLATED_BYTES`, or a value
        outside the parameter's range.
    """
    if isinstance(encoded, (bytearray, memoryview)):
        encoded = bytes(encoded)
    if not isinstance(encoded, (str, bytes)):
        raise TypeError(f"encoded must be str or bytes, got {type(encoded).__name__}")
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise TypeError(f"version must be an int, got {type(version).__name__}")
    version = int(version)
    if version not in _LAYOUTS:
        raise ValueError(f"darktable diffuse parameters version {version} is not supported "
                         f"(accepted: {sorted(_LAYOUTS)})")
    blob = encoded if isinstance(encoded, bytes) else _decode_text(encoded.strip())
    fmt, names = _LAYOUTS[version]
    if len(blob) != struct.calcsize(fmt):
        raise ValueError(f"darktable diffuse version {version} parameters are "
                         f"{struct.calcsize(fmt)} bytes, got {len(blob)}")
    values = dict(zip(names, struct.unpack(fmt, blob), strict=True))
    fields = {key: value if isinstance(value, int) else _float32_decimal(value)
              for key, value in values.items()}
    return DiffuseParams.from_darktable(fields)


def _decode_text(text: str) -> bytes:
    try:
        if text.startswith("gz"):
            return _inflate(base64.b64decode(text[4:], validate=True))
        return binascii.unhexlify(text)
    except (binascii.Error, zlib.error, ValueError) as err:
        raise ValueError(f"cannot decode darktable parameters {text[:24]!r}...: {err} "
                         "(expected hex, or 'gz' + 2 digits + base64 zlib data)") from None


def _inflate(packed: bytes) -> bytes:
    # Inflate at most MAX_INFLATED_BYTES + 1 bytes: a zip bomb stops there, unallocated.
    inflater = zlib.decompressobj()
    blob = inflater.decompress(packed, MAX_INFLATED_BYTES + 1)
    if len(blob) > MAX_INFLATED_BYTES:
        raise ValueError(f"the 'gz' data inflates to more than {MAX_INFLATED_BYTES} bytes "
                         "(the limit; darktable's diffuse parameters are 60 bytes)")
    if not inflater.eof:
        raise zlib.error("incomplete or truncated stream")
    return blob


def _whole_number(text: str, field: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{field} is {text[:40]!r}, not a whole number") from None


def read_darktable_file(path: str | os.PathLike) -> list[tuple[str, DiffuseParams]]:
    """Read the *diffuse or sharpen* settings of a darktable ``.dtpreset`` or XMP file.

    Parameters
    ----------
    path : path-like
        A preset exported by darktable (``<darktable_preset>`` with ``<operation>``
        ``diffuse``), or an XMP sidecar whose ``darktable:history`` holds ``diffuse``
        items (as attributes of ``rdf:li`` or as child elements).

    Returns
    -------
    list of (name, DiffuseParams)
        One entry for a preset (its name). For an XMP, every ``diffuse`` history item
        that darktable applies (``num`` below ``darktable:history_end``; items above it
        were undone), in history order, named ``"<file stem>: <instance name or
        'diffuse'> #<num>"``.

    Raises
    ------
    ValueError
        If the file cannot be read, is not a regular file, is larger than
        :data:`MAX_DARKTABLE_FILE_BYTES`, is not XML, is neither kind of file, holds no
        ``diffuse`` settings, has a field that is not a number where one is due, or the
        settings cannot be decoded; the message names the file (and the field).
    """
    path = Path(path)
    try:
        root = ElementTree.fromstring(_read_regular_file(path, MAX_DARKTABLE_FILE_BYTES))
    except (ElementTree.ParseError, ValueError, RecursionError) as err:
        raise ValueError(f"cannot read darktable file {path}: {err}") from None
    try:
        if root.tag == "darktable_preset":
            return [_read_dtpreset(root)]
        if root.tag in ("{adobe:ns:meta/}xmpmeta", f"{_RDF}RDF"):
            return _read_xmp(root, path.name.split(".")[0])
        raise ValueError(f"root element <{root.tag}> is neither <darktable_preset> (a .dtpreset) "
                         "nor <x:xmpmeta> (an XMP sidecar)")
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None


def _read_dtpreset(root: ElementTree.Element) -> tuple[str, DiffuseParams]:
    def text(tag: str) -> str:
        element = root.find(f".//{tag}")
        return (element.text or "").strip() if element is not None else ""

    operation = text("operation")
    if operation != "diffuse":
        raise ValueError(f"this is a preset of darktable's {operation!r} module, not of "
                         "'diffuse' (diffuse or sharpen)")
    version = _whole_number(text("op_version") or "0", "<op_version>")
    return text("name") or "darktable preset", decode_darktable_params(text("op_params"), version)


def _history_fields(item: ElementTree.Element) -> dict[str, str]:
    fields = {key[len(_DT):]: value for key, value in item.attrib.items() if key.startswith(_DT)}
    for child in item:
        if child.tag.startswith(_DT):
            fields[child.tag[len(_DT):]] = (child.text or "").strip()
    return fields


def _read_xmp(root: ElementTree.Element, stem: str) -> list[tuple[str, DiffuseParams]]:
    found = []
    for description in root.iter(f"{_RDF}Description"):
        fields = _history_fields(description)
        history_end = (_whole_number(fields["history_end"], "darktable:history_end")
                       if "history_end" in fields else None)
        for item in description.iterfind(f"{_DT}history/{_RDF}Seq/{_RDF}li"):
            fields = _history_fields(item)
            num = _whole_number(fields.get("num", str(len(found))), "darktable:num")
            if fields.get("operation") != "diffuse" or \
                    (history_end is not None and num >= history_end):
                continue
            version = _whole_number(fields.get("modversion") or "0", "darktable:modversion")
            params = decode_darktable_params(fields.get("params", ""), version)
            label = fields.get("multi_name") or "diffuse"
            found.append((f"{stem}: {label} #{num}", params))
    if not found:
        raise ValueError("its darktable:history has no 'diffuse' (diffuse or sharpen) item "
                         "below darktable:history_end")
    return found
