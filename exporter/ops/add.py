"""The add a + shortcut(b) with a common unit, clamped: eq. (12)-(14); the shortcut is the
identity or option A (section 7)."""
import torch.nn.functional as F

from intengine.fixedpoint import ADD_UNIT_BITS
from ..quantize import quantize_multiplier, rnd
from ..integer import requant

NAME, WEIGHTED = "add", False
FIELDS = ("stride", "pad", "lo", "hi", "offset", "factor_offset")
INFO = ()


def integers(op, qpts, weights, bias_shift):
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    sa, sb, sy = qpts[op["in"][0]]["scale"], qpts[op["in"][1]]["scale"], qpts[op["out"]]["scale"]
    u = max(sa, sb) / 2.0 ** ADD_UNIT_BITS
    m0, n = quantize_multiplier(u / sy, op["name"])                             # eq. (14)
    q.update(ka=int(rnd(sa / u)), kb=int(rnd(sb / u)), m0=m0, n=n)             # eq. (12)
    return q


def header(q, t):
    t.channels([q["m0"]], [q["n"]], [0], [0.0])
    return {"stride": q["stride"], "pad": q["pad"], "factor_offset": t.factors([q["ka"], q["kb"]])}


def shortcut(x, stride, pad):
    """Option A on NCHW tensors: subsample, then `pad` zero channels each side (section 7)."""
    return F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad)) if stride > 1 or pad else x


def float_op(op, acts, weight):
    return acts[op["in"][0]] + shortcut(acts[op["in"][1]], op["stride"], op["pad"])


def exact(q, acts, pts):
    a = acts[q["in"][0]] - pts[q["in"][0]]["zp"]
    b = acts[q["in"][1]] - pts[q["in"][1]]["zp"]                      # real 0 == 0 here
    b = shortcut(b.permute(0, 3, 1, 2), q["stride"], q["pad"]).permute(0, 2, 3, 1)
    return pts[q["out"]]["zp"] + requant(q["ka"] * a + q["kb"] * b, q["m0"], q["n"])   # eq. (13)-(14)
