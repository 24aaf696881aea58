"""The 3x3 convolution, padding 1, stride 1 or 2: eq. (6)-(8) (docs/quantization.md)."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import INT32_ACC_MAX, acc_bound, clamp, requant
from ..layout import CONV, NotEligible
from ..vnni import CO as TILE_CO
from . import add, weighted
from .common import finish, one_input

NAME, WEIGHTED = "conv", True
FIELDS = ("cin", "cout", "stride", "relu", "bits_w", "w_offset", "w_nbytes", "cb_offset", "offset")
N_IN = 1                               # input points
inputs, channels = one_input, weighted.channels


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    cin, cout = c.int(spec, "cin", 1, 4096), c.int(spec, "cout", 1, 4096)
    s = c.int(spec, "stride", 1, 2)
    if len(sin) != 3 or sin[2] != cin or sout != ((sin[0] - 1) // s + 1, (sin[1] - 1) // s + 1, cout):
        c.fail(f"conv {spec['name']!r}: shapes {sin} -> {sout} do not fit cin={cin} cout={cout} stride={s}")
    weighted.check(c, spec, 9 * cin, cout, c.bits[ins[0]])
    return 9 * cin * cout * sout[0] * sout[1]


def load(op, spec, arrays):
    """op.w (3,3,Ci,Co); the file's order is (Co,3,3,Ci) (format.md "Weights")."""
    weighted.load(op, spec, arrays, (spec["cout"], 3, 3, spec["cin"]))
    op.stride = spec["stride"]


def reference(x, zx, w, bias, m0, n, zy, lo, hi, stride):
    """x (N,H,W,Ci), w (3,3,Ci,Co) -> (N,Ho,Wo,Co); padding 1 holds zx; eq. (6)-(8)."""
    N, H, W, _ = x.shape
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (1, 1), (1, 1), (0, 0)))  # padded taps are 0 after -zx
    acc = np.broadcast_to(bias.astype(np.int64), (N, ho, wo, w.shape[3])).copy()
    for ky in range(3):
        for kx in range(3):
            tap = xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            acc += np.tensordot(tap, w[ky, kx].astype(np.int64), axes=([3], [0]))
    return finish(acc, m0, n, zy, lo, hi)


@njit(cache=True, parallel=True)
def kernel(x, zx, w, bias, m0, n, zy, lo, hi, stride, acc_like):
    """x (N,H,W,Ci) int32, w (3,3,Ci,Co) -> (N,Ho,Wo,Co) int32, eq. (6)-(8), padding 1.  The
    accumulator type is acc_like's: int32 where the bound of section 5 allows it."""
    N, H, W, Ci = x.shape
    Co = w.shape[3]
    Ho = (H - 1) // stride + 1
    Wo = (W - 1) // stride + 1
    out = np.empty((N, Ho, Wo, Co), np.int32)
    for r in prange(N * Ho):
        i = r // Ho
        oy = r % Ho
        acc = np.empty(Co, acc_like.dtype)   # |acc| bound: quantization.md section 5
        for ox in range(Wo):
            for co in range(Co):
                acc[co] = bias[co]
            for ky in range(3):
                iy = oy * stride + ky - 1
                if iy < 0 or iy >= H:
                    continue                  # a padded tap holds zx: adds nothing
                for kx in range(3):
                    ix = ox * stride + kx - 1
                    if ix < 0 or ix >= W:
                        continue
                    for ci in range(Ci):
                        v = x[i, iy, ix, ci] - zx
                        for co in range(Co):
                            acc[co] += v * w[ky, kx, ci, co]
            for co in range(Co):
                out[i, oy, ox, co] = clamp(zy + requant(acc[co], m0[co], n[co]), lo, hi)
    return out


def run(op, acts, scalar):
    args = (acts[op.ins[0]], op.zx[0], op.w, op.bias, op.m0, op.n, op.zy, op.lo, op.hi, op.stride)
    return kernel(*args, op.acc_like) if scalar else reference(*args)


def fusable_add(k, lw):
    """The add after conv k that its epilogue can do, or None: fusion on, the add reads the
    conv's point as its first input, nothing else reads that point, and eq. (14a) applies."""
    if not lw.fuse or k + 1 >= len(lw.ops):
        return None
    op, nxt = lw.ops[k], lw.ops[k + 1]
    if nxt.kind == "add" and nxt.ins[0] == op.out and lw.readers.get(op.out) == [k + 1] and nxt.ins[1] != op.out \
            and add.split(nxt) is not None:
        return nxt
    return None


def lower(op, k, lw):
    """One conv row: w packed as [co tile][tap, K-group][16 co][4 ci] (vnni.py), z_x folded into
    the bias (eq. 6).  A following add that alone reads this conv's point is fused into the
    row's epilogue (eq. 12-14), and this conv's point is not stored (docs/engine.md)."""
    tile = TILE_CO
    nxt = fusable_add(k, lw)
    if nxt is None:
        lw.point(op.out)
    (ioff, iwp, icp), (ooff, owp, ocp) = lw.geo[op.ins[0]], lw.geo.get(op.out, (0, 0, 0))
    w = op.w
    ci, co = w.shape[2], w.shape[3]
    cot = -(-co // tile)
    wp = np.zeros((3, 3, icp, cot * tile), np.int64)
    wp[:, :, :ci, :co] = w
    groups = icp // 4
    packed = wp.reshape(9 * groups, 4, cot, tile).transpose(2, 0, 3, 1)   # cot, K, co, j
    koff = [(ky * iwp + kx) * icp + 4 * g for ky in range(3) for kx in range(3) for g in range(groups)]
    wsum = w.astype(np.int64).sum(axis=(0, 1, 2))
    folded = op.bias - op.zx[0] * wsum                 # eq. (6), z_x moved into the bias
    maxw = int(np.abs(w.astype(np.int64)).max(initial=0))
    # the raw (uncentred) uint8 inputs, x <= 255, against the folded bias, eq. (6)
    if acc_bound(np.abs(folded).max(initial=0), 9 * icp, maxw, 8) > INT32_ACC_MAX:
        raise NotEligible("conv accumulator bound exceeds int32")
    b = lw.builder
    ch = b.channels(folded, op.m0, op.n, np.left_shift(1, np.asarray(op.n, np.int64) - 1), count=cot * tile)
    row = b.row(op.name, ROW=CONV, O_OFF=ooff, O_WP=owp, O_CP=ocp, HO=lw.shapes[op.out][0],
                WO=lw.shapes[op.out][1], CO=co, ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch, I_OFF=ioff, I_WP=iwp,
                I_CP=icp, STRIDE=op.stride, ZX=op.zx[0], NK=len(koff), KOFF=b.koffs(koff),
                WOFF=b.weights(packed), COT=cot)
    if nxt is not None:
        lw.point(nxt.out)
        add.fuse(row, nxt, lw)
        lw.fused(k + 1)
