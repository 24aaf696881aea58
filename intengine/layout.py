"""The fast path's memory layout: where every point lives in a worker's arena, and the op
table that graph.py hands to fastops.run (docs/engine.md).

- Arena.  Every point of the network lives in one uint8 buffer per worker, at a fixed
  offset.  A spatial point (H,W,C) is stored padded, (H+2, W+2, Cp) with Cp = C rounded up to
  4 (the network input) or 16 (conv outputs); its border holds the point's zero point z,
  written once when the arena is made, so a conv reads its 3x3 taps with no bounds test.
- The op table.  One int64 row per op; its fields are named once, in FIELDS, and Builder
  fills them by name (set_fields).  The residual add's seven parameters that
  vnni.epilogue reads as one slice (EPILOGUE_ADD) are checked to be contiguous, in order.
"""
import numpy as np

from .fixedpoint import INT32_ACC_MAX, acc_bound
from .vnni import CO as TILE_CO

CONV, ADD, POOL, LINEAR = 1, 2, 3, 4
GUARD = 64                         # spare arena bytes at both ends (Builder)

# The fields of one op's row, in order: the output point, then the main input, the conv's
# tables, then the residual add (standalone, or fused into the conv before it): input b,
# factors, requantize, and its own output point.
FIELDS = ("KIND O_OFF O_WP O_CP HO WO CO ZY LO HI CH "
          "I_OFF I_WP I_CP STRIDE ZX "
          "NK KOFF WOFF COT FUSE "
          "B_OFF B_WP B_CP B_C ZB A_STRIDE PAD KA KB A_M0 A_N A_ZY A_LO A_HI "
          "A_OFF A_WP A_CP").split()
FIELD = {name: k for k, name in enumerate(FIELDS)}
NFIELDS = len(FIELDS)
(KIND, O_OFF, O_WP, O_CP, HO, WO, CO, ZY, LO, HI, CH, I_OFF, I_WP, I_CP, STRIDE, ZX, NK, KOFF, WOFF, COT,
 FUSE, B_OFF, B_WP, B_CP, B_C, ZB, A_STRIDE, PAD, KA, KB, A_M0, A_N, A_ZY, A_LO, A_HI, A_OFF, A_WP,
 A_CP) = (FIELD[n] for n in FIELDS)
# What vnni.epilogue reads as P[ADD_SLICE], in this order (K_a, K_b, M0, n, z, lo, hi)
EPILOGUE_ADD = ("KA", "KB", "A_M0", "A_N", "A_ZY", "A_LO", "A_HI")
ADD_START, ADD_END = FIELD["KA"], FIELD["KA"] + len(EPILOGUE_ADD)
if tuple(FIELDS[ADD_START:ADD_END]) != EPILOGUE_ADD:          # a reordered FIELDS fails at import
    raise ImportError("layout.FIELDS: the epilogue's add fields are not contiguous and in order")


def set_fields(row, **values):
    """row[FIELD[name]] = value for each name=value; an unknown name raises KeyError."""
    for name, v in values.items():
        row[FIELD[name]] = v
    return row


class NotEligible(ValueError):
    """The file cannot take the fast path (the model then runs kernels.py)."""



