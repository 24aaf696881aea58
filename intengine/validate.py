"""Semantic checks of a model file, run before any jitted kernel sees it (docs/format.md).

`check(header, arrays, path)` verifies the parts every file has here, and hands each op to
its kind's `check` (intengine/ops/): its fields present and in range, the point shapes
chaining, every offset inside its array, and that every integer parameter is inside the range
the kernels assume: multipliers and shifts (eq. 9), codebooks, zero points, clamps, the input
LUT, and the accumulator bound of docs/quantization.md section 5.  The limits below are what
the engine can hold, each stated in docs/format.md "Limits".  Raises FormatError.
"""
import numpy as np

from .fileformat import ACT_BITS, FormatError, regenerate
from .fixedpoint import ADD_FACTOR_MAX, M0_MIN, M0_MAX, SHIFT_MAX, SHIFT_MIN
from .ops import INPUT, KINDS

MAX_OPS = 1 << 14               # ops in a file
MAX_POINT_ELEMENTS = 1 << 24    # per image and point: the fast path's arena holds every point
MAX_ARENA_ELEMENTS = 1 << 28    # per image, all points together (one arena per thread)
MAX_MACS = 1 << 36              # multiply-accumulates per image
MAX_SIDE = 1 << 14              # a point's H, W or C


def _fail(path, msg):
    raise FormatError(f"{path}: {msg}; {regenerate(path)}")


class Context:
    """What a kind's `check(c, spec, ins, out)` sees: the point shapes and widths, the arrays,
    the channel count, and the array ranges each op claims (`use`)."""

    def __init__(self, path, shapes, bits, arrays):
        self.path, self.shapes, self.bits, self.arrays = path, shapes, bits, arrays
        self.nch = len(arrays["multiplier"])
        self.used = {"weights": [], "codebook": [], "channels": [], "add_factor": []}   # [start, end)

    def clamp(self, spec, out):
        """The op's clamp [lo, hi] (eq. 8): integers with 0 <= lo <= hi < 2^bits of its output."""
        top = (1 << int(self.bits[out])) - 1
        lo, hi = self.int(spec, "lo", 0, top), self.int(spec, "hi", 0, top)
        if lo > hi:
            self.fail(f"op {spec['name']!r}: clamp lo {lo} > hi {hi}")

    def same_point(self, spec, i, out):
        """An op that moves integers unchanged (max pool, flatten): its output has the input's
        width and zero point."""
        z = self.arrays["act_zero_point"]
        if self.bits[i] != self.bits[out] or z[i] != z[out]:
            self.fail(f"op {spec['name']!r}: its output must have its input's width and zero point")

    def fail(self, msg):
        _fail(self.path, msg)

    def int(self, spec, key, lo, hi):
        """spec[key], which must be an integer in [lo, hi]."""
        v = spec.get(key)
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            self.fail(f"op {spec.get('name', '?')!r}: field {key!r} = {v!r} is not an integer in [{lo}, {hi}]")
        return v

    def use(self, array, start, end):
        self.used[array].append((start, end))


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
                not 1 <= len(p["shape"]) <= 3 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 < d <= MAX_SIDE for d in p["shape"]):
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
    if len(shapes[0]) != 3 or shapes[0][2] > 4:
        _fail(path, f"input point has shape {shapes[0]}, expected (H, W, C) with C <= 4 channels")
    if sum(int(np.prod(s)) for s in shapes) > MAX_ARENA_ELEMENTS:
        _fail(path, f"the points hold more than {MAX_ARENA_ELEMENTS:,} elements per image")
    c = Context(path, shapes, bits, arrays)
    INPUT.check(c)

    nch = c.nch
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
    if factors.ndim != 1 or (factors < 0).any() or (factors > ADD_FACTOR_MAX).any():
        _fail(path, "add factors must lie in [0, 2^28 + 1] (eq. 12)")

    made = [True] + [False] * (P - 1)
    ops = header["ops"]
    if not ops:
        _fail(path, "no ops")
    macs = 0
    for op in ops:
        kind = op.get("op") if isinstance(op, dict) else None
        if kind not in KINDS:
            _fail(path, f"unknown op {str(kind)[:40]!r}")
        impl = KINDS[kind]
        missing = [k for k in ("name", "in", "out") + impl.FIELDS if k not in op]
        if missing:
            _fail(path, f"op {str(op.get('name', '?'))[:40]!r} lacks fields {missing}")
        unknown = sorted(set(op) - {"op", "name", "in", "out", *impl.FIELDS, *impl.INFO})
        if unknown:                                  # a field this engine would ignore changes the op
            _fail(path, f"op {str(op['name'])[:40]!r}: unsupported field {str(unknown[0])[:40]!r} "
                        f"(a {kind} has {', '.join(impl.FIELDS)})")
        _name(path, "op", op["name"])
        ins = impl.inputs(op)
        if not isinstance(ins, list) or len(ins) != impl.N_IN:
            _fail(path, f"{kind} {op['name']!r} needs {('one input', 'two inputs')[impl.N_IN - 1]}")
        for i in ins:
            if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < P or not made[i]:
                _fail(path, f"op {op['name']!r} reads point {i!r} before it is computed")
        out = c.int(op, "out", 1, P - 1)
        if made[out]:
            _fail(path, f"op {op['name']!r} writes point {out} twice")
        made[out] = True
        macs += impl.check(c, op, ins, out)
    if macs > MAX_MACS:
        _fail(path, f"the ops need {macs:,} multiply-accumulates per image (at most {MAX_MACS:,})")
    sizes = {"weights": len(arrays["weights"]), "codebook": len(arrays["codebook"]),
             "channels": nch, "add_factor": len(arrays["add_factor"])}
    for name, ranges in c.used.items():        # every entry belongs to exactly one op
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
