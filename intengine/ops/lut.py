"""The input: each uint8 pixel through a per-channel table, LUT[c, pixel], eq. (5).  It is not a
header op: the file's `lut` array maps the image to point 0."""
import numpy as np
from numba import njit, prange


def check(c):
    lut = c.arrays["lut"]
    if lut.shape != (3, 256) or lut.min() < 0 or lut.max() > (1 << c.bits[0]) - 1:
        c.fail(f"input LUT must be (3, 256) with values in [0, 2^{c.bits[0]} - 1]")


def reference(images, lut):
    """images (N,H,W,3) uint8, lut (3,256) -> (N,H,W,3) int32, eq. (5)."""
    return lut[np.arange(3), images.astype(np.int64)].astype(np.int32)


@njit(cache=True, parallel=True)
def kernel(images, lut):
    """images (N,H,W,3) uint8, lut (3,256) int32 -> (N,H,W,3) int32, eq. (5)."""
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


# ---- the exporter side ----------------------------------------------------------------------

def integers(p):
    """eq. (5): LUT[ch, pixel] for the 3 x 256 possible inputs at point p's scale and width."""
    from exporter.quantize import rnd
    from ..cifar10 import MEAN, STD
    x = (np.arange(256)[None, :] / 255.0 - np.array(MEAN)[:, None]) / np.array(STD)[:, None]
    return np.clip(rnd(x / p["scale"]) + p["zp"], 0, (1 << p["bits"]) - 1).astype(np.int64)


def exact(lut, images):
    """The images' point 0 as a torch int64 tensor, NHWC."""
    import torch
    x = torch.as_tensor(np.asarray(images)).long()
    return torch.as_tensor(lut).long()[torch.arange(3), x]
