"""Sample images built from data shipped with scikit-image (no downloads).

All are float32, linear (scene-referred) intensities, nominally 0..1.
"""

from __future__ import annotations

import numpy as np
from skimage import data, filters

__all__ = ["noisy_fluorescence", "blurred_photo", "saturated_stars", "SAMPLES"]


def _linear(srgb_uint8: np.ndarray) -> np.ndarray:
    x = srgb_uint8.astype(np.float32) / 255.0
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def noisy_fluorescence(shape: tuple[int, int] = (512, 512), seed: int = 0) -> np.ndarray:
    """Return a noisy widefield-fluorescence-like image: blurred blobs, Poisson and read noise.

    The signal (0.05 to 0.65) is counted as 1000 photons per unit, plus Gaussian read
    noise of 0.005: a noise level the *denoise* presets are made for.

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
    photons = rng.poisson(signal * 1000.0) / 1000.0
    return (photons + rng.normal(0.0, 0.005, shape)).clip(0, None).astype(np.float32)


def blurred_photo(sigma: float = 2.0) -> np.ndarray:
    """Return scikit-image's astronaut photo, linear RGB, with a Gaussian lens blur.

    Returns
    -------
    (512, 512, 3) float32 array
    """
    return filters.gaussian(_linear(data.astronaut()), sigma=sigma, channel_axis=-1) \
        .astype(np.float32)


def saturated_stars(gain: float = 6.0, saturation: float = 2.0) -> np.ndarray:
    """Return a crop of the Hubble deep field, linear, with star cores clipped flat.

    The frame is scaled by ``gain`` and clipped at ``saturation``, like a sensor's full
    well: the flat cores are above the *inpaint highlights* preset's threshold (1.41).

    Returns
    -------
    (H, W) float32 array
    """
    frame = _linear(data.hubble_deep_field()).mean(axis=-1)
    return np.minimum(frame * gain, saturation).astype(np.float32)


#: name -> (function, a short description, the preset that suits it)
SAMPLES = {
    "fluorescence": (noisy_fluorescence, "noisy fluorescence microscopy", "denoise: fine"),
    "blurred": (blurred_photo, "blurred photo (RGB)", "lens deblur: medium"),
    "stars": (saturated_stars, "astro frame with saturated stars", "inpaint highlights"),
}
