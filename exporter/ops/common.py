"""What several converters share: the activation after an op, in float and as the clamp of
its output's integers (eq. 8)."""
import torch.nn.functional as F

CLAMPED = ("conv", "linear", "add", "requant", "gap", "avgpool")    # the kinds with lo, hi fields


def clamp(q, point):
    """(lo, hi) of an op's output on its point's integers: [z, 2^b - 1] after a ReLU (the real
    0 is z), further capped at z + round(6 / s) after a ReLU6, else [0, 2^b - 1]."""
    top = (1 << point["bits"]) - 1
    act = q.get("act", "relu" if q.get("relu") else None)
    if act == "relu6":
        return point["zp"], min(top, point["zp"] + int(6.0 / point["scale"] + 0.5))
    return (point["zp"] if act == "relu" else 0), top


def activate(op, y):
    """The float activation after an op: ReLU, ReLU6 or none."""
    act = op.get("act", "relu" if op.get("relu") else None)
    if act == "relu6":
        return F.hardtanh(y, 0.0, 6.0)
    return F.relu(y) if act == "relu" else y
