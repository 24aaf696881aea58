"""Mixed precision under a byte budget (docs/quantization.md section 14).  Offline, floats allowed.

1. `sensitivity`: for every conv/linear layer l and width b, the rise in KL(FP32 || Q) on the
   5,000 held-out training images when layer l alone drops from 8 bits to b (round-to-nearest
   weights, 8-bit fake-quant activations everywhere), eq. (23).
2. `solve`: the allocation that minimizes the summed rise under the byte budget, exactly, by
   dynamic programming over the layers' predicted bytes (`layer_costs`, eq. 24; a
   multiple-choice knapsack, eq. 25).
3. The exporter then reconstructs under that allocation (reconstruct.py sees the real mix) and
   checks the written file against the budget.

The file's bytes are predicted per layer (eq. 24): the deflated size of its packed
round-to-nearest codes, plus a share of what deflate saved on them, because learned rounding
makes the codes less compressible; plus the bytes of every other member, read from a
round-to-nearest file, and a slack for the reconstruction record.
"""
import re
import zipfile
import zlib

import numpy as np
import torch

from .ops import CONVERTERS
from . import build, calibrate
from .simulate import forward

CHOICES = (2, 4, 8)
META_SLACK = 384            # bytes: the reconstruction record and learned step sizes added later
# eq. (24): the share of deflate's saving on round-to-nearest codes that learned codes lose,
# per width.  Measured on this session's budget files (weights member, learned against
# nearest): the 2- and 4-bit layers together lose 0.13-0.2 of the 2-bit saving plus up to
# 0.05 of the 4-bit one; learned 8-bit codes lose about all of theirs (a 180 KB file came out
# 4 KB above a prediction that assumed 0.05).  The values here are above what was measured.
GROWTH = {2: 0.25, 4: 0.06, 8: 1.0}


class BudgetError(ValueError):
    """A budget that cannot be met or read; the message names the minimum."""


