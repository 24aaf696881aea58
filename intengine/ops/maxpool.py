"""The max pool over a kh x kw window (stride, padding that never wins, as PyTorch's -inf).  The
output point has the input's scale and zero point (the maximum commutes with eq. 1), so the
integers are the input's own: no requantize, no channel entries."""
import numpy as np
from numba import njit

from ..layout import MAXPOOL
from .common import no_channel, one_input, window, window_kernel, window_taps

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
    return np.maximum.reduce(window_taps(x.astype(np.int64), kh, kw, stride, ph, pw, -1)).astype(np.int32)


@njit(cache=True)
def kernel(x, kh, kw, stride, ph, pw):
    return window_kernel(x, kh, kw, stride, ph, pw, 0, True).astype(np.int32)


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.kh, op.kw, op.stride, op.ph, op.pw)


def lower(op, k, lw):
    lw.window_row(op, MAXPOOL, ch=0)
