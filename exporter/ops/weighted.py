"""What the two weighted converters (conv.py, linear.py) share: eq. (7)-(9) and the weight
fields of the header (docs/format.md "Weights")."""
import numpy as np
import torch

from intengine.fixedpoint import FILE_ACC_BOUND, acc_bound
from ..quantize import ExportError, quantize_multiplier, rnd

INFO = ("levels",)                     # the level set's name (section 2), for `intengine info`


def integers(op, qpts, weights, bias_shift):
    """The kind's `integers`: the layer's entry of weights {name: (bits, level set, codes, L,
    s_w)} and its folded bias, plus bias_shift {name: (Co,)} where given (bias correction)."""
    bias = op["bias"].numpy() + (bias_shift[op["name"]] if bias_shift else 0.0)
    return layer_integers(op, qpts, *weights[op["name"]], bias)


def layer_integers(op, qpts, bits, levels, codes, L, s_w, bias):
    """A layer's codes (levels L, scales s_w) and float bias -> eq. (7)-(9)."""
    sx, sy = qpts[op["in"]]["scale"], qpts[op["out"]]["scale"]
    bias_q = rnd(bias / (sx * s_w)).astype(np.int64)                                 # eq. (7)
    bound = acc_bound(np.abs(bias_q).max(), codes[0].size, np.abs(L).max(), qpts[op["in"]]["bits"])
    if bound >= FILE_ACC_BOUND:
        raise ExportError(f"{op['name']}: accumulator bound {bound} exceeds 2^47 (section 5)")
    mq = [quantize_multiplier(sx * s / sy, f"{op['name']} channel {c}") for c, s in enumerate(s_w)]
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    q.update(bits_w=bits, levels=levels, codes=codes, L=L, w_int=L[codes], w_scale=s_w, bias_q=bias_q,
             bias_float=np.asarray(bias, np.float64),                   # b'' of eq. (3a), for fake-quant
             m0=np.array([m for m, _ in mq], np.int64), n=np.array([n for _, n in mq], np.int64))
    return q


def gain(op, weights, qpts):
    """M of eq. (8) is s_x gain / s_y (build.widen_outputs)."""
    return float(np.max(weights[op["name"]][4]))


def header(q, t):
    """The weight fields of the header entry (after "offset", which build.to_file sets)."""
    from ..build import packed_weights
    b = q["bits_w"]
    t.channels(q["m0"], q["n"], q["bias_q"], q["w_scale"])
    w_offset = t.nbytes
    return {"cin": q["cin"], "cout": q["cout"], "bits_w": b, "levels": q["levels"],
            "w_offset": w_offset, "w_nbytes": t.weights(packed_weights(q["op"], b, q["codes"], q["L"])),
            "cb_offset": t.codebook(q["L"]) if b <= 4 else -1}


def centred(acts, q, pts):
    """The layer's input minus its zero point, int64 (eq. 6)."""
    return acts[q["in"]] - pts[q["in"]]["zp"]


def accumulate(acc, q):
    """A float64 accumulator (exact below 2^53, section 11) plus the integer bias, int64."""
    return acc.round().long() + torch.as_tensor(q["bias_q"])