def parse_budget(text):
    """'100KB' -> 100000, '97.5KiB' -> 99840, '90000' -> 90000 (bytes; KB = 1000, KiB = 1024)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(|B|KB|kB|K|KiB|MB|MiB)\s*", str(text))
    if not m:
        raise BudgetError(f"--budget {text!r}: expected bytes, e.g. 100000, 100KB or 97.5KiB")
    unit = {"": 1, "B": 1, "KB": 1000, "kB": 1000, "K": 1000, "KiB": 1024, "MB": 10**6, "MiB": 2**20}[m.group(2)]
    return int(float(m.group(1)) * unit)


def weighted(ops):
    return [op for op in ops if CONVERTERS[op["op"]].WEIGHTED]


def layer_bytes(op, bits):
    """Raw bytes layer `op` adds to the file at `bits`: packed codes plus its int16 codebook."""
    n = op["weight"].numel()
    packed = -(-n * bits // 8)
    return packed + (2 * (1 << bits) if bits <= 4 else 0)


def layer_costs(ops, choices=CHOICES, levels="midrise", clip="mse"):
    """{layer: {bits: predicted file bytes}}, eq. (24): deflate(packed nearest codes) +
    GROWTH[bits] * (raw - deflated) + the codebook."""
    out = {op["name"]: {} for op in weighted(ops)}
    for b in choices:
        w = build.quantize_weights_all(ops, bits=b, first_last_bits=b, levels=levels, clip=clip)
        for op in weighted(ops):
            _, _, codes, L, _ = w[op["name"]]
            raw = build.packed_weights(op["op"], b, codes, L).tobytes()
            comp = len(zlib.compress(raw, 6))
            saved = max(0, len(raw) - comp)
            out[op["name"]][b] = comp + int(np.ceil(GROWTH[b] * saved)) + (2 * (1 << b) if b <= 4 else 0)
    return out


def kl(p_logits, q_logits):
    """Mean KL(softmax p || softmax q) over the rows."""
    lp, lq = torch.log_softmax(p_logits, 1), torch.log_softmax(q_logits, 1)
    return float((lp.exp() * (lp - lq)).sum(1).mean())


@torch.no_grad()
def sensitivity(ops, qpoints, images, *, levels="midrise", clip="mse", choices=CHOICES, log=None, norm=None):
    """{layer: {bits: rise in KL}} for every weighted layer and every width in `choices`
    below 8 (8 is the reference, rise 0), eq. (23).  `images`: the held-out images, uint8."""
    x = calibrate.normalize64(images, norm).float()
    deq = {b: build.dequantized(build.quantize_weights_all(ops, bits=b, first_last_bits=b, levels=levels,
                                                           clip=clip)) for b in set(choices) | {8}}
    scale = [torch.tensor(p["scale"]) for p in qpoints]

    def act(i, t):
        p = qpoints[i]
        q = torch.clamp(torch.floor(t / scale[i] + 0.5) + p["zp"], 0, (1 << p["bits"]) - 1)
        return (q - p["zp"]) * scale[i]

    f32 = [dict(op, weight=op["weight"].float(), bias=op["bias"].float()) if CONVERTERS[op["op"]].WEIGHTED
           else op for op in ops]

    def logits(alloc):
        w = {name: deq[b][name].float() for name, b in alloc.items()}
        return torch.cat([forward(f32, x[s:s + 500], act, lambda op: w[op["name"]]) for s in range(0, len(x), 500)])

    ref = torch.cat([forward(f32, x[s:s + 500]) for s in range(0, len(x), 500)])
    names = [op["name"] for op in weighted(ops)]
    base_alloc = {n: 8 for n in names}
    base = kl(ref, logits(base_alloc))
    out = {}
    for name in names:
        out[name] = {8: 0.0}
        for b in choices:
            if b != 8:
                out[name][b] = kl(ref, logits({**base_alloc, name: b})) - base
        if log:
            log(f"sensitivity {name}: " + ", ".join(f"W{b} +{out[name][b]:.4f}" for b in choices if b != 8))
    return out, base


def solve(ops, sens, capacity, choices=CHOICES, costs=None):
    """The allocation {layer: bits} with the least summed sensitivity whose bytes (`costs`
    {layer: {bits: bytes}}, default layer_bytes) sum to at most `capacity`, exactly (dynamic
    programming over bytes, eq. 25), or None if even the smallest widths do not fit."""
    layers = weighted(ops)
    cost = [[(costs or {}).get(op["name"], {}).get(b) or layer_bytes(op, b) for b in choices] for op in layers]
    if sum(min(c) for c in cost) > capacity:
        return None
    top = min(capacity, sum(max(c) for c in cost))
    best = np.full(top + 1, np.inf)
    best[0] = 0.0
    pick = np.zeros((len(layers), top + 1), np.int8)
    for k, op in enumerate(layers):
        new = np.full(top + 1, np.inf)
        for j, b in enumerate(choices):
            c, s = cost[k][j], sens[op["name"]][b]
            if c > top:
                continue
            cand = np.full(top + 1, np.inf)
            cand[c:] = best[:top + 1 - c] + s
            better = cand < new
            new[better], pick[k][better] = cand[better], j
        best = new
    c = int(np.argmin(best))                       # the least sensitivity at any cost <= top
    alloc = {}
    for k in range(len(layers) - 1, -1, -1):
        j = int(pick[k][c])
        alloc[layers[k]["name"]] = choices[j]
        c -= cost[k][j]
    return {op["name"]: alloc[op["name"]] for op in layers}


def non_weight_bytes(path):
    """The bytes of a model file that are not the packed weights or the codebook: its size
    minus the compressed sizes of those two members."""
    with zipfile.ZipFile(path) as z:
        inner = sum(z.getinfo(m).compress_size for m in ("weights.npy", "codebook.npy"))
    return path.stat().st_size - inner


def predicted_bytes(alloc, costs, overhead):
    """eq. (24): `overhead` (non_weight_bytes + META_SLACK) plus every layer's predicted bytes."""
    return overhead + sum(costs[n][b] for n, b in alloc.items())


def greedy(ops, sens, capacity, choices=CHOICES, costs=None):
    """The simpler allocation the report compares against: start with every layer at the
    smallest width, then repeatedly widen the layer with the largest drop in sensitivity per
    added byte while it fits.  Not optimal; see solve()."""
    alloc = {op["name"]: min(choices) for op in weighted(ops)}
    by = {op["name"]: op for op in weighted(ops)}

    def layer_cost(n, b):
        return (costs or {}).get(n, {}).get(b) or layer_bytes(by[n], b)

    used = sum(layer_cost(n, b) for n, b in alloc.items())
    if used > capacity:
        return None
    while True:
        best = None
        for n, b in alloc.items():
            wider = [c for c in choices if c > b]
            if not wider:
                continue
            c = wider[0]
            extra = layer_cost(n, c) - layer_cost(n, b)
            gain = sens[n][b] - sens[n][c]
            rate = gain / extra if extra > 0 else np.inf         # a free widening first
            if used + extra <= capacity and gain > 0 and (best is None or rate > best[0]):
                best = (rate, n, c, extra)
        if best is None:
            return alloc
        _, n, c, extra = best
        alloc[n], used = c, used + extra
