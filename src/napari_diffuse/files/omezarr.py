"""OME-Zarr (NGFF) images through ``ome-zarr`` and ``zarr`` (the ``zarr`` extra), lazily.

Reading gives one :class:`ImageFile` whose ``data`` is the full-resolution level of the
multiscale pyramid as a dask array (nothing is loaded); axes ``t``, ``c``, ``z``, ``y``,
``x`` become ``T``, ``C``, ``Z``, ``Y``, ``X`` (other names by their NGFF type), ``scale``
and ``units`` come from the axes and the level-0 ``scale`` transform, channel names from
the ``omero`` metadata. ``extra`` carries (keys ``ngff_*``) the level count, the downscale
factor per axis, the level-0 translation, the NGFF version, the image name, the ``omero``
block and the ``labels`` folder.
Plates, wells and ``bioformats2raw`` collections are refused: open one of their images.

Writing makes the same NGFF version (0.5, zarr v3, for other inputs) with the same axes,
units, scale, translation and channel names, the input's ``labels`` copied unchanged and
``attrs["napari-diffuse"]["history"]``. Level 0 is stored chunk by chunk with
:func:`dask.array.store` through dask's current scheduler (a ``dask.distributed`` client
when one is active), then each smaller level is the block mean of the level just written,
read back from disk: the result is computed once and never held whole in memory. The
pyramid has the input's level count and factors, else factor 2 in ``Y`` and ``X`` until the
larger side is at most 256 pixels (at least 2 levels).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from . import FileFormatError, ImageFile, MissingExtraError
from .units import long_name

__all__ = ["read", "check", "write"]

INSTALL = "pip install 'napari-diffuse[zarr]'"
#: The default pyramid halves Y and X until the larger side is at most this.
SMALLEST_LEVEL = 256
#: Chunk side along Y and X for images that come without chunks (numpy data).
CHUNK_SIDE = 1024

_ORDER = "TCZYX"  # NGFF's axis order; colour samples (S) are a channel axis
_TYPES = {"T": "time", "C": "channel", "S": "channel", "Z": "space", "Y": "space",
          "X": "space"}
_COLLECTIONS = {"plate": "a plate", "well": "a well", "bioformats2raw.layout":
                "a bioformats2raw collection"}


def _libraries(path: Path):
    try:
        import dask.array as da
        import ome_zarr.format
        import ome_zarr.io
        import ome_zarr.reader
        import ome_zarr.writer
        import zarr
    except ImportError:
        raise MissingExtraError(f"{path}: OME-Zarr needs ome-zarr and zarr; install them "
                                f"with: {INSTALL}") from None
    return (da, zarr, ome_zarr.format, ome_zarr.io, ome_zarr.reader,
            ome_zarr.writer)


def read(path: Path) -> list[ImageFile]:
    """Open an OME-Zarr image lazily.

    Parameters
    ----------
    path : Path
        The ``.zarr`` / ``.ome.zarr`` folder of one multiscale image.

    Returns
    -------
    list of ImageFile
        One image: level 0 as a dask array, ``kind="ome-zarr"``.

    Raises
    ------
    MissingExtraError
        When ome-zarr or zarr is not installed.
    FileFormatError
        For a folder that is not Zarr, or not an OME-Zarr image (a plain Zarr, a plate, a
        collection), or holds several multiscales.
    """
    _, _, _, io, reader, _ = _libraries(path)
    location = io.parse_url(str(path))
    if location is None:
        raise FileFormatError(f"{path}: not a Zarr folder")
    attrs = location.root_attrs
    if "multiscales" not in attrs:
        kind = next((name for key, name in _COLLECTIONS.items() if key in attrs), None)
        if kind:
            raise FileFormatError(f"{path}: is {kind}, not one image; open one of its "
                                  "images instead (e.g. its 0 subfolder)")
        raise FileFormatError(f"{path}: holds no OME-Zarr image (no multiscales metadata)")
    if len(attrs["multiscales"]) > 1:
        raise FileFormatError(f"{path}: holds {len(attrs['multiscales'])} multiscale images "
                              "in one group; only folders of one image are handled")
    multiscale = attrs["multiscales"][0]
    node = next(iter(reader.Reader(location)()))
    levels = node.data
    names = [axis if isinstance(axis, str) else axis["name"]
             for axis in multiscale.get("axes", "tczyx"[-levels[0].ndim:])]
    axis_info = [{} if isinstance(axis, str) else axis for axis in multiscale.get("axes", ())]
    axes = _letters(names, axis_info)
    transforms = multiscale["datasets"][0].get("coordinateTransformations", [])
    scale = _transform(transforms, "scale", axes)
    units = {letter: axis["unit"] for letter, axis in zip(axes, axis_info, strict=False)
             if axis.get("unit") and letter not in "CQ"}
    extra = {
        "ngff_levels": len(levels),
        "ngff_downscale": _downscale(levels, axes),
        "ngff_translation": {letter: shift for letter, shift in
                             _transform(transforms, "translation", axes).items() if shift},
        "ngff_version": attrs.get("version") or multiscale.get("version"),
        "ngff_name": multiscale.get("name"),
        "ngff_omero": attrs.get("omero"),
    }
    if (path / "labels").is_dir():
        extra["ngff_labels"] = path / "labels"
    channels = (attrs.get("omero") or {}).get("channels") or []
    size = levels[0].shape[axes.index("C")] if "C" in axes else None
    labels = tuple(str(c.get("label", f"channel_{i}")) for i, c in enumerate(channels))
    return [ImageFile(data=levels[0], axes=axes, scale=scale, units=units,
                      channel_names=labels if labels and len(labels) == size else None,
                      extra=extra, kind="ome-zarr")]


def _letters(names: list[str], axis_info: list[dict]) -> str:
    letters = ""
    for n, name in enumerate(names):
        kind = axis_info[n].get("type") if n < len(axis_info) else None
        letter = name.upper() if name.upper() in _ORDER else {
            "time": "T", "channel": "C", "space": "Z"}.get(kind, "Q")
        letters += "Q" if letter in letters else letter
    return letters


def _transform(transforms: list[dict], kind: str, axes: str) -> dict[str, float]:
    values = next((t[kind] for t in transforms if t.get("type") == kind), None) or ()
    return {letter: float(value) for letter, value in zip(axes, values, strict=False)
            if letter not in "CQ"}


def _downscale(levels: list, axes: str) -> dict[str, int]:
    if len(levels) < 2:
        return {}
    ratios = (round(big / small) for big, small in zip(levels[0].shape, levels[1].shape,
                                                       strict=True))
    return {letter: ratio for letter, ratio in zip(axes, ratios, strict=True) if ratio > 1}


def check(path: Path, images: list[ImageFile]) -> None:
    """Check that an OME-Zarr can hold ``images``: one image with axes from ``TCZYX``.

    Parameters
    ----------
    path : Path
        The output folder, named in the messages.
    images : list of ImageFile
        What would be written; a samples axis ``S`` counts as the channel axis.

    Raises
    ------
    MissingExtraError
        When ome-zarr or zarr is not installed.
    FileFormatError
        For several images, or axes NGFF cannot name (``Q``, repeated letters, both a
        channel and a samples axis).
    """
    _libraries(path)
    if len(images) != 1:
        raise FileFormatError(f"{path}: an OME-Zarr holds one image, not {len(images)}; "
                              "write each to its own .ome.zarr, or all to a TIFF")
    axes = images[0].axes
    if len(set(axes)) != len(axes) or set(axes) - set(_TYPES) or {"C", "S"} <= set(axes):
        raise FileFormatError(f"{path}: OME-Zarr cannot name the axes {axes!r}: it takes at "
                              "most one each of time, channel, z, y, x")


def write(path: Path, images: list[ImageFile], history: str) -> None:
    """Write the image as an OME-Zarr with a pyramid, chunk by chunk through dask.

    Parameters
    ----------
    path : Path
        The folder to create.
    images : list of ImageFile
        One image (see :func:`check`); a numpy ``data`` is chunked, a dask one is
        computed chunk by chunk with dask's current scheduler.
    history : str
        Stored as ``attrs["napari-diffuse"]["history"]`` of the image group.

    Raises
    ------
    MissingExtraError
        When ome-zarr or zarr is not installed.
    """
    da, zarr, ngff, _, _, writer = _libraries(path)
    image = images[0]
    data, axes = _ngff_layout(da, image)
    version = image.extra.get("ngff_version")
    fmt = ngff.format_from_version(version) if version in ("0.4", "0.5") else ngff.FormatV05()
    group = zarr.open_group(str(path), mode="w", zarr_format=fmt.zarr_format)
    factors = {axes.index(letter): factor for letter, factor in
               (image.extra.get("ngff_downscale") or {"Y": 2, "X": 2}).items() if letter in axes}
    names = [letter.lower() if letter != "S" else "c" for letter in axes]
    count = _level_count(data.shape, factors, image.extra.get("ngff_levels"))
    _write_levels(da, group, data, factors, count,
                  {"dimension_names": names} if fmt.zarr_format == 3 else {})
    scale = [image.scale.get(letter, 1.0) for letter in axes]
    shift = [image.extra.get("ngff_translation", {}).get(letter, 0.0) for letter in axes]
    datasets = [{"path": f"s{k}", "coordinateTransformations": [
        {"type": "scale", "scale": [s * factors.get(i, 1) ** k for i, s in enumerate(scale)]},
        {"type": "translation", "translation": [
            t + (factors.get(i, 1) ** k - 1) / 2 * s
            for i, (s, t) in enumerate(zip(scale, shift, strict=True))]}]} for k in range(count)]
    axes_metadata = [_axis(name, letter, image.units.get(letter))
                     for name, letter in zip(names, axes, strict=True)]
    writer.write_multiscales_metadata(group, datasets, fmt=fmt, axes=axes_metadata,
                                      name=image.extra.get("ngff_name") or "image")
    channel = next((i for i, letter in enumerate(axes) if letter in "CS"), None)
    omero = _omero(image, None if channel is None else data.shape[channel])
    if omero:
        writer.add_metadata(group, {"omero": omero})
    group.attrs["napari-diffuse"] = {"history": history}
    labels = image.extra.get("ngff_labels")
    if labels and version == fmt.version and Path(labels).is_dir():
        shutil.copytree(labels, path / "labels")


def _ngff_layout(da, image: ImageFile):
    """``data`` (alpha put back) as a dask array in NGFF's axis order, and its letters."""
    data = image.data
    if not isinstance(data, da.Array):
        data = da.from_array(data, chunks=[CHUNK_SIDE if letter in "YX" else 1
                                           for letter in image.axes])
    if image.alpha is not None:
        data = da.concatenate([data, da.asarray(image.alpha)], axis=image.channel_axis)
    axes = "".join(letter if letter != "S" else "C" for letter in image.axes)
    order = sorted(range(len(axes)), key=lambda i: _ORDER.index(axes[i]))
    letters = "".join(image.axes[i] for i in order)
    data = data.transpose(order)
    return data.rechunk(data.chunksize), letters


