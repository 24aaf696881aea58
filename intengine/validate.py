"""Semantic checks of a model file, run before any jitted kernel sees it (docs/format.md).

`check(header, arrays, path)` verifies that every op's fields are present and in range,
that the point shapes chain (conv, add with its shortcut, pool, linear), that every offset
stays inside its array, and that every integer parameter is inside the range the kernels
assume: multipliers and shifts (eq. 9), codebooks, zero points, the input LUT, and the
accumulator bound of docs/quantization.md section 5.  Raises FormatError.
"""
import numpy as np

from .fileformat import ACT_BITS, WEIGHT_BITS, FormatError, packed_nbytes, regenerate
from .fixedpoint import FILE_ACC_BOUND, M0_MIN, M0_MAX, SHIFT_MAX, SHIFT_MIN, acc_bound

MAX_OPS = 1024                  # ResNet20 has 31 points and 30 ops
MAX_POINT_ELEMENTS = 1 << 17    # per image; ResNet20's largest point has 16,384
MAX_MACS = 1 << 28              # multiply-accumulates per image; ResNet20 needs about 41 million
FIELDS = {
    "conv": ("name", "in", "out", "cin", "cout", "stride", "relu", "bits_w", "w_offset",
             "w_nbytes", "cb_offset", "offset"),
    "linear": ("name", "in", "out", "cin", "cout", "relu", "bits_w", "w_offset", "w_nbytes",
               "cb_offset", "offset"),
    "add": ("name", "in", "out", "stride", "pad", "relu", "offset", "factor_offset"),
    "requant": ("name", "in", "out", "offset"),
    "pool": ("name", "in", "out", "offset"),
}


def _fail(path, msg):
    raise FormatError(f"{path}: {msg}; {regenerate(path)}")


def _int(path, op, key, lo, hi):
    v = op.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        _fail(path, f"op {op.get('name', '?')!r}: field {key!r} = {v!r} is not an integer in [{lo}, {hi}]")
    return v


def _name(path, what, v):
    if not isinstance(v, str) or not 0 < len(v) <= 200 or not (v.isascii() and v.isprintable()):
        _fail(path, f"{what} name {str(v)[:40]!r} is not a short printable ASCII string")


