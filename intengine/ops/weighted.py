"""What the two weighted kinds (conv.py, linear.py) share: their weight fields, checks and
unpacking (docs/format.md "Weights")."""
import numpy as np

from ..fileformat import WEIGHT_BITS, packed_nbytes, unpack_codes
from ..fixedpoint import FILE_ACC_BOUND, INT32_ACC_MAX, acc_bound


def channels(spec):
    """One bias, multiplier and shift per output channel."""
    return spec["cout"]


def check(c, spec, taps, cout, in_bits):
    """The weight fields of a layer with `taps` inputs per output channel: bits, packed size,
    codebook, channel range and the accumulator bound (section 5)."""
    name, arrays = spec["name"], c.arrays
    b = c.int(spec, "bits_w", 2, 16)
    if b not in WEIGHT_BITS:
        c.fail(f"op {name!r}: weight bits {b} not in {WEIGHT_BITS}")
    off = c.int(spec, "w_offset", 0, len(arrays["weights"]))
    nb = c.int(spec, "w_nbytes", 0, len(arrays["weights"]) - off)
    if nb != packed_nbytes(taps * cout, b):
        c.fail(f"op {name!r}: {nb} weight bytes for {taps * cout} {b}-bit weights")
    if b <= 4:
        c.int(spec, "cb_offset", 0, len(arrays["codebook"]) - (1 << b))
        maxw = 127
    else:
        if spec["cb_offset"] != -1:
            c.fail(f"op {name!r}: {b}-bit weights take no codebook (cb_offset -1)")
        maxw = 1 << (b - 1)
    o = c.int(spec, "offset", 0, c.nch - cout)
    bias = np.abs(arrays["bias"][o:o + cout].astype(np.int64)).max()
    bound = acc_bound(bias, taps, maxw, in_bits)
    if bound >= FILE_ACC_BOUND:
        c.fail(f"op {name!r}: accumulator bound {bound} exceeds 2^47")
    c.use("weights", off, off + nb)
    c.use("channels", o, o + cout)
    if b <= 4:
        c.use("codebook", spec["cb_offset"], spec["cb_offset"] + (1 << b))


def load(op, spec, arrays, shape):
    """Unpack the codes through the codebook (eq. 3) to int8 (int16 at 16 bits) in the file's
    order `shape` (Co first); set op.w (Co last), op.bias and op.acc_like (section 5)."""
    b, cout = spec["bits_w"], spec["cout"]
    raw = arrays["weights"][spec["w_offset"]:spec["w_offset"] + spec["w_nbytes"]]
    codes = unpack_codes(raw, b, int(np.prod(shape)))
    if b <= 4:                                      # per-layer codebook: code -> level, eq. (3)
        codes = arrays["codebook"][spec["cb_offset"]:spec["cb_offset"] + (1 << b)][codes]
    w = codes.astype(np.int16 if b == 16 else np.int8).reshape(shape)
    op.w = np.ascontiguousarray(np.moveaxis(w, 0, -1))     # the kernels want Co innermost
    op.bias = arrays["bias"][spec["offset"]:spec["offset"] + cout].astype(np.int64)
    maxw = int(np.abs(op.w.astype(np.int64)).max(initial=0))
    bound = acc_bound(np.abs(op.bias).max(), op.w.size // cout, maxw, op.in_bits)
    op.acc_like = np.zeros(1, np.int32 if bound <= INT32_ACC_MAX else np.int64)
