"""The fully connected layer: eq. (6)-(8) on a flat point (a flatten or a global pool before it), anywhere
in the network."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import clamp, requant
from ..layout import LINEAR
from . import weighted
from .common import finish, one_input

NAME, WEIGHTED = "linear", True
FIELDS = ("cin", "cout", "lo", "hi", "bits_w", "w_offset", "w_nbytes", "cb_offset", "offset")
INFO = ("levels",)                     # for people (docs/format.md); the engine reads the codebook
N_IN = 1                               # input points
inputs, channels = one_input, weighted.channels


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    cin, cout = c.int(spec, "cin", 1, 1 << 20), c.int(spec, "cout", 1, 1 << 16)
    if sin != (cin,) or sout != (cout,):
        c.fail(f"linear {spec['name']!r}: shapes {sin} -> {sout} do not fit {cin}x{cout}")
    c.clamp(spec, out)
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
    """One row: it writes the int32 logits straight into the caller's output when its point
    is the logits, else its uint8 point into the arena (STORE)."""
    b, w = lw.builder, op.w
    store = int(op.out != len(lw.shapes) - 1)
    lw.logits_written |= not store
    ooff = lw.point(op.out)[0] if store else 0
    ch = b.channels(op.bias, op.m0, op.n, np.zeros(len(op.m0), np.int64), count=w.shape[1])
    b.row(op.name, ROW=LINEAR, CO=w.shape[1], I_OFF=lw.geo[op.ins[0]][0], I_CP=w.shape[0], ZX=op.zx[0],
          WOFF=b.weights(w), ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch, HO=1, STORE=store, O_OFF=ooff)
