"""The average pool over a window (zero padding counted, count_include_pad): eq. (15)-(16a)
with M = s_x / (kh kw s_y)."""
import torch.nn.functional as F

from ..integer import requant_even
from ..quantize import quantize_multiplier
from .requant import header  # noqa: F401  (its channel's M0 and n; the window below)

NAME, WEIGHTED = "avgpool", False
FIELDS = ("kh", "kw", "stride", "ph", "pw", "lo", "hi", "offset")
INFO = ()
WINDOW = ("kh", "kw", "stride", "ph", "pw")


def integers(op, qpts, weights, bias_shift):
    q = dict(op)
    m = qpts[op["in"]]["scale"] / (op["kh"] * op["kw"] * qpts[op["out"]]["scale"])
    q["m0"], q["n"] = quantize_multiplier(m, op["name"])
    return q


def gain(op, weights, qpts):
    """M is s_x / (kh kw s_y) (build.widen_outputs)."""
    return 1.0 / (op["kh"] * op["kw"])


def header(q, t):  # noqa: F811
    t.channels([q["m0"]], [q["n"]], [0], [0.0])
    return {k: q[k] for k in WINDOW}


def _pool(x, q):
    return F.avg_pool2d(x, (q["kh"], q["kw"]), q["stride"], (q["ph"], q["pw"]), count_include_pad=True)


def float_op(op, acts, weight):
    return _pool(acts[op["in"]], op)


def exact(q, acts, pts):
    """The window sums of (x - z_x), exact in float64 (each below 2^53), then eq. (16a)."""
    x = (acts[q["in"]] - pts[q["in"]]["zp"]).permute(0, 3, 1, 2).double()
    acc = (_pool(x, q) * (q["kh"] * q["kw"])).round().long().permute(0, 2, 3, 1)
    return pts[q["out"]]["zp"] + requant_even(acc, q["m0"], q["n"])
