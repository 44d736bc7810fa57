"""TIFF through tifffile: plain TIFF, ImageJ hyperstacks and OME-TIFF, metadata kept.

Read: every series of the file (pages written one by one are separate series; tifffile
groups uniform pages without metadata into one), planar and contiguous RGB alike (the
``S`` axis wherever it is), an alpha sample split out. Kept: axes, pixel size and its unit
(ImageJ: resolution + ``unit``, ``spacing``, ``finterval``; OME: ``PhysicalSize*``,
``TimeIncrement``, channel names; plain TIFF: resolution and its unit), ImageJ's other
metadata (ranges, LUTs, labels, info), and the pyramid levels of an OME-TIFF (rebuilt from
the result by 2x2 means).

Write: an ImageJ hyperstack when the input was one (one series; uint8, uint16 or float32),
an OME-TIFF when the input was one, came from FITS or OME-Zarr (OME holds their axes, sizes,
units and channel names) or the name ends ``.ome.tif``/``.ome.tiff``, else a plain TIFF
(pixel size as resolution per cm or inch); one series after the other, each with its
photometric interpretation, planar configuration and extra samples. The ``history`` line
goes to ImageJ's *Info*, the OME image's description, or the plain TIFF's JSON description.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import FileFormatError, ImageFile
from .units import long_name, short_name

__all__ = ["read", "check", "write"]

_IMAGEJ_DTYPES = (np.uint8, np.uint16, np.float32)
_IMAGEJ_AXES = "TZCYXS"
# ImageJ metadata that tifffile computes from the data, or that ImageFile holds itself
_IMAGEJ_COMPUTED = {"ImageJ", "images", "channels", "slices", "frames", "hyperstack",
                    "axes", "spacing", "unit", "finterval", "shape"}
_RESOLUTION_UNITS = {2: "inch", 3: "cm"}
_CENTIMETRES = {"nanometer": 1e-7, "micrometer": 1e-4, "millimeter": 0.1, "centimeter": 1.0,
                "meter": 100.0}
_ALPHA = (1, 2)  # EXTRASAMPLE.ASSOCALPHA, UNASSALPHA


def _letters(axes: str) -> str:
    """tifffile's axis letters -> ImageFile's: T, Z, C, Y, X, S kept, others ``Q``."""
    return "".join(a if a in "TZCYXS" else "Q" for a in axes)


def _is_ome_name(path: Path) -> bool:
    return path.name.lower().endswith((".ome.tif", ".ome.tiff"))


def _split_alpha(data: np.ndarray, axes: str, extrasamples: tuple) -> tuple:
    """Split the alpha samples (the last ``len(extrasamples)`` of ``S``) out of ``data``."""
    if "S" not in axes or not extrasamples or not all(int(e) in _ALPHA for e in extrasamples):
        return data, None
    axis = axes.index("S")
    keep = data.shape[axis] - len(extrasamples)
    if keep < 1:
        return data, None
    return (np.take(data, range(keep), axis=axis),
            np.take(data, range(keep, data.shape[axis]), axis=axis))


def _plain_scale(page) -> tuple[dict, dict]:
    """Pixel size from a plain TIFF's resolution tags (inch or cm), if they are set."""
    unit = _RESOLUTION_UNITS.get(int(page.resolutionunit))
    xres, yres = page.resolution
    if unit is None or not (xres > 0 and yres > 0):
        return {}, {}
    return {"X": 1.0 / xres, "Y": 1.0 / yres}, {"X": unit, "Y": unit}


def _imagej_scale(page, meta: dict) -> tuple[dict, dict]:
    xres, yres = page.resolution
    scale, units = {}, {}
    unit = meta.get("unit")
    if xres > 0 and yres > 0 and (xres, yres) != (1.0, 1.0) or unit:
        scale.update(X=1.0 / xres, Y=1.0 / yres)
        if unit:
            units.update(X=unit, Y=unit)
    if "spacing" in meta:
        scale["Z"] = float(meta["spacing"])
        if unit:
            units["Z"] = unit
    if "finterval" in meta:
        scale["T"] = float(meta["finterval"])
        units["T"] = meta.get("tunit", "s")
    return scale, units


def _as_list(value) -> list:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _ome_images(tif) -> list[dict]:
    import tifffile

    try:
        return _as_list(tifffile.xml2dict(tif.ome_metadata)["OME"].get("Image"))
    except Exception:  # a broken OME-XML: keep the pixels, drop the metadata
        return []


def _ome_scale(image: dict) -> tuple[dict, dict, tuple[str, ...] | None]:
    pixels = image.get("Pixels", {})
    scale, units = {}, {}
    for letter in "XYZ":
        size = pixels.get(f"PhysicalSize{letter}")
        if size is not None:
            scale[letter] = float(size)
            units[letter] = pixels.get(f"PhysicalSize{letter}Unit", "µm")
    if pixels.get("TimeIncrement") is not None:
        scale["T"] = float(pixels["TimeIncrement"])
        units["T"] = pixels.get("TimeIncrementUnit", "s")
    names = tuple(str(c.get("Name", "")) for c in _as_list(pixels.get("Channel")))
    return scale, units, (names if names and any(names) else None)


