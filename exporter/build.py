"""Float graph + calibrated ranges -> the integer network (`qnet`) -> the model file.

`quantize_graph` computes every integer of docs/quantization.md sections 2-8. `to_file`
lays the qnet out as docs/format.md says and writes it through intengine.fileformat, the
single definition of the format.
"""
import numpy as np

from intengine import fileformat
from intengine.fixedpoint import FILE_ACC_BOUND, acc_bound
from intengine.cifar10 import CLASSES, MEAN, STD
from .quantize import ExportError, act_qparams, quantize_multiplier, quantize_weights, rnd

ADD_UNIT_BITS = 28                                   # eq. (12): u = max(s_a, s_b) / 2^28


def quantize_weights_all(ops, *, bits, first_last_bits, levels, clip, layer_bits=None):
    """Every conv/linear weight -> {name: (bits, level set, codes, L, s_w)}, section 2.
    layer_bits {name: bits}, where given, overrides bits/first_last_bits (section 14)."""
    from .fold import first_last
    edge = set(first_last(ops))
    out = {}
    for op in (op for op in ops if op["op"] in ("conv", "linear")):
        b = first_last_bits if op["name"] in edge else bits
        b = (layer_bits or {}).get(op["name"], b)
        kind = levels if b <= 4 else "twos"                        # section 2 table
        out[op["name"]] = (b, kind, *quantize_weights(op["weight"].numpy(), b, kind, clip))
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
    residual stream, the pool and the logits (the graph is fold.split_stream's)."""
    if act_bits >= STREAM_BITS:
        return [act_bits] * n_points
    bits = [STREAM_BITS] * n_points
    first = next(op for op in ops if op["op"] in ("conv", "linear"))
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


def quantize_graph(points, ops, lo, hi, weights, *, act_bits, bias_shift=None, scales=None):
    """-> qnet: {'points': [{name, shape, bits, scale, zp}], 'ops': [...], 'lut': (3,256)}.

    `weights` from quantize_weights_all; `bias_shift` {name: (Co,)} is added to the
    folded bias before eq. (7) (bias correction, section 2); `scales` as in act_points."""
    qpts = act_points(points, ops, lo, hi, act_bits, scales)
    widened = widen_outputs(ops, qpts, weights)
    qops = []
    for op in ops:
        if op["op"] in ("conv", "linear"):
            b, kind, codes, L, s_w = weights[op["name"]]
            bias = op["bias"].numpy() + (bias_shift[op["name"]] if bias_shift else 0.0)
            qops.append(weighted_integers(op, qpts, b, kind, codes, L, s_w, bias))
        else:
            qops.append(unweighted_integers(op, qpts))
    return {"points": qpts, "ops": qops, "lut": input_lut(qpts[0]), "widened": widened}


MAX_MULTIPLIER = 0.999


def widen_outputs(ops, qpts, weights):
    """eq. (9) stores multipliers below 1.  A conv with a coarse (2-bit) input and a fine 8-bit
    output can need s_x s_w / s_y >= 1; there the output step s_y grows to s_x max(s_w) / 0.999
    (its zero point kept), a slightly coarser 8-bit grid (section 3).  Changes qpts in place;
    returns the names of the points it widened."""
    widened = []
    for op in ops:
        if op["op"] not in ("conv", "linear"):
            continue
        s_w = weights[op["name"]][4]
        need = qpts[op["in"]]["scale"] * float(np.max(s_w)) / MAX_MULTIPLIER
        if need > qpts[op["out"]]["scale"]:
            qpts[op["out"]]["scale"] = need
            widened.append(qpts[op["out"]]["name"])
    return widened


def weighted_integers(op, qpts, bits, kind, codes, L, s_w, bias):
    """A conv/linear op with its weight codes (levels L, scales s_w) and float bias: eq. (7)-(9)."""
    sx, sy = qpts[op["in"]]["scale"], qpts[op["out"]]["scale"]
    bias_q = rnd(bias / (sx * s_w)).astype(np.int64)                                 # eq. (7)
    taps = codes[0].size
    bound = acc_bound(np.abs(bias_q).max(), taps, np.abs(L).max(), qpts[op["in"]]["bits"])
    if bound >= FILE_ACC_BOUND:
        raise ExportError(f"{op['name']}: accumulator bound {bound} exceeds 2^47 (section 5)")
    mq = [quantize_multiplier(sx * s / sy, f"{op['name']} channel {c}") for c, s in enumerate(s_w)]
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    q.update(bits_w=bits, levels=kind, codes=codes, L=L, w_int=L[codes], w_scale=s_w, bias_q=bias_q,
             bias_float=np.asarray(bias, np.float64),                   # b'' of eq. (3a), for fake-quant
             m0=np.array([m for m, _ in mq], np.int64), n=np.array([n for _, n in mq], np.int64))
    return q


def unweighted_integers(op, qpts):
    """An add (eq. 12-14) or the pool (eq. 16): factors, multiplier and shift."""
    q = {k: v for k, v in op.items() if k not in ("weight", "bias")}
    sy = qpts[op["out"]]["scale"]
    if op["op"] == "add":
        sa, sb = qpts[op["in"][0]]["scale"], qpts[op["in"][1]]["scale"]
        u = max(sa, sb) / 2.0 ** ADD_UNIT_BITS
        m0, n = quantize_multiplier(u / sy, op["name"])                             # eq. (14)
        q.update(ka=int(rnd(sa / u)), kb=int(rnd(sb / u)), m0=m0, n=n)             # eq. (12)
    elif op["op"] == "requant":
        m0, n = quantize_multiplier(qpts[op["in"]]["scale"] / sy, op["name"])      # eq. (17a)
        q.update(m0=m0, n=n)
    else:
        h, w, _ = qpts[op["in"]]["shape"]
        m0, n = quantize_multiplier(qpts[op["in"]]["scale"] / (h * w * sy), op["name"])   # eq. (16)
        q.update(m0=m0, n=n)
    return q


def input_lut(p):
    """eq. (5): LUT[ch, pixel] for the 3 x 256 possible inputs."""
    x = (np.arange(256)[None, :] / 255.0 - np.array(MEAN)[:, None]) / np.array(STD)[:, None]
    return np.clip(rnd(x / p["scale"]) + p["zp"], 0, (1 << p["bits"]) - 1).astype(np.int64)


def packed_weights(kind, bits, codes, L):
    """A layer's weights as the file stores them (format.md "Packing"): codes at 2 and 4 bits,
    the level itself at 8 and 16, conv taps reordered (Co,Ci,3,3) -> (Co,3,3,Ci)."""
    if kind == "conv":
        codes = codes.transpose(0, 2, 3, 1)
    return fileformat.pack_codes(codes if bits <= 4 else L[codes], bits)


def to_file(qnet, path, meta):
    """Lay out the qnet as docs/format.md and write it atomically."""
    weights, codebook, mult, shift, bias, wscale, factors = [], [], [], [], [], [], []
    nbytes = ncb = nch = 0
    ops = []
    for q in qnet["ops"]:
        spec = {k: q[k] for k in ("op", "name", "in", "out") if k in q}
        spec["offset"] = nch
        if q["op"] in ("conv", "linear"):
            b = q["bits_w"]
            packed = packed_weights(q["op"], b, q["codes"], q["L"])
            spec.update(cin=q["cin"], cout=q["cout"], relu=q["relu"], bits_w=b, levels=q["levels"],
                        w_offset=nbytes, w_nbytes=len(packed), cb_offset=ncb if b <= 4 else -1)
            if q["op"] == "conv":
                spec["stride"] = q["stride"]
            weights.append(packed)
            nbytes += len(packed)
            if b <= 4:
                codebook.append(q["L"])
                ncb += len(q["L"])
            mult.append(q["m0"])
            shift.append(q["n"])
            bias.append(q["bias_q"])
            wscale.append(q["w_scale"])
            nch += q["cout"]
        else:
            if q["op"] == "add":
                spec.update(stride=q["stride"], pad=q["pad"], relu=True, factor_offset=len(factors))
                factors += [q["ka"], q["kb"]]
            mult.append([q["m0"]])
            shift.append([q["n"]])
            bias.append([0])
            wscale.append([0.0])
            nch += 1
        ops.append(spec)
    pts = qnet["points"]
    all_bias = np.concatenate(bias).astype(np.int64)
    small = max(p["bits"] for p in pts) <= 8 and all(q.get("bits_w", 0) <= 8 for q in qnet["ops"])
    fits32 = np.abs(all_bias).max() < 2 ** 31
    arrays = {
        "weights": np.concatenate(weights).astype(np.uint8),
        "codebook": np.concatenate(codebook or [np.zeros(0)]).astype(np.int16),
        "bias": all_bias.astype(np.int32 if small and fits32 else np.int64),
        "multiplier": np.concatenate([np.asarray(m, np.int64) for m in mult]).astype(np.int32),
        "shift": np.concatenate([np.asarray(s, np.int64) for s in shift]).astype(np.int8),
        "add_factor": np.array(factors, np.int64),
        "weight_scale": np.concatenate(wscale).astype(np.float32),
        "lut": qnet["lut"].astype(np.int32),
        "act_zero_point": np.array([p["zp"] for p in pts], np.int32),
        "act_bits": np.array([p["bits"] for p in pts], np.int8),
        "act_scale": np.array([p["scale"] for p in pts], np.float64),
    }
    header = {"arch": "resnet20", "classes": list(CLASSES),
              "normalization": {"mean": list(MEAN), "std": list(STD)},
              "points": [{"name": p["name"], "shape": list(p["shape"])} for p in pts],
              "ops": ops, "meta": meta}
    fileformat.write(path, header, arrays)
