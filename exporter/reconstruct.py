"""Learned weight rounding by reconstruction: AdaRound per layer, BRECQ per block, with QDrop
(docs/quantization.md section 13).  Offline, floats allowed.

The network is cut into *units* (blocks.units): one weighted layer (`adaround`) or one block
found from the graph, the stem and the head (`brecq`).  For each unit in order, a rounding variable V per weight
chooses between the two levels around w/s_w (eq. 17), and Adam minimizes the unit's output
error against the FP32 model plus the annealed rounding regularizer (eq. 18-19).  The unit's
input is the output of the already-rounded units before it (fake-quantized as the engine
will quantize it), mixed element-wise with the FP32 input by QDrop (eq. 20).  The rounding
decisions change, and with act_lr > 0 the step sizes of the unit's activation points (eq. 21);
weight scales come from the usual MSE clipping, and the float weights and biases stay the
folded FP32 ones.

`reconstruct(...)` returns codes in the form of build.quantize_weights_all, so the file is
written by the ordinary path and the engine runs it unchanged.
"""
import math
import time

import numpy as np
import torch
from tqdm import tqdm

from . import blocks
from .calibrate import normalize64
from .simulate import _ste, walk

ZETA, GAMMA = 1.1, -0.1                     # eq. (17): the rectified sigmoid's stretch
METHODS = ("nearest", "adaround", "brecq")

DEFAULTS = {                                # one flat block of the defaults (section 13)
    "iters": 300,           # Adam steps per unit
    "batch": 16,            # images per step
    "lr": 0.1,              # Adam on V
    "reg": 0.01,            # lambda of eq. (19)
    "beta": (20.0, 2.0),    # eq. (19) annealing, start -> end
    "warmup": 0.2,          # share of the steps with no regularizer
    "qdrop": 0.0,           # eq. (20): probability of keeping an activation in float
    "act_lr": 0.0,          # eq. (21): Adam on log s of the unit's points; 0 keeps min/max scales
    "scale_lr": 0.0,        # eq. (22): Adam on log s_w per channel; 0 keeps the MSE-clipped scales
}


def defaults(bits, act_bits):
    """The exporter's defaults for a width: DEFAULTS with the held-out choice of the steps and
    the step-size learning rate (section 13, results/lowbit/sweep.jsonl)."""
    act_lr = 0.03 if act_bits <= 4 else 0.01 if bits <= 2 else 0.003
    return {**DEFAULTS, "iters": 600 if bits <= 2 else 500, "act_lr": act_lr}


def choose(bits, act_bits, first_last_bits):
    """The 'auto' rounding: (method, reason).  Block reconstruction with learned step sizes
    wherever a width is below 8 bits, where round-to-nearest loses most (W2A8: 0.37 against
    0.91 on the test set, RESULTS.md); nearest at 8 and 16 bits, where it is within 0.1 pp of
    FP32 and reconstruction would only cost time."""
    low = [f"{what} {b}-bit" for what, b in (("weights", bits), ("activations", act_bits),
                                             ("first/last layer", first_last_bits)) if b < 8]
    if low:
        return "brecq", "below 8 bits (" + ", ".join(low) + ")"
    return "nearest", "all widths 8 bits or more"


def recorded_config(meta):
    """The reconstruction settings a model file's meta records ({} for nearest rounding)."""
    return (meta.get("reconstruction") or {}).get("config", {})


class Rounding:
    """The rounding variables of one weighted layer, eq. (17).

    w (Co, ...) float, s (Co,), L the levels (uniform step).  base[c, ...] is the index of
    the level at or below w/s (clamped so that base + 1 exists); V chooses base or base + 1."""

    def __init__(self, w, s, L):
        L = np.asarray(L, np.int64)
        self.L, self.step = L, int(L[1] - L[0])
        shape = (-1,) + (1,) * (w.dim() - 1)
        self.s = torch.as_tensor(s, dtype=torch.float32).view(shape)
        u = (w.double() / torch.as_tensor(s, dtype=torch.float64).view(shape) - int(L[0])) / self.step
        self.base = u.floor().clamp(0, len(L) - 2).long()
        frac = (u - self.base).clamp(0, 1).float()
        p = (frac - GAMMA) / (ZETA - GAMMA)                      # h(V) = frac at the start
        self.V = torch.nn.Parameter(torch.log(p / (1 - p)))
        self.nearest = (self.base + (frac >= 0.5).long()).numpy()   # round-to-nearest, ties up
        self.lo = (int(L[0]) + self.step * self.base).float()
        self.log_s = None

    def learn_scale(self):
        """Make log s_w (per channel) trainable too (section 13, eq. 22); returns it."""
        self.log_s = torch.nn.Parameter(self.s.flatten().log())
        return self.log_s

    def scale(self):
        return self.s if self.log_s is None else self.log_s.exp().view(self.s.shape)

    def scales(self):
        """The per-channel weight scale for the file, float64."""
        return self.scale().detach().double().flatten().numpy()

    def h(self):
        return torch.clamp(torch.sigmoid(self.V) * (ZETA - GAMMA) + GAMMA, 0, 1)

    def weight(self, hard):
        r = (self.V >= 0).float() if hard else self.h()
        return self.scale() * (self.lo + self.step * r)

    def reg(self, beta):
        """eq. (19): zero only when every h is 0 or 1."""
        return (1 - (2 * self.h() - 1).abs().pow(beta)).sum()

    def codes(self):
        return (self.base + (self.V.detach() >= 0).long()).numpy()


