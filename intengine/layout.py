"""The fast path's memory layout: where every point lives in a worker's arena, and the op
table that graph.py hands to fastops.run (docs/engine.md).

- Arena.  Every point of the network lives in one uint8 buffer per worker, at a fixed
  offset.  A spatial point (H,W,C) is stored padded, (H+2B, W+2B, Cp) with Cp = C rounded up
  to 4 (the network input) or 16 (the others), and B the border, the largest padding of any
  conv in the network (at least 1); the border holds the point's zero point z, written once
  when the arena is made, so a conv reads its taps with no bounds test.  A point's place
  (geo) is (origin, padded width, padded channels), the origin being the byte of (0, 0, 0):
  (y, x, c) is at origin + (y Wp + x) Cp + c, and the border lies before and after it.
- The op table.  One int64 row per op; its fields are named once, in FIELDS, and each op
  kind's `lower` (intengine/ops/) fills them by name through Builder.row.  The residual add's seven parameters that
  vnni.epilogue reads as one slice (EPILOGUE_ADD) are checked to be contiguous, in order.
"""
import numpy as np

# a row's type (its field ROW), what fastops.run_op runs; ROWWISE: the types whose work splits
# into blocks of output rows (fastops.share_image)
CONV, ADD, GAP, LINEAR, DWCONV, AVGPOOL, MAXPOOL, FLATTEN, OUTPUT = 1, 2, 3, 4, 5, 6, 7, 8, 9
ROWWISE = (CONV, ADD, DWCONV, AVGPOOL, MAXPOOL)
GUARD = 64                         # spare arena bytes at both ends (Builder)

# The fields of one op's row, in order: the output point, then the main input, the conv's
# tables, then the residual add (standalone, or fused into the conv before it): input b,
# factors, requantize, and its own output point; then a window and its input's size (pools),
# STORE (a linear layer that writes its point to the arena, not the logits), and MADD (a conv's
# K-groups whose vpmaddubsw int16 sums may be added before widening, 0 where vpmaddubsw could
# saturate: ops/conv.bytes_groups, docs/engine.md eq. A1-A2; vnni.py's path 2 runs it if > 0),
# and WIDE (where MADD is 0 and the graph is for the avx2 kernel: the byte offset of the same
# weights as little-endian int16, which path 3 reads; -1 in a conv row without them); then
# the AMX tile's (a conv row of a graph for the amx kernel; amx.py): AMX_N chunks (0: none),
# of AMX_R K-groups, their A offsets at koffs[AMX_K:], weights at AMX_W (AMX_WSTEP bytes a
# chunk, AMX_TSTEP a channel tile), M = AMX_M pixels a block, the tile configuration at AMX_CFG.
FIELDS = ("ROW O_OFF O_WP O_CP HO WO CO ZY LO HI CH "
          "I_OFF I_WP I_CP STRIDE ZX "
          "NK KOFF WOFF COT FUSE "
          "B_OFF B_WP B_CP B_C ZB A_STRIDE PAD KA KB A_M0 A_N A_ZY A_LO A_HI AH BH AL ASIDE "
          "A_OFF A_WP A_CP KH KW PH PW IH IW STORE MADD WIDE "
          "AMX_N AMX_R AMX_K AMX_W AMX_WSTEP AMX_TSTEP AMX_M AMX_CFG").split()
FIELD = {name: k for k, name in enumerate(FIELDS)}
NFIELDS = len(FIELDS)
(ROW, O_OFF, O_WP, O_CP, HO, WO, CO, ZY, LO, HI, CH, I_OFF, I_WP, I_CP, STRIDE, ZX, NK, KOFF, WOFF, COT,
 FUSE, B_OFF, B_WP, B_CP, B_C, ZB, A_STRIDE, PAD, KA, KB, A_M0, A_N, A_ZY, A_LO, A_HI, AH, BH, AL, ASIDE,
 A_OFF, A_WP, A_CP, KH, KW, PH, PW, IH, IW, STORE, MADD, WIDE,
 AMX_N, AMX_R, AMX_K, AMX_W, AMX_WSTEP, AMX_TSTEP, AMX_M, AMX_CFG) = (FIELD[n] for n in FIELDS)
