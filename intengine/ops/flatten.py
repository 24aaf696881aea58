"""An H x W x C map as a flat point of H W C values in the map's own order, (y, x, c) at
(y W + x) C + c (docs/format.md "Flatten").  The same scale and zero point: no arithmetic.
The exporter permutes the next linear layer's columns from PyTorch's (c, y, x) order to this one."""
import numpy as np
from numba import njit, prange

from ..layout import FLATTEN
from .common import no_channel, one_input

NAME, WEIGHTED = "flatten", False
FIELDS = ()
INFO = ()
N_IN = 1
inputs, channels = one_input, no_channel


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    if len(sin) != 3 or sout != (sin[0] * sin[1] * sin[2],):
        c.fail(f"flatten {spec['name']!r}: {sin} -> {sout}; the output must be ({int(np.prod(sin))},)")
    c.same_point(spec, ins[0], out)
    return 0


def load(op, spec, arrays):
    """No parameters."""


def reference(x):
    return x.reshape(len(x), -1).astype(np.int32)


@njit(cache=True, parallel=True)
def kernel(x):
    N, H, W, C = x.shape
    out = np.empty((N, H * W * C), np.int32)
    for i in prange(N):
        for y in range(H):
            for xx in range(W):
                for c in range(C):
                    out[i, (y * W + xx) * C + c] = x[i, y, xx, c]
    return out


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]])


def lower(op, k, lw):
    src = lw.geo[op.ins[0]]
    lw.point(op.out)
    h, w, c = lw.shapes[op.ins[0]]
    lw.builder.row(op.name, ROW=FLATTEN, HO=h, WO=w, CO=c, I_OFF=src[0], I_WP=src[1], I_CP=src[2],
                   O_OFF=lw.geo[op.out][0])
