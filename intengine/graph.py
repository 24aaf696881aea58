"""The fast path's runtime: a model's ops packed into layout.py's tables once, at load
time, then the whole network in one jitted call (fastops.run), uint8 activations end to end.

For files whose weights and activations are all <= 8 bits (`eligible`); docs/engine.md
describes the path.  Arenas are kept between calls.  `Graph.profile` times each op alone;
`Graph(fuse=False)` is the debug layout whose `run_points` returns every point.

Every result equals reference.py bit for bit (tests/test_fast_kernels.py).
"""
import threading

import numpy as np
from numba import config, set_parallel_chunksize

from .fastops import run, run_image
from .layout import FUSE, Builder, NotEligible  # noqa: F401  (NotEligible: model.py catches it)
from .vnni import CO as TILE_CO, P as TILE_P

CHUNK = 2                          # images per hand-out to a thread (dynamic scheduling)
KINDS = {"portable": 0, "vnni": 1}


def eligible(model):
    """True when every activation and weight is <= 8 bits and the ops are the known five."""
    if int(model.act_bits.max()) > 8:
        return False
    kinds = {op.kind for op in model.ops}
    if not kinds <= {"conv", "add", "requant", "pool", "linear"} or model.ops[-1].kind != "linear":
        return False
    return all(op.w.dtype == np.int8 for op in model.ops if op.kind in ("conv", "linear"))