class DropMasks:
    """Bernoulli(p) masks for eq. (20).  Drawing a fresh mask per element costs more than the
    convolutions on this CPU, so each image draws one of BANK masks made once per shape."""
    BANK = 256

    def __init__(self, p, gen):
        self.p, self.gen, self.bank = p, gen, {}

    def draw(self, shape):
        key = tuple(shape[1:])
        if key not in self.bank:
            self.bank[key] = torch.rand((self.BANK,) + key, generator=self.gen) < self.p
        return self.bank[key][torch.randint(0, self.BANK, (shape[0],), generator=self.gen)]


def _inputs(unit):
    made = {op["out"] for op in unit}
    ins = []
    for op in unit:
        for i in (op["in"] if isinstance(op["in"], list) else [op["in"]]):
            if i not in made and i not in ins:
                ins.append(i)
    return ins


class Quantizer:
    """Activation fake-quant at each point, eq. (1)+(4), with straight-through rounding.

    `learn(points)` makes the step sizes of those points trainable (eq. 21, LSQ): log s is
    the parameter, the zero point stays the calibrated one, and the gradient reaches the
    input only inside the clamp range.  `freeze()` fixes the learned values as floats."""

    def __init__(self, points):
        self.s = [float(p["scale"]) for p in points]
        self.z = [float(p["zp"]) for p in points]
        self.hi = [float((1 << p["bits"]) - 1) for p in points]
        self.log_s = {}

    def learn(self, points):
        self.log_s = {i: torch.nn.Parameter(torch.tensor(math.log(self.s[i]))) for i in points}
        return list(self.log_s.values())

    def freeze(self):
        for i, v in self.log_s.items():
            self.s[i] = math.exp(float(v.detach()))
        self.log_s = {}

    def __call__(self, i, t):
        if i in self.log_s:                                                   # eq. (21)
            s = self.log_s[i].exp()
            v = t / s
            v = v + (torch.floor(v + 0.5) - v).detach()
            return (torch.clamp(v + self.z[i], 0, self.hi[i]) - self.z[i]) * s
        q = torch.clamp(torch.floor(t / self.s[i] + 0.5) + self.z[i], 0, self.hi[i])
        return _ste(t, (q - self.z[i]) * self.s[i])


def _beta(t, iters, cfg):
    """eq. (19) schedule: None during warmup, then beta falls linearly start -> end."""
    w = int(cfg["warmup"] * iters)
    if t < w:
        return None
    b0, b1 = cfg["beta"]
    return b1 + (b0 - b1) * (1 - (t - w) / max(1, iters - w))


def _run_all(unit, src, weight, act, bs=256):
    """The unit on every calibration image, in batches of bs, reading its inputs from
    src {point: (N, ...)} -> {point the unit makes: (N, ...)}, concatenated."""
    ins = _inputs(unit)
    n = len(src[ins[0]])
    parts = [walk(unit, {i: src[i][s:s + bs] for i in ins}, weight, act) for s in range(0, n, bs)]
    return {p: torch.cat([part[p] for part in parts]) for p in parts[0] if p not in ins}


def reconstruct(ops, qpoints, images, weights, *, method="brecq", seed=0, progress=True, log=None,
                norm=None, **cfg):
    """-> (weights with learned codes, report).  `weights` from build.quantize_weights_all
    (its scales and levels are kept), `qpoints` the calibrated points (scale, zp, bits),
    `images` the unlabeled calibration images (N,32,32,3) uint8."""
    cfg = {**DEFAULTS, **{k: v for k, v in cfg.items() if v is not None}}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)            # small steps: one thread is many times faster on a busy CPU
    try:
        return _reconstruct(ops, qpoints, images, weights, method, seed, progress, log, cfg, norm)
    finally:
        torch.set_num_threads(threads)