# What vnni.epilogue reads as P[ADD_START:ADD_END], in this order: the add's n, z, lo, hi and
# the constants of eq. (14a) (fixedpoint.add_split), set when the add is fused into a conv
EPILOGUE_ADD = ("A_N", "A_ZY", "A_LO", "A_HI", "AH", "BH", "AL", "ASIDE")
ADD_START, ADD_END = FIELD["A_N"], FIELD["A_N"] + len(EPILOGUE_ADD)
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
    """Assigns arena offsets to points and gathers the flat tables; each op kind's `lower`
    (intengine/ops/) fills its rows through it, by field name."""

    def __init__(self, border=1):
        # 64 spare bytes before the first point and after the last: vnni.epilogue reads 16
        # bytes of the shortcut input at once (and ignores the lanes it does not need)
        self.border = border
        self.size, self.fill = GUARD, []                   # fill: (offset, bytes, zero point)
        self.rows, self.names, self._koffs, self._w, self.chan = [], [], [], [], []
        self.nk = self.nw = self.nch = 0

    def point(self, shape, z, cmul=16):
        """-> (origin, padded width, padded channels) of a new point (H,W,C) or (C,)."""
        if len(shape) == 3:
            h, w, c = shape
            b, cp = self.border, _round_up(c, cmul)
            nbytes, geo = (h + 2 * b) * (w + 2 * b) * cp, (self.size + (b * (w + 2 * b) + b) * cp, w + 2 * b, cp)
        else:
            nbytes, geo = _round_up(shape[0], 4), (self.size, 0, shape[0])
        self.fill.append((self.size, nbytes, z))
        self.size += _round_up(nbytes, 64)
        return geo

    def channels(self, *arrays, count):
        """Append `count` entries to each per-channel table (zero-padded) -> their start."""
        start = self.nch
        for k, a in enumerate(arrays):
            pad = np.zeros(count, np.int64)
            pad[:len(a)] = a
            if len(self.chan) <= k:
                self.chan.append([])
            self.chan[k].append(pad)
        self.nch += count
        return start

    def koffs(self, offsets):
        """Append a conv's tap offsets -> their start in the koffs table."""
        self._koffs.append(np.array(offsets, np.int64))
        self.nk += len(offsets)
        return self.nk - len(offsets)

    def weights(self, w):
        """Append int8 weights (any shape, flattened) -> their start in the weight table."""
        self._w.append(np.asarray(w).astype(np.int8).ravel())
        self.nw += self._w[-1].size
        return self.nw - self._w[-1].size

    def weights16(self, w):
        """Append weights (any shape, flattened) as little-endian int16, 2 bytes each, to the
        same byte table -> the byte offset of the first."""
        return self.weights(np.asarray(w).astype("<i2").ravel().view(np.int8))

    def row(self, name, **fields):
        """A new row of the op table, its fields set by name -> the row (an int64 array)."""
        row = set_fields(np.zeros(NFIELDS, np.int64), **fields)
        self.rows.append(row)
        self.names.append(name)
        return row

    @staticmethod
    def set(row, **fields):
        return set_fields(row, **fields)

    def tables(self):
        """(ops, koffs, wpk, bias, m0, n, rnd, arena template)."""
        cat = lambda parts, dt: np.ascontiguousarray(np.concatenate(parts).astype(dt)) if parts \
            else np.zeros(1, dt)
        chans = [cat(c, np.int64) for c in self.chan] if self.chan else [np.zeros(1, np.int64)] * 4
        arena = np.zeros(self.size + GUARD, np.uint8)
        for off, nbytes, z in self.fill:
            arena[off:off + nbytes] = z
        return (np.ascontiguousarray(np.stack(self.rows)), cat(self._koffs, np.int64),
                cat(self._w, np.int8), *chans, arena)
