"""Load a model file, then run it: uint8 pixels -> input LUT -> ops -> integer logits.

    m = intengine.load("resnet20_w4a8.npz")
    logits = m.predict(images)          # images (N,32,32,3) uint8 -> (N,10) int32

The file is read and fully validated (fileformat.read, validate.check) before any kernel
runs; 2- and 4-bit codes are unpacked through their codebook to int8 here, once.
"""
import numpy as np

from . import cpu, fileformat, kernels, reference, validate
from .fileformat import FormatError
from .fixedpoint import INT32_ACC_MAX, acc_bound


class Op:
    """One op with its parameters unpacked to the arrays the kernels take."""

    def __init__(self, spec, header, arrays):
        self.kind, self.name, self.spec = spec["op"], spec["name"], spec
        zp, bits = arrays["act_zero_point"], arrays["act_bits"]
        ins = spec["in"] if self.kind == "add" else [spec["in"]]
        self.ins, self.out = ins, spec["out"]
        self.zx = [int(zp[i]) for i in ins]
        self.zy = int(zp[self.out])
        self.hi = (1 << int(bits[self.out])) - 1
        self.lo = self.zy if spec.get("relu") else 0       # eq. (8): ReLU clamps at z_y
        o = spec["offset"]
        count = spec["cout"] if self.kind in ("conv", "linear") else 1
        self.m0 = arrays["multiplier"][o:o + count].astype(np.int64)
        self.n = arrays["shift"][o:o + count].astype(np.int64)
        if self.kind in ("conv", "linear"):
            self._load_weights(spec, arrays, int(bits[ins[0]]))
        elif self.kind == "add":
            f = spec["factor_offset"]
            self.ka, self.kb = (int(v) for v in arrays["add_factor"][f:f + 2])

    def _load_weights(self, spec, arrays, in_bits):
        b, cin, cout = spec["bits_w"], spec["cin"], spec["cout"]
        taps = 9 if self.kind == "conv" else 1
        raw = arrays["weights"][spec["w_offset"]:spec["w_offset"] + spec["w_nbytes"]]
        codes = fileformat.unpack_codes(raw, b, cout * taps * cin)
        if b <= 4:                                  # per-layer codebook: code -> level, eq. (3)
            codes = arrays["codebook"][spec["cb_offset"]:spec["cb_offset"] + (1 << b)][codes]
        dtype = np.int16 if b == 16 else np.int8
        w = codes.astype(dtype).reshape((cout, 3, 3, cin) if taps == 9 else (cout, cin))
        # file order is (Co,Kh,Kw,Ci); the kernels want Co innermost (format.md "Weights")
        self.w = np.ascontiguousarray(w.transpose(1, 2, 3, 0) if taps == 9 else w.T)
        self.bias = arrays["bias"][spec["offset"]:spec["offset"] + cout].astype(np.int64)
        maxw = int(np.abs(self.w.astype(np.int64)).max(initial=0))
        bound = acc_bound(np.abs(self.bias).max(), taps * cin, maxw, in_bits)
        self.acc_like = np.zeros(1, np.int32 if bound <= INT32_ACC_MAX else np.int64)  # section 5

    def run(self, acts, ops):
        """Apply with `ops` = the kernels or the reference module."""
        x = acts[self.ins[0]]
        if self.kind == "conv":
            args = (x, self.zx[0], self.w, self.bias, self.m0, self.n, self.zy, self.lo, self.hi,
                    self.spec["stride"])
            return ops.conv3x3(*args, self.acc_like) if ops is kernels else ops.conv3x3(*args)
        if self.kind == "add":
            return ops.add(x, self.zx[0], acts[self.ins[1]], self.zx[1], self.ka, self.kb,
                           self.spec["stride"], self.spec["pad"], self.m0[0], self.n[0],
                           self.zy, self.lo, self.hi)
        if self.kind == "requant":
            return ops.requantize(x, self.zx[0], self.m0[0], self.n[0], self.zy, self.lo, self.hi)
        if self.kind == "pool":
            return ops.avgpool(x, self.zx[0], self.m0[0], self.n[0], self.zy, self.lo, self.hi)
        return ops.linear(x, self.zx[0], self.w, self.bias, self.m0, self.n, self.zy, self.lo, self.hi)


