"""Quantization-aware training (docs/quantization.md section 15): fine-tune the BN-folded
network through the fake-quant of the engine's integers, starting where PTQ ends.

The trainable parameters are, for every conv/linear layer, the latent float weight (started
at the PTQ weight s_w * L[code], so that the first forward pass is the PTQ file), the float
bias b'' and the per-channel log s_w; and the log step size of every activation point but
the input (whose LUT keeps the calibrated scale); with levels="learned", each 2- and 4-bit
layer's codebook too (eq. 26b); with bn_epochs, each conv's log g of a batch normalization
on the batch's statistics for those epochs, then folded into the scales and biases (eq. 28).
The forward pass rounds weights to the
nearest level of the layer's level set (eq. 3, ties up), biases to their accumulator unit
s_x s_w (eq. 7) and activations as eq. (1)+(4), all with straight-through rounding and LSQ gradients for the step sizes (eq. 26).  The loss is
the cross-entropy on the labelled training images minus the 5,000 held-out ones, mixed with
the KL divergence to the FP32 model's softmax on the same images (eq. 27, weight `distill`),
with the trainer's augmentation and data order (trainer.data.augment, trainer.train.epoch_generator).

`train(...)` returns codes, scales and biases in the forms build.quantize_graph takes, so the
file is written by the ordinary path and the engine runs it unchanged.  A checkpoint after
every epoch holds the PTQ start and the training state; a resumed run gives the same file
as an uninterrupted one (same thread count)."""
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from trainer import data
from trainer.train import epoch_generator
from . import fakequant
from .build import MAX_MULTIPLIER
from .ops import activate
from .simulate import apply, forward, walk

FORMAT, VERSION = "lowbit-ptq/qat-checkpoint", 1
DEFAULTS = {                      # one flat block of the defaults (section 15)
    "epochs": 10,
    "batch": 128,
    "lr": None,                   # SGD (momentum 0.9, Nesterov) on the latent weights and biases: default_lr
    "scale_lr": 1e-4,             # Adam on every log step size (weights and activations)
    "levels_lr": 1e-3,            # Adam on the learned codebooks (levels="learned"), in units of s_w: at
                                  # 1e-4 they moved under 0.011 of their spacing 2 in a W2A8 epoch
    "weight_decay": 0.0,
    "label_smoothing": 0.1,       # as the trainer's (on the cross-entropy part)
    "ste": "interior",            # which values an activation's gradient reaches (LSQ.RULES): the held-out
                                  # choice at W2A2, where "lsq" collapsed at lr 0.03 and lost to it at 0.003
    "distill": 1.0,               # weight of the KL to the FP32 model's softmax (eq. 27, the held-out choice);
                                  # 1 - it on the cross-entropy with the labels
    "images": None,               # train on the first N of the shuffled training images (tests)
    "heldout": 5000,              # held-out images for the per-epoch agreement
    "levels": "fixed",            # the 2- and 4-bit level sets: "fixed" (the PTQ file's) or "learned"
                                  # (each layer's codebook trained beside its scales, LEVEL_RULES)
    "bn_epochs": 0,               # the first N epochs train every conv through batch normalization on the
                                  # batch's statistics (eq. 28), folded into the file's scales and biases after
                                  # epoch N; 0: the folded network throughout
}
LEVEL_RULES = ("fixed", "learned")
CODEBOOK_MAX = 127                # the largest codebook entry the format allows (docs/format.md)


def default_lr(bits, act_bits):
    """The held-out choices (results/qat/sweep.jsonl): 0.03 at W2A2; at 8-bit activations 0.003
    at W2A8 (0.01 lost 0.1 pp of agreement in one epoch, 0.03 collapsed it to 0.10).  Wider
    weights scale by the level spacing relative to the weight range, 3 / (2^b - 1): 0.006 at
    W4A4 (where 0.03 also collapsed the agreement from 0.99 to 0.10 in one epoch)."""
    return round((0.03 if act_bits < 8 else 0.003) * 3 / ((1 << bits) - 1), 10)


BN_EPS, BN_MOMENTUM = 1e-5, 0.1    # batch normalization in training (eq. 28), as torch's defaults
BN_RECAL = 40                     # batches whose statistics re-estimate the running ones after each BN epoch