def _write_levels(da, group, data, factors: dict[int, int], count: int, options: dict) -> None:
    """Store level 0 chunk by chunk, then each level as the block mean of the one before,
    read back from disk (so the result is computed once)."""
    target = None
    for k in range(count):
        level = data if target is None else _block_mean(da, da.from_zarr(target), factors)
        chunks = tuple(min(c, s) for c, s in zip(data.chunksize, level.shape, strict=True))
        target = group.create_array(f"s{k}", shape=level.shape, dtype=level.dtype,
                                    chunks=chunks, **options)
        da.store(level.rechunk(chunks), target, lock=False)


def _level_count(shape: tuple, factors: dict[int, int], requested: int | None) -> int:
    """The input's level count if it had a pyramid, else down to SMALLEST_LEVEL (at least
    2 levels); never a level of size 0."""
    count = 1
    while factors and all(shape[i] // f ** count for i, f in factors.items()):
        largest = max(shape[i] // f ** (count - 1) for i, f in factors.items())
        if (requested or 0) > 1:
            if count >= requested:
                break
        elif count >= 2 and largest <= SMALLEST_LEVEL:
            break
        count += 1
    return count


def _block_mean(da, level, factors: dict[int, int]):
    mean = da.coarsen(np.mean, level, factors, trim_excess=True)
    if np.issubdtype(level.dtype, np.integer):
        mean = da.round(mean)
    return mean.astype(level.dtype)


def _axis(name: str, letter: str, unit: str | None) -> dict:
    axis = {"name": name, "type": _TYPES[letter]}
    if unit and letter != "S" and letter != "C":
        axis["unit"] = long_name(unit)
    return axis


def _omero(image: ImageFile, size: int | None) -> dict | None:
    """The input's omero block with the channel names set, or one made from the names."""
    omero = dict(image.extra.get("ngff_omero") or {})
    channels = [dict(channel) for channel in omero.get("channels", [])]
    names = list(image.channel_names or ())
    if size is None or not (channels or names):
        return omero or None
    names += ["alpha"] * (size - len(names)) if image.alpha is not None else []
    if len(channels) != size:
        channels = [{"active": True, "color": "FFFFFF"} for _ in range(size)]
    for channel, name in zip(channels, names, strict=False):
        channel["label"] = name
    omero["channels"] = channels
    return omero
