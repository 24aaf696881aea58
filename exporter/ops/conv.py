"""The convolution (any kernel, stride, zero padding and groups): eq. (6)-(8) (docs/quantization.md)."""
import torch
import torch.nn.functional as F

from . import weighted
from ..integer import requant

NAME, WEIGHTED = "conv", True
FIELDS = ("cin", "cout", "kh", "kw", "stride", "ph", "pw", "groups", "lo", "hi", "bits_w", "w_offset",
          "w_nbytes", "cb_offset", "offset")
INFO = weighted.INFO
integers, gain = weighted.integers, weighted.gain


def header(q, t):
    return {**weighted.header(q, t), **{k: q[k] for k in ("kh", "kw", "stride", "ph", "pw", "groups")}}


def file_codes(codes):
    """(Co,Ci/g,kh,kw) as torch holds them -> (Co,kh,kw,Ci/g), the file's order (format.md "Weights")."""
    return codes.transpose(0, 2, 3, 1)


def float_op(op, acts, weight):
    w = weight(op)
    return F.conv2d(acts[op["in"]], w, op["bias"].to(w.dtype), op["stride"], (op["ph"], op["pw"]), 1, op["groups"])


def exact(q, acts, pts):
    """Exact in float64 below 2^53 (section 11): padding 0 equals z_x after centring, eq. (6)."""
    x = weighted.centred(acts, q, pts).permute(0, 3, 1, 2).double()
    acc = F.conv2d(x, torch.as_tensor(q["w_int"]).double(), None, q["stride"], (q["ph"], q["pw"]), 1,
                   q["groups"]).permute(0, 2, 3, 1)
    return pts[q["out"]]["zp"] + requant(weighted.accumulate(acc, q), q["m0"], q["n"])
