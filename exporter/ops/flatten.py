"""Flatten an H x W x C map in (y, x, c) order (docs/format.md "Flatten").  The float graph
flattens in the same order, so the linear layer after it holds its columns in that order
(the graph builder permutes them from PyTorch's (c, y, x) once)."""
NAME, WEIGHTED = "flatten", False
FIELDS = ()
INFO = ()
KEEPS_POINT = True                     # the output point is the input's scale and zero point


def integers(op, qpts, weights, bias_shift):
    return dict(op)


def header(q, t):
    return {}


def float_op(op, acts, weight):
    return acts[op["in"]].permute(0, 2, 3, 1).flatten(1)          # NCHW -> (y, x, c)


def exact(q, acts, pts):
    x = acts[q["in"]]
    return x.reshape(len(x), -1)