DIVERGED = 0.5                    # an epoch that ends under this fraction of the start's agreement stops QAT


class QATError(Exception):
    """A QAT setting or checkpoint that cannot be used; the message says which."""


class LSQ(torch.autograd.Function):
    """An activation's fake-quant, eq. (26) right, with its straight-through gradients written
    out (section 15): forward s (c - z), c = clamp(round(v) + z, 0, hi), v = t / s; backward to
    t where the rule says v is inside, and to s the sum of g (round(v) - v) inside and
    g (c - z) outside.  One elementwise pass each way, the test on v or c themselves.

    RULES: "lsq" (Esser et al.) counts v inside where -z <= v <= hi - z; "interior" where the
    code c is strictly between the bounds 0 and hi, so values that round to a bound code are
    clipped ones.  The straight-through form v + (round(v) - v) was near "interior", with a
    random test on the edge codes, as that sum is not round(v) in floats."""
    RULES = ("lsq", "interior")

    @staticmethod
    def forward(ctx, t, s, zp, hi, rule):
        v = t / s
        c = torch.floor(v + 0.5).add_(zp).clamp_(0, hi)
        if any(ctx.needs_input_grad):                       # not when scoring under no_grad
            inside = (v >= -zp) & (v <= hi - zp) if rule == "lsq" else (c > 0) & (c < hi)
            ctx.save_for_backward(inside, torch.where(inside, c - zp - v, c - zp))
        return c.sub_(zp).mul_(s)

    @staticmethod
    def backward(ctx, g):
        inside, ds = ctx.saved_tensors
        return g * inside, (g * ds).sum().reshape(()), None, None, None


def _flat(t):
    """The elements of a dense tensor in memory order, as a 1-D view (NCHW or channels_last)."""
    return t.as_strided((t.numel(),), (1,)).numpy()


class FusedLSQ(torch.autograd.Function):
    """LSQ in one Numba pass each way (exporter/fakequant.py), equal to it bit for bit in the
    output and both gradients (tests/test_qat.py); what QATNet trains with.  It keeps t and
    the code (uint8, uint16 at 16 bits) for the backward pass instead of LSQ's mask and
    float32 ds, and works on the memory of t in its own layout, which the output and the
    gradients keep.  A strided t (never in QAT: activations are conv, add and pool outputs)
    is copied dense first, so the sum for s then runs in another order than LSQ's."""

    @staticmethod
    def forward(ctx, t, s, zp, hi, rule):
        t = t.detach()
        if not (t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last)):
            t = t.contiguous()
        f32 = np.float32
        s_, zp_, hi_ = f32(s.item()), f32(zp.item()), f32(hi.item())
        out, code = torch.empty_like(t), torch.empty_like(t, dtype=torch.uint8 if hi_ <= 255 else torch.uint16)
        fakequant.forward(_flat(t), s_, zp_, hi_, _flat(out), _flat(code))
        if any(ctx.needs_input_grad):
            ctx.save_for_backward(t, code)
            ctx.consts = (s_, zp_, hi_, LSQ.RULES.index(rule))
        return out

    @staticmethod
    def backward(ctx, g):
        t, code = ctx.saved_tensors
        if g.stride() != t.stride():
            g = torch.empty_like(t).copy_(g)
        grad_t, gds = torch.empty_like(t), torch.empty_like(t)
        fakequant.backward(_flat(g), _flat(t), _flat(code), *ctx.consts, _flat(grad_t), _flat(gds))
        return grad_t, gds.sum().reshape(()), None, None, None


