"""The add a + shortcut(b) with a common unit, clamped to [lo, hi] (a ReLU or none): eq. (12)-(14).
The shortcut is the identity (stride 1, pad 0: two points of one shape) or option A (section 7):
b subsampled by `stride`, with `pad` channels of z_b on each side."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import add_split, clamp, requant
from ..layout import ADD
from .common import finish, one_channel, use_one_channel

NAME, WEIGHTED = "add", False
FIELDS = ("stride", "pad", "lo", "hi", "offset", "factor_offset")
INFO = ()
N_IN = 2                               # input points: a, then b (the shortcut's source)
channels = one_channel


def inputs(spec):
    return spec["in"]


def check(c, spec, ins, out):
    sin, sb, sout = c.shapes[ins[0]], c.shapes[ins[1]], c.shapes[out]
    s = c.int(spec, "stride", 1, 2)
    pad = c.int(spec, "pad", 0, 1 << 16)
    if len(sin) != 3 or len(sb) != 3 or sout != sin or \
            ((sb[0] - 1) // s + 1, (sb[1] - 1) // s + 1, sb[2] + 2 * pad) != sin:
        c.fail(f"add {spec['name']!r}: shortcut of {sb} (stride {s}, pad {pad}) does not match {sin}")
    c.clamp(spec, out)
    use_one_channel(c, spec)
    f = c.int(spec, "factor_offset", 0, len(c.arrays["add_factor"]) - 2)
    c.use("add_factor", f, f + 2)
    return 0


def load(op, spec, arrays):
    f = spec["factor_offset"]
    op.ka, op.kb = (int(v) for v in arrays["add_factor"][f:f + 2])
    op.stride, op.pad = spec["stride"], spec["pad"]


def shortcut(x, zx, stride, pad):
    """Option A, section 7: x[:, ::s, ::s, :] with `pad` channels of zx before and after."""
    x = x[:, ::stride, ::stride, :]
    return np.pad(x, ((0, 0), (0, 0), (0, 0), (pad, pad)), constant_values=zx)


def reference(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """clamp(a + shortcut(b)) with a common unit, eq. (12)-(14)."""
    b = shortcut(b, zb, stride, pad)
    acc = ka * (a.astype(np.int64) - za) + kb * (b.astype(np.int64) - zb)
    return finish(acc, m0, n, zy, lo, hi)


@njit(cache=True, parallel=True)
def kernel(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """clamp(a + shortcut(b)): a (N,H,W,C), b (N,Hb,Wb,Cb) -> (N,H,W,C), eq. (12)-(14)."""
    N, H, W, C = a.shape
    Cb = b.shape[3]
    out = np.empty((N, H, W, C), np.int32)
    for r in prange(N * H):
        i = r // H
        y = r % H
        for x in range(W):
            for c in range(C):
                acc = np.int64(ka) * (a[i, y, x, c] - za)   # |acc| < 2^45, section 7
                cb = c - pad
                if cb >= 0 and cb < Cb:       # padded channels hold zb: add nothing
                    acc += np.int64(kb) * (b[i, y * stride, x * stride, cb] - zb)
                out[i, y, x, c] = clamp(zy + requant(acc, m0, n), lo, hi)
    return out


def run(op, acts, scalar):
    return (kernel if scalar else reference)(acts[op.ins[0]], op.zx[0], acts[op.ins[1]], op.zx[1], op.ka, op.kb,
                                              op.stride, op.pad, op.m0[0], op.n[0], op.zy, op.lo, op.hi)


def fill(row, op, lw, swap=False):
    """The add's fields of `row`: its own row, or the conv row it is fused into.  swap: the
    conv's point is the add's second input (an identity shortcut, so a and b may trade places:
    K_a (a - z_a) + K_b (b - z_b) is the same sum)."""
    ib = 1 - swap
    ka, kb = factors(op, swap)
    gb = lw.geo[op.ins[ib]]
    lw.builder.set(row, B_OFF=gb[0], B_WP=gb[1], B_CP=gb[2], B_C=lw.shapes[op.ins[ib]][2], ZB=op.zx[ib],
                   A_STRIDE=op.stride, PAD=op.pad, KA=ka, KB=kb, A_M0=int(op.m0[0]), A_N=int(op.n[0]),
                   A_ZY=op.zy, A_LO=op.lo, A_HI=op.hi, A_OFF=lw.geo[op.out][0], A_WP=lw.geo[op.out][1],
                   A_CP=lw.geo[op.out][2])


def fuse(row, op, lw, swap=False):
    """Fill `row` (a conv's) for the add `op` in its epilogue: eq. (14a)'s constants too
    (swap: fill's)."""
    fill(row, op, lw, swap)
    ah, bh, low, side, _ = split(op, swap)
    lw.builder.set(row, FUSE=1, AH=ah, BH=bh, AL=low, ASIDE=side)


def split(op, swap=False):
    """eq. (14a)'s constants for this add (fixedpoint.add_split), or None: then no conv takes
    it into its epilogue, and it runs as a row of its own (add_rows, eq. 11).  swap: with the
    inputs traded (fill)."""
    return add_split(*factors(op, swap), int(op.m0[0]), int(op.n[0]))


def factors(op, swap=False):
    """(K_a, K_b), traded with swap (fill)."""
    return (op.kb, op.ka) if swap else (op.ka, op.kb)


def lower(op, k, lw):
    """A row of its own (an add that no conv before it can take in)."""
    sh, ga = lw.shapes[op.out], lw.geo[op.ins[0]]
    lw.point(op.out)
    row = lw.builder.row(op.name, ROW=ADD, HO=sh[0], WO=sh[1], CO=sh[2], I_OFF=ga[0], I_WP=ga[1], I_CP=ga[2],
                         ZX=op.zx[0])
    fill(row, op, lw)