class Graph:
    """A model's ops packed for `run`, with kernel 'vnni' or 'portable'.  fuse=False is the
    debug layout: every conv stores its own point and every add is its own row, so that
    `run_points` can return every point of the network."""

    def __init__(self, model, kernel, fuse=True):
        self.kernel, self.kind, self.fused = kernel, KINDS[kernel], fuse
        shapes = [tuple(p["shape"]) for p in model.header["points"]]
        zp = [int(z) for z in model.zero_points]
        readers = {}
        for k, op in enumerate(model.ops):
            for i in op.ins:
                readers.setdefault(i, []).append(k)
        b = Builder()
        geo = {0: b.point(shapes[0], zp[0], cmul=4)}
        skip, self.names = set(), []                # names: one per row of the op table
        for k, op in enumerate(model.ops):
            if k in skip:
                continue
            o, sh = op.out, shapes[op.out]
            self.names.append(op.name)
            if op.kind == "conv":
                nxt = model.ops[k + 1] if k + 1 < len(model.ops) else None
                fuse = (self.fused and nxt is not None and nxt.kind == "add" and nxt.ins[0] == o
                        and readers.get(o) == [k + 1] and nxt.ins[1] != o)
                if not fuse:
                    geo[o] = b.point(sh, zp[o])
                row = b.conv(geo[op.ins[0]], geo.get(o, (0, 0, 0)), sh[:2], op.w, op.bias,
                             op.zx[0], op.m0, op.n, op.zy, op.lo, op.hi, op.spec["stride"])
                if fuse:
                    a = nxt.out
                    geo[a] = b.point(shapes[a], zp[a])
                    row[FUSE] = 1
                    b.add(row, *self._add_args(nxt, geo, shapes), geo[a])
                    skip.add(k + 1)
                    self.names[-1] += f" + {nxt.name}"
            elif op.kind == "add":
                geo[o] = b.point(sh, zp[o])
                b.add_op(geo[op.ins[0]], op.zx[0], sh, *self._add_args(op, geo, shapes), geo[o])
            elif op.kind == "requant":           # an add row with K_a = 1, K_b = 0: eq. (17a)
                geo[o] = b.point(sh, zp[o])
                src = geo[op.ins[0]]
                b.add_op(src, op.zx[0], sh, src, sh[2], op.zx[0], 1, 0, 1, 0, int(op.m0[0]), int(op.n[0]),
                         op.zy, op.lo, op.hi, geo[o])
            elif op.kind == "pool":
                geo[o] = b.point(sh, zp[o])
                b.pool(geo[op.ins[0]], shapes[op.ins[0]], op.zx[0], op.m0[0], op.n[0],
                       op.zy, op.lo, op.hi, geo[o])
            else:
                if len(shapes[op.ins[0]]) != 1 or k != len(model.ops) - 1:
                    raise NotEligible("the fast path needs the linear layer last, on a flat point")
                b.linear(geo[op.ins[0]], op.w, op.bias, op.zx[0], op.m0, op.n, op.zy, op.lo, op.hi)
        (self.ops, self.koffs, self.wpk, self.bias, self.m0, self.n, self.rnd,
         self.arena_template) = b.tables()
        self.inp = np.array(geo[0], np.int64)
        self.geo, self.shapes = geo, shapes
        self.lut = np.ascontiguousarray(model.lut)
        self.classes = len(model.classes)
        self._arenas = None
        self._lock = threading.Lock()           # the arenas serve one call at a time

    @staticmethod
    def _add_args(op, geo, shapes):
        """(geo_b, C_b, z_b, K_a, K_b, stride, pad, M0, n, z_y, lo, hi) of an add op."""
        return (geo[op.ins[1]], shapes[op.ins[1]][2], op.zx[1], op.ka, op.kb, op.spec["stride"],
                op.spec["pad"], int(op.m0[0]), int(op.n[0]), op.zy, op.lo, op.hi)

    def arenas(self):
        """One arena per Numba thread id, made once and kept (borders hold the zero points)."""
        if self._arenas is None:
            self._arenas = np.tile(self.arena_template, (config.NUMBA_NUM_THREADS, 1))
        return self._arenas

    def profile(self, images, reps=5):
        """[(op name, CPU seconds per image)] on one thread, the input LUT first: the median
        over `reps` runs of each op alone on `images` (N >= 2), minus the LUT's time."""
        import time
        from numba import get_num_threads, set_num_threads
        threads = get_num_threads()
        set_num_threads(1)
        try:
            def cpu(ops):
                out = np.empty((len(images), self.classes), np.int32)
                times = []
                for _ in range(reps):
                    t = time.process_time()
                    run(self.kind, images, self.lut, self.inp, ops, self.koffs, self.wpk, self.bias,
                        self.m0, self.n, self.rnd, self.arenas(), out)
                    times.append(time.process_time() - t)
                return float(np.median(times)) / len(images)
            lut = cpu(self.ops[:0])
            return [("input LUT", lut)] + [(nm, max(cpu(self.ops[k:k + 1]) - lut, 0.0))
                                           for k, nm in enumerate(self.names)]
        finally:
            set_num_threads(threads)

    def run_points(self, images):
        """images (N,32,32,3) uint8 -> every point as an int32 array (N, *shape), the logits
        last: each image runs through the whole table on one arena, then the points are read
        out of it.  With the debug layout (fuse=False) every point is there; a fused conv's
        point is not stored, and comes back as None."""
        images = np.ascontiguousarray(images)
        n = len(images)
        arena = self.arena_template.copy()
        acc = np.empty(2 * TILE_P * TILE_CO, np.int32)
        logits = np.empty((n, self.classes), np.int32)
        outs = [np.empty((n, *s), np.int32) if i in self.geo or i == len(self.shapes) - 1 else None
                for i, s in enumerate(self.shapes)]
        for k in range(n):
            run_image(self.kind, images[k], self.lut, self.inp, self.ops, self.koffs, self.wpk, self.bias,
                      self.m0, self.n, self.rnd, arena, acc, logits[k])
            for i, (off, wp, cp) in self.geo.items():
                s = self.shapes[i]
                if len(s) == 3:
                    h, w, c = s
                    outs[i][k] = arena[off:off + (h + 2) * wp * cp].reshape(h + 2, wp, cp)[1:h + 1, 1:w + 1, :c]
                else:
                    outs[i][k] = arena[off:off + s[0]]
        outs[-1] = logits
        return outs

    def run(self, images):
        """images (N,32,32,3) uint8 C-contiguous -> (N, classes) int32 logits."""
        logits = np.empty((len(images), self.classes), np.int32)
        if len(images):
            with self._lock:
                old = set_parallel_chunksize(CHUNK)
                try:
                    run(self.kind, images, self.lut, self.inp, self.ops, self.koffs, self.wpk,
                        self.bias, self.m0, self.n, self.rnd, self.arenas(), logits)
                finally:
                    set_parallel_chunksize(old)
        return logits
