"""napari-diffuse: darktable's *diffuse or sharpen* for scientific images.

A multiscale anisotropic heat-diffusion model that, by the sign and direction of four
speeds, denoises, deblurs, dehazes, sharpens, blooms or inpaints. The algorithm is
darktable's (``src/iop/diffuse.c``, by Aurélien Pierre and the darktable developers),
reimplemented under the GPL-3.0-or-later.
"""

from .api import diffuse, luminance_mask, variance_map
from .calibrate import Calibration, calibrate
from .errors import DivergenceError
from .intensity import IntensityWarning
from .opencl_devices import list_devices
from .params import DiffuseParams
from .presets import list_presets
from .tiling import SeamWarning

__version__ = "0.1.0"
__all__ = ["Calibration", "DiffuseParams", "DivergenceError", "IntensityWarning", "SeamWarning",
           "calibrate", "diffuse", "list_devices", "list_presets", "luminance_mask",
           "variance_map"]
