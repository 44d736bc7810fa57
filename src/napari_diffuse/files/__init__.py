"""Image files in and out, metadata kept: TIFF (plain, ImageJ, OME), PNG/JPEG, FITS, OME-Zarr.

Every reader returns a list of :class:`ImageFile` (one per image series of the file), every
writer takes such a list, and :func:`write_images` writes through a temporary file or folder
beside the target that is renamed into place only on success (:mod:`.safe_write`), so a
failure, Ctrl-C or a full disk never leaves a partial output nor harms an existing file.

One module per format: :mod:`.tiff` (tifffile), :mod:`.pictures` (imageio), :mod:`.fits`
(astropy, the ``fits`` extra), :mod:`.omezarr` (ome-zarr, the ``zarr`` extra). Each has
``read(path) -> list[ImageFile]``, ``check(path, images)`` (raises
:class:`FileFormatError` when the format cannot hold the images; called before any
computation) and ``write(path, images, history)`` (``path`` is the temporary target).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["FileFormatError", "ImageFile", "MissingExtraError", "check_writable", "format_of",
           "read_images", "write_images", "SUFFIXES"]


class FileFormatError(ValueError):
    """A file that cannot be read, or images a file type cannot hold; the message names the
    file and what is wrong."""


class MissingExtraError(FileFormatError):
    """A format whose library is an optional extra that is not installed."""


#: The axis letters of :attr:`ImageFile.axes`: time, depth, channels, rows, columns,
#: samples (colour components of one pixel, e.g. RGB), anything else.
AXIS_LETTERS = "TZCYXSQ"


@dataclasses.dataclass(frozen=True)
class ImageFile:
    """One image of a file: its pixels and what the file says about them.

    Attributes
    ----------
    data : numpy.ndarray or dask.array.Array
        The pixels to diffuse; an alpha channel is split out into ``alpha``.
    axes : str
        One letter per axis of ``data``, from ``AXIS_LETTERS`` (``"TZCYXSQ"``), e.g.
        ``"ZCYX"`` or ``"YXS"``. The last two spatial axes are ``Y`` and ``X``.
    scale : dict of str to float
        Physical size of one pixel along an axis letter (``{"X": 0.1625, "Z": 0.5}``);
        axes without one are absent.
    units : dict of str to str
        The unit of ``scale`` per axis letter, as the file writes it (``"µm"``,
        ``"micrometer"``, ``"s"``); see :mod:`.units`.
    channel_names : tuple of str, optional
        One name per entry of the ``C`` (or ``S``) axis.
    alpha : numpy.ndarray, optional
        The alpha channel(s), passed through untouched: ``data``'s shape with the channel
        axis holding only the alpha entries. Put back after the colour channels on write.
    header : Any
        A FITS header (``astropy.io.fits.Header``) to write back, or None.
    extra : dict
        Format-specific metadata carried from reader to writer of the same format (e.g.
        ImageJ's ranges and LUTs, OME-Zarr's multiscale level count).
    kind : str
        What the reader found: ``"tiff"``, ``"imagej"``, ``"ome-tiff"``, ``"png"``,
        ``"jpeg"``, ``"fits"`` or ``"ome-zarr"``.
    nan_default : str
        The ``nan=`` policy this format's data expects by default (``"keep"`` for FITS,
        where NaN marks missing data; ``"error"`` elsewhere).
    """

    data: Any
    axes: str
    scale: dict[str, float] = dataclasses.field(default_factory=dict)
    units: dict[str, str] = dataclasses.field(default_factory=dict)
    channel_names: tuple[str, ...] | None = None
    alpha: Any = None
    header: Any = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    kind: str = "tiff"
    nan_default: str = "error"

    def __post_init__(self):
        if len(self.axes) != self.data.ndim or set(self.axes) - set(AXIS_LETTERS):
            raise ValueError(f"axes {self.axes!r} do not describe data of shape "
                             f"{self.data.shape} (one letter of {AXIS_LETTERS} per axis)")

    @property
    def channel_axis(self) -> int | None:
        """The index of the channel (``C``) or samples (``S``) axis in ``data``, or None."""
        for letter in "SC":
            if letter in self.axes:
                return self.axes.index(letter)
        return None

    def replace(self, **changes: Any) -> ImageFile:
        """Return a copy with some attributes changed (e.g. ``data=result``).

        Parameters
        ----------
        **changes : Any
            New values by attribute name (``data``, ``axes``, ``scale``...).

        Returns
        -------
        ImageFile
            A new image; this one is unchanged.

        Raises
        ------
        ValueError
            When the resulting ``axes`` do not describe the resulting ``data``.
        """
        return dataclasses.replace(self, **changes)


def format_of(path: Path) -> str:
    """The format of ``path`` from its name: ``"tiff"``, ``"picture"``, ``"fits"`` or
    ``"ome-zarr"``.

    Parameters
    ----------
    path : Path
        A file or folder; only its name's ending is looked at, case-insensitively
        (see :data:`SUFFIXES`).

    Returns
    -------
    str
        ``"tiff"``, ``"picture"``, ``"fits"`` or ``"ome-zarr"``.

    Raises
    ------
    FileFormatError
        For any other name, listing the accepted suffixes.
    """
    name = path.name.lower().rstrip("/")
    for fmt, suffixes in SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    raise FileFormatError(f"{path}: unsupported file type {path.suffix or path.name!r}; "
                          f"accepted: {', '.join(s for group in SUFFIXES.values() for s in group)}")


#: Accepted file names per format (an OME-TIFF is a ``.ome.tif`` TIFF).
SUFFIXES: dict[str, tuple[str, ...]] = {
    "tiff": (".tif", ".tiff"),
    "picture": (".png", ".jpg", ".jpeg"),
    "fits": (".fits", ".fit", ".fts", ".fits.gz"),
    "ome-zarr": (".zarr", ".ome.zarr"),
}


def _module(fmt: str):
    if fmt == "tiff":
        from . import tiff
        return tiff
    if fmt == "picture":
        from . import pictures
        return pictures
    if fmt == "fits":
        from . import fits
        return fits
    from . import omezarr
    return omezarr


def read_images(path: Path) -> list[ImageFile]:
    """Read every image series of a file.

    Parameters
    ----------
    path : Path or str
        The file to read (a folder for OME-Zarr); its name picks the format
        (:func:`format_of`).

    Returns
    -------
    list of ImageFile
        One per image series, in file order; never empty.

    Raises
    ------
    FileFormatError
        For an unsupported name, a missing optional library (naming the extra to install),
        or a file that is missing, corrupt or truncated: one line naming the file and what
        is wrong. KeyboardInterrupt and MemoryError propagate unchanged.
    """
    path = Path(path)
    module = _module(format_of(path))
    if not path.exists():
        raise FileFormatError(f"{path}: no such file")
    try:
        images = module.read(path)
    except (FileFormatError, KeyboardInterrupt, MemoryError):
        raise
    except Exception as err:  # decoders raise anything on a corrupt file: name it, one line
        raise FileFormatError(f"{path}: cannot read it as {format_of(path)}: "
                              f"{type(err).__name__}: {_one_line(err)}") from None
    if not images:
        raise FileFormatError(f"{path}: holds no image")
    return images


def check_writable(path: Path, images: Sequence[ImageFile]) -> None:
    """Check, before any computation, that ``path``'s format can hold ``images``.

    Parameters
    ----------
    path : Path or str
        The output to be written; its name picks the format (:func:`format_of`).
    images : sequence of ImageFile
        What would be written: the results, with the input's metadata.

    Raises
    ------
    FileFormatError
        For an unsupported name, a missing optional library, or images the format cannot
        hold (dtype, dimensions, several series), saying what to write instead.
    """
    path = Path(path)
    _module(format_of(path)).check(path, list(images))


def write_images(path: Path, images: Sequence[ImageFile], history: str, *,
                 overwrite: bool = False, inputs: Sequence[Path] = ()) -> None:
    """Write ``images`` to ``path`` atomically, metadata kept.

    Parameters
    ----------
    path : Path
        The output file (or folder, for OME-Zarr).
    images : sequence of ImageFile
        What to write: the results, with the input's metadata.
    history : str
        One line naming the tool, its version and the parameters (a FITS ``HISTORY``
        card, an OME or ImageJ description entry where the format has one).
    overwrite : bool
        Replace an existing output; without it an existing output is refused.
    inputs : sequence of Path
        The input files: writing over any of them is always refused.

    Raises
    ------
    FileFormatError
        When ``path`` is an input, exists without ``overwrite``, or the format cannot hold
        the images; or when writing fails (disk full, permissions), naming the file. No
        partial output is left and an existing file is kept intact on failure.
    """
    from .safe_write import check_target, replace_atomically

    path = Path(path)
    check_target(path, inputs=inputs, overwrite=overwrite)
    module = _module(format_of(path))
    module.check(path, list(images))
    replace_atomically(path, lambda temporary: module.write(temporary, list(images), history))


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or "(no message)"