class QATNet(nn.Module):
    """The folded graph with trainable latent weights, biases and log step sizes."""

    def __init__(self, ops, qpoints, weights, ste=DEFAULTS["ste"], levels=DEFAULTS["levels"], bn=False):
        super().__init__()
        if ste not in LSQ.RULES:
            raise QATError(f"unknown gradient rule {ste!r}; choose from {', '.join(LSQ.RULES)}")
        if levels not in LEVEL_RULES:
            raise QATError(f"unknown level rule {levels!r}; choose from {', '.join(LEVEL_RULES)}")
        self.ste = ste
        self.ops = [dict(op) for op in ops]
        self.w, self.log_sw, self.b = nn.ParameterDict(), nn.ParameterDict(), nn.ParameterDict()
        self.cb = nn.ParameterDict()              # learned codebooks, in units of s_w (levels="learned")
        self.levels, self.producer = {}, {}
        for op in self.ops:
            if op["op"] not in ("conv", "linear"):
                continue
            name = op["name"]
            _, _, codes, L, s_w = weights[name]
            key = name.replace(".", "_")
            op["key"] = key
            shape = (-1,) + (1,) * (codes.ndim - 1)
            self.w[key] = nn.Parameter(torch.as_tensor(L[codes] * s_w.reshape(shape)).float())
            self.log_sw[key] = nn.Parameter(torch.as_tensor(np.log(s_w)).float())
            self.b[key] = nn.Parameter(op["bias"].float().clone())
            self.levels[key] = (float(L[0]), float(L[1] - L[0]), float(len(L) - 1))
            if levels == "learned" and len(L) <= 16:                  # 2 and 4 bits: a codebook
                self.cb[key] = nn.Parameter(torch.as_tensor(np.sort(L)).float())
            self.producer[op["out"]] = (op["in"], key)
        # eq. (28): every conv's batch normalization while bn_on, with gamma = g sd0 and beta = b + mean0
        # (mean0, sd0: the start's statistics, init_bn); log g trains beside b, the running mean and
        # variance follow the batches (re-estimated by recalibrate)
        self.bn_g = nn.ParameterDict()
        for op in self.ops:
            if bn and op["op"] == "conv":
                n, key = op["cout"], op["key"]
                self.bn_g[key] = nn.Parameter(torch.zeros(n))
                for stat, v in (("mean", 0.0), ("var", 1.0), ("mean0", 0.0), ("sd0", 1.0)):
                    self.register_buffer(f"bn_{stat}_{key}", torch.full((n,), v))
        self.register_buffer("bn_on", torch.tensor(bool(bn)))
        self.log_sa = nn.Parameter(torch.tensor([math.log(p["scale"]) for p in qpoints], dtype=torch.float32))
        self.register_buffer("zp", torch.tensor([float(p["zp"]) for p in qpoints]))
        self.register_buffer("hi", torch.tensor([float((1 << p["bits"]) - 1) for p in qpoints]))
        self.register_buffer("s_in", torch.tensor(float(qpoints[0]["scale"])))

    def _weight(self, op, unit=False):
        """eq. (3) with straight-through rounding: s * (L0 + step * round(clamp(u))); with a
        learned codebook c, s * c[k] for the nearest entry k (ties up), whose gradient reaches
        c[k] itself (section 15).  Under batch normalization the codes come from the unit
        scales s and the file's weights are those times the fold k (eq. 28); unit: without k."""
        key = op["key"]
        w, l0, step, top = self.w[key], *self.levels[key]
        s = self.log_sw[key].exp().view(-1, *([1] * (w.dim() - 1)))
        if key in self.cb:
            c = self.codebook(key)
            x = w / s
            k = torch.bucketize(x.detach(), ((c[1:] + c[:-1]) / 2).detach(), right=True)
            xc = torch.clamp(x, c[0].detach(), c[-1].detach())
            q = c[k] + (xc - xc.detach())
        else:
            u = torch.clamp((w / s - l0) / step, 0, top)
            q = l0 + step * (u + (torch.floor(u + 0.5) - u).detach())
        if self._bn(key) and not unit:                       # eq. (28): the fold, codes unchanged
            s = s * self.bn_fold(key)[0].view_as(s)
        return s * q

    def _bn(self, key):
        return bool(self.bn_on) and key in self.bn_g

    def bn_fold(self, key):
        """eq. (28) on the running statistics -> (k, b): the folded conv is k * (unit conv) + b, with
        k = g sd0 / sqrt(var + eps) and b = b + (mean0 - k mean), which at the start are 1 and b
        exactly, so that the start is the PTQ file bit for bit."""
        stat = lambda s: getattr(self, f"bn_{s}_{key}")
        k = self.bn_g[key].exp() * stat("sd0") / torch.sqrt(stat("var") + BN_EPS)
        return k, self.b[key] + (stat("mean0") - k * stat("mean"))

    def _bias(self, op):
        """eq. (7) with straight-through rounding: the engine adds the bias in accumulator units
        s_x s_w, which at low-bit inputs are coarse next to the output step."""
        key = op["key"]
        unit = self._scale(op["in"]) * self.file_sw(key)
        v = (self.bn_fold(key)[1] if self._bn(key) else self.b[key]) / unit
        return (v + (torch.floor(v + 0.5) - v).detach()) * unit

    def _scale(self, i):
        """The step of point i: the input's calibrated one, else the learned one, raised where
        the file will raise it (build.widen_outputs), so that training sees the file's grid."""
        if i == 0:
            return self.s_in
        s = self.log_sa[i].exp()
        if i in self.producer:
            j, key = self.producer[i]
            s = torch.maximum(s, self._scale(j) * self.file_sw(key).max() / MAX_MULTIPLIER)
        return s

    def factor(self, key):
        """The integer f by which the file scales a learned codebook (and divides s_w): the
        largest that keeps every level within CODEBOOK_MAX, so that the start (midrise, 3 at
        2 bits) is exact: f = 42 for levels up to 3."""
        return max(1, int(CODEBOOK_MAX // float(self.cb[key].detach().abs().max())))

    def codebook(self, key):
        """The learned levels, ascending, on the file's grid 1/f with straight-through rounding."""
        c, f = torch.sort(self.cb[key]).values, self.factor(key)
        return c + (torch.floor(c * f + 0.5) / f - c).detach()

    def file_sw(self, key):
        """The layer's weight scales as the file will hold them: s_w / f with a learned codebook."""
        s = self.log_sw[key].exp()
        if self._bn(key):
            s = s * self.bn_fold(key)[0]
        return s / self.factor(key) if key in self.cb else s

    def _act(self, i, t):
        """eq. (1)+(4) with LSQ (eq. 26)."""
        return FusedLSQ.apply(t, self._scale(i), self.zp[i], self.hi[i], self.ste)

    def _set_biases(self, skip=()):
        for op in self.ops:
            if "key" in op and op["key"] not in skip:
                op["bias"] = self._bias(op)

    def forward(self, x, momentum=BN_MOMENTUM):
        """The file's network (eval, or no batch normalization); in training under bn_on, every
        conv's unit output normalized by the batch's statistics (eq. 28), which move the running
        ones by `momentum`."""
        if not (self.training and bool(self.bn_on)):
            self._set_biases()
            return forward(self.ops, x, self._act, self._weight)
        self._set_biases(skip=self.bn_g)

        def step(op, acts, weight):
            key = op.get("key")
            if key not in self.bn_g:
                return apply(op, acts, weight)
            y = F.conv2d(acts[op["in"]], weight(op, unit=True), None, op["stride"], (op["ph"], op["pw"]), 1, op["groups"])
            y = F.batch_norm(y, getattr(self, f"bn_mean_{key}"), getattr(self, f"bn_var_{key}"),
                             self.bn_g[key].exp() * getattr(self, f"bn_sd0_{key}"),
                             self.b[key] + getattr(self, f"bn_mean0_{key}"), True, momentum, BN_EPS)
            return activate(op, y)
        return walk(self.ops, {0: self._act(0, x)}, self._weight, self._act, step)[self.ops[-1]["out"]]

    @torch.no_grad()
    def init_bn(self, batches):
        """Start eq. (28) at the PTQ file: the running statistics, mean0 and sd0 = sqrt(var + eps)
        are those of each conv's unit output over `batches` (the file's network), g = 1."""
        self.bn_on.fill_(False)
        stats = {key: [0.0, 0.0, 0] for key in self.bn_g}

        def step(op, acts, weight):                  # the file's op, noting the unit conv's sums
            if op.get("key") in stats:
                y = F.conv2d(acts[op["in"]], weight(op, unit=True), None, op["stride"], (op["ph"], op["pw"]), 1, op["groups"]).double()
                st = stats[op["key"]]
                st[0], st[1] = st[0] + y.sum((0, 2, 3)), st[1] + (y * y).sum((0, 2, 3))
                st[2] += y.numel() // y.shape[1]
            return apply(op, acts, weight)
        for x in batches:
            self._set_biases()
            walk(self.ops, {0: self._act(0, x)}, self._weight, self._act, step)
        for key, (s1, s2, n) in stats.items():
            mean = s1 / n
            var = (s2 - n * mean * mean) / (n - 1)                  # unbiased, as F.batch_norm keeps it
            for stat, v in (("mean", mean), ("var", var), ("mean0", mean)):
                getattr(self, f"bn_{stat}_{key}").copy_(v.float())
            getattr(self, f"bn_sd0_{key}").copy_(torch.sqrt(getattr(self, f"bn_var_{key}") + BN_EPS))
            self.bn_g[key].zero_()
        self.bn_on.fill_(True)

    @torch.no_grad()
    def recalibrate(self, batches):
        """Re-estimate the running statistics as the average of the batches' (eq. 28), so that
        the fold and the held-out score see the trained weights' statistics."""
        was = self.training
        self.train()
        for i, x in enumerate(batches):
            self(x, momentum=1.0 / (i + 1))
        self.train(was)

    @torch.no_grad()
    def fold_bn(self, sgd=None):
        """End eq. (28): move the fold into the latent weights, their scales and the biases (the
        codes w / s and the file stay as they are), scale SGD's momentum of the weights with
        them, and train on the file's network from here."""
        if not bool(self.bn_on):
            return
        for key in self.bn_g:
            k, b = self.bn_fold(key)
            view = k.view(-1, *([1] * (self.w[key].dim() - 1)))
            self.w[key].mul_(view)
            self.log_sw[key].add_(torch.log(k))
            self.b[key].copy_(b)
            buf = sgd.state.get(self.w[key], {}).get("momentum_buffer") if sgd is not None else None
            if buf is not None:
                buf.mul_(view)
        self.bn_on.fill_(False)

    def result(self, weights):
        """-> (weights {name: (bits, level set, codes, L, s_w)}, act scales [None, s1, ...], biases {name: b''})
        for build.quantize_graph; the codes are quantize.nearest (nearest_of for a learned
        codebook) of w / s_w in float64, the rounding the forward pass trains through."""
        from .quantize import nearest, nearest_of, rnd
        if bool(self.bn_on):
            raise QATError("the batch normalization is not folded yet (fold_bn)")
        out, biases = {}, {}
        for op in self.ops:
            if "key" not in op:
                continue
            b, level_set, codes, L, _ = weights[op["name"]]
            s_w = self.log_sw[op["key"]].detach().double().exp().numpy()
            w = self.w[op["key"]].detach().double().numpy()
            shape = (-1,) + (1,) * (w.ndim - 1)
            if op["key"] in self.cb:             # the codebook as integers f c, s_w / f (codebook, factor)
                f = self.factor(op["key"])
                L = rnd(np.sort(self.cb[op["key"]].detach().double().numpy()) * f).astype(np.int64)
                s_w, level_set = s_w / f, "learned"
                new = nearest_of(w / s_w.reshape(shape), L)
            else:
                new = nearest(w / s_w.reshape(shape), L)
            out[op["name"]] = (b, level_set, new.reshape(codes.shape), L, s_w)
            biases[op["name"]] = self.b[op["key"]].detach().double()
        scales = [None] + [math.exp(float(v)) for v in self.log_sa.detach()[1:]]   # widened again by build
        return out, scales, biases


class Optimizers:
    """Several optimizers (or schedulers) stepped, zeroed and checkpointed as one: SGD on the
    weights, Adam on the log step sizes, whose gradients are sums over whole tensors."""

    def __init__(self, *parts):
        self.parts = parts

    def zero_grad(self, set_to_none=True):
        for p in self.parts:
            p.zero_grad(set_to_none=set_to_none)

    def step(self):
        for p in self.parts:
            p.step()

    def state_dict(self):
        return [p.state_dict() for p in self.parts]

    def load_state_dict(self, states):
        for p, s in zip(self.parts, states):
            p.load_state_dict(s)


def split(n_train, heldout):
    """The training indices QAT learns from: every training image but the held-out ones."""
    keep = np.ones(n_train, bool)
    keep[heldout] = False
    return np.flatnonzero(keep)


def _state(net, opt, sched, epoch, history, cfg, start):
    return {"format": FORMAT, "version": VERSION, "config": dict(cfg), "start": start, "epoch": epoch,
            "net": {k: v.detach().clone() for k, v in net.state_dict().items()},
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "history": list(history),
            "versions": {"torch": str(torch.__version__), "python": platform.python_version()}}


def save(path, state):
    """Atomically, as the trainer's checkpoints: a temporary file, fsync, os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(path):
    """A QAT checkpoint (weights_only=True), or QATError in one line."""
    from trainer.checkpoint import CheckpointError, read_file
    try:
        state = read_file(path)
    except CheckpointError as e:
        raise QATError(str(e).replace("PyTorch checkpoint", "QAT checkpoint")) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise QATError(f"{path} is not a {FORMAT} version {VERSION} file")
    return state


def start_record(weights, lo, hi, recon_report, ptq_meta):
    """The PTQ solution QAT starts from, as plain values and tensors (weights_only-safe)."""
    return {"weights": {n: {"bits": b, "kind": k, "codes": torch.as_tensor(c), "L": torch.as_tensor(L),
                            "s_w": torch.as_tensor(s)} for n, (b, k, c, L, s) in weights.items()},
            "lo": torch.as_tensor(lo), "hi": torch.as_tensor(hi), "recon": recon_report, "meta": ptq_meta}


def start_from(record):
    """start_record's inverse -> (weights, lo, hi, recon_report, ptq_meta)."""
    w = {n: (v["bits"], v["kind"], v["codes"].numpy(), v["L"].numpy(), v["s_w"].numpy())
         for n, v in record["weights"].items()}
    return w, record["lo"].numpy(), record["hi"].numpy(), record["recon"], record["meta"]


@torch.no_grad()
def agreement(net, x, fp_pred, labels, bs=500):
    """(top-1 agreement with the FP32 model, accuracy) of the fake-quant net on held-out images."""
    net.eval()
    pred = torch.cat([net(x[s:s + bs]).argmax(1) for s in range(0, len(x), bs)])
    return float((pred == fp_pred).float().mean()), float((pred == labels).float().mean())


def train(ops, qpoints, weights, train_x, train_y, held_x, held_y, fp_model, *, cfg, seed, ckpt, start,
          resumed=None, progress=True, log=None, norm=None):
    """Run QAT (cfg: DEFAULTS filled) from the PTQ `weights` and points `qpoints` (learned
    step sizes included); checkpoint into `ckpt` after every epoch.  `resumed`: a loaded
    checkpoint to continue.  Returns (weights, act scales, biases, report)."""
    say = log or (lambda m: None)
    bn_epochs = int(cfg.get("bn_epochs") or 0)
    net = QATNet(ops, qpoints, weights, cfg["ste"], cfg["levels"], bn=bn_epochs > 0)
    groups = [{"params": list(net.w.values()), "weight_decay": cfg["weight_decay"]},
              {"params": list(net.b.values()), "weight_decay": 0.0}]
    opt = Optimizers(torch.optim.SGD(groups, lr=cfg["lr"], momentum=0.9, nesterov=True),
                     torch.optim.Adam([{"params": [*net.log_sw.values(), net.log_sa, *net.bn_g.values()]}] +
                                      ([{"params": list(net.cb.values()), "lr": cfg["levels_lr"]}] if net.cb else []),
                                      lr=cfg["scale_lr"]))
    steps = len(train_y) // cfg["batch"]
    if steps == 0:
        raise QATError(f"{len(train_y)} training images are fewer than one batch of {cfg['batch']}")
    total = cfg["epochs"] * steps
    cosine = lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total))
    sched = Optimizers(*(torch.optim.lr_scheduler.LambdaLR(o, cosine) for o in opt.parts))
    epoch, history = 0, []
    if resumed is not None:
        net.load_state_dict(resumed["net"])
        opt.load_state_dict(resumed["optimizer"])
        sched.load_state_dict(resumed["scheduler"])
        epoch, history = resumed["epoch"], list(resumed["history"])
    held = data.normalize(held_x, norm=norm)
    with torch.no_grad():
        fp_pred = torch.cat([fp_model(held[s:s + 500]).argmax(1) for s in range(0, len(held), 500)])
    recal = lambda imgs: (data.normalize(imgs[i * cfg["batch"]:(i + 1) * cfg["batch"]], norm=norm)
                          for i in range(min(BN_RECAL, steps)))
    if epoch == 0 and not history:
        if bn_epochs:
            net.init_bn(recal(train_x))
        agree, acc = agreement(net, held, fp_pred, held_y)
        history.append({"epoch": 0, "heldout_agree": agree, "heldout_acc": acc})
        say(f"QAT starts from the PTQ file: held-out agreement with FP32 {agree:.4f}, accuracy {acc:.4f}")
        save(ckpt, _state(net, opt, sched, 0, history, cfg, start))
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    alpha = float(cfg["distill"])

    def objective(out, x, y):
        """eq. (27): (1 - alpha) * CE(out, y) + alpha * KL(softmax(FP32(x)) || softmax(out))."""
        loss = criterion(out, y) if alpha < 1 else 0.0
        if alpha > 0:
            with torch.no_grad():
                teacher = F.softmax(fp_model(x), 1)
            kl = F.kl_div(F.log_softmax(out, 1), teacher, reduction="batchmean")
            loss = (1 - alpha) * loss + alpha * kl
        return loss

    t_all = time.perf_counter()
    for e in range(epoch, cfg["epochs"]):
        t0 = time.perf_counter()
        g = epoch_generator(seed, e)
        perm = torch.randperm(len(train_y), generator=g)
        images, labels = data.augment(train_x[perm], g), train_y[perm]
        net.train()
        bar = tqdm(range(steps), desc=f"QAT epoch {e + 1}/{cfg['epochs']}", leave=False, disable=not progress,
                   unit="step", mininterval=1.0)
        loss_sum = correct = seen = 0.0
        try:
            for t in bar:
                rows = slice(t * cfg["batch"], (t + 1) * cfg["batch"])
                x = data.normalize(images[rows], norm=norm)
                out = net(x)
                loss = objective(out, x, labels[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                loss_sum += float(loss.detach()) * len(out)
                correct += float((out.argmax(1) == labels[rows]).sum())
                seen += len(out)
                if t % 10 == 9 or t == steps - 1:
                    last = history[-1]
                    bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                                    heldout_agree=f"{last['heldout_agree']:.4f}")
        except KeyboardInterrupt:
            bar.close()
            done = (f"epochs 1-{e}" if e > 1 else "epoch 1") if e else "the PTQ start (no epoch yet)"
            raise QATError(f"interrupted in QAT epoch {e + 1}; {ckpt} holds {done}; run the same command "
                           f"with --resume to continue") from None
        bar.close()
        if bool(net.bn_on):
            net.recalibrate(recal(images))
            if e + 1 >= min(bn_epochs, cfg["epochs"]):
                net.fold_bn(opt.parts[0])
                say(f"QAT folded the batch normalization into the weights after epoch {e + 1}")
        agree, acc = agreement(net, held, fp_pred, held_y)
        if agree < DIVERGED * history[0]["heldout_agree"]:           # not saved: the checkpoint keeps epoch e
            raise QATError(f"QAT diverged in epoch {e + 1}: held-out agreement with FP32 fell to {agree:.4f} "
                           f"from {history[0]['heldout_agree']:.4f} at the PTQ start; rerun with a smaller "
                           f"--qat-lr (now {cfg['lr']:g})")
        row = {"epoch": e + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "heldout_agree": agree, "heldout_acc": acc, "seconds": round(time.perf_counter() - t0, 1)}
        history.append(row)
        save(ckpt, _state(net, opt, sched, e + 1, history, cfg, start))
        say(f"QAT epoch {e + 1}/{cfg['epochs']}: train loss {row['train_loss']:.4f}, held-out agreement "
            f"{agree:.4f}, accuracy {acc:.4f}, {row['seconds']:.0f} s")
    w, scales, biases = net.result(weights)
    report = {"config": dict(cfg), "seed": seed, "epochs_run": len(history) - 1, "history": history,
              "seconds_this_run": round(time.perf_counter() - t_all, 1), "train_images": int(len(train_y)),
              "heldout_images": int(len(held_y)), "threads": torch.get_num_threads()}
    return w, scales, biases, report
