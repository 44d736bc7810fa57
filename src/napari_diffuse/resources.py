"""Where the data folders shipped with the package are: ``presets/`` and ``kernels/``.

In an installed wheel they sit inside the package (hatchling force-includes them);
in a source checkout, or an editable install, they are the repository's top-level
folders. Both layouts are looked up, the packaged one first.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["data_dir"]

_PACKAGE_DIR = Path(__file__).resolve().parent


def data_dir(name: str) -> Path:
    """Return the folder ``name`` (``"presets"`` or ``"kernels"``) shipped with the package.

    Raises
    ------
    FileNotFoundError
        If neither the packaged nor the checkout folder exists.
    """
    for candidate in (_PACKAGE_DIR / name, _PACKAGE_DIR.parents[1] / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"napari-diffuse's {name!r} folder is missing: looked in {_PACKAGE_DIR / name} "
        f"and {_PACKAGE_DIR.parents[1] / name}; reinstall the package")
