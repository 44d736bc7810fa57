"""darktable's seeded noise for the inpainting start (``inpaint_mask()`` in diffuse.c).

Masked pixels start as ``|gaussian_noise(v, v)|``, drawn from a xoshiro128+ generator
seeded per pixel with splitmix32. The seed depends only on the pixel's position in
the whole image (its flat index and the image width), never on tiling, so chunked,
tiled and whole-image runs start from the same noise. darktable's indexing is kept
as it is: with ``k = 4 * pixel_index`` (the index of the pixel's first float),
``i = k // width`` and ``j = k - i``, both truncated to 32 bits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["inpaint_noise"]

_U32 = np.uint32
_U64 = np.uint64
_FLT_MIN = np.float32(np.finfo(np.float32).tiny)
_TWO_PI = 2.0 * np.pi  # darktable multiplies by M_PI in double precision


def _splitmix32(seed: np.ndarray) -> np.ndarray:
    seed = np.atleast_1d(seed).astype(_U64)
    result = (seed ^ (seed >> _U64(33))) * _U64(0x62A9D9ED799705F5)
    result = (result ^ (result >> _U64(28))) * _U64(0xCB24D0A5C88C35B3)
    return (result >> _U64(32)).astype(_U32)


class _Xoshiro128Plus:
    """A vector of independent xoshiro128+ generators, one per pixel."""

    def __init__(self, s0, s1, s2, s3):
        self.s = [np.array(x, dtype=_U32) for x in np.broadcast_arrays(s0, s1, s2, s3)]

    def next_float(self) -> np.ndarray:
        s0, s1, s2, s3 = self.s
        result = s0 + s3
        t = s1 << _U32(9)
        s2 ^= s0
        s3 ^= s1
        s1 ^= s2
        s0 ^= s3
        s2 ^= t
        self.s[3] = (s3 << _U32(11)) | (s3 >> _U32(21))
        return (result >> _U32(8)).astype(np.float32) * np.float32(2.0**-24)


def inpaint_noise(values: np.ndarray, pixel_index: np.ndarray, width: int) -> np.ndarray:
    """Return darktable's inpainting start values for some pixels.

    Parameters
    ----------
    values : (N, C) float32 array
        The pixels' values; each channel is the mean and the deviation of its noise.
    pixel_index : (N,) integer array
        Each pixel's flat index ``row * width + column`` in the whole image.
    width : int
        The whole image's width.

    Returns
    -------
    (N, C) float32 array
        ``|gaussian_noise(v, v)|`` per channel; channel ``c`` uses the generator's
        draws ``2c`` and ``2c + 1`` after four warm-up draws, as darktable does for
        its four channels.
    """
    k = np.asarray(pixel_index, dtype=_U64) * _U64(4)
    i = (k // _U64(width)).astype(_U32)
    j = (k - i.astype(_U64)).astype(_U32)
    j1 = j + _U32(1)
    rng = _Xoshiro128Plus(_splitmix32(j1),
                          _splitmix32(j1.astype(_U64) * (i + _U32(3)).astype(_U64)),
                          _splitmix32(np.array(1337)), _splitmix32(np.array(666)))
    for _ in range(4):
        rng.next_float()
    flip = ((i % _U32(2)) | (j % _U32(2))).astype(bool)
    values = np.asarray(values, dtype=np.float32)
    out = np.empty_like(values)
    with np.errstate(divide="ignore"):
        for c in range(values.shape[1]):
            u1 = np.maximum(rng.next_float(), _FLT_MIN)
            u2 = rng.next_float()
            angle = (_TWO_PI * u2.astype(np.float64)).astype(np.float32)
            radius = np.sqrt(np.float32(-2.0) * np.log(u1))
            noise = radius * np.where(flip, np.cos(angle), np.sin(angle))
            out[:, c] = np.abs(noise * values[:, c] + values[:, c])
    return out
