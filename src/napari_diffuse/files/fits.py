"""FITS files through :mod:`astropy.io.fits` (the ``fits`` extra).

Reading: every image HDU with at least two axes (primary and ``IMAGE`` extensions, tile
compressed ones included) is one :class:`ImageFile`, its header kept whole. The other HDUs
(tables, header-only and 1-D extensions, an empty primary HDU) are not images to diffuse:
they travel unchanged in the first image's ``extra`` and are written back at their place.
Random-groups files are refused.

Axes: numpy's order is FITS's reversed, so the last two axes are ``Y`` (NAXIS2) and ``X``
(NAXIS1). Each further axis is ``C`` when its ``CTYPE`` is ``STOKES``, ``T`` when it is a time
axis, and ``Z`` otherwise (a spectral cube is a stack of planes); a letter already taken
becomes ``Q``. ``scale`` and ``units`` come from ``CDELTn`` (or the ``CD`` matrix) and
``CUNITn``; the header stays the reference for the WCS.

Scaling: unsigned integers stored with ``BZERO`` (e.g. uint16) are read and written as such.
Other scaled integers (``BSCALE``/``BZERO``) are read as physical floats and written back
quantised to the input's ``BITPIX`` and scaling, NaN as ``BLANK``. Writing adds ``HISTORY``
cards to every image HDU and computes a dask array in memory (FITS has no chunks). A name
ending in ``.gz`` is written gzip-compressed; compressed image HDUs are written uncompressed.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from . import FileFormatError, ImageFile, MissingExtraError
from .units import short_name

__all__ = ["read", "check", "write"]

INSTALL = "pip install 'napari-diffuse[fits]'"

# header keywords astropy derives from the data on write; stale copies are dropped
_STRUCTURAL = ("SIMPLE", "XTENSION", "BITPIX", "NAXIS", "EXTEND", "PCOUNT", "GCOUNT",
               "GROUPS", "BSCALE", "BZERO", "CHECKSUM", "DATASUM")
_TIME_TYPES = ("TIME", "UTC", "TAI", "TT", "TDB", "MJD", "JD", "BJD", "HJD", "DATE")
_CELESTIAL = ("RA--", "DEC-", "GLON", "GLAT", "ELON", "ELAT", "SLON", "SLAT")
_DTYPES = ("uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
           "float32", "float64")


def _astropy_fits(path: Path):
    try:
        import astropy.io.fits as fits
    except ImportError:
        raise MissingExtraError(f"{path}: FITS files need astropy; install it with: "
                                f"{INSTALL}") from None
    return fits


def read(path: Path) -> list[ImageFile]:
    """Read every image HDU of a FITS file.

    Parameters
    ----------
    path : Path
        A ``.fits``, ``.fit``, ``.fts`` or ``.fits.gz`` file.

    Returns
    -------
    list of ImageFile
        One per image HDU, in file order, ``kind="fits"`` and ``nan_default="keep"``;
        the first image's ``extra`` holds the HDUs passed through
        (``"fits_passthrough"``: (index, HDU) pairs; ``"fits_primary_header"``), and
        ``extra["fits_scaling"]`` the stored type of a scaled-integer image.

    Raises
    ------
    MissingExtraError
        When astropy is not installed.
    FileFormatError
        For a truncated file or random groups, naming the file.
    """
    fits = _astropy_fits(path)
    images, passthrough, primary_header = [], [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with fits.open(path, memmap=False, uint=True) as hdus:
                for index, hdu in enumerate(hdus):
                    header = hdu.header.copy()  # before .data, which rewrites the scaling
                    if isinstance(hdu, fits.GroupsHDU):
                        raise FileFormatError(f"{path}: HDU {index} holds random groups "
                                              "(interferometry data), not an image")
                    data = hdu.data if hdu.is_image else None
                    if data is not None and data.ndim >= 2:
                        images.append(_image(header, data))
                    elif index == 0 and data is None:
                        primary_header = header
                    else:
                        passthrough.append((index, type(hdu)(data=hdu.data, header=header)))
        except Exception:  # astropy fails on a short file after warning it is truncated
            _refuse_truncated(path, caught)
            raise
        _refuse_truncated(path, caught)
    if images:
        extra = images[0].extra
        extra["fits_passthrough"] = passthrough
        if primary_header is not None:
            extra["fits_primary_header"] = primary_header
    return images


def _refuse_truncated(path: Path, caught) -> None:
    for warning in caught:
        if "truncated" in str(warning.message):
            raise FileFormatError(f"{path}: truncated FITS file ({warning.message})")


def _image(header, data: np.ndarray) -> ImageFile:
    ndim = data.ndim
    axes = ""
    for k in range(ndim - 2):  # numpy axis k is FITS axis ndim - k
        ctype = str(header.get(f"CTYPE{ndim - k}", "")).upper()
        letter = ("C" if ctype.startswith("STOKES")
                  else "T" if ctype.split("-")[0] in _TIME_TYPES else "Z")
        axes += "Q" if letter in axes else letter
    axes += "YX"
    scale, units = {}, {}
    for k, letter in enumerate(axes):
        step = _pixel_size(header, ndim - k, ndim)
        if letter != "Q" and step:
            scale[letter] = step
            unit = header.get(f"CUNIT{ndim - k}") or (
                "deg" if str(header.get(f"CTYPE{ndim - k}", "")).upper().startswith(_CELESTIAL)
                else None)
            if unit:
                units[letter] = str(unit).strip()
    extra = {}
    bscale, bzero = header.get("BSCALE", 1), header.get("BZERO", 0)
    # integers read as floats: scaled (BSCALE/BZERO), or with BLANK pixels read as NaN
    if header.get("BITPIX", 0) > 0 and data.dtype.kind == "f" and (
            (bscale, bzero) != (1, 0) or "BLANK" in header):
        extra["fits_scaling"] = {"bitpix": header["BITPIX"], "bscale": bscale,
                                 "bzero": bzero, "blank": header.get("BLANK")}
    data = data.astype(data.dtype.newbyteorder("="), copy=False)  # FITS is big-endian
    return ImageFile(data=data, axes=axes, scale=scale, units=units, header=header,
                     extra=extra, kind="fits", nan_default="keep")


def _pixel_size(header, axis: int, ndim: int) -> float | None:
    step = header.get(f"CDELT{axis}")
    if step is None:  # CD matrix: the length of the pixel's step along this axis
        column = [header.get(f"CD{row}_{axis}", 0.0) for row in range(1, ndim + 1)]
        step = float(np.hypot.reduce(column)) if any(column) else None
    return abs(float(step)) if step and np.isfinite(step) else None


def check(path: Path, images: list[ImageFile]) -> None:
    """Check that a FITS file can hold ``images``: one HDU each, in FITS's data types.

    Parameters
    ----------
    path : Path
        The output, named in the messages.
    images : list of ImageFile
        What would be written; each ``data``'s dtype is checked.

    Raises
    ------
    MissingExtraError
        When astropy is not installed.
    FileFormatError
        For a data type FITS cannot store (bool, complex, float16, ...).
    """
    _astropy_fits(path)
    for number, image in enumerate(images, 1):
        dtype = np.dtype(image.data.dtype)
        if dtype.name not in _DTYPES:
            raise FileFormatError(f"{path}: FITS cannot hold {dtype.name} data (image "
                                  f"{number}); it stores {', '.join(_DTYPES)}")


def write(path: Path, images: list[ImageFile], history: str) -> None:
    """Write ``images`` as the HDUs of a FITS file, headers kept and ``HISTORY`` added.

    Parameters
    ----------
    path : Path
        The file to create (a name ending in ``.gz`` is gzip-compressed).
    images : list of ImageFile
        The first becomes the primary HDU (unless the input's primary HDU held no image:
        it is written back first), the others ``IMAGE`` extensions; the HDUs the reader
        passed through are put back at their index.
    history : str
        Added as ``HISTORY`` cards (split at 72 characters) to each image HDU.

    Raises
    ------
    MissingExtraError
        When astropy is not installed.
    """
    fits = _astropy_fits(path)
    first = images[0].extra
    hdus = []
    if first.get("fits_primary_header") is not None:
        hdus.append(fits.PrimaryHDU(header=_clean(first["fits_primary_header"], False)))
    passthrough = first.get("fits_passthrough", [])
    primary_passed = any(index == 0 for index, _ in passthrough)  # e.g. a 1-D primary HDU
    for image in images:
        hdu = _hdu(fits, fits.ImageHDU if hdus or primary_passed else fits.PrimaryHDU, image)
        hdu.header.add_history(history.strip())
        hdus.append(hdu)
    for index, hdu in passthrough:
        hdus.insert(min(index, len(hdus)), hdu)
    checksum = any("CHECKSUM" in (image.header or {}) for image in images)
    fits.HDUList(hdus).writeto(path, output_verify="silentfix", checksum=checksum)


def _hdu(fits, cls, image: ImageFile):
    data, axes = image.data, image.axes
    if image.alpha is not None:  # alpha goes back after the colour channels
        data = np.concatenate([np.asarray(data), np.asarray(image.alpha)], image.channel_axis)
    data = np.asarray(data)
    if "S" in axes:  # colour samples as planes, the FITS way: (S, Y, X)
        data, axes = np.moveaxis(data, axes.index("S"), 0), "S" + axes.replace("S", "")
    if image.header is not None:
        header = _clean(image.header, data.dtype.kind == "f")
    else:
        header = _header_from_scale(fits, image, axes)
    scaling = image.extra.get("fits_scaling")
    if not (scaling and data.dtype.kind == "f"):
        return cls(data=data, header=header)
    return _quantised(cls, data, header, scaling)


def _clean(header, floating: bool):
    header = header.copy()
    for key in list(header.keys()):
        if key.startswith(_STRUCTURAL) or (floating and key == "BLANK"):
            header.remove(key, ignore_missing=True, remove_all=True)
    return header


def _header_from_scale(fits, image: ImageFile, axes: str):
    header = fits.Header()
    for k, letter in enumerate(axes):
        if letter in image.scale:
            header[f"CDELT{len(axes) - k}"] = image.scale[letter]
            unit = short_name(image.units.get(letter))
            unit = unit and unit.replace("µ", "u")
            if unit and unit.isascii():
                header[f"CUNIT{len(axes) - k}"] = unit
    return header


def _quantised(cls, data: np.ndarray, header, scaling: dict):
    """An HDU storing physical ``data`` as the input's scaled integers, NaN as BLANK."""
    bitpix, bscale, bzero = scaling["bitpix"], scaling["bscale"], scaling["bzero"]
    dtype = np.dtype("uint8" if bitpix == 8 else f"int{bitpix}")
    info = np.iinfo(dtype)
    blank = info.min if scaling["blank"] is None else scaling["blank"]
    low = info.min + 1 if blank == info.min else info.min
    high = info.max - 1 if blank == info.max else info.max
    low, high = sorted((low * bscale + bzero, high * bscale + bzero))
    missing = np.isnan(data)
    hdu = cls(data=np.clip(np.where(missing, bzero, data), low, high), header=header)
    hdu.scale(dtype.name, bscale=bscale, bzero=bzero)
    if missing.any():
        hdu.data[missing] = blank
        hdu.header["BLANK"] = blank
    return hdu
