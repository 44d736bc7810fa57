"""Sample images built from data shipped with scikit-image (no downloads).

All are float32, linear (scene-referred) intensities, nominally 0..1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from skimage import data, filters

__all__ = ["PHOTONS_PER_UNIT", "Sample", "noisy_fluorescence", "blurred_photo", "saturated_stars",
           "SAMPLES"]

#: Photons counted per unit of signal in :func:`noisy_fluorescence`.
PHOTONS_PER_UNIT = 20.0


def _linear(srgb_uint8: np.ndarray) -> np.ndarray:
    x = srgb_uint8.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def noisy_fluorescence(shape: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """Return a noisy widefield-fluorescence-like image: blurred blobs, Poisson and read noise.

    The signal (0.05 to 0.65) is counted as 20 photons per unit (13 at the brightest),
    plus Gaussian read noise of 0.005: a low-light frame, the noise level of the
    *fluorescence: low light* preset, far beyond what darktable's *denoise* presets are
    made for.

    Parameters
    ----------
    shape : (int, int)
        Height and width (each at least 16).
    seed : int
        Seed of the structures and the noise.

    Returns
    -------
    (H, W) float32 array
    """
    rng = np.random.default_rng(seed)
    size = max(shape)
    blobs = data.binary_blobs(length=size, blob_size_fraction=0.04, volume_fraction=0.15,
                              rng=seed)[:shape[0], :shape[1]]
    signal = filters.gaussian(blobs.astype(np.float32), sigma=2.0) * 0.6 + 0.05
    photons = rng.poisson(signal * PHOTONS_PER_UNIT) / PHOTONS_PER_UNIT
    return (photons + rng.normal(0.0, 0.005, shape)).clip(0, None).astype(np.float32)


def blurred_photo(sigma: float = 2.0) -> np.ndarray:
    """Return scikit-image's astronaut photo, linear RGB, with a Gaussian lens blur.

    Returns
    -------
    (512, 512, 3) float32 array
    """
    return filters.gaussian(_linear(data.astronaut()), sigma=sigma, channel_axis=-1) \
        .astype(np.float32)


def saturated_stars(gain: float = 3.0, saturation: float = 1.0) -> np.ndarray:
    """Return a crop of the Hubble deep field, linear, with star cores clipped flat.

    The frame is scaled by ``gain`` and clipped at ``saturation``, like a sensor's full
    well: the flat cores are above the *astro: saturated star cores* preset's threshold
    (0.99), which rebuilds them and keeps them at least at it.

    Returns
    -------
    (H, W) float32 array
    """
    frame = _linear(data.hubble_deep_field()).mean(axis=-1)
    return np.minimum(frame * gain, saturation).astype(np.float32)


class Sample(NamedTuple):
    """A sample image: how to make it, what it is, and what restores it."""

    make: Callable[[], np.ndarray]
    description: str
    preset: str  #: the bundled preset that suits it
    calibrate: str | None = None  #: the :func:`~napari_diffuse.calibrate` task the demo runs


#: name -> :class:`Sample`
SAMPLES = {
    "fluorescence": Sample(noisy_fluorescence, "low-light fluorescence microscopy",
                           "fluorescence: low light", calibrate="denoise"),
    "blurred": Sample(blurred_photo, "blurred photo (RGB)", "lens deblur: medium"),
    "stars": Sample(saturated_stars, "astro frame with saturated stars",
                    "astro: saturated star cores"),
}
