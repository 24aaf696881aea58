"""The fast path's memory layout: where every point lives in a worker's arena, and the op
table that graph.py hands to fastops.run (docs/engine.md).

- Arena.  Every point of the network lives in one uint8 buffer per worker, at a fixed
  offset.  A spatial point (H,W,C) is stored padded, (H+2, W+2, Cp) with Cp = C rounded up to
  4 (the network input) or 16 (conv outputs); its border holds the point's zero point z,
  written once when the arena is made, so a conv reads its 3x3 taps with no bounds test.
- The op table.  One int64 row per op; its fields are named once, in FIELDS, and each op
  kind's `lower` (intengine/ops/) fills them by name through Builder.row.  The residual add's seven parameters that
  vnni.epilogue reads as one slice (EPILOGUE_ADD) are checked to be contiguous, in order.
"""
import numpy as np

CONV, ADD, POOL, LINEAR = 1, 2, 3, 4   # a row's type (its field ROW), what fastops.run_op runs
GUARD = 64                         # spare arena bytes at both ends (Builder)

# The fields of one op's row, in order: the output point, then the main input, the conv's
# tables, then the residual add (standalone, or fused into the conv before it): input b,
# factors, requantize, and its own output point.
FIELDS = ("ROW O_OFF O_WP O_CP HO WO CO ZY LO HI CH "
          "I_OFF I_WP I_CP STRIDE ZX "
          "NK KOFF WOFF COT FUSE "
          "B_OFF B_WP B_CP B_C ZB A_STRIDE PAD KA KB A_M0 A_N A_ZY A_LO A_HI AH BH AL ASIDE "
          "A_OFF A_WP A_CP").split()
FIELD = {name: k for k, name in enumerate(FIELDS)}
NFIELDS = len(FIELDS)
(ROW, O_OFF, O_WP, O_CP, HO, WO, CO, ZY, LO, HI, CH, I_OFF, I_WP, I_CP, STRIDE, ZX, NK, KOFF, WOFF, COT,
 FUSE, B_OFF, B_WP, B_CP, B_C, ZB, A_STRIDE, PAD, KA, KB, A_M0, A_N, A_ZY, A_LO, A_HI, AH, BH, AL, ASIDE,
 A_OFF, A_WP, A_CP) = (FIELD[n] for n in FIELDS)
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

    def __init__(self):
        # 64 spare bytes before the first point and after the last: vnni.epilogue reads 16
        # bytes of the shortcut input at once (and ignores the lanes it does not need)
        self.size, self.fill = GUARD, []                   # fill: (offset, bytes, zero point)
        self.rows, self.names, self._koffs, self._w, self.chan = [], [], [], [], []
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
