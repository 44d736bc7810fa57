"""Nothing lost on write: refuse to overwrite inputs, write beside, rename into place.

The output is written to a temporary file (or folder) in the target's own folder, named
``.<target name>.<random>.partial`` plus the target's suffixes (so writers that look at
the suffix still see it), then renamed over the target in one step. A failure, Ctrl-C or a
full disk removes the temporary and leaves any previous file as it was.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from . import FileFormatError

__all__ = ["check_target", "replace_atomically", "PARTIAL_MARK"]

#: Part of every temporary name: ``.<name>.<random>.partial<suffixes>``.
PARTIAL_MARK = ".partial"


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def check_target(path: Path, *, inputs: Sequence[Path] = (), overwrite: bool = False) -> None:
    """Refuse a target that is an input (always) or that exists (unless ``overwrite``).

    Parameters
    ----------
    path : Path
        The output file (or ``.zarr`` folder) to be written.
    inputs : sequence of Path
        The input files; ``path`` is refused when it is the same file as any of them
        (same resolved path, or the same file on disk).
    overwrite : bool
        Allow replacing an existing ``path`` (still refused when it is an input).

    Raises
    ------
    FileFormatError
        When ``path`` is an input, exists without ``overwrite``, or exists as a folder
        where a file is to be written (or as a file where a ``.zarr`` folder is to be
        written); naming the file and the argument that allows it (``overwrite=True``,
        which the CLI words as ``--overwrite``), if any.
    """
    for source in inputs:
        if _same_file(path, Path(source)):
            raise FileFormatError(f"{path}: is an input file; refusing to write over it "
                                  "(choose another output name or folder)")
    if path.exists() and not overwrite:
        raise FileFormatError(f"{path}: already exists; refusing to replace it without "
                              "overwrite=True")
    if path.exists() and path.is_dir() != _is_folder_format(path):
        kind = "a folder" if path.is_dir() else "a file"
        raise FileFormatError(f"{path}: exists and is {kind}; refusing to replace it with "
                              f"{'a file' if path.is_dir() else 'a folder'}")


def _is_folder_format(path: Path) -> bool:
    return path.name.lower().rstrip("/").endswith(".zarr")


def _temporary_name(path: Path) -> Path:
    suffixes = "".join(path.suffixes[-2:]) if path.name.lower().endswith(
        (".ome.tif", ".ome.tiff", ".ome.zarr", ".fits.gz")) else path.suffix
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}{PARTIAL_MARK}{suffixes}")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def replace_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Call ``write(temporary)``, then move the temporary onto ``path``.

    The temporary is removed when ``write`` raises (any exception, KeyboardInterrupt
    included), and ``path`` is untouched. A file replaces ``path`` with one
    :func:`os.replace`; a folder (OME-Zarr) is renamed over after the old folder is moved
    aside, and the old one is restored if that rename fails.

    Parameters
    ----------
    path : Path
        The final file or folder; its parent folder is created if missing.
    write : callable
        ``write(temporary)`` writes the whole output to the :class:`~pathlib.Path` it is
        given: a hidden name beside ``path`` ending in ``path``'s suffixes (see
        :data:`PARTIAL_MARK`).

    Raises
    ------
    FileFormatError
        When writing or renaming fails with an OSError (disk full, permissions), naming
        the file and the system's message; other exceptions propagate unchanged, as does
        an OSError creating the missing parent folder.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _temporary_name(path)
    try:
        write(temporary)
        _move_into_place(temporary, path)
    except OSError as err:
        _remove(temporary)
        raise FileFormatError(f"{path}: writing failed: {err.strerror or err}; nothing was "
                              "written and any previous file is unchanged") from None
    except BaseException:
        _remove(temporary)
        raise


def _move_into_place(temporary: Path, path: Path) -> None:
    if not temporary.is_dir():
        with open(temporary, "rb") as handle:  # data on disk before the rename makes it visible
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return
    if not path.exists():
        os.replace(temporary, path)
        return
    aside = path.with_name(f".{path.name}.{secrets.token_hex(4)}.old")
    os.replace(path, aside)
    try:
        os.replace(temporary, path)
    except BaseException:
        os.replace(aside, path)
        raise
    _remove(aside)
