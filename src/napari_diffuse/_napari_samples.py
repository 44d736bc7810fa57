"""napari sample-data contributions: the images of :mod:`napari_diffuse.sample_data` as layers.

Each function returns napari layer-data tuples; the layer's metadata names the preset
that suits the image (``metadata["napari_diffuse"]["suggested_preset"]``).
"""

from __future__ import annotations

from .sample_data import SAMPLES

__all__ = ["fluorescence", "blurred", "stars"]

_LAYER_STYLES = {  # sample name -> (layer name, napari Image layer properties)
    "fluorescence": ("noisy fluorescence", {"colormap": "green", "contrast_limits": (0.0, 0.8)}),
    "blurred": ("blurred photo", {"rgb": True, "contrast_limits": (0.0, 1.0)}),
    "stars": ("saturated stars", {"colormap": "gray", "contrast_limits": (0.0, 1.0)}),
}


def _layer_data(sample: str) -> list[tuple]:
    entry = SAMPLES[sample]
    name, style = _LAYER_STYLES[sample]
    metadata = {"napari_diffuse": {"suggested_preset": entry.preset,
                                   "description": entry.description}}
    return [(entry.make(), {"name": name, "metadata": metadata, **style}, "image")]


def fluorescence() -> list[tuple]:
    """Low-light widefield-fluorescence-like image (suits *fluorescence: low light*)."""
    return _layer_data("fluorescence")


def blurred() -> list[tuple]:
    """scikit-image's astronaut, linear RGB, lens-blurred (suits *lens deblur: medium*)."""
    return _layer_data("blurred")


def stars() -> list[tuple]:
    """Hubble deep-field crop with clipped star cores (suits *astro: saturated star cores*)."""
    return _layer_data("stars")
