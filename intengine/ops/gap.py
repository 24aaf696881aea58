"""The global average pool: the sum over all H x W positions, requantized with ties to even,
eq. (15)-(16a).  (Format version 2 called it `pool`.)"""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant_even, requant_even_array
from ..layout import GAP
from .common import finish, no_fields, one_channel, one_input, use_one_channel

NAME, WEIGHTED = "gap", False
FIELDS = ("lo", "hi", "offset")
MAX_POSITIONS = 1 << 24                # |acc| <= 2^24 * 2^16 < 2^62 at 16 bits (eq. 11's domain)
INFO = ()
N_IN = 1                               # input points
inputs, channels = one_input, one_channel
load = no_fields                       # no fields beyond its channel's M0 and n


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    if len(sin) != 3 or sout != (sin[2],):
        c.fail(f"gap {spec['name']!r}: {sin} -> {sout}")
    if sin[0] * sin[1] > MAX_POSITIONS:
        c.fail(f"gap {spec['name']!r}: {sin[0] * sin[1]} positions, at most {MAX_POSITIONS}")
    c.clamp(spec, out)
    use_one_channel(c, spec)
    return 0


def reference(x, zx, m0, n, zy, lo, hi):
    """x (N,H,W,C) -> (N,C), eq. (15)-(16a): ties to even."""
    acc = (x.astype(np.int64) - zx).sum(axis=(1, 2))
    return finish(acc, m0, n, zy, lo, hi, requant_even_array)


@njit(cache=True, parallel=True)
def kernel(x, zx, m0, n, zy, lo, hi):
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


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], op.m0[0], op.n[0], op.zy, op.lo, op.hi)


def lower(op, k, lw):
    hwc, gi = lw.shapes[op.ins[0]], lw.geo[op.ins[0]]
    lw.point(op.out)
    b = lw.builder
    ch = b.channels([0], [op.m0[0]], [op.n[0]], [0], count=1)
    b.row(op.name, ROW=GAP, HO=hwc[0], WO=hwc[1], CO=hwc[2], I_OFF=gi[0], I_WP=gi[1], I_CP=gi[2], ZX=op.zx[0],
          O_OFF=lw.geo[op.out][0], ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch)
