"""One point's integers at another point's scale and width: eq. (17a).  The exporter puts one
before each block's first conv when activations are below 8 bits (section 3)."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant
from ..layout import ADD
from .common import finish, no_fields, one_channel, one_input, use_one_channel

NAME, WEIGHTED = "requant", False
FIELDS = ("lo", "hi", "offset")
INFO = ()
N_IN = 1                               # input points
inputs, channels = one_input, one_channel
load = no_fields                       # no fields beyond its channel's M0 and n


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    if len(sin) != 3 or sout != sin:
        c.fail(f"requant {spec['name']!r}: {sin} -> {sout}")
    c.clamp(spec, out)
    use_one_channel(c, spec)
    return 0


def reference(x, zx, m0, n, zy, lo, hi):
    """x (N,H,W,C) at another scale and width, eq. (17a)."""
    return finish(x.astype(np.int64) - zx, m0, n, zy, lo, hi)


@njit(cache=True, parallel=True)
def kernel(x, zx, m0, n, zy, lo, hi):
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


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], op.m0[0], op.n[0], op.zy, op.lo, op.hi)


def lower(op, k, lw):
    """An add row with K_a = 1 and K_b = 0, which is eq. (17a): the same integers."""
    sh, src = lw.shapes[op.out], lw.geo[op.ins[0]]
    lw.point(op.out)
    dst = lw.geo[op.out]
    lw.builder.row(op.name, ROW=ADD, HO=sh[0], WO=sh[1], CO=sh[2], I_OFF=src[0], I_WP=src[1], I_CP=src[2],
                   ZX=op.zx[0], B_OFF=src[0], B_WP=src[1], B_CP=src[2], B_C=sh[2], ZB=op.zx[0], A_STRIDE=1,
                   PAD=0, KA=1, KB=0, A_M0=int(op.m0[0]), A_N=int(op.n[0]), A_ZY=op.zy, A_LO=op.lo,
                   A_HI=op.hi, A_OFF=dst[0], A_WP=dst[1], A_CP=dst[2])
