"""The ``napari-diffuse`` command: ``run`` on image files, ``presets``, ``demo``.

Reads and writes TIFF (stacks and any dtype, through tifffile), PNG and JPEG
(through imageio). Long runs show a progress bar.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .api import diffuse, resolve_params
from .backends import BACKENDS
from .params import FIELDS
from .presets import list_presets, preset_description

__all__ = ["main", "read_image", "write_image"]

_TIFF = {".tif", ".tiff"}
_PICTURES = {".png", ".jpg", ".jpeg"}


def read_image(path: Path) -> tuple[np.ndarray, int | None]:
    """Read an image file; return ``(array, channel_axis)``.

    The channel axis is found from the file: the samples/channel axis of a TIFF
    series (tifffile's ``S`` or ``C``), the last axis of an RGB(A) PNG or JPEG.

    Raises
    ------
    ValueError
        For a file type other than TIFF, PNG or JPEG.
    """
    suffix = path.suffix.lower()
    if suffix in _TIFF:
        import tifffile

        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
            axes = series.axes
        for letter in "SC":
            if letter in axes:
                return array, axes.index(letter)
        return array, None
    if suffix in _PICTURES:
        import imageio.v3 as iio

        array = iio.imread(path)
        return array, (-1 if array.ndim == 3 else None)
    raise ValueError(f"{path}: unsupported file type {suffix!r}; accepted: .tif, .tiff, .png, "
                     ".jpg, .jpeg")


def write_image(path: Path, array: np.ndarray, channel_axis: int | None) -> None:
    """Write an array as TIFF (any dtype), PNG (uint8/uint16) or JPEG (uint8).

    Raises
    ------
    ValueError
        For an unsupported file type, or a PNG/JPEG of a dtype or shape they cannot hold.
    """
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in _TIFF:
        import tifffile

        rgb = channel_axis is not None and array.ndim == 3 and array.shape[-1] in (3, 4) \
            and channel_axis % array.ndim == 2
        tifffile.imwrite(path, array, photometric="rgb" if rgb else "minisblack")
        return
    if suffix in _PICTURES:
        import imageio.v3 as iio

        allowed = (np.uint8,) if suffix != ".png" else (np.uint8, np.uint16)
        if array.dtype not in allowed or array.ndim not in (2, 3):
            raise ValueError(f"{path}: {suffix} holds 2-D gray or RGB(A) images of dtype "
                             f"{', '.join(np.dtype(a).name for a in allowed)}; got "
                             f"{array.dtype} {array.shape}. Write a .tif instead")
        iio.imwrite(path, array)
        return
    raise ValueError(f"{path}: unsupported file type {suffix!r}; accepted: .tif, .tiff, .png, "
                     ".jpg, .jpeg")


def _parse_set(items: list[str]) -> dict[str, float]:
    fields = {f.name: f for f in FIELDS}
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{list(fields)}")
        try:
            overrides[name] = float(value)  # DiffuseParams checks whole numbers and ranges
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a number") from None
    return overrides


class _ProgressBar:
    """A tqdm bar fed by :func:`diffuse`'s ``progress(done, total)`` callback."""

    def __init__(self, description: str):
        from tqdm import tqdm

        self._bar = tqdm(desc=description, unit="it", disable=None)

    def __call__(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


def _run(args: argparse.Namespace) -> None:
    params = resolve_params(preset=args.preset, **_parse_set(args.set))
    image, channel_axis = read_image(args.input)
    if args.channel_axis is not None:
        channel_axis = None if args.channel_axis == "none" else int(args.channel_axis)
    bar = _ProgressBar(args.input.name)
    try:
        result = diffuse(image, params, channel_axis=channel_axis, backend=args.backend,
                         value_range=args.value_range, progress=bar)
    finally:
        bar.close()
    write_image(args.output, result, channel_axis)
    print(f"wrote {args.output} ({result.dtype} {result.shape})")


def _presets(_args: argparse.Namespace) -> None:
    width = max(map(len, list_presets()))
    for name in list_presets():
        print(f"{name:<{width}}  {preset_description(name)}")


def _display(image: np.ndarray) -> np.ndarray:
    """Linear data -> uint8 RGB for a picture: scaled to its 99.5th percentile, sRGB gamma."""
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
    top = float(np.percentile(rgb, 99.5)) or 1.0
    x = np.clip(rgb / top, 0.0, 1.0)
    x = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    return (x * 255 + 0.5).astype(np.uint8)


def _centre_crop(image: np.ndarray, size: int = 256) -> np.ndarray:
    top, left = (max(0, (n - size) // 2) for n in image.shape[:2])
    return image[top:top + size, left:left + size]


def _demo(args: argparse.Namespace) -> None:
    import imageio.v3 as iio

    from .sample_data import SAMPLES

    rows = []  # one before|after pair of 1:1 crops per sample
    for name, (make, description, preset) in SAMPLES.items():
        before = make()
        channel_axis = -1 if before.ndim == 3 else None
        bar = _ProgressBar(f"{description} [{preset}]")
        try:
            after = diffuse(before, preset=preset, channel_axis=channel_axis,
                            backend=args.backend, progress=bar)
        finally:
            bar.close()
        write_image(args.out / f"{name}-before.tif", before, channel_axis)
        write_image(args.out / f"{name}-after.tif", after, channel_axis)
        rows.append(np.concatenate([_display(_centre_crop(before)),
                                    _display(_centre_crop(after))], axis=1))
    width = max(r.shape[1] for r in rows)
    picture = np.concatenate(
        [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    iio.imwrite(args.out / "before_after.png", picture)
    print(f"wrote {len(SAMPLES)} before/after TIFF pairs and {args.out / 'before_after.png'}")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-diffuse",
        description="darktable's 'diffuse or sharpen' for scientific images.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="diffuse or sharpen an image file")
    run.add_argument("input", type=Path, help="TIFF (stacks too), PNG or JPEG")
    run.add_argument("-o", "--output", type=Path, required=True, help="output file")
    run.add_argument("--preset", choices=list_presets(), metavar="NAME",
                     help="a preset (see 'napari-diffuse presets')")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a parameter, e.g. --set iterations=8 (repeatable)")
    run.add_argument("--channel-axis", metavar="AXIS|none",
                     help="channel axis (default: from the file)")
    run.add_argument("--value-range", type=float, nargs=2, metavar=("LO", "HI"),
                     help="map LO..HI to 0..1 (default: dtype range for integers)")
    run.add_argument("--backend", choices=BACKENDS, default="auto")
    run.set_defaults(func=_run)
    sub.add_parser("presets", help="list the presets").set_defaults(func=_presets)
    demo = sub.add_parser("demo", help="run on the bundled sample data; write before/after")
    demo.add_argument("--out", type=Path, default=Path("napari-diffuse-demo"),
                      help="output folder (default: ./napari-diffuse-demo)")
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (2 on bad input or no device, with a message)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"napari-diffuse: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
