"""Files in, files out: what ``napari-diffuse run IN... -o OUT`` does, for one file or many.

:func:`plan_outputs` pairs every input with its output and refuses, before any work, what
would lose data (an output that is an input, an existing output without ``overwrite``, two
inputs writing the same output, an unsupported file type). :func:`diffuse_file` reads every
series of one file, checks that the output format can hold them, diffuses each series with
its own channel axis (alpha untouched) and writes the results with the input's metadata,
atomically (:mod:`.files`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from . import __version__, tiling
from .api import diffuse
from .files import FileFormatError, ImageFile, check_writable, format_of, read_images, write_images
from .files.safe_write import check_target
from .params import DiffuseParams

__all__ = ["expand_inputs", "plan_outputs", "diffuse_file", "history_line", "Options",
           "channel_axis_of", "format_of_or_none"]


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Input paths from names or glob patterns (``"frames/*.fits"``), in order, once each.

    Raises
    ------
    FileFormatError
        For a pattern that matches nothing or a name that does not exist.
    """
    paths: list[Path] = []
    for pattern in patterns:
        if Path(pattern).exists():
            matches = [pattern]
        else:
            matches = sorted(glob.glob(pattern))
            if not matches:
                raise FileFormatError(f"{pattern}: no such file"
                                      + (" (the pattern matches nothing)"
                                         if glob.has_magic(pattern) else ""))
        for match in matches:
            if Path(match) not in paths:
                paths.append(Path(match))
    return paths


def _is_folder_target(output: Path, count: int) -> bool:
    if count > 1 or str(output).endswith(("/", "\\")):
        return True
    return output.is_dir() and format_of_or_none(output) != "ome-zarr"


def format_of_or_none(path: Path) -> str | None:
    """:func:`~napari_diffuse.files.format_of`, or None for a name of no known format."""
    try:
        return format_of(path)
    except FileFormatError:
        return None


def plan_outputs(inputs: Sequence[Path], output: Path, *, overwrite: bool = False
                 ) -> list[tuple[Path, Path]]:
    """Pair each input with its output file, checking every pair before any work.

    ``output`` is a file for one input, or a folder (for several inputs, an existing
    folder, or a name ending in ``/``), where each output keeps its input's name.

    Raises
    ------
    FileFormatError
        For an unsupported input or output type, an output that is one of the inputs, an
        existing output without ``overwrite``, two inputs with the same output, or a folder
        target that is a file.
    """
    if _is_folder_target(output, len(inputs)):
        if output.exists() and not output.is_dir():
            raise FileFormatError(f"{output}: is a file; with several inputs -o names a "
                                  "folder (created if missing)")
        pairs = [(source, output / source.name) for source in inputs]
    else:
        pairs = [(inputs[0], output)]
    seen: dict[Path, Path] = {}
    for source, target in pairs:
        format_of(source)
        format_of(target)
        check_target(target, inputs=inputs, overwrite=overwrite)
        key = target.resolve()
        if key in seen:
            raise FileFormatError(f"{target}: both {seen[key]} and {source} would be written "
                                  "there; give them different names or separate runs")
        seen[key] = source
    return pairs


@dataclasses.dataclass(frozen=True)
class Options:
    """How :func:`diffuse_file` runs: the api's arguments shared by every file."""

    backend: str = "auto"
    value_range: object = None
    nan: str | None = None  #: None: each file's default (FITS "keep", others "error")
    channel_axis: int | str | None = None  #: None: from the file; "none": no channel axis
    mask: object = None
    overwrite: bool = False


def history_line(params: DiffuseParams, options: Options, nan: str) -> str:
    """The line written into the output's metadata: tool, version, parameters."""
    settings = json.dumps(params.to_dict(), separators=(", ", ": "))
    return (f"napari-diffuse {__version__} diffuse: {settings} value_range="
            f"{options.value_range!r} nan={nan!r}")


def channel_axis_of(image: ImageFile, options: Options, source: Path) -> int | None:
    """The channel axis of ``image``: ``options.channel_axis`` when given, else the file's.

    Raises
    ------
    FileFormatError
        For a ``--channel-axis`` out of range for the image, naming the option.
    """
    if options.channel_axis is None:
        return image.channel_axis
    if options.channel_axis == "none":
        return None
    ndim = image.data.ndim
    if not -ndim <= options.channel_axis < ndim:
        raise FileFormatError(f"--channel-axis {options.channel_axis}: out of range for "
                              f"{source} (a {ndim}-D image, axes {image.axes}; accepted "
                              f"{-ndim} to {ndim - 1}, or none)")
    return options.channel_axis


def diffuse_file(source: Path, target: Path, params: DiffuseParams | Callable, options: Options,
                 *, inputs: Sequence[Path] = (), progress: Callable[[float], None] | None = None,
                 compute: Callable = None) -> list[ImageFile]:
    """Diffuse every series of ``source`` and write them to ``target``, metadata kept.

    Parameters
    ----------
    source, target : Path
        The input file and the output file (or OME-Zarr folder).
    params : DiffuseParams or callable
        The settings, or ``params(image, channel_axis)`` returning them per series (for
        calibration).
    options : Options
        Backend, value range, ``nan`` policy, channel axis, mask, overwrite.
    inputs : sequence of Path
        Every input of the run: none of them may be overwritten.
    progress : callable, optional
        Called with the fraction of this file done (0..1).
    compute : callable, optional
        ``compute(write)`` runs ``write()`` (the lazy results of dask input are computed
        when written); e.g. a dask progress context. Default: call it.

    Returns
    -------
    list of ImageFile
        The written images.

    Raises
    ------
    FileFormatError
        For a file that cannot be read, an output that cannot hold the images (checked
        before any computation) or a failed write; the previous output, if any, is intact.
    ValueError, TypeError
        From :func:`~napari_diffuse.diffuse` (bad settings, NaN with ``nan="error"``...).
    """
    images = read_images(source)
    check_writable(target, images)
    results, histories = [], []
    for index, image in enumerate(images):
        channel_axis = channel_axis_of(image, options, source)
        settings = params(image, channel_axis) if callable(params) else params
        nan = options.nan or image.nan_default
        lazy = tiling.is_dask(image.data)
        report = None if progress is None or lazy else (
            lambda done, total, i=index: progress((i + done / max(total, 1)) / len(images)))
        result = diffuse(image.data, settings, channel_axis=channel_axis, mask=options.mask,
                         backend=options.backend, value_range=options.value_range, nan=nan,
                         progress=report)
        results.append(image.replace(data=result))
        histories.append(history_line(settings, options, nan))
    # one line when every series ran the same (else, e.g. calibrated per series, each's)
    history = histories[0] if len(set(histories)) == 1 else "; ".join(
        f"series {index}: {line}" for index, line in enumerate(histories))

    def write() -> None:
        write_images(target, results, history, overwrite=options.overwrite, inputs=inputs)

    (compute or (lambda run: run()))(write)
    return results
