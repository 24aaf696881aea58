"""The average pool over a kh x kw window (stride, zero padding counted in the divisor, as
PyTorch's count_include_pad): the window's sum of (x - z_x), requantized with ties to even by
M = s_x / (kh kw s_y), eq. (15)-(16a).  A padded tap holds z_x and adds nothing."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant_even, requant_even_array
from ..layout import AVGPOOL
from .common import finish, one_channel, one_input, use_one_channel, window

NAME, WEIGHTED = "avgpool", False
FIELDS = ("kh", "kw", "stride", "ph", "pw", "lo", "hi", "offset")
INFO = ()
N_IN = 1
inputs, channels = one_input, one_channel


def check(c, spec, ins, out):
    window(c, spec, c.shapes[ins[0]], c.shapes[out], NAME)
    c.clamp(spec, out)
    use_one_channel(c, spec)
    return 0


def load(op, spec, arrays):
    """The window's fields on the op (its M0 and n are model.Op's)."""
    op.kh, op.kw, op.stride, op.ph, op.pw = (spec[k] for k in ("kh", "kw", "stride", "ph", "pw"))


def reference(x, zx, m0, n, zy, lo, hi, kh, kw, stride, ph, pw):
    """x (N,H,W,C) -> (N,Ho,Wo,C): eq. (15)-(16a) over each window."""
    N, H, W, C = x.shape
    ho, wo = (H + 2 * ph - kh) // stride + 1, (W + 2 * pw - kw) // stride + 1
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    acc = np.zeros((N, ho, wo, C), np.int64)
    for ky in range(kh):
        for kx in range(kw):
            acc += xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
    return finish(acc, m0, n, zy, lo, hi, requant_even_array)


@njit(cache=True, parallel=True)
def kernel(x, zx, m0, n, zy, lo, hi, kh, kw, stride, ph, pw):
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * ph - kh) // stride + 1, (W + 2 * pw - kw) // stride + 1
    out = np.empty((N, Ho, Wo, C), np.int32)
    for r in prange(N * Ho):
        i, oy = r // Ho, r % Ho
        for ox in range(Wo):
            for c in range(C):
                acc = np.int64(0)
                for ky in range(kh):
                    iy = oy * stride + ky - ph
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * stride + kx - pw
                        if ix >= 0 and ix < W:
                            acc += x[i, iy, ix, c] - zx
                out[i, oy, ox, c] = clamp(zy + requant_even(acc, m0, n), lo, hi)
    return out


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], op.m0[0], op.n[0], op.zy, op.lo, op.hi,
                                              op.kh, op.kw, op.stride, op.ph, op.pw)


def lower(op, k, lw):
    lw.window_row(op, AVGPOOL, ch=lw.builder.channels([0], [op.m0[0]], [op.n[0]], [0], count=1))
