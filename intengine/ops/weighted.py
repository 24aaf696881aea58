"""What the two weighted kinds (conv.py, linear.py) share: their weight fields, checks and
unpacking (docs/format.md "Weights"), and the exporter's integers of eq. (7)-(9)."""
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


# ---- the exporter side ----------------------------------------------------------------------

def integers(op, qpts, weights, bias_shift):
    """The kind's `integers`: the layer's entry of weights {name: (bits, level set, codes, L,
    s_w)} and its folded bias, plus bias_shift {name: (Co,)} where given (bias correction)."""
    bias = op["bias"].numpy() + (bias_shift[op["name"]] if bias_shift else 0.0)
    return layer_integers(op, qpts, *weights[op["name"]], bias)


def layer_integers(op, qpts, bits, kind, codes, L, s_w, bias):
    """A layer's codes (levels L, scales s_w) and float bias -> eq. (7)-(9)."""
    from exporter.quantize import ExportError, quantize_multiplier, rnd
    sx, sy = qpts[op["in"]]["scale"], qpts[op["out"]]["scale"]
    bias_q = rnd(bias / (sx * s_w)).astype(np.int64)                                 # eq. (7)
    bound = acc_bound(np.abs(bias_q).max(), codes[0].size, np.abs(L).max(), qpts[op["in"]]["bits"])
    if bound >= FILE_ACC_BOUND:
        raise ExportError(f"{op['name']}: accumulator bound {bound} exceeds 2^47 (section 5)")
    mq = [quantize_multiplier(sx * s / sy, f"{op['name']} channel {c}") for c, s in enumerate(s_w)]
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    q.update(bits_w=bits, levels=kind, codes=codes, L=L, w_int=L[codes], w_scale=s_w, bias_q=bias_q,
             bias_float=np.asarray(bias, np.float64),                   # b'' of eq. (3a), for fake-quant
             m0=np.array([m for m, _ in mq], np.int64), n=np.array([n for _, n in mq], np.int64))
    return q


def header(q, t):
    """The weight fields of the header entry (after "offset", which build.to_file sets)."""
    from exporter.build import packed_weights
    b = q["bits_w"]
    t.channels(q["m0"], q["n"], q["bias_q"], q["w_scale"])
    w_offset = t.nbytes
    return {"cin": q["cin"], "cout": q["cout"], "relu": q["relu"], "bits_w": b, "levels": q["levels"],
            "w_offset": w_offset, "w_nbytes": t.weights(packed_weights(q["op"], b, q["codes"], q["L"])),
            "cb_offset": t.codebook(q["L"]) if b <= 4 else -1}


def centred(acts, q, pts):
    """The layer's input minus its zero point, int64 (eq. 6)."""
    return acts[q["in"]] - pts[q["in"]]["zp"]