def check(header, arrays, path):
    pts = header["points"]
    P = len(pts)
    if not 2 <= P <= MAX_OPS + 1 or len(header["ops"]) > MAX_OPS:
        _fail(path, f"{P} points and {len(header['ops'])} ops; at most {MAX_OPS} ops")
    if not isinstance(header.get("meta", {}), dict):
        _fail(path, "header 'meta' must be an object")
    for name in ("act_zero_point", "act_bits", "act_scale"):
        if arrays[name].shape != (P,):
            _fail(path, f"{name} has shape {arrays[name].shape}, expected ({P},)")
    shapes = []
    for p in pts:
        if not isinstance(p, dict) or not isinstance(p.get("shape"), list) or \
                not all(isinstance(d, int) and 0 < d <= 4096 for d in p["shape"]):
            _fail(path, f"point {str(p)[:60]} has no valid shape")
        _name(path, "point", p.get("name"))
        if int(np.prod(p["shape"])) > MAX_POINT_ELEMENTS:
            _fail(path, f"point {p['name']!r} has {int(np.prod(p['shape'])):,} elements "
                        f"(at most {MAX_POINT_ELEMENTS:,})")
        shapes.append(tuple(p["shape"]))
    bits = arrays["act_bits"].astype(np.int64)
    zps = arrays["act_zero_point"].astype(np.int64)
    if not np.isin(bits, ACT_BITS).all():
        _fail(path, f"activation bits {sorted(set(bits.tolist()))} not in {ACT_BITS}")
    if (zps < 0).any() or (zps > (1 << bits) - 1).any():
        _fail(path, "an activation zero point lies outside [0, 2^bits - 1]")
    scale = arrays["act_scale"]
    if not (np.isfinite(scale).all() and (scale > 0).all()):
        _fail(path, "activation scales must be finite and positive")
    if shapes[0] != (32, 32, 3):
        _fail(path, f"input point has shape {shapes[0]}, expected (32, 32, 3)")
    lut = arrays["lut"]
    if lut.shape != (3, 256) or lut.min() < 0 or lut.max() > (1 << bits[0]) - 1:
        _fail(path, f"input LUT must be (3, 256) with values in [0, 2^{bits[0]} - 1]")

    nch = len(arrays["multiplier"])
    for name in ("bias", "shift", "weight_scale"):
        if arrays[name].shape != (nch,):
            _fail(path, f"{name} has shape {arrays[name].shape}, expected ({nch},) like multiplier")
    m0, sh = arrays["multiplier"].astype(np.int64), arrays["shift"].astype(np.int64)
    if not (((m0 >= M0_MIN) & (m0 <= M0_MAX)) | (m0 == 0)).all():
        _fail(path, "a multiplier lies outside {0} and [2^30, 2^31) (eq. 9)")
    if ((sh < SHIFT_MIN) | (sh > SHIFT_MAX)).any():
        _fail(path, f"a shift lies outside [{SHIFT_MIN}, {SHIFT_MAX}] (eq. 9)")
    ws = arrays["weight_scale"]
    if not (np.isfinite(ws).all() and (ws >= 0).all()):
        _fail(path, "weight scales must be finite and not negative")
    cb = arrays["codebook"].astype(np.int64)
    if cb.ndim != 1 or (np.abs(cb) > 127).any():
        _fail(path, "codebook entries must be a 1-D list of levels in [-127, 127]")
    factors = arrays["add_factor"]
    if factors.ndim != 1 or (factors < 0).any() or (factors > (1 << 28) + 1).any():
        _fail(path, "add factors must lie in [0, 2^28 + 1] (eq. 12)")

    made = [True] + [False] * (P - 1)
    ops = header["ops"]
    if not ops:
        _fail(path, "no ops")
    used = {"weights": [], "codebook": [], "channels": [], "add_factor": []}   # [start, end) ranges
    macs = 0
    for op in ops:
        kind = op.get("op") if isinstance(op, dict) else None
        if kind not in FIELDS:
            _fail(path, f"unknown op {str(kind)[:40]!r}")
        missing = [k for k in FIELDS[kind] if k not in op]
        if missing:
            _fail(path, f"op {str(op.get('name', '?'))[:40]!r} lacks fields {missing}")
        _name(path, "op", op["name"])
        ins = op["in"] if kind == "add" else [op["in"]]
        if kind == "add" and (not isinstance(ins, list) or len(ins) != 2):
            _fail(path, f"add {op['name']!r} needs two inputs")
        for i in ins:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < P or not made[i]:
                _fail(path, f"op {op['name']!r} reads point {i!r} before it is computed")
        out = _int(path, op, "out", 1, P - 1)
        if made[out]:
            _fail(path, f"op {op['name']!r} writes point {out} twice")
        made[out] = True
        if not isinstance(op.get("relu"), bool) and kind not in ("pool", "requant"):
            _fail(path, f"op {op['name']!r}: relu must be true or false")
        macs += _check_op(path, kind, op, ins, out, shapes, bits, arrays, nch, used)
    if macs > MAX_MACS:
        _fail(path, f"the ops need {macs:,} multiply-accumulates per image (at most {MAX_MACS:,})")
    sizes = {"weights": len(arrays["weights"]), "codebook": len(arrays["codebook"]),
             "channels": nch, "add_factor": len(arrays["add_factor"])}
    for name, ranges in used.items():        # every entry belongs to exactly one op
        ranges.sort()
        covered = 0
        for lo, hi in ranges:
            if lo != covered:
                _fail(path, f"{name} entries {min(lo, covered)}..{max(lo, covered)} are shared by "
                            f"two ops or belong to none")
            covered = hi
        if covered != sizes[name]:
            _fail(path, f"{name} has {sizes[name]} entries, the ops use {covered}")
    classes = header.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        _fail(path, "header 'classes' must be a non-empty list of names")
    for c in classes:
        _name(path, "class", c)
    if not made[-1] or shapes[-1] != (len(header.get("classes", [])),):
        _fail(path, f"the last point must be the logits, shape ({len(header.get('classes', []))},)")


