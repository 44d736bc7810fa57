"""The ``napari-diffuse`` command: ``run``, ``calibrate``, ``presets``, ``demo``.

Reads and writes TIFF (plain, ImageJ, OME), PNG, JPEG, FITS and OME-Zarr with their
metadata (:mod:`.files`); ``run`` takes several files or globs (:mod:`.batch`). Long runs
show one progress bar. Outputs are written atomically and never over an input or, without
``--overwrite``, over an existing file. Ctrl-C exits with status 130 and leaves no partial
output. ``calibrate`` prints the parameters
it chooses as JSON (:meth:`DiffuseParams.to_json`) on stdout; ``run --calibrate``
calibrates, prints them on stderr, then runs with them. Bad input exits with status 2
and a one-line message naming the problem.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

import numpy as np

from . import batch
from .api import diffuse, resolve_params
from .backends import BACKENDS
from .calibrate import calibrate
from .files import FileFormatError, ImageFile, read_images, write_images
from .files.safe_write import check_target, replace_atomically
from .missing import NAN_POLICIES, started
from .params import FIELDS, DiffuseParams
from .presets import GROUPS, list_presets, load_preset, preset_description
from .user_presets import list_user_presets, load_user_preset, presets_dir, save_user_preset

__all__ = ["main"]


def _read_mask(path: Path | None) -> np.ndarray | None:
    """``--mask``: a mask image file (its first series), True where it is not 0."""
    if path is None:
        return None
    try:
        mask = read_images(path)[0]
    except ValueError as err:
        raise ValueError(f"--mask {err}") from None
    return np.asarray(mask.data) != 0


def _parse_set(items: list[str]) -> dict[str, float | bool]:
    """``--set FIELD=VALUE`` items -> overrides; booleans may be written true/false."""
    fields = {f.name: f for f in FIELDS}
    overrides = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of "
                             f"{list(fields)}")
        if fields[name].kind is bool and value.lower() in ("true", "false"):
            overrides[name] = value.lower() == "true"
            continue
        try:
            overrides[name] = float(value)
        except ValueError:
            raise ValueError(f"--set {item!r}: {value!r} is not a number") from None
        try:  # whole numbers and ranges, named as the shell wrote them
            DiffuseParams().replace(**{name: overrides[name]})
        except ValueError as err:
            raise ValueError(f"--set {item!r}: {err}") from None
    return overrides


class _ProgressBar:
    """A tqdm bar fed by :func:`diffuse`'s ``progress(done, total)`` callback."""

    def __init__(self, description: str, unit: str = "it"):
        from tqdm import tqdm

        self._bar = tqdm(desc=description, unit=unit, disable=None)

    def __call__(self, done: int, total: int) -> None:
        self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        self._bar.close()


class _BatchBar:
    """One tqdm bar for a batch: files done, with the current file's fraction."""

    def __init__(self, files: int):
        from tqdm import tqdm

        self._bar = tqdm(total=files, unit="file", disable=None,
                         bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.2f}/{total} files "
                                    "[{elapsed}<{remaining}]")
        self._done = 0

    def start(self, name: str) -> None:
        self._bar.set_description_str(name)

    def fraction(self, fraction: float) -> None:
        """The current file is ``fraction`` (0..1) done."""
        self._bar.n = self._done + min(max(fraction, 0.0), 1.0)
        self._bar.refresh()

    def finish_file(self) -> None:
        self._done += 1
        self.fraction(0.0)

    def compute(self, write) -> None:
        """Run ``write()``, following dask's tasks (lazy results compute as they write):
        the file's fraction is the tasks finished over the tasks of every computation
        started so far (a pyramid is written level by level), and never goes back."""
        from dask.callbacks import Callback

        bar = self
        count = {"done": 0, "total": 0, "shown": 0.0}

        class Follow(Callback):
            def _start_state(self, _dsk, state):
                count["total"] += sum(len(state[k]) for k in ("ready", "waiting", "running"))

            def _posttask(self, _key, _result, _dsk, _state, _worker_id):
                count["done"] += 1
                count["shown"] = max(count["shown"], count["done"] / max(count["total"], 1))
                bar.fraction(count["shown"])

        with Follow():
            write()

    def close(self) -> None:
        self._bar.close()


def _preset(name: str) -> DiffuseParams:
    """``--preset``: a bundled preset or one of the user's."""
    if name in list_presets():
        return load_preset(name)
    if name in list_user_presets():
        return load_user_preset(name)
    raise ValueError(f"--preset {name!r}: no such preset; bundled: {list_presets()}; yours "
                     f"({presets_dir()}): {list_user_presets()}")


def _read_params(path: Path) -> DiffuseParams:
    """``--params``: a JSON file of parameters (``napari-diffuse calibrate -o``'s)."""
    try:
        return DiffuseParams.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as err:  # JSONDecodeError is a ValueError
        raise ValueError(f"--params {path}: {err}") from None


