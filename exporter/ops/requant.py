"""One point's integers at another point's scale and width, clamped: eq. (17a).  blocks.split_stream
puts one before each block's first conv when activations are below 8 bits (section 3), and
capture.py one for an activation after an op that cannot take it (a max pool)."""
from ..quantize import quantize_multiplier
from ..integer import requant

NAME, WEIGHTED = "requant", False
FIELDS = ("lo", "hi", "offset")
INFO = ()


def integers(op, qpts, weights, bias_shift):
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    m0, n = quantize_multiplier(qpts[op["in"]]["scale"] / qpts[op["out"]]["scale"], op["name"])   # eq. (17a)
    q.update(m0=m0, n=n)
    return q


def gain(op, weights, qpts):
    """M of eq. (17a) is s_x / s_y (build.widen_outputs)."""
    return 1.0


def header(q, t):
    """No fields beyond its channel's M0 and n."""
    t.channels([q["m0"]], [q["n"]], [0], [0.0])
    return {}


def float_op(op, acts, weight):
    return acts[op["in"]]                      # the float value is unchanged; its point rounds it


def exact(q, acts, pts):
    return pts[q["out"]]["zp"] + requant(acts[q["in"]] - pts[q["in"]]["zp"], q["m0"], q["n"])
