"""The fully connected layer: eq. (6)-(8) on a flat point.  On the fast path it is the last op."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant
from ..layout import LINEAR, NotEligible
from . import weighted
from .common import finish, one_input

NAME, WEIGHTED = "linear", True
FIELDS = ("cin", "cout", "relu", "bits_w", "w_offset", "w_nbytes", "cb_offset", "offset")
N_IN = 1                               # input points
inputs, channels = one_input, weighted.channels


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    cin, cout = c.int(spec, "cin", 1, 4096), c.int(spec, "cout", 1, 4096)
    if sin != (cin,) or sout != (cout,):
        c.fail(f"linear {spec['name']!r}: shapes {sin} -> {sout} do not fit {cin}x{cout}")
    weighted.check(c, spec, cin, cout, c.bits[ins[0]])
    return cin * cout


def load(op, spec, arrays):
    """op.w (Ci, Co); the file's order is (Co, Ci)."""
    weighted.load(op, spec, arrays, (spec["cout"], spec["cin"]))


def reference(x, zx, w, bias, m0, n, zy, lo, hi):
    """x (N,Ci), w (Ci,Co) -> (N,Co), eq. (6)-(8)."""
    acc = (x.astype(np.int64) - zx) @ w.astype(np.int64) + bias.astype(np.int64)
    return finish(acc, m0, n, zy, lo, hi)


@njit(cache=True, parallel=True)
def kernel(x, zx, w, bias, m0, n, zy, lo, hi):
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


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], op.w, op.bias, op.m0, op.n,
                                              op.zy, op.lo, op.hi)


def lower(op, k, lw):
    """The last row: it writes the int32 logits straight into the caller's output."""
    if len(lw.shapes[op.ins[0]]) != 1 or k != len(lw.ops) - 1:
        raise NotEligible("the fast path needs the linear layer last, on a flat point")
    b, w = lw.builder, op.w
    ch = b.channels(op.bias, op.m0, op.n, np.zeros(len(op.m0), np.int64), count=w.shape[1])
    b.row(op.name, ROW=LINEAR, CO=w.shape[1], I_OFF=lw.geo[op.ins[0]][0], I_CP=w.shape[0], ZX=op.zx[0],
          WOFF=b.weights(w), ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch, HO=1)