def read(path: Path) -> list[ImageFile]:
    """Read every series of a TIFF file (see the module docstring for what is kept).

    Parameters
    ----------
    path : Path
        A ``.tif`` or ``.tiff`` file (plain, ImageJ or OME).

    Returns
    -------
    list of ImageFile
        One per series, in file order, ``kind`` ``"imagej"``, ``"ome-tiff"`` or ``"tiff"``;
        ``extra`` holds the photometric interpretation, planar configuration, extra
        samples and pyramid level count (and ImageJ's other metadata, or the OME image
        name).
    """
    import tifffile

    images = []
    with tifffile.TiffFile(path) as tif:
        kind = "imagej" if tif.is_imagej else "ome-tiff" if tif.is_ome else "tiff"
        ome = _ome_images(tif) if kind == "ome-tiff" else []
        meta = dict(tif.imagej_metadata or {}) if kind == "imagej" else {}
        for index, series in enumerate(tif.series):
            page = series.pages[0] if series.pages else tif.pages[0]
            axes = _letters(series.axes)
            data, alpha = _split_alpha(series.asarray(), axes, tuple(page.extrasamples))
            extra = {"photometric": int(page.photometric),
                     "planarconfig": int(page.planarconfig),
                     "extrasamples": tuple(int(e) for e in page.extrasamples),
                     "levels": len(series.levels)}
            names = None
            if kind == "imagej":
                scale, units = _imagej_scale(page, meta)
                extra["imagej"] = {k: v for k, v in meta.items() if k not in _IMAGEJ_COMPUTED}
            elif kind == "ome-tiff" and index < len(ome):
                scale, units, names = _ome_scale(ome[index])
                extra["name"] = ome[index].get("Name")
            else:
                scale, units = _plain_scale(page)
            images.append(ImageFile(data, axes, scale, units, names, alpha, extra=extra,
                                    kind=kind))
    return images


def _flavour(path: Path, images: list[ImageFile]) -> str:
    """``"ome-tiff"``, ``"imagej"`` or ``"tiff"``: what ``write`` makes of ``images``."""
    if _is_ome_name(path) or any(image.kind in ("ome-tiff", "ome-zarr", "fits")
                                 for image in images):
        return "ome-tiff"  # the TIFF flavour that holds every axis, size, unit and name
    if all(image.kind == "imagej" for image in images):
        return "imagej"
    return "tiff"


def check(path: Path, images: list[ImageFile]) -> None:
    """Raise :class:`FileFormatError` when the TIFF flavour chosen for ``images`` cannot
    hold them (an ImageJ hyperstack: one series of uint8, uint16 or float32, axes among
    TZCYXS).

    Parameters
    ----------
    path : Path
        The output; a ``.ome.tif`` or ``.ome.tiff`` name makes an OME-TIFF.
    images : list of ImageFile
        What would be written; their ``kind`` picks the flavour (all ``"imagej"``: an
        ImageJ hyperstack). OME and plain TIFF hold any of them.

    Raises
    ------
    FileFormatError
        For an ImageJ hyperstack of several series, or of another dtype or axes; saying
        to write an OME-TIFF instead.
    """
    if _flavour(path, images) != "imagej":
        return
    if len(images) > 1:
        raise FileFormatError(f"{path}: an ImageJ TIFF holds one series, not {len(images)}; "
                              "write an OME-TIFF (.ome.tif) instead")
    image = images[0]
    if image.data.dtype not in _IMAGEJ_DTYPES or set(image.axes) - set(_IMAGEJ_AXES):
        raise FileFormatError(f"{path}: an ImageJ TIFF holds uint8, uint16 or float32 with "
                              f"axes among {_IMAGEJ_AXES}; got {image.data.dtype} "
                              f"{image.axes}. Write an OME-TIFF (.ome.tif) instead")


def _with_alpha(image: ImageFile) -> np.ndarray:
    data = np.asarray(image.data)
    if image.alpha is None:
        return data
    return np.concatenate([data, np.asarray(image.alpha, dtype=data.dtype)],
                          axis=image.axes.index("S"))


def _colour(image: ImageFile) -> dict:
    """photometric, planarconfig and extrasamples that give the series its ``S`` axis back."""
    if "S" not in image.axes:
        return {"photometric": "minisblack"}
    samples = image.data.shape[image.axes.index("S")]
    extrasamples = image.extra.get("extrasamples", ()) if image.alpha is not None else ()
    photometric = "rgb" if samples == 3 else "minisblack"
    planar = "separate" if image.axes.index("S") < image.axes.index("Y") else "contig"
    return {"photometric": photometric, "planarconfig": planar,
            "extrasamples": tuple(extrasamples) or None}


