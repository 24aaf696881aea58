"""Synthetic integer networks of every op kind, as model files: the random-graph test's
generator (tests/test_graphs.py) and the benchmark's inverted residual (scripts/bench.py).

`random_qnet(rng)` draws a graph (input shape, convs of random kernels, strides, paddings and
groups up to depthwise, adds of two points of one shape and option-A shortcuts, requants, max
and average pools, a global pool or a flatten, linear layers anywhere) and every integer of it
(weights at 2/4/8/16 bits with their codebooks, biases, multipliers, zero points, clamps:
ReLU, ReLU6 or none), in the exporter's qnet form.  `write(qnet, path)` writes it through the
exporter's own `build.to_file`, so every converter writes its header entry.  Nothing here is
trained: the integers are random, drawn so that the outputs use their range.
"""
import math

import numpy as np

from . import build
from .quantize import quantize_multiplier

KINDS = ("conv", "dwconv", "add", "shortcut", "requant", "maxpool", "avgpool")


class Graph:
    def __init__(self, rng, low):
        self.rng, self.low = rng, low          # low: every width <= 8 bits (the fast paths' files)
        self.points, self.ops = [], []

    def bits(self):
        return int(self.rng.choice([2, 4, 8, 8, 8] if self.low else [2, 4, 8, 16]))

    def point(self, shape, bits=None, like=None):
        """A new point: its width, zero point and scale (a random grid), or `like`'s."""
        if like is not None:
            p = dict(self.points[like], name=f"p{len(self.points)}", shape=list(shape))
        else:
            b = self.bits() if bits is None else bits
            p = {"name": f"p{len(self.points)}", "shape": list(shape), "bits": b,
                 "zp": int(self.rng.integers(0, 1 << b)), "scale": float(self.rng.uniform(0.01, 0.2))}
        self.points.append(p)
        return len(self.points) - 1

    def multiplier(self, spread, out, name):
        """(M0, n) that maps accumulators of about +-spread onto out's range, give or take 4x."""
        m = (1 << self.points[out]["bits"]) / (2.0 * max(spread, 1.0)) * 2.0 ** self.rng.uniform(-2, 2)
        return quantize_multiplier(min(m, 0.99), name)

    def act(self):
        return [None, "relu", "relu6"][int(self.rng.integers(3))]

    def weights(self, bits, shape):
        """-> (codes, L, level set): codes index L (2/4 bits: a random codebook of levels up to
        127; 8/16 bits: the two's complement levels, codes offset by 2^(b-1))."""
        rng = self.rng
        if bits <= 4:
            L = np.sort(rng.choice(np.arange(-127, 128), 1 << bits, replace=False)).astype(np.int64)
            return rng.integers(0, 1 << bits, shape), L, "learned"
        L = np.arange(-(1 << (bits - 1)), 1 << (bits - 1), dtype=np.int64)
        half = 1 << (bits - 1)
        codes = np.clip(rng.normal(half, half / 3, shape).round(), 0, (1 << bits) - 1).astype(np.int64)
        return codes, L, "twos"

    def weighted(self, kind, src, out, cin, cout, taps, extra):
        rng, name = self.rng, f"{kind}{len(self.ops)}"
        bits = self.bits()
        shape = (cout, cin // extra.get("groups", 1), extra.get("kh", 1), extra.get("kw", 1)) if kind == "conv" \
            else (cout, cin)
        codes, L, level_set = self.weights(bits, shape)
        w_int = L[codes]
        xr = (1 << self.points[src]["bits"]) / 2
        spread = math.sqrt(taps) * max(1.0, float(np.abs(w_int).mean())) * xr
        bias_q = rng.integers(-int(spread), int(spread) + 1, cout).astype(np.int64)
        mq = [self.multiplier(spread, out, f"{name}[{c}]") for c in range(cout)]
        self.ops.append({"op": kind, "name": name, "in": src, "out": out, "cin": cin, "cout": cout, **extra,
                         "act": self.act(), "bits_w": bits, "levels": level_set, "codes": codes, "L": L,
                         "w_int": w_int, "w_scale": rng.uniform(0.001, 0.1, cout), "bias_q": bias_q,
                         "m0": np.array([m for m, _ in mq], np.int64), "n": np.array([n for _, n in mq], np.int64)})

    def conv(self, src, depthwise=False, cout=None):
        rng = self.rng
        h, w, cin = self.points[src]["shape"]
        kh, kw = int(rng.integers(1, min(7, h + 2) + 1)), int(rng.integers(1, min(7, w + 2) + 1))
        if rng.random() < 0.5:
            kw = kh = min(kh, kw)
        s = int(rng.choice([1, 1, 2, 3]))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        ho, wo = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        if ho < 1 or wo < 1:
            return src
        if depthwise:
            groups, cout = cin, cin
        elif cout is not None:
            groups = 1
        else:
            groups = int(rng.choice([g for g in range(1, cin + 1) if cin % g == 0]))
            cout = groups * int(rng.integers(1, max(2, 24 // groups) + 1))
        return self.make_conv(src, kh, kw, s, ph, pw, groups, cout)

    def make_conv(self, src, kh, kw, s, ph, pw, groups, cout):
        h, w, cin = self.points[src]["shape"]
        ho, wo = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        out = self.point((ho, wo, cout))
        self.weighted("conv", src, out, cin, cout, kh * kw * cin // groups,
                      {"kh": kh, "kw": kw, "stride": s, "ph": ph, "pw": pw, "groups": groups})
        return out

    def add(self, a, b, stride=1, pad=0):
        """clamp(a + shortcut(b)) with eq. (12)'s factors for random scales."""
        rng = self.rng
        out = self.point(self.points[a]["shape"])
        sa, sb = self.points[a]["scale"], self.points[b]["scale"]
        u = max(sa, sb) / 2.0 ** 28
        ka, kb = int(math.floor(sa / u + 0.5)), int(math.floor(sb / u + 0.5))
        spread = (1 << 28) * (1 << max(self.points[a]["bits"], self.points[b]["bits"]))
        m0, n = self.multiplier(spread * float(rng.uniform(0.2, 1)), out, "add")
        self.ops.append({"op": "add", "name": f"add{len(self.ops)}", "in": [a, b], "out": out, "stride": stride,
                         "pad": pad, "act": self.act(), "ka": ka, "kb": kb, "m0": m0, "n": n})
        return out

    def residual(self, x):
        """x + conv(x), the conv keeping x's shape (stride 1, 'same' padding, odd kernel), its
        point first or second (torch's `x + f(x)` puts it second)."""
        h, w, c = self.points[x]["shape"]
        k = int(self.rng.choice([1, 3, 5]))
        out = self.point((h, w, c))
        self.weighted("conv", x, out, c, c, k * k * c, {"kh": k, "kw": k, "stride": 1, "ph": k // 2,
                                                         "pw": k // 2, "groups": 1})
        return self.add(out, x) if self.rng.integers(2) else self.add(x, out)

    def shortcut(self, x):
        """An option-A block: a stride-2 conv to 2p more channels, plus x subsampled and padded."""
        h, w, c = self.points[x]["shape"]
        if h < 2 or w < 2:
            return x
        p = int(self.rng.integers(1, 4))
        ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
        out = self.point((ho, wo, c + 2 * p))
        self.weighted("conv", x, out, c, c + 2 * p, 9 * c, {"kh": 3, "kw": 3, "stride": 2, "ph": 1, "pw": 1,
                                                             "groups": 1})
        return self.add(out, x, stride=2, pad=p)

    def requant(self, x):
        out = self.point(self.points[x]["shape"])
        m0, n = self.multiplier(1 << self.points[x]["bits"], out, "requant")
        self.ops.append({"op": "requant", "name": f"requant{len(self.ops)}", "in": x, "out": out,
                         "act": self.act(), "m0": m0, "n": n})
        return out

    def pool(self, x, kind):
        rng = self.rng
        h, w, c = self.points[x]["shape"]
        kh, kw = int(rng.integers(1, min(4, h) + 1)), int(rng.integers(1, min(4, w) + 1))
        s = int(rng.integers(1, 3))
        ph, pw = int(rng.integers(0, kh // 2 + 1)), int(rng.integers(0, kw // 2 + 1))
        ho, wo = (h + 2 * ph - kh) // s + 1, (w + 2 * pw - kw) // s + 1
        window = {"kh": kh, "kw": kw, "stride": s, "ph": ph, "pw": pw}
        op = {"op": kind, "name": f"{kind}{len(self.ops)}", "in": x, **window}
        if kind == "maxpool":
            op["out"] = self.point((ho, wo, c), like=x)
        else:
            op["out"] = self.point((ho, wo, c))
            op["m0"], op["n"] = self.multiplier(kh * kw * (1 << self.points[x]["bits"]) / 2, op["out"], kind)
            op["act"] = self.act()
        self.ops.append(op)
        return op["out"]

    def gap(self, x):
        h, w, c = self.points[x]["shape"]
        out = self.point((c,))
        m0, n = self.multiplier(h * w * (1 << self.points[x]["bits"]) / 2, out, "gap")
        self.ops.append({"op": "gap", "name": f"gap{len(self.ops)}", "in": x, "out": out, "act": self.act(),
                         "m0": m0, "n": n})
        return out

    def flatten(self, x):
        out = self.point((int(np.prod(self.points[x]["shape"])),), like=x)
        self.ops.append({"op": "flatten", "name": f"flatten{len(self.ops)}", "in": x, "out": out})
        return out

    def linear(self, x, cout, bits=None):
        cin = self.points[x]["shape"][0]
        out = self.point((cout,), bits)
        self.weighted("linear", x, out, cin, cout, cin, {})
        return out


def random_qnet(rng, low=True):
    """A random graph and its integers -> (qnet, classes).  low: every width <= 8 bits."""
    g = Graph(rng, low)
    h, w, c = int(rng.integers(3, 13)), int(rng.integers(3, 13)), int(rng.choice([1, 3, 4]))
    x = g.point((h, w, c), bits=8)
    x = g.conv(x)
    for _ in range(int(rng.integers(1, 6))):
        kind = KINDS[int(rng.integers(len(KINDS)))]
        if kind == "conv":
            x = g.conv(x)
        elif kind == "dwconv":
            x = g.conv(x, depthwise=True)
        elif kind == "add":
            x = g.residual(x)
        elif kind == "shortcut":
            x = g.shortcut(x)
        elif kind == "requant":
            x = g.requant(x)
        else:
            x = g.pool(x, kind)
    classes = int(rng.integers(2, 11))
    if rng.random() < 0.2:                               # the logits from a global pool, no linear
        x = g.gap(g.conv(x, cout=classes))
    else:
        x = g.gap(x) if rng.random() < 0.5 else g.flatten(x)
        if rng.random() < 0.5:
            x = g.linear(x, int(rng.integers(2, 17)))
        x = g.linear(x, classes)
    classes = g.points[x]["shape"][0]
    lut = np.stack([np.sort(rng.integers(0, 1 << g.points[0]["bits"], 256)) for _ in range(c)])
    return {"points": g.points, "ops": g.ops, "lut": lut.astype(np.int64), "widened": []}, classes


def inverted_residual(rng, hw=16, cin=32, expand=6, classes=10):
    """MobileNetV2's inverted residual at 8 bits, random integers: a 1x1 expansion to
    expand*cin channels, a 3x3 depthwise conv, a 1x1 linear bottleneck back to cin, the add,
    then a global pool and a linear layer -> (qnet, classes)."""
    g = Graph(rng, low=True)
    g.bits = lambda: 8
    x = g.point((hw, hw, 3), bits=8)
    x = g.make_conv(x, 3, 3, 1, 1, 1, 1, cin)                                # a stem
    e = g.make_conv(x, 1, 1, 1, 0, 0, 1, cin * expand)
    d = g.make_conv(e, 3, 3, 1, 1, 1, cin * expand, cin * expand)
    p = g.make_conv(d, 1, 1, 1, 0, 0, 1, cin)
    y = g.linear(g.gap(g.add(x, p)), classes, bits=8)                         # x + block(x)
    names = ["stem", "expand 1x1", "depthwise 3x3", "project 1x1"]
    for op, name in zip(g.ops, names):
        op["name"] = name
    lut = np.stack([np.arange(256)] * 3)
    return {"points": g.points, "ops": g.ops, "lut": lut.astype(np.int64), "widened": []}, g.points[y]["shape"][0]


def write(qnet, classes, path):
    """The qnet as a model file, through the exporter's own build.to_file."""
    c = qnet["points"][0]["shape"][2]
    build.to_file(qnet, path, {"generator": "tests/graphgen.py"}, classes=[f"c{k}" for k in range(classes)],
                  normalization={"mean": [0.5] * c, "std": [0.25] * c}, arch="random")


def images(rng, qnet, n=3):
    return rng.integers(0, 256, (n, *qnet["points"][0]["shape"])).astype(np.uint8)
