"""The fully connected layer: eq. (6)-(8) on a flat point."""
import torch
import torch.nn.functional as F

from . import weighted
from ..integer import requant

NAME, WEIGHTED = "linear", True
FIELDS = ("cin", "cout", "lo", "hi", "bits_w", "w_offset", "w_nbytes", "cb_offset", "offset")
INFO = weighted.INFO
integers, header, gain = weighted.integers, weighted.header, weighted.gain


def file_codes(codes):
    """(Co,Ci): the file's order already (format.md "Weights")."""
    return codes


def float_op(op, acts, weight):
    w = weight(op)
    return F.linear(acts[op["in"]], w, op["bias"].to(w.dtype))


def exact(q, acts, pts):
    acc = weighted.centred(acts, q, pts).double() @ torch.as_tensor(q["w_int"]).double().T
    return pts[q["out"]]["zp"] + requant(weighted.accumulate(acc, q), q["m0"], q["n"])