def _resolution(image: ImageFile) -> tuple | None:
    if "X" in image.scale and "Y" in image.scale:
        return (1.0 / image.scale["X"], 1.0 / image.scale["Y"])
    return None


def _plain_resolution(image: ImageFile) -> dict:
    """Resolution tags of a plain TIFF: pixels per inch or per cm (lengths converted)."""
    unit = image.units.get("X")
    if _resolution(image) is None or unit is None:
        return {}
    if unit == "inch":
        return {"resolution": _resolution(image), "resolutionunit": "inch"}
    per_cm = _CENTIMETRES.get(long_name(unit))
    if per_cm is None:
        return {}
    return {"resolution": (1.0 / (image.scale["X"] * per_cm), 1.0 / (image.scale["Y"] * per_cm)),
            "resolutionunit": "centimeter"}


def _needs_bigtiff(images: list[ImageFile]) -> bool:
    return sum(image.data.nbytes * 4 // 3 for image in images) > 2**32 - 2**26


def _write_imagej(writer, image: ImageFile, history: str) -> None:
    meta = dict(image.extra.get("imagej", {}))
    meta["axes"] = image.axes
    unit = image.units.get("X") or image.units.get("Z")
    if unit:
        meta["unit"] = unit
    if "Z" in image.scale:
        meta["spacing"] = image.scale["Z"]
    if "T" in image.scale:
        meta["finterval"] = image.scale["T"]
    meta["Info"] = "\n".join(filter(None, [meta.get("Info"), history]))
    colour = _colour(image)
    writer.write(_with_alpha(image), resolution=_resolution(image), metadata=meta,
                 photometric=colour["photometric"], extrasamples=colour.get("extrasamples"))


def _ome_metadata(image: ImageFile, history: str) -> dict:
    meta = {"axes": image.axes, "Description": history}
    for letter in "XYZ":
        if letter in image.scale:
            meta[f"PhysicalSize{letter}"] = image.scale[letter]
            if letter in image.units:
                meta[f"PhysicalSize{letter}Unit"] = short_name(image.units[letter])
    if "T" in image.scale:
        meta["TimeIncrement"] = image.scale["T"]
        if "T" in image.units:
            meta["TimeIncrementUnit"] = short_name(image.units["T"])
    if image.channel_names:
        meta["Channel"] = {"Name": list(image.channel_names)}
    if image.extra.get("name"):
        meta["Name"] = image.extra["name"]
    return meta


def _levels(data: np.ndarray, axes: str, count: int) -> list[np.ndarray]:
    """``count - 1`` pyramid levels below ``data``: 2x2 means of Y and X, in its dtype."""
    from skimage.transform import downscale_local_mean

    factors = tuple(2 if a in "YX" else 1 for a in axes)
    levels, level = [], data
    for _ in range(count - 1):
        level = downscale_local_mean(level, factors)
        levels.append(level.astype(data.dtype) if data.dtype.kind == "f"
                      else np.rint(level).astype(data.dtype))
    return levels


def write(path: Path, images: list[ImageFile], history: str) -> None:
    """Write ``images`` as one TIFF file: ImageJ, OME or plain (see the module docstring).

    Parameters
    ----------
    path : Path
        The file to create (BigTIFF when the data is large); an ``.ome.tif`` or
        ``.ome.tiff`` name makes an OME-TIFF.
    images : list of ImageFile
        One series each, in order, ``alpha`` put back in the ``S`` axis; OME and plain
        TIFF series get a pyramid of ``extra["levels"]`` levels (the lower ones 2x2 means,
        as SubIFDs).
    history : str
        Added to ImageJ's *Info*, written as the OME image's description, or stored in
        the plain TIFF's JSON description (key ``"napari-diffuse"``).

    Raises
    ------
    FileFormatError
        When the chosen flavour cannot hold the images (see :func:`check`).
    """
    import tifffile

    check(path, images)
    flavour = _flavour(path, images)
    with tifffile.TiffWriter(path, bigtiff=_needs_bigtiff(images), imagej=flavour == "imagej",
                             ome=flavour == "ome-tiff") as writer:
        for image in images:
            if flavour == "imagej":
                _write_imagej(writer, image, history)
                continue
            data, colour = _with_alpha(image), _colour(image)
            levels = _levels(data, image.axes, image.extra.get("levels", 1))
            if flavour == "ome-tiff":
                tags = {"metadata": _ome_metadata(image, history),
                        "resolution": _resolution(image)}
            else:
                tags = {"metadata": {"axes": image.axes, "napari-diffuse": history},
                        **_plain_resolution(image)}
            writer.write(data, subifds=len(levels) or None, software="napari-diffuse",
                         **tags, **colour)
            for level in levels:
                writer.write(level, subfiletype=1, metadata=None, software="napari-diffuse",
                             **colour)
