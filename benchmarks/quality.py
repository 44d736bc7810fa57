"""Restoration quality against ground truth: napari-diffuse beside the peers a scientist would use.

Usage (from the repository root, with the ``bench`` extra: ``pip install -e '.[bench]'``)::

    python benchmarks/quality.py                  # 4 images x 2 photon levels, 8 inpainting cases
    python benchmarks/quality.py --quick          # cell at 10 photons only: a smoke check
    python benchmarks/quality.py --backend numpy --out /tmp/quality

Ground truth: 256 x 256 crops (fixed offsets, :data:`SOURCES`) of images bundled with
scikit-image (no download), colour converted to grey, min-max scaled to 0..1.

*Denoising*: Poisson-Gaussian noise as in fluorescence and astronomy,
``y = Poisson(x * peak) / peak + N(0, 0.01**2)`` for ``peak`` 10 and 100 photons (at the
brightest pixel), fixed seeds. Methods: the noisy input; darktable's three ``denoise``
presets; the bundled science presets whose name starts with ``fluorescence`` or
``astro: denoise``; ``napari_diffuse.calibrate`` then ``diffuse`` (seconds include the
calibration); scikit-image's total variation (Chambolle), wavelet (BayesShrink) and
non-local means, each (a) calibrated self-supervised by
``skimage.restoration.calibrate_denoiser`` on the noisy image alone (the chosen parameters
are applied to the plain denoiser, which scores higher than the J-invariant function it
returns) and (b) an *oracle*: the best PSNR against the truth over the same grid (seconds:
one run with the chosen parameters); BM3D after a generalised Anscombe transform with the
true noise model (gain ``1/peak``, read noise 0.01).

*Inpainting* of the clean image: ``holes`` (random discs and rectangles 3-12 px wide, about
5 % of the pixels, set to 0) and ``rows`` (dead rows every 17th row plus a 2-row gap, set to
uniform random values). Methods: the damaged input; ``calibrate(task="inpaint")`` then
``diffuse``; the ``inpaint highlights`` preset and the science presets whose name starts
with ``fill`` or ``gap``, with the mask; ``skimage.restoration.inpaint_biharmonic``. Scores:
PSNR inside the mask and over the whole image, and ``unfilled``: the fraction of mask pixels
whose error exceeds 0.2.

All PSNR/SSIM use ``data_range=1`` against the truth (``skimage.metrics``). Seconds are
wall time on this machine after a warm-up of the diffuse solver (OpenCL kernels built).
Prints one markdown table per task and the issue's targets, and writes ``quality.json``
(every number) and ``quality_before_after.png`` into ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import skimage
from skimage import color, data
from skimage.metrics import structural_similarity
from skimage.restoration import (
    calibrate_denoiser,
    denoise_nl_means,
    denoise_tv_chambolle,
    denoise_wavelet,
    estimate_sigma,
    inpaint_biharmonic,
)

import napari_diffuse
from napari_diffuse import diffuse
from napari_diffuse.resources import data_dir

SIZE = 256
PEAKS = (10, 100)
READ_NOISE = 0.01
SEED = 8  # issue 8
UNFILLED_ERROR = 0.2
HOLE_FRACTION = 0.05
ROW_PERIOD = 17
DARKTABLE_DENOISE = ("denoise: fine", "denoise: medium", "denoise: coarse")
SCIENCE_PREFIXES = {"denoise": ("fluorescence", "astro: denoise"), "inpaint": ("fill", "gap")}
FIGURE_CASES = ("cell/10", "hubble/10")
DEFAULT_OUT = Path(__file__).resolve().parent / "results"


@dataclasses.dataclass(frozen=True)
class Source:
    """A bundled scikit-image picture and the crop taken from it.

    Attributes
    ----------
    name : str
        Short name used in case labels.
    load : callable
        Returns the full picture (grey or RGB, any dtype).
    origin : tuple of int
        Top-left (row, column) of the ``SIZE`` x ``SIZE`` crop.
    gamma : float
        Display gamma for the figure only (astro frames are shown with a square root).
    """

    name: str
    load: Callable[[], np.ndarray]
    origin: tuple[int, int]
    gamma: float = 1.0


#: The ground truths: crops chosen to hold structure (the cell and its halo; craters and a
#: ridge; a field of galaxies; the cameraman's face, hand and camera).
SOURCES = (
    Source("cell", data.cell, (224, 294)),
    Source("moon", data.moon, (48, 96)),
    Source("hubble", data.hubble_deep_field, (256, 352), gamma=0.5),
    Source("camera", data.camera, (64, 160)),
)


@dataclasses.dataclass
class Case:
    """One restoration problem with its ground truth.

    Attributes
    ----------
    task : {"denoise", "inpaint"}
    label : str
        ``image/peak`` or ``image/mask kind``.
    truth, observed : ndarray
        Clean float64 image in 0..1; the degraded float32 input every method receives.
    mask : ndarray of bool, optional
        Pixels to inpaint (inpainting only).
    peak : float, optional
        Photons at the brightest pixel (denoising only).
    gamma : float
        Display gamma of the source.
    """

    task: str
    label: str
    truth: np.ndarray
    observed: np.ndarray
    mask: np.ndarray | None = None
    peak: float | None = None
    gamma: float = 1.0


@dataclasses.dataclass(frozen=True)
class Method:
    """A restoration method: ``run(case) -> (output, info)``.

    ``info`` is a JSON-able dict (chosen parameters, loss...); a ``"seconds"`` entry
    replaces the measured wall time (oracles report one run, not their search on the truth).
    ``kind`` tags the rows the targets compare: ``input``, ``ours``, ``preset``,
    ``calibrated``, ``oracle``, ``bm3d``, ``peer``.
    """

    name: str
    kind: str
    run: Callable[[Case], tuple[np.ndarray, dict]]


# ---------------------------------------------------------------- data


def ground_truth(source: Source) -> np.ndarray:
    """Return the source's crop as grey float64, min-max scaled to 0..1."""
    image = source.load()
    if image.ndim == 3:
        image = color.rgb2gray(image)
    row, col = source.origin
    crop = np.asarray(image[row:row + SIZE, col:col + SIZE], dtype=np.float64)
    if crop.shape != (SIZE, SIZE):
        raise ValueError(f"crop of {source.name} at {source.origin} is {crop.shape}")
    return (crop - crop.min()) / (crop.max() - crop.min())