def _input(args: argparse.Namespace) -> tuple[ImageFile, int | None, np.ndarray | None]:
    """The input's first series, its channel axis (file or --channel-axis) and --mask."""
    images = read_images(args.input)
    if len(images) > 1:
        print(f"napari-diffuse: note: {args.input} has {len(images)} series; calibrating on "
              "the first", file=sys.stderr)
    options = batch.Options(channel_axis=args.channel_axis)
    image = images[0]
    return image, batch.channel_axis_of(image, options, args.input), _read_mask(args.mask)


def _complete(image: ImageFile, channel_axis: int | None, nan: str | None):
    """What calibration sees: with a ``nan`` policy other than "error" (the file's default
    when not given), missing pixels take their nearest finite pixel's values."""
    if (nan or image.nan_default) == "error":
        return image.data
    return started(image.data, channel_axis)


def _calibrate(args: argparse.Namespace, task: str, image,
               channel_axis: int | None, mask: np.ndarray | None) -> DiffuseParams:
    """Calibrate with a progress bar; report the loss reached on stderr."""
    if task == "inpaint" and mask is None:
        raise ValueError("inpainting needs --mask MASK.tif (not 0 where pixels are missing)")
    bar = _ProgressBar(f"calibrating ({task})", unit="eval")
    try:
        params, report = calibrate(image, task, mask=mask, channel_axis=channel_axis,
                                   value_range=args.value_range, backend=args.backend,
                                   region=args.region, progress=bar, extra_output=True)
    finally:
        bar.close()
    print(report.summary(), file=sys.stderr)
    return params


class _BatchFailed(Exception):
    """Some files of a batch failed (each was reported); the others were written."""


def _settings(args: argparse.Namespace, mask: np.ndarray | None):
    """The settings of ``run``: a DiffuseParams, or for --calibrate a function of each
    image (calibrated per file and series, printed on stderr)."""
    overrides = _parse_set(args.set)
    if args.calibrate is not None:
        def calibrated(image: ImageFile, channel_axis: int | None) -> DiffuseParams:
            data = _complete(image, channel_axis, args.nan)
            params = _calibrate(args, args.calibrate, data, channel_axis, mask)
            print(params.to_json(), file=sys.stderr)
            return params.replace(**overrides)
        return calibrated
    if args.params is not None:
        params = _read_params(args.params)
    elif args.preset is not None:
        params = _preset(args.preset)
    else:
        params = DiffuseParams()
    return params.replace(**overrides)


#: The API's words in errors and warnings, and the options that say the same on the
#: command line (applied in order).
_CLI_WORDS = (
    (re.compile(r"\bnan='(\w+)'"), r"--nan \1"),
    (re.compile(r"\bvalue_range='(\w+)'"), r"--value-range \1"),
    (re.compile(r"\bvalue_range=\(([^,()]+), ([^,()]+)\)"), r"--value-range \1 \2"),
    (re.compile(r"\bchannel_axis=(-?\d+|None)"), lambda m: f"--channel-axis {m[1].lower()}"),
    # the InpaintingWarning's advice; elsewhere the field's name is the --set name as is
    (re.compile(r"\b(luminance_threshold=[\w.]+)(?= inpaints nothing)"), r"--set \1"),
    (re.compile(r"calibrate\(image, '(\w+)', mask=\.\.\.\)"), r"--calibrate \1"),
    (re.compile(r"\boverwrite=True\b"), "--overwrite"),
    (re.compile(r"^mask (has|is)\b"), r"--mask \1"),
)


def _cli_words(text: str) -> str:
    """``text`` (an API error or warning) with its argument names as the CLI's options."""
    for pattern, words in _CLI_WORDS:
        text = pattern.sub(words, text)
    return text


def _file_message(source: Path, err: Exception) -> str:
    """One line for a file that failed: the file named first (file errors name theirs), the
    api's advice in CLI words."""
    text = _cli_words(str(err))
    return text if isinstance(err, FileFormatError) else f"{source}: {text}"


