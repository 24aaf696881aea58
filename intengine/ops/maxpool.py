"""The max pool over a kh x kw window (stride, padding that never wins, as PyTorch's -inf).  The
output point has the input's scale and zero point (the maximum commutes with eq. 1), so the
integers are the input's own: no requantize, no channel entries."""
import numpy as np
from numba import njit, prange

from ..layout import MAXPOOL
from .common import no_channel, one_input, window

NAME, WEIGHTED = "maxpool", False
FIELDS = ("kh", "kw", "stride", "ph", "pw")
INFO = ()
N_IN = 1
inputs, channels = one_input, no_channel


def check(c, spec, ins, out):
    window(c, spec, c.shapes[ins[0]], c.shapes[out], NAME)
    c.same_point(spec, ins[0], out)
    return 0


def load(op, spec, arrays):
    op.kh, op.kw, op.stride, op.ph, op.pw = (spec[k] for k in ("kh", "kw", "stride", "ph", "pw"))


def reference(x, kh, kw, stride, ph, pw):
    """x (N,H,W,C) -> (N,Ho,Wo,C): the largest value of each window, padding excluded."""
    N, H, W, C = x.shape
    ho, wo = (H + 2 * ph - kh) // stride + 1, (W + 2 * pw - kw) // stride + 1
    xp = np.pad(x.astype(np.int64), ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=-1)
    out = np.full((N, ho, wo, C), -1, np.int64)
    for ky in range(kh):
        for kx in range(kw):
            out = np.maximum(out, xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :])
    return out.astype(np.int32)


@njit(cache=True, parallel=True)
def kernel(x, kh, kw, stride, ph, pw):
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * ph - kh) // stride + 1, (W + 2 * pw - kw) // stride + 1
    out = np.empty((N, Ho, Wo, C), np.int32)
    for r in prange(N * Ho):
        i, oy = r // Ho, r % Ho
        for ox in range(Wo):
            for c in range(C):
                m = np.int32(-1)
                for ky in range(kh):
                    iy = oy * stride + ky - ph
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * stride + kx - pw
                        if ix >= 0 and ix < W and x[i, iy, ix, c] > m:
                            m = x[i, iy, ix, c]
                out[i, oy, ox, c] = m
    return out


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.kh, op.kw, op.stride, op.ph, op.pw)


def lower(op, k, lw):
    lw.window_row(op, MAXPOOL, ch=0)
