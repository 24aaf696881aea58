"""Load a trained ResNet20 and fold BatchNorm into its convolutions, eq. (2).

The result is a *graph*: a list of points (the activation tensors that get quantized,
docs/quantization.md section 3) and a list of ops that read and write them, with float64
weights.  Calibration, quantization and both simulations walk this same graph, and the
model file stores its integer form.
"""
import hashlib
from pathlib import Path

import torch

from trainer.checkpoint import CheckpointError, FORMAT as CKPT_FORMAT, read_file
from trainer.model import ResNet20, ShortcutA


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_resnet20(path):
    """A trainer checkpoint or a bare ResNet20 state_dict -> ResNet20 in eval mode."""
    path = Path(path)
    state = read_file(path)                   # weights_only=True; one line per kind of bad file
    if isinstance(state, dict) and state.get("format") == CKPT_FORMAT:
        state = state.get("model")
    if not isinstance(state, dict) or not state or \
            not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds neither a trainer checkpoint nor a state_dict")
    model = ResNet20()
    want = model.state_dict()
    missing, extra = [k for k in want if k not in state], [k for k in state if k not in want]
    shapes = [f"{k} is {tuple(state[k].shape)}, not {tuple(v.shape)}" for k, v in want.items()
              if k in state and state[k].shape != v.shape]
    if missing or extra or shapes:
        def first(what, keys):
            return keys and f"{what} {keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
        why = ", ".join(filter(None, [first("missing", missing), first("unexpected", extra),
                                      first("shape:", shapes)]))
        raise CheckpointError(f"{path} is not a ResNet20 checkpoint: {why}")
    model.load_state_dict(state)
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{path}: non-finite values (NaN/inf) in {bad[0]}" +
                              (f" and {len(bad) - 1} more tensors" if len(bad) > 1 else ""))
    neg = [k for k, v in state.items() if k.endswith("running_var") and (v < 0).any()]
    if neg:
        raise CheckpointError(f"{path}: negative BatchNorm variance in {neg[0]}")
    return model.eval()


@torch.no_grad()
def fold_bn(conv, bn):
    """Conv (no bias) + eval-mode BN -> float64 (weight, bias), eq. (2)."""
    g = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    w = conv.weight.detach().double() * g[:, None, None, None]
    b = bn.bias.detach().double() - bn.running_mean.double() * g
    return w, b


def first_last(ops):
    """The names of the first and the last weighted layer (the stem and the fc): the layers
    `--first-last-bits` sets and reconstruction treats as units of their own.  The one place
    that picks them."""
    weighted = [op["name"] for op in ops if op["op"] in ("conv", "linear")]
    return weighted[0], weighted[-1]


def split_stream(points, ops):
    """Below 8-bit activations (docs/quantization.md section 3): a `requant` op in front of
    every conv that reads a point the residual add also reads, so that the conv reads its own
    low-bit copy while the residual stream keeps 8 bits.  -> (points, ops), renumbered in op
    order; `layerS.B.in` is the new point of block layerS.B."""
    readers = {}
    for op in ops:
        for i in (op["in"] if isinstance(op["in"], list) else [op["in"]]):
            readers.setdefault(i, set()).add(op["op"])
    new_pts, where, out = [points[0]], {0: 0}, []
    for op in ops:
        op = dict(op)
        if op["op"] == "conv" and op["in"] != 0 and "add" in readers[op["in"]]:
            block = op["name"].rsplit(".", 1)[0]
            new_pts.append({"name": f"{block}.in", "shape": list(points[op["in"]]["shape"])})
            out.append({"op": "requant", "name": f"{block}.requant", "in": where[op["in"]],
                        "out": len(new_pts) - 1})
            op["in"] = len(new_pts) - 1
        else:
            op["in"] = [where[i] for i in op["in"]] if isinstance(op["in"], list) else where[op["in"]]
        new_pts.append(points[op["out"]])
        where[op["out"]] = len(new_pts) - 1
        op["out"] = len(new_pts) - 1
        out.append(op)
    return new_pts, out


@torch.no_grad()
def graph(model):
    """ResNet20 -> (points, ops).  points: [{name, shape (H,W,C) or (C,)}]; ops as in format.md."""
    points = [{"name": "input", "shape": [32, 32, 3]}]
    ops = []

    def point(name, shape):
        points.append({"name": name, "shape": list(shape)})
        return len(points) - 1

    def conv(name, c, bn, src, relu, hw):
        w, b = fold_bn(c, bn)
        out = point(name, (hw, hw, w.shape[0]))
        ops.append({"op": "conv", "name": name, "in": src, "out": out, "cin": w.shape[1] * c.groups,
                    "cout": w.shape[0], "kh": c.kernel_size[0], "kw": c.kernel_size[1], "stride": c.stride[0],
                    "ph": c.padding[0], "pw": c.padding[1], "groups": c.groups, "relu": relu, "weight": w,
                    "bias": b})
        return out

    x, hw = conv("stem", model.conv1, model.bn1, 0, True, 32), 32
    for s, stage in enumerate((model.layer1, model.layer2, model.layer3), 1):
        for j, blk in enumerate(stage):
            name = f"layer{s}.{j}"
            stride = blk.conv1.stride[0]
            hw = (hw - 1) // stride + 1
            a = conv(f"{name}.conv1", blk.conv1, blk.bn1, x, True, hw)
            a = conv(f"{name}.conv2", blk.conv2, blk.bn2, a, False, hw)
            pad = blk.shortcut.pad if isinstance(blk.shortcut, ShortcutA) else 0
            out = point(f"{name}.out", (hw, hw, blk.conv2.out_channels))
            ops.append({"op": "add", "name": f"{name}.add", "in": [a, x], "out": out,
                        "stride": stride, "pad": pad, "relu": True})
            x = out
    c = points[x]["shape"][2]
    pooled = point("pool", (c,))
    ops.append({"op": "gap", "name": "pool", "in": x, "out": pooled})
    fc = model.fc
    logits = point("logits", (fc.out_features,))
    ops.append({"op": "linear", "name": "fc", "in": pooled, "out": logits, "cin": fc.in_features,
                "cout": fc.out_features, "relu": False, "weight": fc.weight.detach().double(),
                "bias": fc.bias.detach().double()})
    return points, ops