def _check_op(path, kind, op, ins, out, shapes, bits, arrays, nch, used):
    """Check one op's fields against the points and arrays; record the array ranges it uses
    in `used`; return its multiply-accumulates per image."""
    sin, sout = shapes[ins[0]], shapes[out]
    if kind in ("conv", "linear"):
        cin, cout = _int(path, op, "cin", 1, 4096), _int(path, op, "cout", 1, 4096)
        if kind == "conv":
            s = _int(path, op, "stride", 1, 2)
            if len(sin) != 3 or sin[2] != cin or sout != ((sin[0] - 1) // s + 1, (sin[1] - 1) // s + 1, cout):
                _fail(path, f"conv {op['name']!r}: shapes {sin} -> {sout} do not fit cin={cin} cout={cout} stride={s}")
            taps = 9 * cin
        else:
            if sin != (cin,) or sout != (cout,):
                _fail(path, f"linear {op['name']!r}: shapes {sin} -> {sout} do not fit {cin}x{cout}")
            taps = cin
        b = _int(path, op, "bits_w", 2, 16)
        if b not in WEIGHT_BITS:
            _fail(path, f"op {op['name']!r}: weight bits {b} not in {WEIGHT_BITS}")
        off = _int(path, op, "w_offset", 0, len(arrays["weights"]))
        nb = _int(path, op, "w_nbytes", 0, len(arrays["weights"]) - off)
        if nb != packed_nbytes(taps * cout, b):
            _fail(path, f"op {op['name']!r}: {nb} weight bytes for {taps * cout} {b}-bit weights")
        if b <= 4:
            _int(path, op, "cb_offset", 0, len(arrays["codebook"]) - (1 << b))
            maxw = 127
        else:
            if op["cb_offset"] != -1:
                _fail(path, f"op {op['name']!r}: {b}-bit weights take no codebook (cb_offset -1)")
            maxw = 1 << (b - 1)
        o = _int(path, op, "offset", 0, nch - cout)
        bias = np.abs(arrays["bias"][o:o + cout].astype(np.int64)).max()
        bound = acc_bound(bias, taps, maxw, bits[ins[0]])
        if bound >= FILE_ACC_BOUND:
            _fail(path, f"op {op['name']!r}: accumulator bound {bound} exceeds 2^47")
        used["weights"].append((off, off + nb))
        used["channels"].append((o, o + cout))
        if b <= 4:
            used["codebook"].append((op["cb_offset"], op["cb_offset"] + (1 << b)))
        return taps * cout * (sout[0] * sout[1] if kind == "conv" else 1)
    elif kind == "add":
        s = _int(path, op, "stride", 1, 2)
        pad = _int(path, op, "pad", 0, 4096)
        sb = shapes[ins[1]]
        if len(sin) != 3 or len(sb) != 3 or sout != sin or \
                ((sb[0] - 1) // s + 1, (sb[1] - 1) // s + 1, sb[2] + 2 * pad) != sin:
            _fail(path, f"add {op['name']!r}: shortcut of {sb} (stride {s}, pad {pad}) does not match {sin}")
        o = _int(path, op, "offset", 0, nch - 1)
        f = _int(path, op, "factor_offset", 0, len(arrays["add_factor"]) - 2)
        used["channels"].append((o, o + 1))
        used["add_factor"].append((f, f + 2))
    elif kind == "requant":
        if len(sin) != 3 or sout != sin:
            _fail(path, f"requant {op['name']!r}: {sin} -> {sout}")
        o = _int(path, op, "offset", 0, nch - 1)
        used["channels"].append((o, o + 1))
    else:  # pool
        if len(sin) != 3 or sout != (sin[2],):
            _fail(path, f"pool {op['name']!r}: {sin} -> {sout}")
        if sin[0] * sin[1] > 1 << 16:
            _fail(path, f"pool {op['name']!r}: too many positions")
        o = _int(path, op, "offset", 0, nch - 1)
        used["channels"].append((o, o + 1))
    return 0