def _round_up(v, m):
    return -(-v // m) * m


class Builder:
    """Assigns arena offsets to points and packs each op into the flat tables."""

    def __init__(self):
        # 64 spare bytes before the first point and after the last: vnni.epilogue reads 16
        # bytes of the shortcut input at once (and ignores the lanes it does not need)
        self.size, self.fill = GUARD, []                   # fill: (offset, bytes, zero point)
        self.rows, self.koffs, self.w, self.chan = [], [], [], []
        self.nk = self.nw = self.nch = 0

    def point(self, shape, z, cmul=16):
        """-> (offset, padded width, padded channels) of a new point (H,W,C) or (C,)."""
        if len(shape) == 3:
            h, w, c = shape
            cp = _round_up(c, cmul)
            nbytes, geo = (h + 2) * (w + 2) * cp, (self.size, w + 2, cp)
        else:
            nbytes, geo = _round_up(shape[0], 4), (self.size, 0, shape[0])
        self.fill.append((self.size, nbytes, z))
        self.size += _round_up(nbytes, 64)
        return geo

    def _channels(self, *arrays, count):
        start = self.nch
        for k, a in enumerate(arrays):
            pad = np.zeros(count, np.int64)
            pad[:len(a)] = a
            if len(self.chan) <= k:
                self.chan.append([])
            self.chan[k].append(pad)
        self.nch += count
        return start

    def conv(self, geo_in, geo_out, hw_out, w, bias, zx, m0, n, zy, lo, hi, stride):
        """w (3,3,Ci,Co) int8.  Packs w as [co tile][tap, K-group][16 co][4 ci] (vnni.py)."""
        (ioff, iwp, icp), (ooff, owp, ocp) = geo_in, geo_out
        ci, co = w.shape[2], w.shape[3]
        cot = _round_up(co, TILE_CO) // TILE_CO
        wp = np.zeros((3, 3, icp, cot * TILE_CO), np.int64)
        wp[:, :, :ci, :co] = w
        groups = icp // 4
        packed = wp.reshape(9 * groups, 4, cot, TILE_CO).transpose(2, 0, 3, 1)   # cot, K, co, j
        koff = [(ky * iwp + kx) * icp + 4 * g for ky in range(3) for kx in range(3)
                for g in range(groups)]
        wsum = w.astype(np.int64).sum(axis=(0, 1, 2))
        folded = bias.astype(np.int64) - zx * wsum         # eq. (6), z_x moved into the bias
        maxw = int(np.abs(w.astype(np.int64)).max(initial=0))
        # the raw (uncentred) uint8 inputs, x <= 255, against the folded bias, eq. (6)
        if acc_bound(np.abs(folded).max(initial=0), 9 * icp, maxw, 8) > INT32_ACC_MAX:
            raise NotEligible("conv accumulator bound exceeds int32")
        ch = self._channels(folded, m0, n, np.left_shift(1, np.asarray(n, np.int64) - 1),
                            count=cot * TILE_CO)
        row = set_fields(np.zeros(NFIELDS, np.int64), KIND=CONV, O_OFF=ooff, O_WP=owp, O_CP=ocp, HO=hw_out[0],
                         WO=hw_out[1], CO=co, ZY=zy, LO=lo, HI=hi, CH=ch, I_OFF=ioff, I_WP=iwp, I_CP=icp,
                         STRIDE=stride, ZX=zx, NK=len(koff), KOFF=self.nk, WOFF=self.nw, COT=cot)
        self.koffs.append(np.array(koff, np.int64))
        self.nk += len(koff)
        self.w.append(packed.astype(np.int8).ravel())
        self.nw += packed.size
        self.rows.append(row)
        return row

    def add(self, row, geo_b, c_b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi, geo_out):
        """Residual add params into `row` (a conv row to fuse, or a new add row)."""
        return set_fields(row, B_OFF=geo_b[0], B_WP=geo_b[1], B_CP=geo_b[2], B_C=c_b, ZB=zb, A_STRIDE=stride,
                          PAD=pad, KA=ka, KB=kb, A_M0=m0, A_N=n, A_ZY=zy, A_LO=lo, A_HI=hi,
                          A_OFF=geo_out[0], A_WP=geo_out[1], A_CP=geo_out[2])

    def add_op(self, geo_a, za, hwc, *args):
        row = set_fields(np.zeros(NFIELDS, np.int64), KIND=ADD, HO=hwc[0], WO=hwc[1], CO=hwc[2],
                         I_OFF=geo_a[0], I_WP=geo_a[1], I_CP=geo_a[2], ZX=za)
        self.rows.append(self.add(row, *args))
        return row

    def pool(self, geo_in, hwc, zx, m0, n, zy, lo, hi, geo_out):
        ch = self._channels([0], [m0], [n], [0], count=1)
        row = set_fields(np.zeros(NFIELDS, np.int64), KIND=POOL, HO=hwc[0], WO=hwc[1], CO=hwc[2], I_OFF=geo_in[0],
                         I_WP=geo_in[1], I_CP=geo_in[2], ZX=zx, O_OFF=geo_out[0], ZY=zy, LO=lo, HI=hi, CH=ch)
        self.rows.append(row)
        return row

    def linear(self, geo_in, w, bias, zx, m0, n, zy, lo, hi):
        """w (Ci, Co) int8."""
        ch = self._channels(bias, m0, n, np.zeros(len(m0), np.int64), count=w.shape[1])
        row = set_fields(np.zeros(NFIELDS, np.int64), KIND=LINEAR, CO=w.shape[1], I_OFF=geo_in[0], I_CP=w.shape[0],
                         ZX=zx, WOFF=self.nw, ZY=zy, LO=lo, HI=hi, CH=ch, HO=1)
        self.w.append(w.astype(np.int8).ravel())
        self.nw += w.size
        self.rows.append(row)
        return row

    def tables(self):
        """(ops, koffs, wpk, bias, m0, n, rnd, arena template)."""
        cat = lambda parts, dt: np.ascontiguousarray(np.concatenate(parts).astype(dt)) if parts \
            else np.zeros(1, dt)
        chans = [cat(c, np.int64) for c in self.chan] if self.chan else [np.zeros(1, np.int64)] * 4
        arena = np.zeros(self.size + GUARD, np.uint8)
        for off, nbytes, z in self.fill:
            arena[off:off + nbytes] = z
        return (np.ascontiguousarray(np.stack(self.rows)), cat(self.koffs, np.int64),
                cat(self.w, np.int8), *chans, arena)
