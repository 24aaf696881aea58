"""Numba kernels, bit-identical to reference.py (tests/test_kernels.py checks every op).

NHWC int32 activations.  Weights are int8 (<= 8 bits) or int16 (16 bits), already
unpacked.  The conv accumulator type is the dtype of `acc_like`: int32 where the bound of
docs/quantization.md section 5 allows it, else int64.  Integer arithmetic only:
tests/test_integer_only.py scans the LLVM IR of every compiled signature for floats.
"""
import numpy as np
from numba import njit, prange

from .fixedpoint import clamp, requant, requant_even


@njit(cache=True, parallel=True)
def input_lut(images, lut):
    """images (N,H,W,3) uint8, lut (3,256) int32 -> (N,H,W,3) int32, eq. (5)."""
    N, H, W, C = images.shape
    out = np.empty((N, H, W, C), np.int32)
    for i in prange(N):
        for y in range(H):
            for x in range(W):
                for c in range(C):
                    out[i, y, x, c] = lut[c, images[i, y, x, c]]
    return out


@njit(cache=True, parallel=True)
def conv3x3(x, zx, w, bias, m0, n, zy, lo, hi, stride, acc_like):
    """x (N,H,W,Ci) int32, w (3,3,Ci,Co) -> (N,Ho,Wo,Co) int32, eq. (6)-(8), padding 1."""
    N, H, W, Ci = x.shape
    Co = w.shape[3]
    Ho = (H - 1) // stride + 1
    Wo = (W - 1) // stride + 1
    out = np.empty((N, Ho, Wo, Co), np.int32)
    for r in prange(N * Ho):
        i = r // Ho
        oy = r % Ho
        acc = np.empty(Co, acc_like.dtype)   # |acc| bound: quantization.md section 5
        for ox in range(Wo):
            for co in range(Co):
                acc[co] = bias[co]
            for ky in range(3):
                iy = oy * stride + ky - 1
                if iy < 0 or iy >= H:
                    continue                  # a padded tap holds zx: adds nothing
                for kx in range(3):
                    ix = ox * stride + kx - 1
                    if ix < 0 or ix >= W:
                        continue
                    for ci in range(Ci):
                        v = x[i, iy, ix, ci] - zx
                        for co in range(Co):
                            acc[co] += v * w[ky, kx, ci, co]
            for co in range(Co):
                out[i, oy, ox, co] = clamp(zy + requant(acc[co], m0[co], n[co]), lo, hi)
    return out


@njit(cache=True, parallel=True)
def add(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """relu(a + shortcut(b)): a (N,H,W,C), b (N,Hb,Wb,Cb) -> (N,H,W,C), eq. (12)-(14)."""
    N, H, W, C = a.shape
    Cb = b.shape[3]
    out = np.empty((N, H, W, C), np.int32)
    for r in prange(N * H):
        i = r // H
        y = r % H
        for x in range(W):
            for c in range(C):
                acc = np.int64(ka) * (a[i, y, x, c] - za)   # |acc| < 2^45, section 7
                cb = c - pad
                if cb >= 0 and cb < Cb:       # padded channels hold zb: add nothing
                    acc += np.int64(kb) * (b[i, y * stride, x * stride, cb] - zb)
                out[i, y, x, c] = clamp(zy + requant(acc, m0, n), lo, hi)
    return out


@njit(cache=True, parallel=True)
def requantize(x, zx, m0, n, zy, lo, hi):
    """x (N,H,W,C) at another scale and width, eq. (17a)."""
    N, H, W, C = x.shape
    out = np.empty((N, H, W, C), np.int32)
    for r in prange(N * H):
        i = r // H
        y = r % H
        for xx in range(W):
            for c in range(C):
                out[i, y, xx, c] = clamp(zy + requant(np.int64(x[i, y, xx, c]) - zx, m0, n), lo, hi)
    return out


@njit(cache=True, parallel=True)
def avgpool(x, zx, m0, n, zy, lo, hi):
    """x (N,H,W,C) -> (N,C), eq. (15)-(16a)."""
    N, H, W, C = x.shape
    out = np.empty((N, C), np.int32)
    for i in prange(N):
        for c in range(C):
            acc = np.int64(0)
            for y in range(H):
                for xx in range(W):
                    acc += x[i, y, xx, c] - zx
            out[i, c] = clamp(zy + requant_even(acc, m0, n), lo, hi)
    return out


@njit(cache=True, parallel=True)
def linear(x, zx, w, bias, m0, n, zy, lo, hi):
    """x (N,Ci) int32, w (Ci,Co) -> (N,Co) int32, eq. (6)-(8).  int64 accumulator."""
    N, Ci = x.shape
    Co = w.shape[1]
    out = np.empty((N, Co), np.int32)
    for i in prange(N):
        for co in range(Co):
            acc = np.int64(bias[co])
            for ci in range(Ci):
                acc += (x[i, ci] - zx) * np.int64(w[ci, co])
            out[i, co] = clamp(zy + requant(acc, m0[co], n[co]), lo, hi)
    return out
