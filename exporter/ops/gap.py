"""The global average pool: the sum over positions requantized with ties to even, eq. (15)-(16a)."""
from ..quantize import quantize_multiplier
from ..integer import requant_even
from .requant import header  # noqa: F401  (like requant's: its channel's M0 and n, no other field)

NAME, WEIGHTED = "gap", False
FIELDS = ("lo", "hi", "offset")
INFO = ()


def integers(op, qpts, weights, bias_shift):
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    h, w, _ = qpts[op["in"]]["shape"]
    m0, n = quantize_multiplier(qpts[op["in"]]["scale"] / (h * w * qpts[op["out"]]["scale"]), op["name"])  # eq. (16)
    q.update(m0=m0, n=n)
    return q


def gain(op, weights, qpts):
    """M of eq. (16) is s_x / (H W s_y) (build.widen_outputs)."""
    h, w, _ = qpts[op["in"]]["shape"]
    return 1.0 / (h * w)


def float_op(op, acts, weight):
    return acts[op["in"]].mean((2, 3))


def exact(q, acts, pts):
    acc = (acts[q["in"]] - pts[q["in"]]["zp"]).sum((1, 2))
    return pts[q["out"]]["zp"] + requant_even(acc, q["m0"], q["n"])
