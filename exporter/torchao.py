"""PyTorch's own quantization (torch.ao.quantization): graph mode (FX, `fx_int8`) of any float
model it can trace, for the report's peer rows; and eager mode of the shipped ResNet20
(`static_int8`, a rewired copy whose modules name every point), for the cross-check, which
reads a calibrated torch.ao int8 model into our integer network.

How the option-A shortcut runs quantized: `x[:, :, ::2, ::2]` is a strided view of a
quantized tensor, and `F.pad` on a quantized tensor (aten::constant_pad_nd) fills the new
channels with the zero point, i.e. the real 0. No float round trip and no projection conv
are involved. The residual add is `FloatFunctional.add_relu`, which becomes
`quantized::add_relu` with its own output scale and zero point.

The baselines (docs/quantization.md, "Kinds of quantization"):
  best      x86 backend, fused conv+BN(+ReLU), per-channel symmetric qint8 weights, the
            backend's default observers (HistogramObserver with reduce_range=True: W8A7)
  full      the same with reduce_range=False: a true W8A8, the cross-check partner
  original  the original work's settings: MinMaxObserver per tensor, quint8 activations
            observed on [0, 2^b-1], qint8 weights restricted to [-2^(b-1), 2^(b-1)-1],
            10 calibration images, fused
  fp16      the float model in half precision
  int16sim  FakeQuantize at 16 bits (weights per channel, activations per tensor): simulated
  dynamic   quantize_dynamic: only the final linear layer has a dynamic kernel
"""
import copy
import warnings

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.ao import quantization as tq

from intengine.cifar10 import MEAN, STD
from .ops import CONVERTERS, weighted
from trainer.model import ShortcutA

warnings.filterwarnings("ignore", message=".*deprecated.*")     # eager torch.ao, see the docs


class QBlock(nn.Module):
    """A BasicBlock with module ReLUs and a quantizable add (same weights)."""

    def __init__(self, blk):
        super().__init__()
        self.conv1, self.bn1, self.relu1 = blk.conv1, blk.bn1, nn.ReLU()
        self.conv2, self.bn2 = blk.conv2, blk.bn2
        self.stride = blk.conv1.stride[0]
        self.pad = blk.shortcut.pad if isinstance(blk.shortcut, ShortcutA) else 0
        self.add = torch.ao.nn.quantized.FloatFunctional()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        sc = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad)) if self.stride > 1 else x
        return self.add.add_relu(out, sc)


class QResNet20(nn.Module):
    """The trainer's ResNet20, rewired for eager-mode quantization: input normalized NCHW."""

    def __init__(self, model):
        super().__init__()
        m = copy.deepcopy(model).eval()
        self.quant, self.dequant = tq.QuantStub(), tq.DeQuantStub()
        self.conv1, self.bn1, self.relu = m.conv1, m.bn1, nn.ReLU()
        self.layer1, self.layer2, self.layer3 = (nn.Sequential(*[QBlock(b) for b in s])
                                                 for s in (m.layer1, m.layer2, m.layer3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = m.fc

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(self.quant(x))))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.dequant(self.fc(self.pool(x).flatten(1)))

    def blocks(self):
        return [(f"layer{s}.{j}", b) for s, layer in enumerate((self.layer1, self.layer2, self.layer3), 1)
                for j, b in enumerate(layer)]

    def fuse(self, qat=False):
        groups = [["conv1", "bn1", "relu"]]
        for name, _ in self.blocks():
            groups += [[f"{name}.conv1", f"{name}.bn1", f"{name}.relu1"], [f"{name}.conv2", f"{name}.bn2"]]
        (tq.fuse_modules_qat if qat else tq.fuse_modules)(self, groups, inplace=True)
        return self


def qconfig(kind, bits=8):
    if kind == "best":
        return tq.get_default_qconfig("x86")
    if kind == "full":
        return tq.QConfig(activation=tq.HistogramObserver.with_args(reduce_range=False),
                          weight=tq.PerChannelMinMaxObserver.with_args(
                              dtype=torch.qint8, qscheme=torch.per_channel_symmetric))
    if kind == "original":
        return tq.QConfig(activation=tq.MinMaxObserver.with_args(dtype=torch.quint8, quant_min=0,
                                                                 quant_max=(1 << bits) - 1),
                          weight=tq.MinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric,
                                                             quant_min=-(1 << (bits - 1)),
                                                             quant_max=(1 << (bits - 1)) - 1))
    if kind == "int16sim":
        return tq.QConfig(
            activation=tq.FakeQuantize.with_args(observer=tq.MinMaxObserver, quant_min=0, quant_max=65535,
                                                 dtype=torch.qint32, qscheme=torch.per_tensor_affine),
            weight=tq.FakeQuantize.with_args(observer=tq.PerChannelMinMaxObserver, quant_min=-32768,
                                             quant_max=32767, dtype=torch.qint32,
                                             qscheme=torch.per_channel_symmetric, ch_axis=0))
    raise ValueError(f"unknown torch.ao configuration {kind!r}")


