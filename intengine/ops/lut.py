"""The input: each uint8 pixel through a per-channel table, LUT[c, pixel], eq. (5).  It is not a
header op: the file's `lut` array maps the image to point 0."""
import numpy as np
from numba import njit, prange


def check(c):
    lut, ch = c.arrays["lut"], c.shapes[0][2]
    if lut.shape != (ch, 256) or lut.min() < 0 or lut.max() > (1 << c.bits[0]) - 1:
        c.fail(f"input LUT must be ({ch}, 256), a row per input channel, with values in [0, 2^{c.bits[0]} - 1]")


def reference(images, lut):
    """images (N,H,W,C) uint8, lut (C,256) -> (N,H,W,C) int32, eq. (5)."""
    return lut[np.arange(lut.shape[0]), images.astype(np.int64)].astype(np.int32)


@njit(cache=True, parallel=True)
def kernel(images, lut):
    """images (N,H,W,C) uint8, lut (C,256) int32 -> (N,H,W,C) int32, eq. (5)."""
    N, H, W, C = images.shape
    out = np.empty((N, H, W, C), np.int32)
    for i in prange(N):
        for y in range(H):
            for x in range(W):
                for c in range(C):
                    out[i, y, x, c] = lut[c, images[i, y, x, c]]
    return out


def lower(lw):
    """Point 0, padded to 4 channels (fastops.input_lut fills it)."""
    lw.point(0, cmul=4)