def _run(args: argparse.Namespace) -> None:
    if args.region is not None and args.calibrate is None:
        raise ValueError("--region is only used with --calibrate")
    mask = _read_mask(args.mask)
    settings = _settings(args, mask)
    inputs = batch.expand_inputs(args.inputs)
    pairs = batch.plan_outputs(inputs, args.output, overwrite=args.overwrite)
    options = batch.Options(backend=args.backend, value_range=args.value_range, nan=args.nan,
                            channel_axis=args.channel_axis, mask=mask,
                            overwrite=args.overwrite)
    failed: list[str] = []
    bar = _BatchBar(len(pairs))
    try:
        for source, target in pairs:
            bar.start(source.name)
            try:
                results = batch.diffuse_file(source, target, settings, options, inputs=inputs,
                                             progress=bar.fraction, compute=bar.compute)
            except (ValueError, TypeError, OSError, RuntimeError) as err:
                failed.append(_file_message(source, err))
                print(f"napari-diffuse: error: {failed[-1]}", file=sys.stderr)
                continue
            finally:
                bar.finish_file()
            shapes = ", ".join(f"{r.data.dtype} {r.axes} {r.data.shape}" for r in results)
            print(f"wrote {target} ({shapes})")
    finally:
        bar.close()
    if len(pairs) > 1:
        print(f"{len(pairs) - len(failed)} of {len(pairs)} files written"
              + (f", {len(failed)} failed" if failed else ""), file=sys.stderr)
    if failed:
        raise _BatchFailed


def _calibrate_command(args: argparse.Namespace) -> None:
    if args.output is not None:  # before any work: never over an input or an old file
        check_target(args.output, inputs=[p for p in (args.input, args.mask) if p],
                     overwrite=args.overwrite)
    image, channel_axis, mask = _input(args)
    params = _calibrate(args, args.task, _complete(image, channel_axis, args.nan),
                        channel_axis, mask)
    text = params.to_json()
    if args.output is not None:
        replace_atomically(args.output, lambda temporary: temporary.write_text(
            text + "\n", encoding="utf-8"))
        print(f"wrote {args.output}", file=sys.stderr)
    if args.save_preset is not None:
        path = save_user_preset(args.save_preset, params,
                                description=f"calibrated ({args.task}) on {args.input.name}")
        print(f"saved user preset {args.save_preset!r} to {path}", file=sys.stderr)
    print(text)


def _presets(_args: argparse.Namespace) -> None:
    user = list_user_presets()
    width = max(map(len, list_presets() + user))
    for group in GROUPS:
        print(f"{group}:")
        for name in list_presets(group):
            print(f"  {name:<{width}}  {preset_description(name)}")
    if user:
        print(f"yours ({presets_dir()}):")
        for name in user:
            print(f"  {name}")


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


def _calibrate_sample(image: np.ndarray, sample, channel_axis: int | None, backend: str):
    """The demo's calibration of a sample, reported on stdout."""
    params, report = calibrate(image, sample.calibrate, channel_axis=channel_axis,
                               backend=backend, extra_output=True)
    print(f"{sample.description}: {report.summary()}: {params.to_json()}")
    return params