class Model:
    def __init__(self, header, arrays, path, kernel=None):
        self.header, self.path = header, str(path)
        self.classes = list(header["classes"])
        self.points = [p["name"] for p in header["points"]]
        self.lut = np.ascontiguousarray(arrays["lut"])
        self.zero_points = arrays["act_zero_point"].astype(np.int64)
        self.act_bits = arrays["act_bits"].astype(np.int64)
        self.act_scale = arrays["act_scale"]                 # for printing only
        self.weight_scale = arrays["weight_scale"]           # for `info` only
        self.ops = [Op(spec, header, arrays) for spec in header["ops"]]
        last = {i: k for k, op in enumerate(self.ops) for i in op.ins}    # last op reading each point
        self.free_after = [[i for i in op.ins if last[i] == k] for k, op in enumerate(self.ops)]
        self.set_kernel(kernel)

    def set_kernel(self, kernel=None):
        """Pick the path that `run` takes (cpu.py): 'vnni', 'portable' or 'scalar'; None means
        $INTENGINE_KERNEL, else auto.  The fast paths pack the weights here, once."""
        from . import graph
        self.kernel = cpu.choose(graph.eligible(self), kernel)
        self._debug = None                           # the unfused layout, made on the first keep=True
        try:
            self.graph = graph.Graph(self, self.kernel) if self.kernel != "scalar" else None
        except graph.NotEligible:                    # a bound past int32; not in ResNet20 files
            self.kernel, self.graph = "scalar", None

    def run(self, images, reference_ops=False, keep=False):
        """images (N,32,32,3) uint8 -> integer logits (N,C), or every point if keep.

        On the fast path (kernel vnni or portable) keep runs graph.py's debug layout, with no
        fusion, so every point comes from the kernels that `predict` uses.  reference_ops runs
        reference.py; the scalar kernel, kernels.py."""
        images = check_images(images)
        if self.graph is not None and not reference_ops:
            if not keep:
                return self.graph.run(images)        # the whole network in one call, graph.py
            if self._debug is None:
                from . import graph
                self._debug = graph.Graph(self, self.kernel, fuse=False)
            return self._debug.run_points(images)
        ops = reference if reference_ops else kernels
        acts = [None] * len(self.points)
        acts[0] = ops.input_lut(images, self.lut)
        for op, done in zip(self.ops, self.free_after):
            acts[op.out] = op.run(acts, ops)
            if not keep:                                     # free what no later op reads
                for i in done:
                    acts[i] = None
        return acts if keep else acts[-1]

    def predict(self, images, batch_size=256):
        """uint8 (N,32,32,3), or one (32,32,3) image as a batch of one -> int32 quantized
        logits (N,C), in batches of `batch_size`.  They carry the logits' zero point: compare
        them with each other (argmax), or turn them into real numbers with dequantize_logits."""
        images = check_images(images)
        if len(images) == 0:
            return np.zeros((0, len(self.classes)), np.int32)
        return np.concatenate([self.run(images[i:i + batch_size])
                               for i in range(0, len(images), batch_size)])

    def dequantize_logits(self, q):
        """Quantized logits -> real logits s*(q - z), float64, eq. (1).  A float step after the
        integer network, for printing and probabilities only; argmax is unchanged."""
        return self.act_scale[-1] * (np.asarray(q).astype(np.int64) - self.zero_points[-1])

    def predict_logits(self, images, batch_size=256):
        """Like predict, but real-valued logits (float64, N x C)."""
        return self.dequantize_logits(self.predict(images, batch_size))

    @staticmethod
    def softmax(logits):
        """Real logits (N,C) -> probabilities (float64), rows summing to 1."""
        z = np.asarray(logits, np.float64)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    def predict_proba(self, images, batch_size=256):
        """Class probabilities (float64, N x C): softmax of the real logits."""
        return self.softmax(self.predict_logits(images, batch_size))

    @staticmethod
    def rank(proba, k):
        """Probabilities (N,C) -> the k most probable classes (N,k) int64, most probable first;
        ties go to the lower class, as argmax does."""
        return np.argsort(-np.asarray(proba), axis=1, kind="stable")[:, :k]

    def top_k(self, images, k=5, batch_size=256):
        """-> (classes (N,k) int64, probabilities (N,k)), most probable first (ties: lower class)."""
        p = self.predict_proba(images, batch_size)
        idx = self.rank(p, k)
        return idx, np.take_along_axis(p, idx, axis=1)


def check_images(images):
    """-> a C-contiguous uint8 (N,32,32,3) batch; one (32,32,3) image is a batch of one."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise ValueError(f"images must be uint8 (N, 32, 32, 3) NHWC RGB, got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def load(path, kernel=None):
    """Read, validate and unpack a model file.  Raises FormatError (one line).

    kernel: None ($INTENGINE_KERNEL, else auto), 'vnni', 'portable' or 'scalar' (cpu.py)."""
    cpu.choose(True, kernel)                          # a bad request fails here, in one line
    header, arrays = fileformat.read(path)
    validate.check(header, arrays, path)
    try:
        return Model(header, arrays, path, kernel)
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FormatError(f"{path}: inconsistent file ({type(e).__name__}: {str(e)[:200]}); "
                          f"{fileformat.regenerate(path, _bits(header))}") from None


def _bits(header):
    """The weight bits for the regeneration hint, else 'B'."""
    meta = header.get("meta")
    return meta.get("bits", "B") if isinstance(meta, dict) else "B"