def normalize(images_nhwc_uint8, norm=None):
    """uint8 NHWC -> float32 NCHW normalized, exactly as trainer.data.normalize does it.
    norm: {"mean": [...], "std": [...]} per channel on a 0..1 scale (a Source's); CIFAR-10's
    by default."""
    x = torch.as_tensor(np.asarray(images_nhwc_uint8)).permute(0, 3, 1, 2)
    m, s = (norm["mean"], norm["std"]) if norm else (MEAN, STD)
    mean = torch.tensor(m, dtype=torch.float32).view(1, -1, 1, 1) * 255
    std = torch.tensor(s, dtype=torch.float32).view(1, -1, 1, 1) * 255
    return (x.float() - mean) / std


def pt2e_missing():
    """-> None when the torchao package (PT2E quantization, the `peers` extra) imports, else why."""
    try:
        import torchao.quantization.pt2e.quantize_pt2e  # noqa: F401
    except ImportError as e:
        return f"{e.name} is not installed (pip install -e \".[peers]\")"
    return None


@torch.no_grad()
def pt2e_int8(model, calib_images, norm=None, batch_size=256):
    """torch.ao's path for a program (PT2E, now in the torchao package): torch.export with a
    free batch size, X86InductorQuantizer's default configuration (per-channel int8 weights,
    uint8 activations, fused conv+ReLU), calibration, convert_pt2e, then torch.compile, whose
    inductor runs the int8 kernels: the way its users run it.  FX cannot read an exported
    program, so a user's `--model net.pt2` gets this peer.  model: float, normalized NCHW in."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer import x86_inductor_quantizer as xiq
    quantizer = xiq.X86InductorQuantizer()
    quantizer.set_global(xiq.get_default_x86_inductor_quantization_config())
    example = normalize(calib_images[:2], norm)
    graph = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: torch.export.Dim("batch")},)).module()
    prepared = prepare_pt2e(graph, quantizer)
    for s in range(0, len(calib_images), batch_size):
        prepared(normalize(calib_images[s:s + batch_size], norm))
    converted = convert_pt2e(prepared)
    return converted, torch.compile(converted)


@torch.no_grad()
def static_int8(model, calib_images, kind, bits=8, batch_size=256):
    """Eager static PTQ: fuse, prepare, calibrate on uint8 NHWC images, convert."""
    torch.backends.quantized.engine = "x86"
    q = QResNet20(model).eval().fuse()
    q.qconfig = qconfig(kind, bits)
    tq.prepare(q, inplace=True)
    for s in range(0, len(calib_images), batch_size):
        q(normalize(calib_images[s:s + batch_size]))
    return tq.convert(q, inplace=True)


@torch.no_grad()
def fx_int8(model, calib_images, kind, bits=8, batch_size=256):
    """torch.ao's graph-mode (FX) static PTQ of any float model it can trace (the trainer's
    every architecture): the peer rows of the report, with no network rebuilt by hand.  kind:
    'best' is torch.ao's own x86 mapping (get_default_qconfig_mapping: W8A7 activations),
    'full' and 'original' the qconfigs above for every layer.  FX fuses conv+BN(+ReLU) itself."""
    from torch.ao.quantization import QConfigMapping, get_default_qconfig_mapping, quantize_fx
    torch.backends.quantized.engine = "x86"
    mapping = (get_default_qconfig_mapping("x86") if kind == "best"
               else QConfigMapping().set_global(qconfig(kind, bits)))
    prepared = quantize_fx.prepare_fx(copy.deepcopy(model).eval(), mapping,
                                      example_inputs=(normalize(calib_images[:1]),))
    for s in range(0, len(calib_images), batch_size):
        prepared(normalize(calib_images[s:s + batch_size]))
    return quantize_fx.convert_fx(prepared)


@torch.no_grad()
def int16_simulated(model, calib_images, batch_size=256):
    """FakeQuantize at 16 bits: observers calibrate, then every point is rounded (float math)."""
    q = QResNet20(model).train().fuse(qat=True)
    q.qconfig = qconfig("int16sim")
    tq.prepare_qat(q, inplace=True)
    q.eval()
    q.apply(tq.disable_fake_quant)
    q.apply(tq.enable_observer)
    for s in range(0, len(calib_images), batch_size):
        q(normalize(calib_images[s:s + batch_size]))
    q.apply(tq.disable_observer)
    q.apply(tq.enable_fake_quant)
    return q


def dynamic_int8(model):
    return tq.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


# ---- reading a converted (full-range) torch.ao model into our integer network ----------

def _qparams(module):
    return float(module.scale), int(module.zero_point)


def points_qparams(qmodel):
    """Scale and zero point at each point of the captured graph (its names, capture.Walk.name),
    from the converted model."""
    out = {"input": _qparams(qmodel.quant), "conv1": _qparams(qmodel.conv1)}
    for name, b in qmodel.blocks():
        out[f"{name}.conv1"] = _qparams(b.conv1)
        out[f"{name}.conv2"] = _qparams(b.conv2)
        out[f"{name}.add"] = _qparams(b.add)
    out["gap"] = out[f"{qmodel.blocks()[-1][0]}.add"]      # quantized avg pool keeps its input's
    out["fc"] = _qparams(qmodel.fc)
    return out


def weighted_modules(qmodel):
    mods = {"conv1": qmodel.conv1, "fc": qmodel.fc}
    for name, b in qmodel.blocks():
        mods[f"{name}.conv1"], mods[f"{name}.conv2"] = b.conv1, b.conv2
    return mods


def to_qnet(qmodel, points, ops):
    """The converted torch.ao model's integers in our qnet layout (build.quantize_graph's).

    Weights: int_repr (may hold -128).  Every scale/zero point: torch's.  Bias: float bias
    rounded to int32 at s_in*s_w (the one declared divergence).  LUT: torch's own
    normalization + QuantStub on the 256 values of each channel."""
    qp = points_qparams(qmodel)
    mods = weighted_modules(qmodel)
    qpts = [{**p, "bits": 8, "scale": qp[p["name"]][0], "zp": qp[p["name"]][1]} for p in points]
    L = np.arange(-128, 128, dtype=np.int64)
    qops = []
    for op in ops:
        if not CONVERTERS[op["op"]].WEIGHTED:
            qops.append(CONVERTERS[op["op"]].integers(op, qpts, None, None))
            continue
        m = mods[op["name"]]
        w = m.weight()
        if w.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric) or \
                (w.q_per_channel_zero_points() != 0).any():
            raise ValueError(f"{op['name']}: expected per-channel weights with zero point 0")
        w_int = w.int_repr().numpy().astype(np.int64)
        s_w = w.q_per_channel_scales().numpy().astype(np.float64)
        bias = m.bias().detach().numpy().astype(np.float64)
        qops.append(weighted.layer_integers(op, qpts, 8, "twos", w_int + 128, L, s_w, bias))
    return {"points": qpts, "ops": qops, "lut": torch_lut(qmodel)}


@torch.no_grad()
def torch_lut(qmodel):
    """LUT[ch, p]: torch's normalization then the QuantStub's quantize, for p = 0..255."""
    pix = np.broadcast_to(np.arange(256, dtype=np.uint8)[None, :, None, None], (1, 256, 1, 3))
    x = qmodel.quant(normalize(np.ascontiguousarray(pix).reshape(1, 256, 1, 3)))   # (1,3,256,1)
    return x.int_repr().numpy()[0, :, :, 0].astype(np.int64)


@torch.no_grad()
def capture(qmodel, images):
    """int_repr at every point (the captured graph's names, NHWC int64) for uint8 NHWC images."""
    got = {}

    def hook(name):
        return lambda mod, inp, out: got.__setitem__(name, out)
    handles = [qmodel.quant.register_forward_hook(hook("input")),
               qmodel.conv1.register_forward_hook(hook("conv1")),
               qmodel.pool.register_forward_hook(hook("gap")),
               qmodel.fc.register_forward_hook(hook("fc"))]
    for name, b in qmodel.blocks():
        handles += [b.conv1.register_forward_hook(hook(f"{name}.conv1")),
                    b.conv2.register_forward_hook(hook(f"{name}.conv2")),
                    b.register_forward_hook(hook(f"{name}.add"))]
    try:
        qmodel(normalize(images))
    finally:
        for h in handles:
            h.remove()
    out = {}
    for k, t in got.items():
        r = t.int_repr().long()
        out[k] = r.flatten(1) if k == "gap" else (r.permute(0, 2, 3, 1) if r.dim() == 4 else r)
    return out
