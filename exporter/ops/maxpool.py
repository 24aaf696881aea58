"""The max pool: the input's integers, the largest of each window (padding never wins).  The
output point takes the input's scale and zero point (build.py)."""
import torch.nn.functional as F

NAME, WEIGHTED = "maxpool", False
FIELDS = ("kh", "kw", "stride", "ph", "pw")
INFO = ()
KEEPS_POINT = True                     # the output point is the input's scale and zero point


def integers(op, qpts, weights, bias_shift):
    return dict(op)


def header(q, t):
    return {k: q[k] for k in FIELDS}


def _pool(x, q):
    return F.max_pool2d(x, (q["kh"], q["kw"]), q["stride"], (q["ph"], q["pw"]))


def float_op(op, acts, weight):
    return _pool(acts[op["in"]], op)


def exact(q, acts, pts):
    x = acts[q["in"]].permute(0, 3, 1, 2).double()
    return _pool(x, q).long().permute(0, 2, 3, 1)
