"""A CNN -> the exporter's graph (points and ops), read from its `torch.export` program: the
front end for every network, the trainer's and a user's, made of the ops below.

    points, ops = capture.graph(torch.export.load("net.pt2"))           # or
    points, ops = capture.graph(torch.export.export(model.eval(), (x,)))

The ATen graph is walked in order.  Each conv2d (any kernel, stride, padding, groups; with or
without bias) takes the batch_norm after it (folded, eq. 2) and the activation after that
(relu, relu6 = hardtanh(0, 6)); an add takes the activation after it; a conv or add that
nothing activates ends linear (a bottleneck).  max_pool2d, avg_pool2d, adaptive_avg_pool2d to
1x1 and mean over H and W become pools; flatten/view/reshape to (N, features) a flatten (the
next linear layer's columns permuted from PyTorch's (c, y, x) order to the file's (y, x, c),
docs/format.md "Flatten"); linear layers anywhere.  Dropout, clone, contiguous and identity
views are dropped; ResNet's option-A shortcut (x[:, :, ::2, ::2] padded with zero channels)
becomes the add's stride and pad.  An activation after an op that cannot take it (a max pool)
is a requant to the same scale with that clamp.  Anything else raises CaptureError naming the op, the node
and the supported set.  The weights are float64; the input is NCHW, float, normalized.
Ops and points are named after the module that ran them (Walk.name): layer1.0.conv1,
layer1.0.add, features.3.conv.1.0.
"""
import torch

from .ops import CLAMPED

SUPPORTED = ("conv2d", "batch_norm (after a conv)", "relu", "relu6/hardtanh(0, 6)", "add", "max_pool2d",
             "avg_pool2d", "adaptive_avg_pool2d to 1x1", "mean over H and W", "flatten/view/reshape",
             "linear", "dropout", "identity")
SKIP = {"aten.dropout.default", "aten.clone.default", "aten.contiguous.default", "aten.alias.default",
        "aten.detach.default", "aten.dropout_.default", "aten.feature_dropout.default"}


class CaptureError(Exception):
    """The program has an op or a form that the integer engine cannot run."""


class Pending:
    """An op whose output point is not made yet: a later batch_norm or activation may still
    fold into it."""

    def __init__(self, op, shape, node):
        self.op, self.shape, self.node = op, shape, node


class Shortcut:
    """x[:, :, ::s, ::s] of a point, then `pad` zero channels each side (option A)."""

    def __init__(self, src, stride, pad, shape):
        self.src, self.stride, self.pad, self.shape = src, stride, pad, shape


def _hwc(node):
    """A node's tensor shape without the batch: [H, W, C] or [C]."""
    s = list(node.meta["val"].shape)[1:]
    return [s[1], s[2], s[0]] if len(s) == 3 else s