def poisson_gaussian(truth: np.ndarray, peak: float, seed: Sequence[int]) -> np.ndarray:
    """Return ``Poisson(truth * peak) / peak + N(0, READ_NOISE**2)`` as float32."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(truth * peak)
    return (counts / peak + rng.normal(0.0, READ_NOISE, truth.shape)).astype(np.float32)


def hole_mask(shape: tuple[int, int], seed: Sequence[int]) -> np.ndarray:
    """Random discs and rectangles 3-12 px wide until ``HOLE_FRACTION`` of pixels are covered."""
    rng = np.random.default_rng(seed)
    rows, cols = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    while mask.mean() < HOLE_FRACTION:
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        if rng.random() < 0.5:
            radius = rng.uniform(1.5, 6.0)
            mask |= (rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2
        else:
            height, width = rng.integers(3, 13, size=2)
            mask[r:r + height, c:c + width] = True
    return mask


def dead_rows_mask(shape: tuple[int, int], seed: Sequence[int]) -> np.ndarray:
    """Every ``ROW_PERIOD``-th row from a random offset, plus one random 2-row gap."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(shape, dtype=bool)
    mask[rng.integers(0, ROW_PERIOD)::ROW_PERIOD] = True
    gap = rng.integers(2, shape[0] - 3)
    mask[gap:gap + 2] = True
    return mask


def damage(truth: np.ndarray, mask: np.ndarray, kind: str, seed: Sequence[int]) -> np.ndarray:
    """Return the truth with the mask's pixels lost: 0 for holes, uniform noise for dead rows."""
    fill = np.random.default_rng(seed).random(truth.shape) if kind == "rows" else 0.0
    return np.where(mask, fill, truth).astype(np.float32)


