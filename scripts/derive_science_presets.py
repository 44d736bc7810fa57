"""Derive the science presets in ``presets/`` from :func:`napari_diffuse.calibrate`.

For each group of data (fluorescence-like and astro images bundled with scikit-image,
at a typical photon count), every image of the group is calibrated on its own noisy
version; each calibrated setting is then run on every image of the group, and the
setting with the best mean PSNR becomes the preset (a setting that works across the
group, not only on the image it came from). Gap filling is derived the same way from
``calibrate(task="inpaint")`` on painted trails 5 to 9 px wide.

Usage: ``python scripts/derive_science_presets.py [--backend opencl] [--write]``; it
prints each group's table and, with ``--write``, rewrites the preset files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import skimage.data
from skimage.color import rgb2gray

from napari_diffuse import calibrate, diffuse

PRESETS = Path(__file__).resolve().parents[1] / "presets"
READ_NOISE = 0.01


def _unit(image) -> np.ndarray:
    image = np.asarray(image, np.float64)
    if image.ndim == 3:
        image = rgb2gray(image[..., :3])
    return ((image - image.min()) / (image.max() - image.min())).astype(np.float32)


def _crop(image, y, x, size=256):
    return image[y:y + size, x:x + size]


def images() -> dict[str, np.ndarray]:
    """256x256 crops of scikit-image's bundled images, 0..1."""
    return {
        "cell": _crop(_unit(skimage.data.cell()), 200, 200),
        "retina": _crop(_unit(skimage.data.retina()), 600, 600),
        "coins": _crop(_unit(skimage.data.coins()), 40, 60),
        "camera": _crop(_unit(skimage.data.camera()), 60, 180),
        "hubble": _crop(_unit(skimage.data.hubble_deep_field()), 300, 300),
        "moon": _crop(_unit(skimage.data.moon()), 128, 128),
    }


def noisy(clean: np.ndarray, peak: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.poisson(clean * peak) / peak
            + rng.normal(0, READ_NOISE, clean.shape)).astype(np.float32)


def psnr(truth, estimate) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(estimate, np.float64) - truth) ** 2)))


#: (file stem, preset name, images, photons at the brightest pixel, description)
DENOISE_GROUPS = [
    ("fluorescence-low-light", "fluorescence: low light", ("cell", "retina", "coins"), 10,
     "Denoise fluorescence or other photon-limited frames with about 10 photons at the "
     "brightest pixel (Poisson-Gaussian noise, read noise ~1 % of the peak)."),
    ("fluorescence-moderate-light", "fluorescence: moderate light", ("cell", "retina", "coins"),
     100, "Denoise fluorescence or microscopy frames with about 100 photons at the brightest "
     "pixel (Poisson-Gaussian noise, read noise ~1 % of the peak)."),
    ("astro-denoise-faint", "astro: denoise faint frames", ("hubble", "moon"), 10,
     "Denoise astro frames with about 10 photons at the brightest pixel: faint "
     "sources on a dark sky, Poisson-Gaussian noise."),
    ("astro-denoise", "astro: denoise", ("hubble", "moon"), 100,
     "Denoise astro frames with about 100 photons at the brightest pixel "
     "(Poisson-Gaussian noise, read noise ~1 % of the peak)."),
]


def trails(shape, seed=5) -> np.ndarray:
    """Painted strokes 5 to 9 px wide: random straight trails across the image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, bool)
    for _ in range(4):
        y0, x0, y1, x1 = rng.uniform(0, shape[0], 4)
        width = rng.integers(5, 10)
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / (dy * dy + dx * dx), 0, 1)
        mask |= np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)) <= width / 2
    return mask


def best_across(candidates, cases, run) -> tuple[int, list[list[float]]]:
    """Index of the candidate with the best mean PSNR over ``cases``, and the table."""
    table = [[run(params, case) for case in cases] for params in candidates]
    return int(np.argmax([np.mean(row) for row in table])), table


def derive_denoise(data, backend):
    presets = []
    for stem, name, members, peak, description in DENOISE_GROUPS:
        cases = [(data[m], noisy(data[m], peak)) for m in members]
        candidates = [calibrate(y, backend=backend) for _, y in cases]
        best, table = best_across(
            candidates, cases,
            lambda p, case: psnr(case[0], diffuse(case[1], p, backend=backend)))
        print(f"\n{name} (peak {peak}): rows = calibrated on {list(members)}, "
              f"columns = PSNR on {list(members)}, noisy "
              f"{[round(psnr(c, y), 1) for c, y in cases]}")
        for member, row in zip(members, table, strict=True):
            print(f"  {member:>8}: {[round(v, 2) for v in row]} mean {np.mean(row):.2f}")
        print(f"  -> from {members[best]}")
        presets.append((stem, name, description, candidates[best]))
    return presets


def derive_gap_fill(data, backend):
    members = ("cell", "retina", "camera", "moon")
    cases = []
    for m in members:
        mask = trails(data[m].shape)
        cases.append((data[m], np.where(mask, 0.0, data[m]).astype(np.float32), mask))
    candidates = [calibrate(d, "inpaint", mask=k, backend=backend) for _, d, k in cases]
    best, table = best_across(
        candidates, cases,
        lambda p, case: psnr(case[0][case[2]],
                             diffuse(case[1], p, mask=case[2], backend=backend)[case[2]]))
    print(f"\nfill gaps under a mask: PSNR inside the trails, rows calibrated on {members}")
    for member, row in zip(members, table, strict=True):
        print(f"  {member:>8}: {[round(v, 2) for v in row]} mean {np.mean(row):.2f}")
    description = ("Fill pixels under a painted mask (Labels or Shapes layer, mask=...): "
                   "scratches, dead rows or columns, trails and gaps up to about 9 px wide.")
    return [("fill-gaps", "fill gaps under a mask", description, candidates[best])]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--write", action="store_true", help="rewrite the preset files")
    args = parser.parse_args()
    data = images()
    presets = derive_denoise(data, args.backend) + derive_gap_fill(data, args.backend)
    for stem, name, description, params in presets:
        print(f"{name}: {json.dumps({k: v for k, v in params.to_dict().items() if v})}")
        if args.write:
            text = json.dumps({"name": name, "group": "science", "description": description,
                               "params": params.to_dict()}, indent=1)
            (PRESETS / f"{stem}.json").write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
