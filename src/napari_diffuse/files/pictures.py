"""PNG and JPEG through Pillow: gray, gray + alpha, RGB, RGBA; 8-bit, and 16-bit gray PNG.

The alpha channel is split out on read and put back untouched on write; palette images are
read as RGB(A). The ``history`` line is written as the PNG ``Software`` text chunk or the
JPEG comment.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from . import FileFormatError, ImageFile

__all__ = ["read", "check", "write"]

_ALPHA_MODES = {"LA": 1, "RGBA": 3, "PA": 1}


def _is_png(path: Path) -> bool:
    return path.suffix.lower() == ".png"


def read(path: Path) -> list[ImageFile]:
    """Read a PNG or JPEG file as one :class:`ImageFile` (``axes`` ``"YX"`` or ``"YXS"``).

    Parameters
    ----------
    path : Path
        The file; Pillow reads it whatever its contents, the suffix (``.png`` or not)
        only sets ``kind``.

    Returns
    -------
    list of ImageFile
        One image as Pillow decodes it: gray ``"YX"``, colour ``"YXS"`` (gray + alpha:
        one sample), its alpha sample in ``alpha``; palette images as RGB(A), 1-bit ones
        as 8-bit gray; ``kind`` ``"png"`` or ``"jpeg"``; no pixel size.

    Raises
    ------
    FileFormatError
        When Pillow cannot identify the contents as an image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as picture:
            picture.load()
            if picture.mode == "P":
                picture = picture.convert("RGBA" if "transparency" in picture.info else "RGB")
            elif picture.mode == "1":
                picture = picture.convert("L")
            mode, array = picture.mode, np.asarray(picture)
    except UnidentifiedImageError:
        raise FileFormatError(f"{path}: is not a PNG or JPEG image (Pillow cannot identify "
                              "its contents)") from None
    kind = "png" if _is_png(path) else "jpeg"
    if array.ndim == 2:
        return [ImageFile(array, "YX", kind=kind)]
    colours = _ALPHA_MODES.get(mode, array.shape[-1])
    alpha = array[..., colours:] if colours < array.shape[-1] else None
    return [ImageFile(np.ascontiguousarray(array[..., :colours]), "YXS", alpha=alpha, kind=kind)]


def check(path: Path, images: list[ImageFile]) -> None:
    """Raise :class:`FileFormatError` unless ``images`` is one 2-D gray, gray + alpha, RGB or
    RGBA image of a dtype the format holds (PNG: uint8, or uint16 gray; JPEG: uint8 gray or
    RGB, no alpha).

    Parameters
    ----------
    path : Path
        The output; PNG when its suffix is ``.png`` (any case), else JPEG.
    images : list of ImageFile
        What would be written.

    Raises
    ------
    FileFormatError
        For several images, an alpha channel in a JPEG, or other axes, channel counts or
        dtypes; saying what to write instead.
    """
    png = _is_png(path)
    fix = "Write a .tif (any dtype, stacks, channels) instead"
    if len(images) != 1:
        raise FileFormatError(f"{path}: a {path.suffix} file holds one image; the input has "
                              f"{len(images)} series. {fix}")
    image = images[0]
    samples = image.data.shape[-1] if image.axes == "YXS" else 1
    alpha = 0 if image.alpha is None else image.alpha.shape[-1]
    colours_ok = image.axes == "YX" or (image.axes == "YXS" and samples in (1, 3)
                                        and alpha <= 1)
    allowed = ((np.uint8,) if not png else (np.uint8, np.uint16) if samples + alpha == 1
               else (np.uint8,))
    if not png and alpha:
        raise FileFormatError(f"{path}: JPEG has no alpha channel; write a .png or .tif")
    if not colours_ok or image.data.dtype not in allowed:
        raise FileFormatError(
            f"{path}: {path.suffix} holds 2-D gray or RGB(A) images of dtype "
            f"{' or '.join(np.dtype(a).name for a in allowed)} for these channels; got "
            f"{image.data.dtype} {image.axes} {image.data.shape}. {fix}")


def write(path: Path, images: list[ImageFile], history: str) -> None:
    """Write one image as PNG or JPEG, alpha put back (see :func:`check` for what fits).

    Parameters
    ----------
    path : Path
        The file to create: PNG when its suffix is ``.png`` (any case), else JPEG
        (quality 95).
    images : list of ImageFile
        One image; its ``alpha`` is put back after the colour samples.
    history : str
        Written as the PNG ``Software`` text chunk, or the JPEG comment (UTF-8).

    Raises
    ------
    FileFormatError
        When the format cannot hold the image (see :func:`check`).
    """
    from PIL import Image, PngImagePlugin

    check(path, images)
    image = images[0]
    data = np.asarray(image.data)
    if image.alpha is not None:
        data = np.concatenate([data, np.asarray(image.alpha, data.dtype)], axis=-1)
    if data.ndim == 3 and data.shape[-1] == 1:
        data = data[..., 0]
    picture = Image.fromarray(data)
    if _is_png(path):
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", history)
        picture.save(path, format="PNG", pnginfo=info)
    else:
        picture.save(path, format="JPEG", quality=95, comment=history.encode("utf-8"))
