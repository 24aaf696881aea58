"""The average pool over a kh x kw window (stride, zero padding counted in the divisor, as
PyTorch's count_include_pad): the window's sum of (x - z_x), requantized with ties to even by
M = s_x / (kh kw s_y), eq. (15)-(16a).  A padded tap holds z_x and adds nothing."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant_even, requant_even_array
from ..layout import AVGPOOL
from .common import finish, one_channel, one_input, use_one_channel, window, window_kernel, window_taps

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
    acc = sum(window_taps(x.astype(np.int64) - zx, kh, kw, stride, ph, pw, 0))
    return finish(acc, m0, n, zy, lo, hi, requant_even_array)


@njit(cache=True, parallel=True)
def kernel(x, zx, m0, n, zy, lo, hi, kh, kw, stride, ph, pw):
    acc = window_kernel(x, kh, kw, stride, ph, pw, zx, False)
    out = np.empty(acc.shape, np.int32)
    flat, res = acc.ravel(), out.ravel()
    for k in prange(flat.size):
        res[k] = clamp(zy + requant_even(flat[k], m0, n), lo, hi)
    return out


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], op.m0[0], op.n[0], op.zy, op.lo, op.hi,
                                              op.kh, op.kw, op.stride, op.ph, op.pw)


def lower(op, k, lw):
    lw.window_row(op, AVGPOOL, ch=lw.builder.channels([0], [op.m0[0]], [op.n[0]], [0], count=1))
