"""The fast path's runtime: a model's ops packed into layout.py's tables once, at load
time (each kind's `lower`, intengine/ops/), then the whole network in one jitted call
(fastops.run), uint8 activations end to end.

For files whose weights and activations are all <= 8 bits (`eligible`); docs/engine.md
describes the path.  Arenas are kept between calls.  `Graph.profile` times each op alone;
`Graph(fuse=False)` is the debug layout whose `run_points` returns every point.

Every result equals reference.py bit for bit (tests/test_fast_kernels.py).
"""
import statistics
import threading
import time

import numpy as np
from numba import config, get_num_threads, set_parallel_chunksize

from .fastops import ACC, run, run_image, run_shared
from .layout import HO, OUTPUT, ROW, ROWWISE, Builder, NotEligible  # noqa: F401  (NotEligible: model.py catches it)
from .ops import INPUT, KINDS

CHUNK = 2                          # images per hand-out to a thread (dynamic scheduling)
TASKS_PER_THREAD = 2               # row blocks per thread and op when one image is shared
PATH_IDS = {"portable": 0, "vnni": 1, "avx2": 2, "avxvnni": 4, "amx": 5}   # the fast path's id, fastops' `path` (vnni.py)


def eligible(model):
    """True when every activation and weight is <= 8 bits (every op kind has its rows here)."""
    if int(model.act_bits.max()) > 8:
        return False
    return all(op.w.dtype == np.int8 for op in model.ops if KINDS[op.kind].WEIGHTED)


def border(model):
    """The arena's border (layout.py): the largest padding of any op, at least 1."""
    return max([1] + [max(getattr(op, "ph", 0), getattr(op, "pw", 0)) for op in model.ops])


class Lowering:
    """What an op kind's `lower(op, k, lw)` works with: the Builder, the model's ops, who reads
    each point, the point shapes and their arena places (geo), whether to fuse, and whether to
    store int16 weights for the convs that AVX2's vpmaddwd runs (`wide`: the avx2 kernel), and
    whether to add the convs' AMX tables (`amx`: the amx kernel)."""

    def __init__(self, ops, shapes, zero_points, fuse, border=1, wide=False, amx=False):
        self.ops, self.fuse, self.wide, self.amx = ops, fuse, wide, amx
        self.shapes = [tuple(s) for s in shapes]
        self.zp = [int(z) for z in zero_points]
        self.builder, self.geo, self.skip = Builder(border), {}, set()
        self.logits_written = False            # a row writes the int32 logits (a linear layer's)
        self.readers = {}
        for k, op in enumerate(ops):
            for i in op.ins:
                self.readers.setdefault(i, []).append(k)

    def point(self, i, cmul=16):
        """Give point i its place in the arena."""
        self.geo[i] = self.builder.point(self.shapes[i], self.zp[i], cmul)
        return self.geo[i]

    def window_row(self, op, row, ch):
        """The row of a pool over a window (kinds avgpool and maxpool)."""
        (ih, iw, c), src = self.shapes[op.ins[0]], self.geo[op.ins[0]]
        dst = self.point(op.out)
        ho, wo, _ = self.shapes[op.out]
        self.builder.row(op.name, ROW=row, HO=ho, WO=wo, CO=c, I_OFF=src[0], I_WP=src[1], I_CP=src[2], IH=ih,
                         IW=iw, O_OFF=dst[0], O_WP=dst[1], O_CP=dst[2], STRIDE=op.stride, KH=op.kh, KW=op.kw,
                         PH=op.ph, PW=op.pw, ZX=op.zx[0], ZY=op.zy, LO=op.lo, HI=op.hi, CH=ch)

    def fused(self, k):
        """Op k went into the row before it."""
        self.skip.add(k)
        self.builder.names[-1] += f" + {self.ops[k].name}"


