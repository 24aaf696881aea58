"""Float graph + calibrated ranges -> the integer network (`qnet`) -> the model file.

`quantize_graph` computes every integer of docs/quantization.md sections 2-8. `to_file`
lays the qnet out as docs/format.md says and writes it through intengine.fileformat, the
single definition of the format.
"""
import numpy as np

from intengine import fileformat
from intengine.cifar10 import CLASSES, MEAN, STD
from .ops import CLAMPED, CONVERTERS, INPUT, clamp
from .quantize import act_qparams, quantize_weights


def quantize_weights_all(ops, *, bits, first_last_bits, levels, clip, layer_bits=None):
    """Every conv/linear weight -> {name: (bits, level set, codes, L, s_w)}, section 2.
    layer_bits {name: bits}, where given, overrides bits/first_last_bits (section 14)."""
    from .blocks import first_last
    edge = set(first_last(ops))
    out = {}
    for op in (op for op in ops if CONVERTERS[op["op"]].WEIGHTED):
        b = first_last_bits if op["name"] in edge else bits
        b = (layer_bits or {}).get(op["name"], b)
        level_set = levels if b <= 4 else "twos"                   # section 2 table
        out[op["name"]] = (b, level_set, *quantize_weights(op["weight"].numpy(), b, level_set, clip))
    return out


def dequantized(weights):
    """{name: s_w * L[codes]} as float64 tensors, eq. (3)."""
    import torch
    return {k: torch.from_numpy(L[codes] * s_w.reshape(-1, *([1] * (codes.ndim - 1))))
            for k, (_, _, codes, L, s_w) in weights.items()}


STREAM_BITS = 8                                      # section 3: the points no conv reads, below 8 bits


def point_bits(ops, n_points, act_bits):
    """Each point's width (section 3): act_bits; below 8 bits, act_bits at the points a conv
    reads (the stem's input, the image, excepted) and 8 bits everywhere else: the image, the
    residual stream, the pool and the logits (the graph is blocks.split_stream's)."""
    if act_bits >= STREAM_BITS:
        return [act_bits] * n_points
    bits = [STREAM_BITS] * n_points
    first = next(op for op in ops if CONVERTERS[op["op"]].WEIGHTED)
    for op in ops:
        if op["op"] == "conv" and op is not first:
            bits[op["in"]] = act_bits
    return bits


def act_points(points, ops, lo, hi, act_bits, scales=None):
    """The points with their bits (point_bits), scale and zero point: eq. (4) from the
    calibrated range, or, where `scales` gives one, that learned step size with the
    calibrated zero point (section 13, eq. 21)."""
    out = []
    widths = point_bits(ops, len(points), act_bits)
    for i, (p, l, h) in enumerate(zip(points, lo, hi)):
        s, z = act_qparams(l, h, widths[i])
        if scales is not None and scales[i] is not None:
            s = float(scales[i])
        out.append({**p, "bits": widths[i], "scale": s, "zp": z})
    return out


def quantize_graph(points, ops, lo, hi, weights, *, act_bits, bias_shift=None, scales=None, norm=None):
    """-> qnet: {'points': [{name, shape, bits, scale, zp}], 'ops': [...], 'lut': (C,256)}.

    `weights` from quantize_weights_all; `bias_shift` {name: (Co,)} is added to the
    folded bias before eq. (7) (bias correction, section 2); `scales` as in act_points;
    `norm` the input's {"mean", "std"} (CIFAR-10's when None) for the LUT, eq. (5)."""
    qpts = act_points(points, ops, lo, hi, act_bits, scales)
    for op in ops:                                 # max pool, flatten: the input's integers
        if getattr(CONVERTERS[op["op"]], "KEEPS_POINT", False):
            src = qpts[op["in"]]
            qpts[op["out"]].update(bits=src["bits"], scale=src["scale"], zp=src["zp"])
    widened = widen_outputs(ops, qpts, weights)
    qops = [CONVERTERS[op["op"]].integers(op, qpts, weights, bias_shift) for op in ops]   # exporter/ops/
    return {"points": qpts, "ops": qops, "lut": INPUT.integers(qpts[0], *((norm["mean"], norm["std"]) if norm else (MEAN, STD))),
            "widened": widened}


MAX_MULTIPLIER = 0.999


