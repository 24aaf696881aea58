"""PyTorch walks of the graph (capture.graph): float, exact integer, and fake-quant.

- `forward(ops, x, act, weight)`: the float network, each kind's `float_op`; `act(point, t)` sees every point
  (calibration observes there, fake-quant rounds there).
- `run_exact(qnet, images)`: the integers of docs/quantization.md, in int64/float64
  tensors, section 11: each converter's `exact` (exporter/ops/), in torch.  It never calls
  the engine's arithmetic: eq. (11) is written again in exporter/integer.py, so the engine
  and this check each other (tests/test_exporter.py and tests/test_reconstruct.py, tolerance 0).
- `FakeQuantNet`: the differentiable mode (straight-through rounding) for later
  AdaRound/BRECQ/QAT work.
"""
import torch
import torch.nn as nn

from .ops import CLAMPED, CONVERTERS, INPUT, activate, clamp
from .quantize import nearest


def forward(ops, x, act=lambda i, t: t, weight=lambda op: op["weight"]):
    """Float walk.  x: normalized (N,3,32,32); returns the logits (N, classes)."""
    return walk(ops, {0: act(0, x)}, weight, act)[ops[-1]["out"]]


def walk(ops, acts, weight, act, step=None):
    """Run `ops` in order on a copy of acts {point: tensor}; returns it with their outputs.
    A whole network from the input point (forward), or one reconstruction unit.  `step(op,
    acts, weight)`: an op's output before `act`, in place of `apply` (QAT's batch norm)."""
    acts = dict(acts)
    for op in ops:
        acts[op["out"]] = act(op["out"], (step or apply)(op, acts, weight))
    return acts


def apply(op, acts, weight):
    """One op of the float walk on acts {point: tensor} -> its output, before `act`."""
    return activate(op, CONVERTERS[op["op"]].float_op(op, acts, weight))        # exporter/ops/


@torch.no_grad()
def run_exact(qnet, images):
    """images (N,32,32,3) uint8 -> list of int64 tensors, one per point, NHWC (section 11)."""
    pts = qnet["points"]
    acts = [None] * len(pts)
    acts[0] = INPUT.exact(qnet["lut"], images)                                  # eq. (5)
    for op in qnet["ops"]:
        out = op["out"]
        lo, hi = clamp(op, pts[out]) if op["op"] in CLAMPED else (0, (1 << pts[out]["bits"]) - 1)
        acts[out] = CONVERTERS[op["op"]].exact(op, acts, pts).clamp(lo, hi)
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
            if CONVERTERS[op["op"]].WEIGHTED:
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