class Walk:
    def __init__(self, program):
        self.program = program
        sig = program.graph_signature
        state = {**program.state_dict, **getattr(program, "constants", {})}
        self.tensors = {}
        for spec in sig.input_specs:
            if spec.target is not None and spec.target in state:
                self.tensors[spec.arg.name] = state[spec.target].detach().double()
        self.points, self.ops, self.value, self.names = [], [], {}, {"input"}

    def name(self, node, kind):
        """A readable, unique name from the module that ran the node: a conv or linear module's
        own path (layer1.0.conv1), else the enclosing module's path and the kind (layer1.0.add),
        else the kind alone (gap)."""
        stack = list((node.meta.get("nn_module_stack") or {}).values())
        path, cls = stack[-1] if stack else ("", "")
        own = kind in ("conv", "linear") and cls.rsplit(".", 1)[-1] in ("Conv2d", "Linear")
        base = path if own and path else f"{path}.{kind}" if path else kind
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name

    def fail(self, node, what):
        raise CaptureError(f"{what} at node {node.name!r}; the integer engine runs {', '.join(SUPPORTED)}")

    def point(self, name, shape):
        self.points.append({"name": name, "shape": list(shape)})
        return len(self.points) - 1

    def made(self, v, node):
        """The point of value v, making the pending op's point now."""
        if isinstance(v, int):
            return v
        if isinstance(v, Pending):
            v.op["out"] = self.point(v.op["name"], v.shape)
            self.ops.append(v.op)
            for k, other in self.value.items():         # every alias of this value is the point now
                if other is v:
                    self.value[k] = v.op["out"]
            return v.op["out"]
        self.fail(node, "an option-A shortcut used other than by an add")

    def arg(self, node, i):
        a = node.args[i]
        if a.name in self.tensors:
            return self.tensors[a.name]
        return self.value[a.name]

    def run(self):
        for node in self.program.graph.nodes:
            if node.op == "placeholder":
                if node.name not in self.tensors:
                    if self.points:
                        self.fail(node, "a second input")
                    self.value[node.name] = self.point("input", _hwc(node))
                continue
            if node.op == "output":
                outs = node.args[0]
                if len(outs) != 1:
                    self.fail(node, f"{len(outs)} outputs (one, the logits, is supported)")
                out = self.made(self.value[outs[0].name], node)
                if len(self.points[out]["shape"]) != 1:
                    self.fail(node, "logits that are not flat (N, classes)")
                return self.points, self.ops
            if node.op != "call_function":
                self.fail(node, f"a {node.op} node")
            self.call(node, str(node.target))
        raise CaptureError("the program has no output")

    def call(self, node, t):
        name = node.name
        if t in SKIP:
            self.value[name] = self.value[node.args[0].name]
        elif t == "aten.conv2d.default":
            self.conv(node)
        elif t == "aten.batch_norm.default":
            self.batch_norm(node)
        elif t in ("aten.relu.default", "aten.relu_.default"):
            self.activate(node, "relu")
        elif t in ("aten.relu6.default", "aten.relu6_.default"):
            self.activate(node, "relu6")
        elif t in ("aten.hardtanh.default", "aten.hardtanh_.default"):
            lo, hi = (list(node.args[1:3]) + [-1.0, 1.0][len(node.args) - 1:])[:2]
            if (lo, hi) != (0.0, 6.0):
                self.fail(node, f"hardtanh({lo}, {hi}) (only relu6, hardtanh(0, 6), is)")
            self.activate(node, "relu6")
        elif t == "aten.add.Tensor":
            self.add(node)
        elif t in ("aten.max_pool2d.default", "aten.avg_pool2d.default"):
            self.pool(node, "maxpool" if "max" in t else "avgpool")
        elif t in ("aten.adaptive_avg_pool2d.default", "aten.mean.dim"):
            self.gap(node, t)
        elif t in ("aten.flatten.using_ints", "aten.view.default", "aten.reshape.default"):
            self.flatten(node)
        elif t == "aten.linear.default":
            self.linear(node)
        elif t == "aten.slice.Tensor":
            self.slice(node)
        elif t == "aten.pad.default":
            self.pad(node)
        else:
            self.fail(node, f"unsupported op {t}")

    def conv(self, node):
        x = self.made(self.value[node.args[0].name], node)
        w = self.tensors[node.args[1].name]
        a = list(node.args) + [None] * (7 - len(node.args))
        b = self.tensors[a[2].name] if a[2] is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        stride, pad, dil, groups = (a[3] or [1, 1]), (a[4] or [0, 0]), (a[5] or [1, 1]), (a[6] or 1)
        stride, pad, dil = [list(v) * 2 if len(v) == 1 else list(v) for v in (stride, pad, dil)]
        if isinstance(a[4], str) or dil != [1, 1] or stride[0] != stride[1]:
            self.fail(node, f"conv2d with padding {a[4]!r}, dilation {dil} or stride {stride}")
        op = {"op": "conv", "name": self.name(node, "conv"), "in": x, "cin": w.shape[1] * groups, "cout": w.shape[0],
              "kh": w.shape[2], "kw": w.shape[3], "stride": stride[0], "ph": pad[0], "pw": pad[1],
              "groups": groups, "relu": False, "weight": w.clone(), "bias": b.clone()}
        self.value[node.name] = Pending(op, _hwc(node), node)

    def batch_norm(self, node):
        v = self.value[node.args[0].name]
        if not (isinstance(v, Pending) and v.op["op"] == "conv" and "act" not in v.op and len(v.node.users) == 1):
            self.fail(node, "a batch_norm that does not follow a conv directly")
        gamma, beta, mean, var = (self.tensors[node.args[i].name] if node.args[i] is not None else None
                                  for i in (1, 2, 3, 4))
        eps = node.args[7]
        g = (gamma if gamma is not None else torch.ones_like(var)) / torch.sqrt(var + eps)   # eq. (2)
        op = v.op
        op["weight"] = op["weight"] * g[:, None, None, None]
        op["bias"] = (op["bias"] - mean) * g + (beta if beta is not None else 0.0)
        v.node = node
        self.value[node.name] = v

    def activate(self, node, act):
        v = self.value[node.args[0].name]
        if isinstance(v, Pending) and v.op["op"] in CLAMPED and "act" not in v.op \
                and len(v.node.users) == 1:
            v.op["act"], v.op["relu"], v.node = act, True, node
            self.value[node.name] = v
            return
        x = self.made(v, node)                      # on a point: a requant to the same scale, clamped
        op = {"op": "requant", "name": self.name(node, act), "in": x, "act": act, "relu": True}
        self.value[node.name] = Pending(op, self.points[x]["shape"], node)

    def add(self, node):
        if len(node.args) != 2 or node.kwargs.get("alpha", 1) != 1:
            self.fail(node, "add with alpha or a scalar")
        a, b = (self.value.get(n.name) if hasattr(n, "name") else None for n in node.args)
        if a is None or b is None:
            self.fail(node, "add of a constant")
        if isinstance(a, Shortcut):
            a, b = b, a
        stride, pad = (b.stride, b.pad) if isinstance(b, Shortcut) else (1, 0)
        xa = self.made(a, node)
        xb = self.made(b.src if isinstance(b, Shortcut) else b, node)
        shape = _hwc(node)
        if self.points[xa]["shape"] != shape:
            self.fail(node, f"add of shapes {self.points[xa]['shape']} and {shape} (broadcasting)")
        op = {"op": "add", "name": self.name(node, "add"), "in": [xa, xb], "stride": stride, "pad": pad, "relu": False}
        self.value[node.name] = Pending(op, shape, node)

    def slice(self, node):
        """x[:, :, ::s] and then [:, :, :, ::s] of a point: the first half of an option-A shortcut."""
        src, dim, start, end, step = (list(node.args) + [None, None, 1])[:5]
        v = self.value[src.name]
        if dim not in (2, 3) or start not in (0, None) or step in (None, 1) or end < src.meta["val"].shape[dim]:
            self.fail(node, "a slice that is not x[:, :, ::s, ::s]")
        if isinstance(v, Shortcut) and dim == 3 and v.stride == step and v.pad == -1:
            self.value[node.name] = Shortcut(v.src, step, 0, _hwc(node))
        elif dim == 2:
            self.value[node.name] = Shortcut(self.made(v, node), step, -1, _hwc(node))
        else:
            self.fail(node, "a slice that is not x[:, :, ::s, ::s]")

    def pad(self, node):
        v, p = self.value[node.args[0].name], list(node.args[1])
        mode = node.args[2] if len(node.args) > 2 else "constant"
        value = node.args[3] if len(node.args) > 3 else None
        if not (isinstance(v, Shortcut) and v.pad == 0 and len(p) == 6 and p[:4] == [0, 0, 0, 0] and p[4] == p[5]
                and mode == "constant" and not value):
            self.fail(node, "a pad other than the zero channels of an option-A shortcut")
        self.value[node.name] = Shortcut(v.src, v.stride, p[4], _hwc(node))

    def pool(self, node, kind):
        x = self.made(self.value[node.args[0].name], node)
        a = list(node.args) + [None] * (7 - len(node.args))
        k = list(a[1])
        stride = list(a[2]) if a[2] else k
        pad = list(a[3]) if a[3] is not None else [0, 0]
        k, stride, pad = [v * 2 if len(v) == 1 else v for v in (k, stride, pad)]
        if stride[0] != stride[1]:
            self.fail(node, f"{kind} with stride {stride}")
        if kind == "maxpool" and ((a[4] or [1, 1]) not in ([1, 1], [1]) or a[5]):
            self.fail(node, "max_pool2d with dilation or ceil_mode")
        if kind == "avgpool" and (a[4] or a[5] is False or a[6] is not None):
            self.fail(node, "avg_pool2d with ceil_mode, count_include_pad=False or divisor_override")
        op = {"op": kind, "name": self.name(node, kind), "in": x, "kh": k[0], "kw": k[1], "stride": stride[0], "ph": pad[0],
              "pw": pad[1], "relu": False}
        if kind == "maxpool":
            op["out"] = self.point(op["name"], _hwc(node))
            self.ops.append(op)
            self.value[node.name] = op["out"]
        else:
            self.value[node.name] = Pending(op, _hwc(node), node)

    def gap(self, node, t):
        x = self.made(self.value[node.args[0].name], node)
        h, w, c = self.points[x]["shape"]
        if t == "aten.mean.dim":
            dims = sorted(d % 4 for d in node.args[1])
            if dims != [2, 3]:
                self.fail(node, f"mean over dims {node.args[1]} (H and W is supported)")
        elif list(node.args[1]) != [1, 1]:
            self.fail(node, f"adaptive_avg_pool2d to {list(node.args[1])} (1x1 is supported)")
        op = {"op": "gap", "name": self.name(node, "gap"), "in": x, "relu": False}
        self.value[node.name] = Pending(op, [c], node)

    def flatten(self, node):
        v = self.value[node.args[0].name]
        shape = list(node.meta["val"].shape)
        if len(shape) != 2:
            self.fail(node, f"a view to {shape} (only flattening to (N, features) is supported)")
        x = self.made(v, node) if not isinstance(v, Pending) or v.op["op"] != "gap" else v
        if isinstance(x, Pending) or len(self.points[x]["shape"]) == 1:
            self.value[node.name] = x                     # a global pool's (N, C), or already flat
            return
        name = self.name(node, "flatten")
        out = self.point(name, shape[1:])
        self.ops.append({"op": "flatten", "name": name, "in": x, "out": out, "from": self.points[x]["shape"]})
        self.value[node.name] = out

    def linear(self, node):
        x = self.made(self.value[node.args[0].name], node)
        w = self.tensors[node.args[1].name].clone()
        b = self.tensors[node.args[2].name].clone() if len(node.args) > 2 and node.args[2] is not None \
            else torch.zeros(w.shape[0], dtype=torch.float64)
        src = next((op for op in self.ops if op.get("out") == x and op["op"] == "flatten"), None)
        if src is not None:                               # columns from (c, y, x) to (y, x, c)
            h, wd, c = src["from"]
            w = w.view(-1, c, h, wd).permute(0, 2, 3, 1).reshape(w.shape[0], -1)
        op = {"op": "linear", "name": self.name(node, "linear"), "in": x, "cin": w.shape[1], "cout": w.shape[0], "relu": False,
              "weight": w, "bias": b}
        self.value[node.name] = Pending(op, _hwc(node), node)


def graph(program):
    """An ExportedProgram (float, eval mode, NCHW input) -> (points, ops), float64 weights,
    BatchNorm folded.  Raises CaptureError in one line for anything the engine cannot run."""
    return Walk(program).run()


def export(model, example):
    """An nn.Module and an example input -> its ExportedProgram, in eval mode."""
    return torch.export.export(model.eval(), (example,))
