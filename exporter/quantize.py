"""Choosing integers from floats (offline, floats allowed): docs/quantization.md 2-8.

round(x) here is always floor(x + 1/2), round half up, as in the docs.
"""
import math

import numpy as np

LEVEL_SETS = ("midrise", "twos")


class ExportError(Exception):
    """A parameter cannot be represented; the message says which and why."""


def rnd(x):
    return np.floor(np.asarray(x, np.float64) + 0.5)


def levels(bits, level_set):
    """The integer levels L[k] of eq. (3), k = 0..2^bits-1 (section 2 table)."""
    k = np.arange(1 << bits, dtype=np.int64)
    if level_set == "midrise":
        return 2 * k + 1 - (1 << bits)
    if level_set == "twos":
        return k - (1 << (bits - 1))
    raise ValueError(f"unknown level set {level_set!r}; choose from {LEVEL_SETS}")


def nearest(w_over_s, L):
    """Index of the nearest level of a uniform level set (ties go up)."""
    step = L[1] - L[0]
    return np.clip(rnd((w_over_s - L[0]) / step), 0, len(L) - 1).astype(np.int64)


def nearest_of(x, L):
    """Index of the nearest entry of any ascending level list L (ties go up); equals nearest
    for a uniform one, up to float rounding at the exact midpoints."""
    L = np.asarray(L, np.float64)
    return np.searchsorted((L[1:] + L[:-1]) / 2, np.asarray(x, np.float64), side="right").astype(np.int64)


def quantize_weights(w, bits, level_set, clip, grid=100):
    """w (Co, ...) float64 -> (codes (Co, ...) int64 indices into L, L, s_w (Co,)), eq. (3).

    clip 'minmax': s_w = max|w| / half-range; 'mse': s_w = alpha * that, alpha in (0, 1]
    chosen per channel to minimise the squared error (section 2)."""
    L = levels(bits, level_set)
    half = (L[-1] - L[0]) / 2.0
    flat = w.reshape(w.shape[0], -1)
    amax = np.abs(flat).max(axis=1)
    nz = amax[amax > 0]
    amax = np.where(amax > 0, amax, nz.min() if nz.size else half)    # zero channels, section 2
    if clip == "minmax" or bits == 16:
        scale = amax / half
    elif clip == "mse":
        alphas = np.arange(1, grid + 1) / grid
        best_err, scale = None, None
        for a in alphas:
            s = a * amax / half
            q = L[nearest(flat / s[:, None], L)] * s[:, None]
            err = ((flat - q) ** 2).sum(axis=1)
            if best_err is None:
                best_err, scale = err, s
            else:
                better = err < best_err
                best_err, scale = np.where(better, err, best_err), np.where(better, s, scale)
    else:
        raise ValueError(f"unknown clipping {clip!r}; choose mse or minmax")
    codes = nearest(flat / scale[:, None], L).reshape(w.shape)
    return codes, L, scale


def act_qparams(lo, hi, bits):
    """Calibrated range -> (scale, zero point), eq. (4)."""
    qmax = (1 << bits) - 1
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    s = (hi - lo) / qmax if hi > lo else 1.0
    z = int(np.clip(rnd(-lo / s), 0, qmax))
    return s, z


def quantize_multiplier(m, what):
    """Real M in [2^-32, 1) -> (M0, n), 2^30 <= M0 < 2^31, n in [31, 62], eq. (9)."""
    if not math.isfinite(m) or m < 0:
        raise ExportError(f"{what}: multiplier {m} is not a finite non-negative number")
    if m >= 1.0:
        raise ExportError(f"{what}: multiplier {m:.4g} >= 1 cannot be stored (eq. 9); "
                          f"the calibrated output range is too narrow")
    if m < 2.0 ** -32:
        return 0, 62
    frac, e = math.frexp(m)                 # m = frac * 2^e, frac in [0.5, 1)
    n = 31 - e                              # m * 2^n = frac * 2^31 in [2^30, 2^31)
    m0 = int(math.floor(math.ldexp(m, n) + 0.5))
    if m0 == 1 << 31:
        m0, n = 1 << 30, n - 1
    if n < 31:
        raise ExportError(f"{what}: multiplier {m!r} rounds to 1, which eq. (9) cannot store")
    return m0, n