def _demo(args: argparse.Namespace) -> None:
    import imageio.v3 as iio

    from .sample_data import SAMPLES

    rows = []  # one before|after pair of 1:1 crops per sample
    for name, sample in SAMPLES.items():
        before = sample.make()
        channel_axis = -1 if before.ndim == 3 else None
        params, label = resolve_params(preset=sample.preset), sample.preset
        if sample.calibrate is not None:
            params = _calibrate_sample(before, sample, channel_axis, args.backend)
            label = f"calibrated {sample.calibrate}"
        bar = _ProgressBar(f"{sample.description} [{label}]")
        try:
            after = diffuse(before, params, channel_axis=channel_axis, backend=args.backend,
                            progress=bar)
        finally:
            bar.close()
        axes = "YXS" if channel_axis is not None else "YX"
        history = f"napari-diffuse demo: {label}: {params.to_json()}"
        for suffix, data in (("before", before), ("after", after)):
            write_images(args.out / f"{name}-{suffix}.tif", [ImageFile(data, axes)], history,
                         overwrite=True)
        rows.append(np.concatenate([_display(_centre_crop(before)),
                                    _display(_centre_crop(after))], axis=1))
    width = max(r.shape[1] for r in rows)
    picture = np.concatenate(
        [np.pad(r, ((0, 8), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    iio.imwrite(args.out / "before_after.png", picture)
    print(f"wrote {len(SAMPLES)} before/after TIFF pairs and {args.out / 'before_after.png'}")


class _ValueRange(argparse.Action):
    """``--value-range auto | dtype | LO HI`` -> the api's ``value_range``."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) == 1 and values[0] in ("auto", "dtype"):
            setattr(namespace, self.dest, values[0])
            return
        try:
            low, high = (float(v) for v in values)
        except ValueError:
            raise argparse.ArgumentError(
                self, f"expected auto, dtype or two numbers LO HI; got {' '.join(values)!r}"
            ) from None
        setattr(namespace, self.dest, (low, high))


def _axis(text: str) -> int | str:
    """``--channel-axis``: an integer, or "none"."""
    if text == "none":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer axis or 'none'; got {text!r}"
                                         ) from None


def _add_input_options(command: argparse.ArgumentParser) -> None:
    """The options of ``run`` and ``calibrate`` that say how to read the input."""
    command.add_argument("--mask", type=Path, metavar="MASK.tif",
                         help="an image of the input's spatial shape: inpaint where it is "
                              "not 0")
    command.add_argument("--channel-axis", type=_axis, metavar="AXIS|none",
                         help="channel axis (default: from the file)")
    command.add_argument("--value-range", action=_ValueRange, nargs="+",
                         metavar=("auto|dtype|LO", "HI"),
                         help="what maps to 0..1: auto (robust percentiles), dtype (floats "
                              "as stored, integers by their type's range) or LO HI "
                              "(default: dtype, or auto with a warning for data clearly "
                              "not on a 0..1 scale)")
    command.add_argument("--nan", choices=NAN_POLICIES,
                         help="NaN/Inf pixels: error (refuse), inpaint (fill them), keep (fill "
                              "them for the computation, put them back); calibration sees them "
                              "filled unless error; default: keep for FITS, error otherwise")
    command.add_argument("--backend", choices=BACKENDS, default="auto")


def _add_region_option(command: argparse.ArgumentParser, help_text: str) -> None:
    command.add_argument("--region", type=int, nargs=4, metavar=("Y0", "X0", "Y1", "X1"),
                         help=help_text)


_FORMATS = ("TIFF (plain, ImageJ, OME: .tif, .ome.tif), PNG, JPEG, FITS (.fits, .fit, "
            ".fts, .fits.gz; extra 'fits') and OME-Zarr (.zarr, .ome.zarr; extra 'zarr')")
_NAN_HELP = ("FITS frames keep their NaN pixels by default (--nan keep: filled for the "
             "computation, NaN again in the output).")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="napari-diffuse",
        description="darktable's 'diffuse or sharpen' for scientific images.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="diffuse or sharpen image files",
                         description="Diffuse or sharpen image files, metadata kept. "
                                     f"Formats: {_FORMATS}. " + _NAN_HELP)
    run.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="image files or glob patterns (quoted: 'frames/*.fits')")
    _add_input_options(run)
    run.add_argument("-o", "--output", type=Path, required=True,
                     help="output file, or for several inputs (or an existing folder) a "
                          "folder where each output keeps its input's name")
    run.add_argument("--overwrite", action="store_true",
                     help="replace existing outputs (inputs are never overwritten)")
    settings = run.add_mutually_exclusive_group()
    settings.add_argument("--preset", metavar="NAME",
                          help="a bundled or saved preset (see 'napari-diffuse presets')")
    settings.add_argument("--params", type=Path, metavar="PARAMS.json",
                          help="parameters from a JSON file (e.g. 'calibrate -o')")
    settings.add_argument("--calibrate", choices=("denoise", "inpaint"),
                          help="choose the parameters from the input first (inpaint needs "
                               "--mask); they are printed as JSON on stderr")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a parameter, e.g. --set iterations=8 (repeatable)")
    _add_region_option(run, "with --calibrate: the box to calibrate on (default: automatic)")
    run.set_defaults(func=_run)
    cal = sub.add_parser("calibrate", help="choose parameters from an image file; print them "
                                           "as JSON")
    cal.add_argument("input", type=Path, help=f"an image file ({_FORMATS})")
    _add_input_options(cal)
    cal.add_argument("--task", choices=("denoise", "inpaint"), default="denoise",
                     help="denoise (default), or inpaint the pixels of --mask")
    _add_region_option(cal, "the box to calibrate on, in pixels, at least 32x32 (default: "
                            "a representative 256x256 crop)")
    cal.add_argument("-o", "--output", type=Path, metavar="PARAMS.json",
                     help="also write the parameters to this file (for 'run --params'); "
                          "never over the input or the mask")
    cal.add_argument("--overwrite", action="store_true",
                     help="replace an existing --output file")
    cal.add_argument("--save-preset", metavar="NAME",
                     help="also save them as your preset NAME (for 'run --preset' and the "
                          "napari widget)")
    cal.set_defaults(func=_calibrate_command)
    sub.add_parser("presets", help="list the presets").set_defaults(func=_presets)
    demo = sub.add_parser("demo", help="run on the bundled sample data; write before/after")
    demo.add_argument("--out", type=Path, default=Path("napari-diffuse-demo"),
                      help="output folder (default: ./napari-diffuse-demo)")
    demo.add_argument("--backend", choices=BACKENDS, default="auto")
    demo.set_defaults(func=_demo)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Print a warning as one line on stderr (replaces :func:`warnings.showwarning`)."""
    print(f"napari-diffuse: warning: {_cli_words(str(message))}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status: 0, 2 on bad input, a failed file or no
    device (with a one-line message per problem), 130 on Ctrl-C."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning  # one line, no source location
            args.func(args)
    except _BatchFailed:
        return 2
    except (ValueError, TypeError, OSError, RuntimeError) as err:
        print(f"napari-diffuse: error: {_cli_words(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nnapari-diffuse: interrupted; no partial output was left", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
