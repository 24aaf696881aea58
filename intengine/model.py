"""Load a model file, then run it: uint8 pixels -> input LUT -> ops -> integer logits.

    m = intengine.load("resnet20_w4a8.npz")
    logits = m.predict(images)          # images (N,32,32,3) uint8 -> (N,10) int32

The file is read and fully validated (fileformat.read, validate.check) before any kernel
runs; each op's parameters are unpacked once, by its kind (intengine/ops/): 2- and 4-bit
codes through their codebook to int8.
"""
import numpy as np

from . import cpu, fileformat, validate
from .fileformat import FormatError
from .ops import INPUT, KINDS


class Op:
    """One op with its parameters unpacked to the arrays the kernels take: the generic part
    here (points, zero points, clamp range, multipliers), the rest by its kind's `load`."""

    def __init__(self, spec, header, arrays):
        self.kind, self.name, self.spec = spec["op"], spec["name"], spec
        self.impl = KINDS[self.kind]
        zp, bits = arrays["act_zero_point"], arrays["act_bits"]
        self.ins, self.out = self.impl.inputs(spec), spec["out"]
        self.zx = [int(zp[i]) for i in self.ins]
        self.in_bits = int(bits[self.ins[0]])
        self.zy = int(zp[self.out])
        self.lo, self.hi = spec.get("lo", 0), spec.get("hi", 0)    # the clamp of eq. (8): ReLU, ReLU6 or none
        o, count = spec.get("offset", 0), self.impl.channels(spec)
        self.m0 = arrays["multiplier"][o:o + count].astype(np.int64)
        self.n = arrays["shift"][o:o + count].astype(np.int64)
        self.impl.load(self, spec, arrays)

    def run(self, acts, scalar):
        """Apply to the points `acts`: the Numba kernel (scalar) or the NumPy reference."""
        return self.impl.run(self, acts, scalar)


class Model:
    def __init__(self, header, arrays, path, kernel=None):
        self.header, self.path = header, str(path)
        self.format_version = int(arrays["version"])         # 2 or 3 (fileformat.READS)
        self.input_shape = tuple(header["points"][0]["shape"])   # (H, W, C)
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
        """Pick the path that `run` takes (cpu.py): 'vnni', 'avxvnni', 'avx2', 'portable' or 'scalar'; None means
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

        On a fast path (any kernel but scalar) keep runs graph.py's debug layout, with no
        fusion, so every point comes from the kernels that `predict` uses.  reference_ops runs
        the kinds' NumPy references (reference.py); the scalar kernel, their Numba twins
        (kernels.py)."""
        images = check_images(images, self.input_shape)
        if self.graph is not None and not reference_ops:
            if not keep:
                return self.graph.run(images)        # the whole network in one call, graph.py
            if self._debug is None:
                from . import graph
                self._debug = graph.Graph(self, self.kernel, fuse=False)
            return self._debug.run_points(images)
        scalar = not reference_ops
        acts = [None] * len(self.points)
        acts[0] = (INPUT.kernel if scalar else INPUT.reference)(images, self.lut)
        for op, done in zip(self.ops, self.free_after):
            acts[op.out] = op.run(acts, scalar)
            if not keep:                                     # free what no later op reads
                for i in done:
                    acts[i] = None
        return acts if keep else acts[-1]

    def predict(self, images, batch_size=256):
        """uint8 (N,32,32,3), or one (32,32,3) image as a batch of one -> int32 quantized
        logits (N,C), in batches of `batch_size`.  They carry the logits' zero point: compare
        them with each other (argmax), or turn them into real numbers with dequantize_logits."""
        images = check_images(images, self.input_shape)
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


def check_images(images, shape=(32, 32, 3)):
    """-> a C-contiguous uint8 (N,H,W,C) batch of the model's input `shape`; one (H,W,C) image
    is a batch of one."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != tuple(shape):
        raise ValueError(f"images must be uint8 (N, {', '.join(map(str, shape))}) NHWC, the model's input, "
                         f"got {images.dtype} {images.shape}")
    return np.ascontiguousarray(images)


def load(path, kernel=None):
    """Read, validate and unpack a model file.  Raises FormatError (one line).

    kernel: None ($INTENGINE_KERNEL, else auto), 'vnni', 'avxvnni', 'avx2', 'portable' or 'scalar' (cpu.py)."""
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
