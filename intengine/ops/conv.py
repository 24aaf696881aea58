"""The convolution: any kernel kh x kw, stride, zero padding (ph, pw) and groups, from a full
conv to depthwise (groups = channels): eq. (6)-(8) (docs/quantization.md).  The padding holds
the input's zero point z_x, so a padded tap adds nothing after centring."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import INT32_ACC_MAX, acc_bound, clamp, requant
from ..amx import tile_config
from ..layout import CONV, DWCONV, MADD, NotEligible
from ..vnni import CO as TILE_CO
from . import add, weighted
from .common import MAX_KERNEL, MAX_STRIDE, finish, one_input, out_size

NAME, WEIGHTED = "conv", True
FIELDS = ("cin", "cout", "kh", "kw", "stride", "ph", "pw", "groups", "lo", "hi", "bits_w", "w_offset",
          "w_nbytes", "cb_offset", "offset")
INFO = ("levels",)                     # for people (docs/format.md); the engine reads the codebook
N_IN = 1                               # input points
inputs, channels = one_input, weighted.channels


def check(c, spec, ins, out):
    sin, sout = c.shapes[ins[0]], c.shapes[out]
    name = spec["name"]
    cin, cout = c.int(spec, "cin", 1, 1 << 16), c.int(spec, "cout", 1, 1 << 16)
    kh, kw = c.int(spec, "kh", 1, MAX_KERNEL), c.int(spec, "kw", 1, MAX_KERNEL)
    s = c.int(spec, "stride", 1, MAX_STRIDE)
    ph, pw = c.int(spec, "ph", 0, kh - 1), c.int(spec, "pw", 0, kw - 1)
    g = c.int(spec, "groups", 1, cin)
    if cin % g or cout % g:
        c.fail(f"conv {name!r}: groups {g} divide neither cin {cin} nor cout {cout} evenly")
    if len(sin) != 3 or sin[2] != cin:
        c.fail(f"conv {name!r}: input {sin} does not have cin={cin} channels")
    ho, wo = out_size(sin[0], kh, s, ph), out_size(sin[1], kw, s, pw)
    if ho < 1 or wo < 1 or sout != (ho, wo, cout):
        c.fail(f"conv {name!r}: shapes {sin} -> {sout} do not fit a {kh}x{kw} kernel, stride {s}, "
               f"padding ({ph}, {pw}), cout={cout}")
    c.clamp(spec, out)
    taps = kh * kw * (cin // g)
    weighted.check(c, spec, taps, cout, c.bits[ins[0]])
    return taps * cout * ho * wo


def load(op, spec, arrays):
    """op.w (kh,kw,Ci/g,Co); the file's order is (Co,kh,kw,Ci/g) (format.md "Weights")."""
    g = spec["groups"]
    weighted.load(op, spec, arrays, (spec["cout"], spec["kh"], spec["kw"], spec["cin"] // g))
    op.stride, op.ph, op.pw, op.groups = spec["stride"], spec["ph"], spec["pw"], g


def reference(x, zx, w, bias, m0, n, zy, lo, hi, stride, ph, pw, groups):
    """x (N,H,W,Ci), w (kh,kw,Ci/g,Co) -> (N,Ho,Wo,Co); the padding holds zx; eq. (6)-(8).
    Output channel o of group o // (Co/g) reads input channels [g Ci/g, (g+1) Ci/g)."""
    N, H, W, Ci = x.shape
    kh, kw, cig, Co = w.shape
    ho, wo = out_size(H, kh, stride, ph), out_size(W, kw, stride, pw)
    xp = np.pad(x.astype(np.int64) - zx, ((0, 0), (ph, ph), (pw, pw), (0, 0)))  # padded taps are 0 after -zx
    wg = w.astype(np.int64).reshape(kh, kw, cig, groups, Co // groups)
    acc = np.broadcast_to(bias.astype(np.int64), (N, ho, wo, Co)).copy()
    for ky in range(kh):
        for kx in range(kw):
            tap = xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            tap = tap.reshape(N, ho, wo, groups, cig)
            acc += np.einsum("nhwgc,cgo->nhwgo", tap, wg[ky, kx]).reshape(N, ho, wo, Co)
    return finish(acc, m0, n, zy, lo, hi)


@njit(cache=True, parallel=True)
def kernel(x, zx, w, bias, m0, n, zy, lo, hi, stride, ph, pw, groups, acc_like):
    """x (N,H,W,Ci) int32, w (kh,kw,Ci/g,Co) -> (N,Ho,Wo,Co) int32, eq. (6)-(8).  The
    accumulator type is acc_like's: int32 where the bound of section 5 allows it.  One output
    row at a time, its accumulators (Wo,Co) in one block: the inner loop runs over the output
    channels of a group, which LLVM vectorizes (the 16-bit files' path)."""
    N, H, W, Ci = x.shape
    kh, kw, cig, Co = w.shape
    cog = Co // groups
    Ho = (H + 2 * ph - kh) // stride + 1
    Wo = (W + 2 * pw - kw) // stride + 1
    out = np.empty((N, Ho, Wo, Co), np.int32)
    for r in prange(N * Ho):
        i = r // Ho
        oy = r % Ho
        acc = np.empty((Wo, Co), acc_like.dtype)     # |acc| bound: quantization.md section 5
        for ox in range(Wo):
            for co in range(Co):
                acc[ox, co] = bias[co]
        for ky in range(kh):
            iy = oy * stride + ky - ph
            if iy < 0 or iy >= H:
                continue                              # a padded tap holds zx: adds nothing
            for kx in range(kw):
                for ox in range(Wo):
                    ix = ox * stride + kx - pw
                    if ix < 0 or ix >= W:
                        continue
                    for g in range(groups):
                        o0 = g * cog
                        for c in range(cig):
                            v = x[i, iy, ix, g * cig + c] - zx
                            for co in range(cog):
                                acc[ox, o0 + co] += v * w[ky, kx, c, o0 + co]
        for ox in range(Wo):
            for co in range(Co):
                out[i, oy, ox, co] = clamp(zy + requant(acc[ox, co], m0[co], n[co]), lo, hi)
    return out


def run(op, acts, scalar):
    args = (acts[op.ins[0]], op.zx[0], op.w, op.bias, op.m0, op.n, op.zy, op.lo, op.hi, op.stride, op.ph,
            op.pw, op.groups)
    return kernel(*args, op.acc_like) if scalar else reference(*args)


def fusable_add(k, lw):
    """(the add after conv k that its epilogue can do, swap), or (None, False): fusion on, the
    add reads the conv's point once, nothing else reads it, and eq. (14a) applies.  The conv's
    point is the add's first input, or its second where the shortcut is the identity (swap:
    add.fill), as in `x + block(x)`."""
    if not lw.fuse or k + 1 >= len(lw.ops):
        return None, False
    op, nxt = lw.ops[k], lw.ops[k + 1]
    if nxt.kind != "add" or lw.readers.get(op.out) != [k + 1] or nxt.ins[0] == nxt.ins[1]:
        return None, False
    swap = nxt.ins[1] == op.out
    if (nxt.ins[0] == op.out or swap and nxt.stride == 1 and nxt.pad == 0) and add.split(nxt, swap) is not None:
        return nxt, swap
    return None, False


def dense(op):
    """The weights (kh,kw,Ci,Co) of the full conv that equals this grouped one: zero where an
    output channel does not read an input channel (exact; the fast path's micro-kernel)."""
    kh, kw, cig, co = op.w.shape
    if op.groups == 1:
        return op.w
    cog = co // op.groups
    w = np.zeros((kh, kw, cig * op.groups, co), op.w.dtype)
    for g in range(op.groups):
        w[:, :, g * cig:(g + 1) * cig, g * cog:(g + 1) * cog] = op.w[:, :, :, g * cog:(g + 1) * cog]
    return w


GROUPS16_MAX = 64             # the most K-groups summed in int16 before widening


def bytes_groups(packed):
    """How many K-groups vpmaddubsw's int16 pair sums of this layer can be added up in int16
    with no overflow, 0 if even one can saturate: packed [..., 4] int weights, the pairs (0, 1)
    and (2, 3) of each K-group.  With x <= 255 a pair sum reaches 255 (|w0| + |w1|), and m of
    them 255 m max(|w0| + |w1|), which must stay within 32767 (docs/engine.md eq. A1, A2)."""
    a = np.abs(packed.astype(np.int64))
    pair = max(int((a[..., 0] + a[..., 1]).max(initial=0)), int((a[..., 2] + a[..., 3]).max(initial=0)))
    return min(GROUPS16_MAX, 32767 // (255 * pair)) if pair else GROUPS16_MAX


def padded_shifts(n, count):
    """The shifts of a conv's channel tiles: n, then 32 for the padded channels (M0 = 0 there,
    so any shift gives 0), which keeps a split tile on vnni.epilogue's 32-bit form."""
    out = np.full(count, 32, np.int64)
    out[:len(n)] = n
    return out


def fold_zx(op, w, taps_in):
    """eq. (6): z_x moved into the bias, checked against int32 for the raw (uncentred) uint8
    inputs, x <= 255, over `taps_in` taps per output channel."""
    wsum = w.astype(np.int64).sum(axis=(0, 1, 2))
    folded = op.bias - op.zx[0] * wsum
    maxw = int(np.abs(w.astype(np.int64)).max(initial=0))
    if acc_bound(np.abs(folded).max(initial=0), taps_in, maxw, 8) > INT32_ACC_MAX:
        raise NotEligible("conv accumulator bound exceeds int32")
    return folded


def lower(op, k, lw):
    """A depthwise conv (one input and one output channel per group) is a DWCONV row; any other
    is a CONV row of its dense equivalent, packed [co tile][tap, K-group][16 co][4 ci]
    (vnni.py).  The input's origin moves back by the padding, whose taps read the border's
    z_x, folded into the bias (eq. 6).  A following add that alone reads this conv's point is
    fused into the CONV row's epilogue (eq. 12-14), and this conv's point is not stored
    (docs/engine.md)."""
    kh, kw, cig, co = op.w.shape
    if op.groups > 1 and cig == 1 and co == op.groups:
        return lower_depthwise(op, lw)
    tile = TILE_CO
    nxt, swap = fusable_add(k, lw)
    if nxt is None:
        lw.point(op.out)
    (ioff, iwp, icp), (ooff, owp, ocp) = lw.geo[op.ins[0]], lw.geo.get(op.out, (0, 0, 0))
    w = dense(op)
    ci = w.shape[2]
    cot = -(-co // tile)
    wp = np.zeros((kh, kw, icp, cot * tile), np.int64)
    wp[:, :, :ci, :co] = w
    groups = icp // 4
    packed = wp.reshape(kh * kw * groups, 4, cot, tile).transpose(2, 0, 3, 1)   # cot, K, co, j
    koff = [(ky * iwp + kx) * icp + 4 * g for ky in range(kh) for kx in range(kw) for g in range(groups)]
    folded = fold_zx(op, w, kh * kw * icp)
    b = lw.builder
    ch = b.channels(folded, op.m0, padded_shifts(op.n, cot * tile), np.left_shift(1, np.asarray(op.n, np.int64) - 1),
                    count=cot * tile)
    row = b.row(op.name, ROW=CONV, O_OFF=ooff, O_WP=owp, O_CP=ocp, HO=lw.shapes[op.out][0],
                WO=lw.shapes[op.out][1], CO=co, ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch,
                I_OFF=ioff - (op.ph * iwp + op.pw) * icp, I_WP=iwp, I_CP=icp, STRIDE=op.stride, ZX=op.zx[0],
                NK=len(koff), KOFF=b.koffs(koff), WOFF=b.weights(packed), COT=cot, MADD=bytes_groups(packed))
    # vpmaddwd (the avx2 kernel's path 3) reads its weights as int16, widened here once
    b.set(row, WIDE=b.weights16(packed) if lw.wide and row[MADD] == 0 else -1)
    if lw.amx:
        amx_tables(row, packed, kh, kw * groups, iwp * icp, lw.shapes[op.out][1], b)
    if nxt is not None:
        lw.point(nxt.out)
        add.fuse(row, nxt, lw, swap)
        lw.fused(k + 1)


def amx_tables(row, packed, kh, L, rowstep, wo, b):
    """The AMX tile's chunks (amx.py): each kernel row's L K-groups (its kw taps, contiguous in
    the arena) in c = ceil(L / 16) chunks of R = ceil(L / c) groups, the last padded with zero
    weights; chunk i of kernel row ky reads its pixels' bytes from ky * rowstep + 4 R i.
    packed (cot, kh L, 16, 4) -> weights (cot, kh c R, 16, 4)."""
    c = -(-L // 16)
    r = -(-L // c)
    cot = packed.shape[0]
    wa = np.zeros((cot, kh, c * r, 16, 4), np.int64)
    wa[:, :, :L] = packed.reshape(cot, kh, L, 16, 4)
    m = min(16, wo)
    b.set(row, AMX_N=kh * c, AMX_R=r, AMX_K=b.koffs([ky * rowstep + 4 * r * i for ky in range(kh) for i in range(c)]),
          AMX_W=b.weights(wa), AMX_WSTEP=64 * r, AMX_TSTEP=64 * r * kh * c, AMX_M=m,
          AMX_CFG=b.weights(np.frombuffer(tile_config(m, r), np.uint8).view(np.int8)))


def lower_depthwise(op, lw):
    """A DWCONV row (fastops.dwconv_rows): weights [tap][COT*16 channels] int8."""
    kh, kw, _, c = op.w.shape
    (ioff, iwp, icp), (ooff, owp, ocp) = lw.geo[op.ins[0]], lw.point(op.out)
    cot = -(-c // TILE_CO)
    wp = np.zeros((kh * kw, cot * TILE_CO), np.int64)
    wp[:, :c] = op.w.reshape(kh * kw, c)
    folded = fold_zx(op, op.w, kh * kw)
    koff = [(ky * iwp + kx) * icp for ky in range(kh) for kx in range(kw)]
    b = lw.builder
    ch = b.channels(folded, op.m0, padded_shifts(op.n, cot * TILE_CO), np.left_shift(1, np.asarray(op.n, np.int64) - 1),
                    count=cot * TILE_CO)
    b.row(op.name, ROW=DWCONV, O_OFF=ooff, O_WP=owp, O_CP=ocp, HO=lw.shapes[op.out][0], WO=lw.shapes[op.out][1],
          CO=c, ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch, I_OFF=ioff - (op.ph * iwp + op.pw) * icp, I_WP=iwp,
          I_CP=icp, STRIDE=op.stride, ZX=op.zx[0], NK=len(koff), KOFF=b.koffs(koff), WOFF=b.weights(wp), COT=cot)