def widen_outputs(ops, qpts, weights):
    """eq. (9) stores multipliers below 1.  A conv with a coarse (2-bit) input and a fine 8-bit
    output can need s_x s_w / s_y >= 1, and so can a requant whose output range is narrower
    than its input's (a ReLU after a max pool, the same scale: M = 1); there the output step s_y
    grows to s_x gain / 0.999 (its zero point kept), a slightly coarser grid (section 3).  The
    gain is each converter's: max(s_w) for a weighted layer, 1 for a requant, 1 / (window) for
    the pools.  Changes qpts in place; returns the names of the points it widened."""
    widened = []
    for op in ops:
        gain = getattr(CONVERTERS[op["op"]], "gain", None)
        if gain is None:
            continue
        need = qpts[op["in"]]["scale"] * gain(op, weights, qpts) / MAX_MULTIPLIER
        if need > qpts[op["out"]]["scale"]:
            qpts[op["out"]]["scale"] = need
            widened.append(qpts[op["out"]]["name"])
    return widened


def packed_weights(kind, bits, codes, L):
    """A layer's weights as the file stores them (format.md "Packing"): codes at 2 and 4 bits,
    the level itself at 8 and 16, in the kind's file order (its `file_codes`)."""
    codes = CONVERTERS[kind].file_codes(codes)
    return fileformat.pack_codes(codes if bits <= 4 else L[codes], bits)


class Tables:
    """The file's flat arrays as build.to_file fills them, op by op; each kind's `header`
    appends its part and gets back the offsets (docs/format.md)."""

    def __init__(self):
        self.packed, self.cb, self.factor = [], [], []
        self.chan = {"multiplier": [], "shift": [], "bias": [], "weight_scale": []}
        self.nbytes = self.ncb = self.nch = 0

    def channels(self, m0, n, bias, wscale):
        """Per-channel entries (multiplier, shift, integer bias, weight scale) -> their start."""
        for key, v in zip(self.chan, (m0, n, bias, wscale)):
            self.chan[key].append(np.asarray(v))
        self.nch += len(m0)
        return self.nch - len(m0)

    def weights(self, packed):
        """Packed weight bytes -> their count (they start at self.nbytes before the call)."""
        self.packed.append(packed)
        self.nbytes += len(packed)
        return len(packed)

    def codebook(self, L):
        self.cb.append(L)
        self.ncb += len(L)
        return self.ncb - len(L)

    def factors(self, values):
        self.factor += list(values)
        return len(self.factor) - len(values)


def to_file(qnet, path, meta, *, classes=CLASSES, normalization=None, arch="resnet20"):
    """Lay out the qnet as docs/format.md and write it atomically.  The file carries what the
    engine needs to run it: its input shape (point 0), class names and input normalization
    (mean and std per channel on a 0..1 scale, CIFAR-10's by default)."""
    t, ops = Tables(), []
    for q in qnet["ops"]:
        spec = {k: q[k] for k in ("op", "name", "in", "out") if k in q}
        if "offset" in CONVERTERS[q["op"]].FIELDS:
            spec["offset"] = t.nch
        spec.update(CONVERTERS[q["op"]].header(q, t))                   # exporter/ops/
        if q["op"] in CLAMPED:
            spec["lo"], spec["hi"] = clamp(q, qnet["points"][q["out"]])
        ops.append(spec)
    pts = qnet["points"]
    all_bias = np.concatenate(t.chan["bias"]).astype(np.int64)
    small = max(p["bits"] for p in pts) <= 8 and all(q.get("bits_w", 0) <= 8 for q in qnet["ops"])
    fits32 = np.abs(all_bias).max() < 2 ** 31
    arrays = {
        "weights": np.concatenate(t.packed).astype(np.uint8),
        "codebook": np.concatenate(t.cb or [np.zeros(0)]).astype(np.int16),
        "bias": all_bias.astype(np.int32 if small and fits32 else np.int64),
        "multiplier": np.concatenate([np.asarray(m, np.int64) for m in t.chan["multiplier"]]).astype(np.int32),
        "shift": np.concatenate([np.asarray(s, np.int64) for s in t.chan["shift"]]).astype(np.int8),
        "add_factor": np.array(t.factor, np.int64),
        "weight_scale": np.concatenate(t.chan["weight_scale"]).astype(np.float32),
        "lut": qnet["lut"].astype(np.int32),
        "act_zero_point": np.array([p["zp"] for p in pts], np.int32),
        "act_bits": np.array([p["bits"] for p in pts], np.int8),
        "act_scale": np.array([p["scale"] for p in pts], np.float64),
    }
    header = {"arch": arch, "classes": list(classes),
              "normalization": normalization or {"mean": list(MEAN), "std": list(STD)},
              "points": [{"name": p["name"], "shape": list(p["shape"])} for p in pts],
              "ops": ops, "meta": meta}
    fileformat.write(path, header, arrays)
