"""PyTorch walks of the graph (fold.graph): float, exact integer, and fake-quant.

- `forward(ops, x, act, weight)`: the float network; `act(point, t)` sees every point
  (calibration observes there, fake-quant rounds there).
- `run_exact(qnet, images)`: the integers of docs/quantization.md, in int64/float64
  tensors, section 11.  It never calls intengine: eq. (11) is written again below, so
  the engine and this file check each other (tests/test_exporter.py and tests/test_reconstruct.py, tolerance 0).
- `FakeQuantNet`: the differentiable mode (straight-through rounding) for later
  AdaRound/BRECQ/QAT work.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantize import nearest


def _shortcut(x, stride, pad):
    """Option A on NCHW: subsample, then `pad` zero channels each side (section 7)."""
    return F.pad(x[:, :, ::stride, ::stride], (0, 0, 0, 0, pad, pad)) if stride > 1 or pad else x


def forward(ops, x, act=lambda i, t: t, weight=lambda op: op["weight"]):
    """Float walk.  x: normalized (N,3,32,32); returns the logits (N, classes)."""
    return walk(ops, {0: act(0, x)}, weight, act)[ops[-1]["out"]]


def walk(ops, acts, weight, act):
    """Run `ops` in order on a copy of acts {point: tensor}; returns it with their outputs.
    A whole network from the input point (forward), or one reconstruction unit."""
    acts = dict(acts)
    for op in ops:
        acts[op["out"]] = act(op["out"], apply(op, acts, weight))
    return acts


def apply(op, acts, weight):
    """One op of the float walk on acts {point: tensor} -> its output, before `act`."""
    kind = op["op"]
    if kind == "conv":
        w = weight(op)
        y = F.conv2d(acts[op["in"]], w, op["bias"].to(w.dtype), op["stride"], 1)
    elif kind == "add":
        a, b = acts[op["in"][0]], acts[op["in"][1]]
        y = a + _shortcut(b, op["stride"], op["pad"])
    elif kind == "requant":                    # the float value is unchanged; its point rounds it
        y = acts[op["in"]]
    elif kind == "pool":
        y = acts[op["in"]].mean((2, 3))
    else:
        w = weight(op)
        y = F.linear(acts[op["in"]], w, op["bias"].to(w.dtype))
    return F.relu(y) if op.get("relu") else y


def requant(acc, m0, n):
    """eq. (11) in torch int64, written independently of intengine.fixedpoint."""
    m0 = torch.as_tensor(m0, dtype=torch.int64)
    n = torch.as_tensor(n, dtype=torch.int64)
    hi, lo = acc >> 31, acc & ((1 << 31) - 1)
    big = n >= 32
    a = hi * m0 + torch.where(big, torch.ones_like(n) << (n - 32).clamp(min=0), torch.zeros_like(n))
    b = lo * m0 + torch.where(big, torch.zeros_like(n), torch.full_like(n, 1 << 30))
    return (a + (b >> 31)) >> (n - 31)


def requant_even(acc, m0, n):
    """eq. (16a): eq. (10), but an exact tie goes to the even integer."""
    n = torch.as_tensor(n, dtype=torch.int64)
    num = acc * torch.as_tensor(m0, dtype=torch.int64)           # < 2^62 for the pool's acc
    r = requant(acc, m0, n)
    tie = ((num + (torch.ones_like(n) << (n - 1))) & ((torch.ones_like(n) << n) - 1)) == 0
    return r - (tie & (r % 2 == 1)).long()


@torch.no_grad()
def run_exact(qnet, images):
    """images (N,32,32,3) uint8 -> list of int64 tensors, one per point, NHWC (section 11)."""
    pts = qnet["points"]
    x = torch.as_tensor(np.asarray(images)).long()
    acts = [None] * len(pts)
    acts[0] = torch.as_tensor(qnet["lut"]).long()[torch.arange(3), x]          # eq. (5)
    for op in qnet["ops"]:
        kind, out = op["op"], op["out"]
        zy, hi = pts[out]["zp"], (1 << pts[out]["bits"]) - 1
        lo = zy if op.get("relu") else 0
        if kind in ("conv", "linear"):
            xin = acts[op["in"]] - pts[op["in"]]["zp"]
            w = torch.as_tensor(op["w_int"]).double()
            if kind == "conv":                         # padding 0 == z_x after centring, eq. (6)
                acc = F.conv2d(xin.permute(0, 3, 1, 2).double(), w, None, op["stride"], 1)
                acc = acc.permute(0, 2, 3, 1)
            else:
                acc = xin.double() @ w.T
            acc = acc.round().long() + torch.as_tensor(op["bias_q"])              # exact below 2^53
            y = zy + requant(acc, op["m0"], op["n"])
        elif kind == "add":
            a = acts[op["in"][0]] - pts[op["in"][0]]["zp"]
            b = acts[op["in"][1]] - pts[op["in"][1]]["zp"]                      # real 0 == 0 here
            b = _shortcut(b.permute(0, 3, 1, 2), op["stride"], op["pad"]).permute(0, 2, 3, 1)
            y = zy + requant(op["ka"] * a + op["kb"] * b, op["m0"], op["n"])     # eq. (13)-(14)
        elif kind == "requant":                                                    # eq. (17a)
            y = zy + requant(acts[op["in"]] - pts[op["in"]]["zp"], op["m0"], op["n"])
        else:  # pool, eq. (15)-(16a)
            acc = (acts[op["in"]] - pts[op["in"]]["zp"]).sum((1, 2))
            y = zy + requant_even(acc, op["m0"], op["n"])
        acts[out] = y.clamp(lo, hi)
    return acts


def _ste(x, xq):
    """Forward xq, backward identity."""
    return x + (xq - x).detach()


class FakeQuantNet(nn.Module):
    """Float weights as parameters; eq. (3) on weights, eq. (1)+(4) on every point, STE."""

    def __init__(self, qnet, float_ops):
        super().__init__()
        self.ops = [dict(op) for op in float_ops]
        self.params = nn.ParameterList()
        for op, q in zip(self.ops, qnet["ops"]):
            if op["op"] in ("conv", "linear"):
                op["weight"] = nn.Parameter(op["weight"].float().clone())
                op["bias"] = torch.as_tensor(q["bias_float"]).float()     # b'' (bias correction included)
                op["L"], op["s_w"] = torch.as_tensor(q["L"]).float(), torch.as_tensor(q["w_scale"]).float()
                self.params.append(op["weight"])
        self.points = qnet["points"]

    def _weight(self, op):
        w, s = op["weight"], op["s_w"].view(-1, *([1] * (op["weight"].dim() - 1)))
        L = op["L"]
        idx = torch.as_tensor(nearest((w / s).detach().double().numpy(), L.numpy()))
        return _ste(w, L[idx] * s)

    def _act(self, i, t):
        p = self.points[i]
        q = torch.clamp(torch.floor(t / p["scale"] + 0.5) + p["zp"], 0, (1 << p["bits"]) - 1)
        return _ste(t, (q - p["zp"]) * p["scale"])

    def forward(self, x):
        return forward(self.ops, x, self._act, self._weight)