def _reconstruct(ops, qpoints, images, weights, method, seed, progress, log, cfg, norm):
    gen = torch.Generator().manual_seed(seed)
    quant = Quantizer(qpoints)
    ops = [dict(op) for op in ops]
    rounding = {}
    for op in ops:
        if op["op"] in ("conv", "linear"):
            op["w32"] = op["weight"].float()
            op["bias"] = op["bias"].float()
            _, _, _, L, s_w = weights[op["name"]]
            rounding[op["name"]] = Rounding(op["weight"], s_w, L)
    fp_w = lambda op: op["w32"]
    ident = lambda i, t: t
    x = normalize64(images, norm).float()
    n = len(x)
    fp = {0: x}
    q = {0: torch.cat([quant(0, x[s:s + 256]) for s in range(0, n, 256)])}
    groups = blocks.units(ops, method)
    last_use = {}
    for k, unit in enumerate(groups):
        for i in _inputs(unit):
            last_use[i] = k
    report = {"method": method, "seed": seed, "config": {k: list(v) if isinstance(v, tuple) else v
                                                          for k, v in cfg.items()}, "units": []}
    t_all = time.perf_counter()
    for k, unit in enumerate(groups):
        ins = _inputs(unit)
        target = unit[-1]["out"]
        with torch.no_grad():
            fp_out = _run_all(unit, fp, fp_w, ident)
        params = [rounding[op["name"]] for op in unit if op["name"] in rounding]
        t0 = time.perf_counter()
        entry = {"unit": blocks.unit_name(unit) if method == "brecq" else unit[-1]["name"],
                 "weights": sum(r.V.numel() for r in params)}
        if params and cfg["iters"] > 0:
            param_groups = [{"params": [r.V for r in params], "lr": cfg["lr"]}]
            if cfg["scale_lr"] > 0:
                param_groups.append({"params": [r.learn_scale() for r in params], "lr": cfg["scale_lr"]})
            if cfg["act_lr"] > 0:
                param_groups.append({"params": quant.learn([op["out"] for op in unit]), "lr": cfg["act_lr"]})
            opt = torch.optim.Adam(param_groups)
            by_name = {op["name"]: r for op, r in ((op, rounding.get(op["name"])) for op in unit) if r}
            soft = lambda op: by_name[op["name"]].weight(hard=False)
            internal = {op["out"] for op in unit[:-1]}
            p_drop = cfg["qdrop"]
            masks = DropMasks(p_drop, gen)

            def drop_act(i, t):                         # eq. (20) on points read inside the unit
                tq = quant(i, t)
                if i in internal and p_drop > 0:
                    return torch.where(masks.draw(tq.shape), t, tq)
                return tq

            bar = tqdm(range(cfg["iters"]), desc=f"{k + 1}/{len(groups)} {entry['unit']}", leave=False,
                       disable=not progress, unit="it", mininterval=1.0)
            for t in bar:
                idx = torch.randint(0, n, (cfg["batch"],), generator=gen)
                inp = {}
                for i in ins:
                    xq, xf = q[i][idx], fp[i][idx]
                    if p_drop > 0:
                        inp[i] = torch.where(masks.draw(xq.shape), xf, xq)
                    else:
                        inp[i] = xq
                out = walk(unit, inp, soft, drop_act)[target]
                err = out - fp_out[target][idx]
                rec = err.pow(2).sum(1).mean()                               # eq. (18)
                beta = _beta(t, cfg["iters"], cfg)
                reg = sum(r.reg(beta) for r in params) if beta is not None else torch.zeros(())
                loss = rec + cfg["reg"] * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if t % 20 == 0 or t == cfg["iters"] - 1:
                    bar.set_postfix(rec=f"{rec.item():.4g}", reg=f"{float(reg.detach()):.3g}",
                                    beta=f"{beta:.1f}" if beta else "-")
            bar.close()
            quant.freeze()
        with torch.no_grad():
            hard = lambda op: rounding[op["name"]].weight(hard=True) if op["name"] in rounding else None
            outs = _run_all(unit, q, hard, quant)
            entry["mse"] = float((outs[target] - fp_out[target]).pow(2).sum(1).mean())
            if params:
                entry["changed_vs_nearest"] = sum(int((r.codes() != r.nearest).sum()) for r in params)
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        report["units"].append(entry)
        if log:
            log(f"{entry['unit']}: output MSE {entry['mse']:.5g}, {entry.get('changed_vs_nearest', 0)} of "
                f"{entry['weights']} roundings differ from nearest, {entry['seconds']} s")
        fp.update(fp_out)
        q.update(outs)
        for i in [i for i in fp if last_use.get(i, -1) <= k]:      # no later unit reads it
            fp.pop(i)
            q.pop(i, None)
    report["seconds"] = round(time.perf_counter() - t_all, 2)
    if cfg["act_lr"] > 0:
        report["act_scales"] = [None] + quant.s[1:]              # the input's LUT scale stays
    out = {}
    for name, (b, level_set, codes, L, s_w) in weights.items():
        r = rounding[name]
        out[name] = (b, level_set, r.codes().reshape(codes.shape), L, r.scales() if r.log_s is not None else s_w)
    return out, report