class Graph:
    """A model's ops packed for `run`, with kernel 'amx', 'vnni', 'avxvnni', 'avx2' or 'portable'.  fuse=False is the
    debug layout: every conv stores its own point and every add is its own row, so that
    `run_points` can return every point of the network."""

    def __init__(self, model, kernel, fuse=True):
        self.kernel, self.path, self.fused = kernel, PATH_IDS[kernel], fuse
        lw = Lowering(model.ops, [p["shape"] for p in model.header["points"]], model.zero_points, fuse,
                      border(model), wide=kernel == "avx2", amx=kernel == "amx")
        INPUT.lower(lw)
        for k, op in enumerate(model.ops):
            if k not in lw.skip:
                KINDS[op.kind].lower(op, k, lw)
        if not lw.logits_written:                   # the logits are a point in the arena: copy them out
            last = len(lw.shapes) - 1
            lw.builder.row("output", ROW=OUTPUT, I_OFF=lw.geo[last][0], CO=lw.shapes[last][0])
        self.names = lw.builder.names               # one per row of the op table
        (self.ops, self.koffs, self.wpk, self.bias, self.m0, self.n, self.rnd,
         self.arena_template) = lw.builder.tables()
        self.inp = np.array(lw.geo[0], np.int64)
        self.geo, self.shapes = lw.geo, lw.shapes
        self.lut = np.ascontiguousarray(model.lut)
        self.classes = len(model.classes)
        self._arenas = None
        self._lock = threading.Lock()           # the arenas serve one call at a time
        self._plans = {}
        self.way = BatchOne()

    def plan(self, threads):
        """The stages of one image shared by `threads` threads (fastops.share_image): (op row, tasks,
        rows per task), the input LUT (-1) first; a conv or add is cut into row blocks, about
        TASKS_PER_THREAD per thread, pool and linear are one task each.  And its sync counters."""
        if threads not in self._plans:
            rows = [(-1, int(self.shapes[0][0]))] + [
                (k, int(r[HO]) if r[ROW] in ROWWISE else 1) for k, r in enumerate(self.ops)]
            plan = []
            for k, h in rows:
                per = -(-h // min(h, TASKS_PER_THREAD * threads))
                plan.append((k, -(-h // per), per))
            self._plans[threads] = (np.array(plan, np.int64), np.zeros(8 * (threads + 1) * len(plan), np.int64))
        return self._plans[threads]

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
                    run(self.path, images, self.lut, self.inp, ops, self.koffs, self.wpk, self.bias,
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
        acc = np.empty(ACC, np.int32)
        logits = np.empty((n, self.classes), np.int32)
        outs = [np.empty((n, *s), np.int32) if i in self.geo or i == len(self.shapes) - 1 else None
                for i, s in enumerate(self.shapes)]
        for k in range(n):
            run_image(self.path, images[k], self.lut, self.inp, self.ops, self.koffs, self.wpk, self.bias,
                      self.m0, self.n, self.rnd, arena, acc, logits[k])
            for i, (off, wp, cp) in self.geo.items():
                s = self.shapes[i]
                if len(s) == 3:
                    h, w, c = s
                    outs[i][k] = arena[off:off + h * wp * cp].reshape(h, wp, cp)[:, :w, :c]
                else:
                    outs[i][k] = arena[off:off + s[0]]
        outs[-1] = logits
        return outs

    def run(self, images):
        """images (N,32,32,3) uint8 C-contiguous -> (N, classes) int32 logits."""
        logits = np.empty((len(images), self.classes), np.int32)
        if not len(images):
            return logits
        with self._lock:
            threads = get_num_threads()
            if len(images) == 1 and threads > 1 and self.way.shared():
                t = time.perf_counter_ns()
                plan, sync = self.plan(threads)
                run_shared(self.path, images[0], self.lut, self.inp, self.ops, plan, self.koffs, self.wpk,
                           self.bias, self.m0, self.n, self.rnd, self.arenas()[0], sync, logits[0], threads)
                self.way.took(True, time.perf_counter_ns() - t)
                return logits
            t = time.perf_counter_ns()
            # one image runs on this thread: setting the chunk size would cost 5 us for nothing
            old = set_parallel_chunksize(CHUNK) if len(images) > 1 else None
            try:
                run(self.path, images, self.lut, self.inp, self.ops, self.koffs, self.wpk,
                    self.bias, self.m0, self.n, self.rnd, self.arenas(), logits)
            finally:
                if old is not None:
                    set_parallel_chunksize(old)
            if len(images) == 1 and threads > 1:
                self.way.took(False, time.perf_counter_ns() - t)
        return logits


class BatchOne:
    """How a batch of one image runs when there are threads to share it (docs/engine.md, "One
    image on every thread"): shared by all of them, or alone on the calling thread.  Sharing is
    faster on an idle machine (about 1.7x on 2 cores) and far slower on a busy one, where a
    descheduled thread holds the others up for a time slice.  So both ways are timed: the
    faster of the last SAMPLES calls' medians runs, and every PROBE-th call times the other one.
    Integer nanoseconds; this decides only who runs, never what is computed."""
    SAMPLES, PROBE = 5, 128

    def __init__(self):
        self.ns = {True: [], False: []}
        self.warm = {True: False, False: False}
        self.calls = 0

    def shared(self):
        """True when the next batch-1 call should be shared."""
        self.calls += 1
        n_shared, n_alone = len(self.ns[True]), len(self.ns[False])
        if min(n_shared, n_alone) < 3:            # first each way 3 times, taking turns
            return n_shared <= n_alone
        best = statistics.median_low(self.ns[True]) <= statistics.median_low(self.ns[False])
        return best if self.calls % self.PROBE else not best

    def took(self, way, ns):
        """A batch-1 call that ran `way` took ns nanoseconds.  The first call of each way is not
        counted: it starts the threads and fills the caches."""
        if self.warm[way]:
            self.ns[way] = (self.ns[way] + [int(ns)])[-self.SAMPLES:]
        self.warm[way] = True
