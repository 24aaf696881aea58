"""Plain NumPy integer versions of every op: the executable spec (docs/quantization.md).

Every kernel in kernels.py must return exactly what these return (np.array_equal).  All
arithmetic is int64; there are no floats.  Activations are NHWC int32 arrays.
"""
import numpy as np

from .fixedpoint import requant_array, requant_even_array


def _finish(acc, m0, n, zy, lo, hi, rounding=requant_array):
    """The requantize tail shared by every op: eq. (8), (14), (16a)."""
    return np.clip(zy + rounding(acc, m0, n), lo, hi).astype(np.int32)


def input_lut(images, lut):
    """images (N,H,W,3) uint8, lut (3,256) -> (N,H,W,3) int32, eq. (5)."""
    return lut[np.arange(3), images.astype(np.int64)].astype(np.int32)


def conv3x3(x, zx, w, bias, m0, n, zy, lo, hi, stride):
    """x (N,H,W,Ci), w (3,3,Ci,Co) -> (N,Ho,Wo,Co); padding 1 holds zx; eq. (6)-(8)."""
    N, H, W, _ = x.shape
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (1, 1), (1, 1), (0, 0)))  # padded taps are 0 after -zx
    acc = np.broadcast_to(bias.astype(np.int64), (N, ho, wo, w.shape[3])).copy()
    for ky in range(3):
        for kx in range(3):
            tap = xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            acc += np.tensordot(tap, w[ky, kx].astype(np.int64), axes=([3], [0]))
    return _finish(acc, m0, n, zy, lo, hi)


def shortcut(x, zx, stride, pad):
    """Option A, section 7: x[:, ::s, ::s, :] with `pad` channels of zx before and after."""
    x = x[:, ::stride, ::stride, :]
    return np.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)), constant_values=zx)


def add(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """relu(a + shortcut(b)) with a common unit, eq. (12)-(14)."""
    b = shortcut(b, zb, stride, pad)
    acc = ka * (a.astype(np.int64) - za) + kb * (b.astype(np.int64) - zb)
    return _finish(acc, m0, n, zy, lo, hi)


def requantize(x, zx, m0, n, zy, lo, hi):
    """One point's integers at another point's scale and width, eq. (17a)."""
    return _finish(x.astype(np.int64) - zx, m0, n, zy, lo, hi)


def avgpool(x, zx, m0, n, zy, lo, hi):
    """x (N,H,W,C) -> (N,C), eq. (15)-(16a): ties to even."""
    acc = (x.astype(np.int64) - zx).sum(axis=(1, 2))
    return _finish(acc, m0, n, zy, lo, hi, requant_even_array)


def linear(x, zx, w, bias, m0, n, zy, lo, hi):
    """x (N,Ci), w (Ci,Co) -> (N,Co), eq. (6)-(8)."""
    acc = (x.astype(np.int64) - zx) @ w.astype(np.int64) + bias.astype(np.int64)
    return _finish(acc, m0, n, zy, lo, hi)