def make_cases(sources: Sequence[Source], peaks: Sequence[float]) -> list[Case]:
    """Build every denoising case, then every inpainting case (deterministic seeds)."""
    cases = []
    truths = {s.name: ground_truth(s) for s in sources}
    for index, source in enumerate(sources):
        for peak in peaks:
            observed = poisson_gaussian(truths[source.name], peak, (SEED, index, int(peak)))
            cases.append(Case("denoise", f"{source.name}/{peak:g}", truths[source.name],
                              observed, peak=float(peak), gamma=source.gamma))
    for index, source in enumerate(sources):
        for number, (kind, make_mask) in enumerate((("holes", hole_mask),
                                                    ("rows", dead_rows_mask))):
            mask = make_mask((SIZE, SIZE), (SEED, index, 1000 + number))
            observed = damage(truths[source.name], mask, kind, (SEED, index, 2000 + number))
            cases.append(Case("inpaint", f"{source.name}/{kind}", truths[source.name],
                              observed, mask=mask, gamma=source.gamma))
    return cases


# ---------------------------------------------------------------- scoring


def psnr(truth: np.ndarray, output: np.ndarray, where: np.ndarray | None = None) -> float:
    """PSNR in dB for a data range of 1, over the whole image or only ``where``."""
    error = np.asarray(output, np.float64) - truth
    if where is not None:
        error = error[where]
    mse = float(np.mean(error ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def score(case: Case, output: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM against the truth; for inpainting also PSNR in the mask and ``unfilled``."""
    output = np.asarray(output, np.float64)
    scores = {"psnr": psnr(case.truth, output),
              "ssim": float(structural_similarity(case.truth, output, data_range=1.0))}
    if case.mask is not None:
        scores["psnr_mask"] = psnr(case.truth, output, case.mask)
        scores["unfilled"] = float(np.mean(np.abs(output - case.truth)[case.mask] >
                                           UNFILLED_ERROR))
    return scores


def run_method(method: Method, cases: Sequence[Case]) -> tuple[dict, dict]:
    """Run ``method`` on every case.

    Returns
    -------
    records : dict
        ``label -> {scores..., "seconds", "info"}``, or ``{"error": message}`` when the method
        raised on that case.
    outputs : dict
        ``label -> output image`` (for the figure).
    """
    records, outputs = {}, {}
    for case in cases:
        start = time.perf_counter()
        try:
            output, info = method.run(case)
        except Exception as error:  # a failing method is a result too: reported, not fatal
            records[case.label] = {"error": f"{type(error).__name__}: {error}"}
            print(f"  {method.name} on {case.label} failed: {error}", file=sys.stderr)
            continue
        seconds = info.pop("seconds", time.perf_counter() - start)
        records[case.label] = {**score(case, output), "seconds": seconds, "info": info}
        outputs[case.label] = output
    return records, outputs


# ---------------------------------------------------------------- our methods


def identity(case: Case) -> tuple[np.ndarray, dict]:
    """The degraded input itself (the baseline)."""
    return case.observed, {"seconds": 0.0}


def preset_method(name: str, backend: str, group: str) -> Method:
    """``diffuse(observed, preset=name, mask=case.mask)``; ``group`` labels the row."""
    def run(case: Case) -> tuple[np.ndarray, dict]:
        return diffuse(case.observed, preset=name, mask=case.mask, backend=backend), {}

    return Method(f"{group} preset: {name}", "preset", run)


def calibrated_method(calibrate: Callable, backend: str) -> Method:
    """``napari_diffuse.calibrate`` on the degraded image, then ``diffuse`` with the result."""
    def run(case: Case) -> tuple[np.ndarray, dict]:
        params, report = calibrate(case.observed, task=case.task, mask=case.mask,
                                   backend=backend, extra_output=True)
        output = diffuse(case.observed, params, mask=case.mask, backend=backend)
        return output, {"params": params.to_dict(), "loss": float(report.loss),
                        "evaluations": getattr(report, "evaluations", None)}

    return Method("ours: calibrate + diffuse", "ours", run)


def science_presets(prefixes: tuple[str, ...]) -> list[str]:
    """Names of the bundled presets with ``"group": "science"`` whose name starts with a prefix.

    Read from the files in ``presets/``, so that an older package without groups gives none.
    """
    names = []
    for path in sorted(data_dir("presets").glob("*.json")):
        content = json.loads(path.read_text(encoding="utf-8"))
        if content.get("group") == "science" and content["name"].startswith(prefixes):
            names.append(content["name"])
    return names


# ---------------------------------------------------------------- scikit-image peers


@dataclasses.dataclass(frozen=True)
class Peer:
    """A scikit-image denoiser and the parameter grid it is tuned over.

    ``grid(noisy)`` may use the noisy image (a noise estimate), never the truth.
    """

    name: str
    function: Callable[..., np.ndarray]
    grid: Callable[[np.ndarray], dict[str, list]]


def _tv_grid(noisy: np.ndarray) -> dict[str, list]:
    return {"weight": [float(w) for w in np.geomspace(0.01, 1.0, 15)]}


def _wavelet_grid(noisy: np.ndarray) -> dict[str, list]:
    sigma = float(estimate_sigma(noisy))
    return {"sigma": [f * sigma for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)],
            "wavelet": ["db1", "db2", "sym4"], "method": ["BayesShrink"],
            "mode": ["soft"], "rescale_sigma": [True]}


def _nl_means_grid(noisy: np.ndarray) -> dict[str, list]:
    sigma = float(estimate_sigma(noisy))
    return {"h": [f * sigma for f in (0.25, 0.4, 0.6, 0.8, 1.0, 1.3, 1.7)], "sigma": [sigma],
            "patch_size": [5, 7], "patch_distance": [6], "fast_mode": [True]}


#: Grids (sigma: ``estimate_sigma`` of the noisy image): TV 15 weights 0.01..1; wavelet
#: 7 sigmas (0.25..3 x sigma) x 3 wavelets; NL-means 7 h (0.25..1.7 x sigma) x 2 patch sizes,
#: with a search distance of 6 (scikit-image's default is 11: limited for the 2-core run time).
PEERS = (
    Peer("TV Chambolle", denoise_tv_chambolle, _tv_grid),
    Peer("wavelet BayesShrink", denoise_wavelet, _wavelet_grid),
    Peer("NL-means", denoise_nl_means, _nl_means_grid),
)


def _grid_points(grid: dict[str, list]) -> list[dict]:
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def calibrated_peer(peer: Peer) -> Method:
    """The peer tuned by ``calibrate_denoiser`` (self-supervised, J-invariant loss)."""
    def run(case: Case) -> tuple[np.ndarray, dict]:
        noisy = case.observed.astype(np.float64)
        _, (tested, losses) = calibrate_denoiser(noisy, peer.function, peer.grid(noisy),
                                                 extra_output=True)
        best = tested[int(np.argmin(losses))]
        return peer.function(noisy, **best), {"params": best, "loss": float(np.min(losses))}

    return Method(f"skimage {peer.name} (calibrate_denoiser)", "calibrated", run)


def oracle_peer(peer: Peer) -> Method:
    """The peer at its best PSNR against the truth over the grid: an upper bound, not a method."""
    def run(case: Case) -> tuple[np.ndarray, dict]:
        noisy = case.observed.astype(np.float64)
        best = (-np.inf, None, None, None)
        for point in _grid_points(peer.grid(noisy)):
            start = time.perf_counter()
            output = peer.function(noisy, **point)
            seconds = time.perf_counter() - start
            quality = psnr(case.truth, output)
            if quality > best[0]:
                best = (quality, output, point, seconds)
        return best[1], {"params": best[2], "seconds": best[3]}

    return Method(f"skimage {peer.name} (oracle: tuned on truth)", "oracle", run)


def biharmonic(case: Case) -> tuple[np.ndarray, dict]:
    """``skimage.restoration.inpaint_biharmonic`` with the mask."""
    return inpaint_biharmonic(case.observed.astype(np.float64), case.mask), {}


# ---------------------------------------------------------------- BM3D


def gat_forward(y: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """Generalised Anscombe transform for Poisson-Gaussian noise.

    For ``y = gain * Poisson(x / gain) + N(0, sigma**2)`` returns
    ``2 * sqrt(max(y / gain + 3/8 + (sigma / gain)**2, 0))``, whose noise is close to
    unit-variance Gaussian (Murtagh, Starck & Bijaoui, *Image restoration with noise
    suppression using a multiresolution support*, A&AS 112, 1995; in the normalised form of
    Makitalo & Foi, *Optimal inversion of the generalized Anscombe transformation for
    Poisson-Gaussian noise*, IEEE TIP 22(1), 91-103, 2013).
    """
    scaled_sigma = sigma / gain
    return 2.0 * np.sqrt(np.maximum(np.asarray(y, np.float64) / gain + 0.375 +
                                    scaled_sigma ** 2, 0.0))


def gat_inverse(d: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """Closed-form approximation of the exact unbiased inverse of :func:`gat_forward`.

    Makitalo & Foi (IEEE TIP 22(1), 2013, and their ``GenAnscombe_inverse_closed_form``):
    ``x / gain = D**2/4 + sqrt(3/2)/4 D**-1 - 11/8 D**-2 + 5/8 sqrt(3/2) D**-3 - 1/8
    - (sigma / gain)**2``, clipped at 0. Below ``D = sqrt(3/2)``, where that expression is 0
    for ``sigma = 0`` and its negative powers would blow up, the result is 0.
    """
    root = np.sqrt(1.5)
    d = np.maximum(np.asarray(d, np.float64), root)
    x = (0.25 * d ** 2 + 0.25 * root / d - 11.0 / 8.0 / d ** 2 + 5.0 / 8.0 * root / d ** 3
         - 0.125 - (sigma / gain) ** 2)
    return gain * np.maximum(x, 0.0)


def bm3d_gat(case: Case) -> tuple[np.ndarray, dict]:
    """BM3D (sigma 1 after the GAT, rescaled to 0..1) with the true noise model, inverted."""
    import bm3d

    gain = 1.0 / case.peak
    transformed = gat_forward(case.observed, gain, READ_NOISE)
    low, high = float(transformed.min()), float(transformed.max())
    estimate = bm3d.bm3d((transformed - low) / (high - low), sigma_psd=1.0 / (high - low))
    return gat_inverse(estimate * (high - low) + low, gain, READ_NOISE), {}


# ---------------------------------------------------------------- method lists


def denoise_methods(backend: str, calibrate: Callable | None) -> list[Method]:
    """Every denoising row, in table order."""
    methods = [Method("noisy input", "input", identity)]
    methods += [preset_method(name, backend, "darktable") for name in DARKTABLE_DENOISE]
    methods += [preset_method(name, backend, "science") for name in science_presets(
        SCIENCE_PREFIXES["denoise"])]
    if calibrate is not None:
        methods.append(calibrated_method(calibrate, backend))
    methods += [calibrated_peer(peer) for peer in PEERS]
    methods += [oracle_peer(peer) for peer in PEERS]
    methods.append(Method("BM3D + GAT (true noise model)", "bm3d", bm3d_gat))
    return methods


def inpaint_methods(backend: str, calibrate: Callable | None) -> list[Method]:
    """Every inpainting row, in table order."""
    methods = [Method("damaged input", "input", identity)]
    if calibrate is not None:
        methods.append(calibrated_method(calibrate, backend))
    methods.append(preset_method("inpaint highlights", backend, "darktable"))
    methods += [preset_method(name, backend, "science") for name in science_presets(
        SCIENCE_PREFIXES["inpaint"])]
    methods.append(Method("skimage inpaint_biharmonic", "peer", biharmonic))
    return methods


# ---------------------------------------------------------------- reporting


def _mean(records: dict, key: str) -> float:
    values = [r[key] for r in records.values() if key in r]
    return float(np.mean(values)) if values else float("nan")


def summary(records: dict) -> dict[str, float]:
    """Means over cases of every score, and the median seconds."""
    keys = ("psnr", "ssim", "psnr_mask", "unfilled")
    result = {f"mean_{k}": _mean(records, k) for k in keys
              if any(k in r for r in records.values())}
    seconds = [r["seconds"] for r in records.values() if "seconds" in r]
    result["median_seconds"] = float(statistics.median(seconds)) if seconds else float("nan")
    return result


def _cell(record: dict | None, key: str, digits: int = 2) -> str:
    if record is None or "error" in record:
        return "error" if record else "-"
    return f"{record[key]:.{digits}f}"


def markdown_table(task: str, labels: list[str], results: dict) -> str:
    """One row per method; per-case PSNR (in the mask for inpainting), then the summaries."""
    case_key = "psnr_mask" if task == "inpaint" else "psnr"
    extra = (["mean PSNR mask", "mean PSNR", "mean unfilled"] if task == "inpaint"
             else ["mean PSNR", "mean SSIM"])
    keys = (["mean_psnr_mask", "mean_psnr", "mean_unfilled"] if task == "inpaint"
            else ["mean_psnr", "mean_ssim"])
    header = ["method"] + labels + extra + ["median s"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, entry in results.items():
        cells = [_cell(entry["cases"].get(label), case_key) for label in labels]
        cells += [f"{entry['summary'][k]:.{3 if 'ssim' in k or 'unfilled' in k else 2}f}"
                  for k in keys]
        cells.append(f"{entry['summary']['median_seconds']:.2f}")
        lines.append("| " + " | ".join([name] + cells) + " |")
    return "\n".join(lines)


def _by_kind(results: dict, kind: str) -> dict:
    return {name: entry for name, entry in results.items() if entry["kind"] == kind}


def _value(entry: dict, label: str, key: str) -> float:
    record = entry["cases"].get(label, {})
    return record.get(key, float("nan"))


def _verdict(flags: dict[str, bool], claim: str) -> str:
    return (f"{claim}: {'yes' if all(flags.values()) else 'no'} "
            f"({sum(flags.values())}/{len(flags)} cases)")


def denoise_targets(ours: dict, denoise: dict) -> tuple[list[str], dict]:
    """Ours vs every ``calibrate_denoiser`` peer per case; mean gaps to the oracles and BM3D."""
    calibrated, oracles = _by_kind(denoise, "calibrated"), _by_kind(denoise, "oracle")
    bm3d_rows = _by_kind(denoise, "bm3d")
    beats, details, gaps_oracle, gaps_bm3d = {}, [], [], []
    for label in ours["cases"]:
        mine = _value(ours, label, "psnr")
        best_peer = max(_value(e, label, "psnr") for e in calibrated.values())
        beats[label] = bool(mine >= best_peer)
        gaps_oracle.append(mine - max(_value(e, label, "psnr") for e in oracles.values()))
        gaps_bm3d += [mine - _value(e, label, "psnr") for e in bm3d_rows.values()]
        details.append(f"- {label}: calibrated diffuse {mine:.2f} dB, best calibrate_denoiser "
                       f"peer {best_peer:.2f} dB -> {'yes' if beats[label] else 'no'}")
    numbers = {"beats_every_calibrated_peer": beats,
               "mean_gap_to_best_oracle_db": float(np.mean(gaps_oracle)),
               "mean_gap_to_bm3d_db": float(np.mean(gaps_bm3d)) if gaps_bm3d else None}
    lines = [_verdict(beats, "calibrated diffuse >= every calibrate_denoiser peer"), *details,
             f"mean gap to the best oracle-tuned scikit-image method of each case: "
             f"{numbers['mean_gap_to_best_oracle_db']:+.2f} dB"]
    if gaps_bm3d:
        lines.append(f"mean gap to BM3D + GAT: {numbers['mean_gap_to_bm3d_db']:+.2f} dB")
    return lines, numbers


def inpaint_targets(ours: dict, inpaint: dict) -> tuple[list[str], dict]:
    """Ours >= biharmonic - 0.5 dB (PSNR inside the mask), per case."""
    peer = inpaint["skimage inpaint_biharmonic"]
    within, details = {}, []
    for label in ours["cases"]:
        mine, theirs = _value(ours, label, "psnr_mask"), _value(peer, label, "psnr_mask")
        within[label] = bool(mine >= theirs - 0.5)
        details.append(f"- {label}: calibrated {mine:.2f} dB, biharmonic {theirs:.2f} dB "
                       f"-> {'yes' if within[label] else 'no'}")
    lines = [_verdict(within, "inpainting: calibrated diffuse >= biharmonic - 0.5 dB "
                              "(PSNR in the mask)"), *details]
    return lines, {"inpaint_within_0p5_db_of_biharmonic": within}


def evaluate_targets(denoise: dict, inpaint: dict) -> tuple[list[str], dict]:
    """The issue's targets, as text lines and numbers (none without ``calibrate``)."""
    lines, numbers = [], {}
    for results, targets in ((denoise, denoise_targets), (inpaint, inpaint_targets)):
        ours = _by_kind(results, "ours")
        if ours:
            more_lines, more_numbers = targets(next(iter(ours.values())), results)
            lines += more_lines
            numbers.update(more_numbers)
    return lines or ["n/a: napari_diffuse.calibrate is not available yet"], numbers


def figure_panels(cases: list[Case], denoise: dict, outputs: dict) -> list[list[tuple]]:
    """Rows of ``(title, image, gamma)``: noisy, BM3D, best calibrated peer, ours, truth."""
    by_label = {c.label: c for c in cases if c.task == "denoise"}
    labels = [label for label in FIGURE_CASES if label in by_label] or list(by_label)[:2]
    rows = []
    for label in labels:
        case = by_label[label]

        def panel(name: str, label: str = label, case=case) -> tuple:
            record = denoise[name]["cases"][label]
            return (f"{name}\n{record['psnr']:.2f} dB", outputs[name][label], case.gamma)

        ours = next(iter(_by_kind(denoise, "ours")), None) or max(
            _by_kind(denoise, "preset"), key=lambda n: _value(denoise[n], label, "psnr"))
        peer = max(_by_kind(denoise, "calibrated"),
                   key=lambda n: _value(denoise[n], label, "psnr"))
        rows.append([panel("noisy input"), panel("BM3D + GAT (true noise model)"),
                     panel(peer), panel(ours), (f"truth ({label})", case.truth, case.gamma)])
    return rows


def _display(image: np.ndarray, gamma: float) -> np.ndarray:
    return np.clip(np.asarray(image, np.float64), 0.0, 1.0) ** gamma


def save_figure(rows: list[list[tuple]], path: Path) -> None:
    """Write the panels as a labelled PNG (matplotlib), or an unlabelled tiling (imageio)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        import imageio.v3 as iio

        tiles = [np.hstack([_display(img, g) for _, img, g in row]) for row in rows]
        iio.imwrite(path, (np.vstack(tiles) * 255).round().astype(np.uint8))
        return
    figure, axes = plt.subplots(len(rows), len(rows[0]), squeeze=False,
                                figsize=(3.2 * len(rows[0]), 3.9 * len(rows)))
    for axes_row, row in zip(axes, rows, strict=True):
        for axis, (title, image, gamma) in zip(axes_row, row, strict=True):
            axis.imshow(_display(image, gamma), cmap="gray", vmin=0, vmax=1,
                        interpolation="nearest")
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.suptitle("Poisson-Gaussian denoising, 10 photons at the brightest pixel "
                    "(hubble shown with a square-root stretch)", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 0.96), h_pad=2.0)
    figure.savefig(path, dpi=110)
    plt.close(figure)


# ---------------------------------------------------------------- main


def default_backend() -> str:
    """``"opencl"`` when a working OpenCL device exists, else ``"numpy"``."""
    from napari_diffuse.backends import get_solver

    try:
        get_solver("opencl")
    except RuntimeError:
        return "numpy"
    return "opencl"


def describe_device(backend: str) -> str:
    """A one-line description of where ``diffuse`` runs."""
    if backend == "opencl":
        from napari_diffuse import opencl_solver

        return f"OpenCL {opencl_solver.engine()!r}"
    return f"NumPy on {os.cpu_count()} CPU cores"


def warm_up(backend: str) -> None:
    """Build the solver's kernels and pools once, so that timed runs do not pay for it."""
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    diffuse(image, preset="denoise: fine", backend=backend)
    diffuse(image, preset="inpaint highlights", mask=image > 0.9, backend=backend)


def run_task(methods: list[Method], cases: list[Case]) -> tuple[dict, dict]:
    """Run every method on every case; return ``(results, outputs)`` keyed by method name."""
    results, outputs = {}, {}
    for method in methods:
        start = time.perf_counter()
        records, outputs[method.name] = run_method(method, cases)
        results[method.name] = {"kind": method.kind, "cases": records,
                                "summary": summary(records)}
        print(f"  {method.name}: {time.perf_counter() - start:.1f} s", file=sys.stderr,
              flush=True)
    return results, outputs


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "numpy": np.__version__,
                "scikit-image": skimage.__version__, "napari-diffuse": napari_diffuse.__version__}
    try:
        from importlib.metadata import version

        versions["bm3d"] = version("bm3d")
    except Exception:  # not installed: the BM3D rows report the error
        versions["bm3d"] = "missing"
    return versions


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark, print the tables and targets, write the JSON and the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="one image (cell) at one photon level (10): a smoke check")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for quality.json and quality_before_after.png")
    parser.add_argument("--backend", choices=("numpy", "opencl"), default=None,
                        help="diffuse's solver (default: opencl when available, else numpy)")
    args = parser.parse_args(argv)

    backend = args.backend or default_backend()
    calibrate = getattr(napari_diffuse, "calibrate", None)
    calibrate = calibrate if callable(calibrate) else None  # not the bare submodule
    sources, peaks = (SOURCES[:1], PEAKS[:1]) if args.quick else (SOURCES, PEAKS)
    cases = make_cases(sources, peaks)
    print(f"backend: {backend} - {describe_device(backend)}; {os.cpu_count()} CPU cores")
    if calibrate is None:
        print("note: napari_diffuse.calibrate is not available yet: its rows are skipped")
    warm_up(backend)

    start = time.perf_counter()
    report = {"settings": {"backend": backend, "device": describe_device(backend),
                           "quick": args.quick, "size": SIZE, "peaks": list(peaks),
                           "read_noise": READ_NOISE, "seed": SEED,
                           "unfilled_error": UNFILLED_ERROR,
                           "sources": {s.name: list(s.origin) for s in sources},
                           "versions": _versions()},
              "cases": {c.label: {"task": c.task,
                                  "mask_fraction": None if c.mask is None else
                                  float(c.mask.mean())} for c in cases}}
    tables, all_outputs = {}, {}
    for task, make_methods in (("denoise", denoise_methods), ("inpaint", inpaint_methods)):
        task_cases = [c for c in cases if c.task == task]
        print(f"{task}: {len(task_cases)} cases", file=sys.stderr, flush=True)
        report[task], all_outputs[task] = run_task(make_methods(backend, calibrate), task_cases)
        tables[task] = markdown_table(task, [c.label for c in task_cases], report[task])
    report["seconds_total"] = time.perf_counter() - start

    print("\n## Denoising: PSNR (dB) per image/peak photons\n")
    print(tables["denoise"])
    print("\n## Inpainting: PSNR (dB) inside the mask per image/mask\n")
    print(tables["inpaint"])
    lines, report["targets"] = evaluate_targets(report["denoise"], report["inpaint"])
    print("\n## Targets (issue 8)\n")
    print("\n".join(lines))
    print(f"\ntotal: {report['seconds_total']:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.json").write_text(json.dumps(report, indent=1, default=_json_default))
    save_figure(figure_panels(cases, report["denoise"], all_outputs["denoise"]),
                args.out / "quality_before_after.png")
    print(f"wrote {args.out / 'quality.json'} and {args.out / 'quality_before_after.png'}")


if __name__ == "__main__":
    main()
