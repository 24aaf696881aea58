"""The fast path: the whole network in one jitted call, uint8 activations end to end.

For files whose weights and activations are all <= 8 bits (`eligible`).  docs/engine.md
describes it; in short:

- Arena.  Every point of the network lives in one uint8 buffer per worker (`arena`), at a
  fixed offset.  A spatial point (H,W,C) is stored padded, (H+2, W+2, Cp) with Cp = C rounded
  up to 4 (the network input) or 16 (conv outputs); its border holds the point's zero point
  z, written once when the arena is made, so a conv reads its 3x3 taps with no bounds test.
  A padded tap then adds w*z, which the folded bias removes (eq. 6):
      acc = bias + sum w (x - z_x) = (bias - z_x sum w) + sum w x
- Convs go through vnni.micro (8 pixels x 16 channels per call, K-groups of 4 bytes), with
  the requantize of eq. (8) and the clamp fused in the epilogue, straight into the next
  point's padded buffer.  A conv whose only reader is the following residual add (conv2 of
  a block) also does that add in its epilogue (eq. 12-14) and never stores its own point.
- The input LUT (eq. 5), add, pool (eq. 15-16a) and linear layer are plain Numba loops with
  the fixedpoint.py helpers, as in kernels.py.
- `run` works on N images: each worker thread runs whole images on its own arena, with no
  synchronisation at all; batch 1 runs on one thread.  Arenas are kept between calls.

Every result equals reference.py bit for bit (tests/test_fast_kernels.py).  Integer-only:
tests/test_integer_only.py scans this module's IR too.
"""
import threading

import numpy as np
from numba import config, get_thread_id, njit, prange, set_parallel_chunksize

from .fixedpoint import INT32_ACC_MAX, acc_bound, clamp, requant, requant_even
from .vnni import CO as TILE_CO, P as TILE_P, epilogue, micro, micro2

CONV, ADD, POOL, LINEAR = 1, 2, 3, 4
CHUNK = 2                          # images per hand-out to a thread (dynamic scheduling)
GUARD = 64                         # spare arena bytes at both ends (Builder)
KINDS = {"portable": 0, "vnni": 1}
# Fields of one op's row in the op table (int64).  Output point, then the main input.
(KIND, O_OFF, O_WP, O_CP, HO, WO, CO, ZY, LO, HI, CH,
 I_OFF, I_WP, I_CP, STRIDE, ZX,
 NK, KOFF, WOFF, COT, FUSE,
 # the residual add (standalone, or fused into the conv before it): input b, factors,
 # requantize, and its own output point
 B_OFF, B_WP, B_CP, B_C, ZB, A_STRIDE, PAD, KA, KB, A_M0, A_N, A_ZY, A_LO, A_HI,
 A_OFF, A_WP, A_CP, NFIELDS) = range(39)


class NotEligible(ValueError):
    """The file cannot take the fast path (the model then runs kernels.py)."""


# ----------------------------------------------------------------------------- ops

@njit(cache=True, inline="always")
def _add_value(P, ar, qa, za, y, x, c):
    """The residual add at output (y, x, c) given a's value qa: eq. (12)-(14)."""
    acc = np.int64(P[KA]) * (np.int64(qa) - za)          # |acc| < 2^37 at 8 bits, section 7
    cb = c - P[PAD]
    if cb >= 0 and cb < P[B_C]:                           # padded channels hold z_b: add nothing
        s = P[A_STRIDE]
        b = ar[P[B_OFF] + ((y * s + 1) * P[B_WP] + x * s + 1) * P[B_CP] + cb]
        acc += np.int64(P[KB]) * (np.int64(b) - P[ZB])
    return clamp(P[A_ZY] + requant(acc, P[A_M0], P[A_N]), P[A_LO], P[A_HI])


@njit(cache=True)
def conv_rows(kind, P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1):
    """Output rows r0..r1 of one conv on one image's arena `ar`, eq. (6)-(8).

    acc: (256,) int32 scratch.  bias (folded), m0, n, rnd = 2^(n-1): per output channel,
    COT*16 entries from P[CH].  vnni.micro2 (or micro) sums 8 pixels x 32 (or 16) channels;
    vnni.epilogue requantizes each pixel's 16 channels (and does the fused add) in vectors."""
    s, iwp, icp, nk = P[STRIDE], P[I_WP], P[I_CP], P[NK]
    wo, owp, ocp, ch = P[WO], P[O_WP], P[O_CP], P[CH]
    zy, lo, hi, ioff, ooff, woff = P[ZY], P[LO], P[HI], P[I_OFF], P[O_OFF], P[WOFF]
    fuse = P[FUSE]
    zb, pad, bc, ast = P[ZB], P[PAD], P[B_C], P[A_STRIDE]     # the fused residual add
    boff, bwp, bcp, aoff, awp, acp = P[B_OFF], P[B_WP], P[B_CP], P[A_OFF], P[A_WP], P[A_CP]
    addp = P[KA:A_HI + 1]                 # K_a, K_b, M0, n, z, lo, hi of the fused add
    for oy in range(r0, r1):
        cot = 0
        while cot < P[COT]:
            tiles = 2 if cot + 1 < P[COT] else 1        # two channel tiles share each broadcast
            wbase = woff + cot * nk * 64
            for ox0 in range(0, wo, TILE_P):
                npix = min(TILE_P, wo - ox0)
                xoff = ioff + (oy * s * iwp + ox0 * s) * icp
                if tiles == 2:
                    micro2(kind, ar, xoff, s * icp, npix, koffs, P[KOFF], nk, wpk, wbase, acc)
                else:
                    micro(kind, ar, xoff, s * icp, npix, koffs, P[KOFF], nk, wpk, wbase, acc)
                for j in range(tiles):
                    co0 = (cot + j) * TILE_CO
                    c0, c1 = max(0, pad - co0), min(TILE_CO, bc + pad - co0)   # lanes with b
                    for p in range(npix):     # eq. (8), and the fused add: vnni.epilogue
                        ox = ox0 + p
                        if fuse == 0:
                            o, bb = ooff + ((oy + 1) * owp + ox + 1) * ocp + co0, 0
                        else:
                            o = aoff + ((oy + 1) * awp + ox + 1) * acp + co0
                            bb = boff + ((oy * ast + 1) * bwp + ox * ast + 1) * bcp + co0 - pad
                        epilogue(acc, j * TILE_P + p, bias, m0, n, rnd, ch + co0, zy, lo, hi, ar,
                                 o, fuse, bb, c0, c1, zb, addp)
            cot += tiles


@njit(cache=True)
def add_rows(P, ar, r0, r1):
    """relu(a + shortcut(b)) for output rows r0..r1, eq. (12)-(14); a is the I_ point.
    (ResNet20's adds are all fused into the conv before them; this serves other graphs.)"""
    for y in range(r0, r1):
        for x in range(P[WO]):
            i = P[I_OFF] + ((y + 1) * P[I_WP] + x + 1) * P[I_CP]
            o = P[A_OFF] + ((y + 1) * P[A_WP] + x + 1) * P[A_CP]
            for c in range(P[CO]):
                ar[o + c] = np.uint8(_add_value(P, ar, ar[i + c], P[ZX], y, x, c))


@njit(cache=True)
def pool(P, ar, m0, n):
    """Global average of the I_ point (HO x WO x CO) into the flat O_ point, eq. (15)-(16a)."""
    C = P[CO]
    acc = np.zeros(C, np.int64)                           # |acc| <= 64 * 255
    for y in range(P[HO]):
        for x in range(P[WO]):
            b = P[I_OFF] + ((y + 1) * P[I_WP] + x + 1) * P[I_CP]
            px = ar[b:b + C]                              # a view: the channel loop vectorizes
            for c in range(C):
                acc[c] += np.int64(px[c])
    zx, hw = P[ZX], P[HO] * P[WO]
    for c in range(C):
        acc[c] -= hw * zx                                 # eq. (15): sum of (x - z_x)
        ar[P[O_OFF] + c] = np.uint8(clamp(P[ZY] + requant_even(acc[c], m0[P[CH]], n[P[CH]]),
                                          P[LO], P[HI]))


@njit(cache=True)
def linear(P, ar, wpk, bias, m0, n, out):
    """The flat I_ point (I_CP values) times w (Ci, Co) -> out (Co,) int32, eq. (6)-(8)."""
    ci, co_n, ch = P[I_CP], P[CO], P[CH]
    for co in range(co_n):
        acc = np.int64(bias[ch + co])                       # int64: no bound needed
        for k in range(ci):
            acc += (np.int64(ar[P[I_OFF] + k]) - P[ZX]) * np.int64(wpk[P[WOFF] + k * co_n + co])
        out[co] = clamp(P[ZY] + requant(acc, m0[ch + co], n[ch + co]), P[LO], P[HI])


@njit(cache=True)
def input_lut(img, lut, ar, off, wp, cp):
    """img (H,W,3) uint8 -> the padded input point, LUT[c, pixel], eq. (5)."""
    H, W, C = img.shape
    for y in range(H):
        for x in range(W):
            o = off + ((y + 1) * wp + x + 1) * cp
            for c in range(C):
                ar[o + c] = np.uint8(lut[c, img[y, x, c]])


@njit(cache=True)
def run_op(kind, P, ar, koffs, wpk, bias, m0, n, rnd, acc, out, r0, r1):
    k = P[KIND]
    if k == CONV:
        conv_rows(kind, P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1)
    elif k == ADD:
        add_rows(P, ar, r0, r1)
    elif k == POOL:
        pool(P, ar, m0, n)
    else:
        linear(P, ar, wpk, bias, m0, n, out)


@njit(cache=True)
def run_image(kind, img, lut, inp, ops, koffs, wpk, bias, m0, n, rnd, ar, acc, out):
    """One image (H,W,3) uint8 through every op on arena `ar` -> out (C,) int32."""
    input_lut(img, lut, ar, inp[0], inp[1], inp[2])
    for k in range(ops.shape[0]):
        run_op(kind, ops[k], ar, koffs, wpk, bias, m0, n, rnd, acc, out, 0, ops[k, HO])


@njit(cache=True, parallel=True)
def run(kind, images, lut, inp, ops, koffs, wpk, bias, m0, n, rnd, arenas, logits):
    """images (N,H,W,3) uint8 -> logits (N,C) int32, written in place.

    inp = (offset, padded width, padded channels) of the input point; ops (ops, NFIELDS);
    arenas (threads, bytes), one per Numba thread id, initialised by Graph.  kind 1 vnni,
    0 portable.  Images are handed out to the threads in chunks of 2 (dynamically, so that a
    thread that the OS pauses does not hold the others up); each thread uses its own arena.
    One image runs on the calling thread: splitting each op's rows over threads costs a
    barrier per op, which on a shared 2-core machine measured slower (docs/engine.md)."""
    N = images.shape[0]
    if N == 1:
        run_image(kind, images[0], lut, inp, ops, koffs, wpk, bias, m0, n, rnd, arenas[0],
                  np.empty(2 * TILE_P * TILE_CO, np.int32), logits[0])
        return
    for i in prange(N):                     # Graph.run sets the chunk size
        acc = np.empty(2 * TILE_P * TILE_CO, np.int32)
        run_image(kind, images[i], lut, inp, ops, koffs, wpk, bias, m0, n, rnd,
                  arenas[get_thread_id()], acc, logits[i])


@njit(cache=True, parallel=True)
def run_one_op(kind, P, arenas, koffs, wpk, bias, m0, n, rnd, out):
    """One op on each image's own arena (arenas (N, bytes)): the op-level test entry."""
    for i in prange(arenas.shape[0]):
        acc = np.empty(2 * TILE_P * TILE_CO, np.int32)
        run_op(kind, P, arenas[i], koffs, wpk, bias, m0, n, rnd, acc, out[i], 0, P[HO])


# ----------------------------------------------------------------------------- building

def _round_up(v, m):
    return -(-v // m) * m


class Builder:
    """Assigns arena offsets to points and packs each op into the flat tables."""

    def __init__(self):
        # 64 spare bytes before the first point and after the last: vnni.epilogue reads 16
        # bytes of the shortcut input at once (and ignores the lanes it does not need)
        self.size, self.fill = GUARD, []                   # fill: (offset, bytes, zero point)
        self.rows, self.koffs, self.w, self.chan = [], [], [], []
        self.nk = self.nw = self.nch = 0

    def point(self, shape, z, cmul=16):
        """-> (offset, padded width, padded channels) of a new point (H,W,C) or (C,)."""
        if len(shape) == 3:
            h, w, c = shape
            cp = _round_up(c, cmul)
            nbytes, geo = (h + 2) * (w + 2) * cp, (self.size, w + 2, cp)
        else:
            nbytes, geo = _round_up(shape[0], 4), (self.size, 0, shape[0])
        self.fill.append((self.size, nbytes, z))
        self.size += _round_up(nbytes, 64)
        return geo

    def _channels(self, *arrays, count):
        start = self.nch
        for k, a in enumerate(arrays):
            pad = np.zeros(count, np.int64)
            pad[:len(a)] = a
            if len(self.chan) <= k:
                self.chan.append([])
            self.chan[k].append(pad)
        self.nch += count
        return start

    def conv(self, geo_in, geo_out, hw_out, w, bias, zx, m0, n, zy, lo, hi, stride):
        """w (3,3,Ci,Co) int8.  Packs w as [co tile][tap, K-group][16 co][4 ci] (vnni.py)."""
        (ioff, iwp, icp), (ooff, owp, ocp) = geo_in, geo_out
        ci, co = w.shape[2], w.shape[3]
        cot = _round_up(co, TILE_CO) // TILE_CO
        wp = np.zeros((3, 3, icp, cot * TILE_CO), np.int64)
        wp[:, :, :ci, :co] = w
        groups = icp // 4
        packed = wp.reshape(9 * groups, 4, cot, TILE_CO).transpose(2, 0, 3, 1)   # cot, K, co, j
        koff = [(ky * iwp + kx) * icp + 4 * g for ky in range(3) for kx in range(3)
                for g in range(groups)]
        wsum = w.astype(np.int64).sum(axis=(0, 1, 2))
        folded = bias.astype(np.int64) - zx * wsum         # eq. (6), z_x moved into the bias
        maxw = int(np.abs(w.astype(np.int64)).max(initial=0))
        # the raw (uncentred) uint8 inputs, x <= 255, against the folded bias, eq. (6)
        if acc_bound(np.abs(folded).max(initial=0), 9 * icp, maxw, 8) > INT32_ACC_MAX:
            raise NotEligible("conv accumulator bound exceeds int32")
        row = np.zeros(NFIELDS, np.int64)
        ch = self._channels(folded, m0, n, np.left_shift(1, np.asarray(n, np.int64) - 1),
                            count=cot * TILE_CO)
        row[[KIND, O_OFF, O_WP, O_CP, HO, WO, CO, ZY, LO, HI, CH, I_OFF, I_WP, I_CP, STRIDE, ZX,
             NK, KOFF, WOFF, COT]] = [CONV, ooff, owp, ocp, hw_out[0], hw_out[1], co, zy, lo, hi,
                                      ch, ioff, iwp, icp, stride, zx, len(koff), self.nk, self.nw, cot]
        self.koffs.append(np.array(koff, np.int64))
        self.nk += len(koff)
        self.w.append(packed.astype(np.int8).ravel())
        self.nw += packed.size
        self.rows.append(row)
        return row

    def add(self, row, geo_b, c_b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi, geo_out):
        """Residual add params into `row` (a conv row to fuse, or a new add row).  The fields
        KA..A_HI are in the order vnni.epilogue reads them."""
        row[[B_OFF, B_WP, B_CP, B_C, ZB, A_STRIDE, PAD, KA, KB, A_M0, A_N, A_ZY, A_LO, A_HI,
             A_OFF, A_WP, A_CP]] = [*geo_b, c_b, zb, stride, pad, ka, kb, m0, n, zy, lo, hi, *geo_out]
        return row

    def add_op(self, geo_a, za, hwc, *args):
        row = np.zeros(NFIELDS, np.int64)
        row[[KIND, HO, WO, CO, I_OFF, I_WP, I_CP, ZX]] = [ADD, *hwc, *geo_a, za]
        self.rows.append(self.add(row, *args))
        return row

    def pool(self, geo_in, hwc, zx, m0, n, zy, lo, hi, geo_out):
        row = np.zeros(NFIELDS, np.int64)
        ch = self._channels([0], [m0], [n], [0], count=1)
        row[[KIND, HO, WO, CO, I_OFF, I_WP, I_CP, ZX, O_OFF, ZY, LO, HI, CH]] = \
            [POOL, *hwc, *geo_in, zx, geo_out[0], zy, lo, hi, ch]
        self.rows.append(row)
        return row

    def linear(self, geo_in, w, bias, zx, m0, n, zy, lo, hi):
        """w (Ci, Co) int8."""
        row = np.zeros(NFIELDS, np.int64)
        ch = self._channels(bias, m0, n, np.zeros(len(m0), np.int64), count=w.shape[1])
        row[[KIND, CO, I_OFF, I_CP, ZX, WOFF, ZY, LO, HI, CH, HO]] = \
            [LINEAR, w.shape[1], geo_in[0], w.shape[0], zx, self.nw, zy, lo, hi, ch, 1]
        self.w.append(w.astype(np.int8).ravel())
        self.nw += w.size
        self.rows.append(row)
        return row

    def tables(self):
        """(ops, koffs, wpk, bias, m0, n, rnd, arena template)."""
        cat = lambda parts, dt: np.ascontiguousarray(np.concatenate(parts).astype(dt)) if parts \
            else np.zeros(1, dt)
        chans = [cat(c, np.int64) for c in self.chan] if self.chan else [np.zeros(1, np.int64)] * 4
        arena = np.zeros(self.size + GUARD, np.uint8)
        for off, nbytes, z in self.fill:
            arena[off:off + nbytes] = z
        return (np.ascontiguousarray(np.stack(self.rows)), cat(self.koffs, np.int64),
                cat(self.w, np.int8), *chans, arena)


def eligible(model):
    """True when every activation and weight is <= 8 bits and the ops are the known four."""
    if int(model.act_bits.max()) > 8:
        return False
    kinds = {op.kind for op in model.ops}
    if not kinds <= {"conv", "add", "pool", "linear"} or model.ops[-1].kind != "linear":
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


# ----------------------------------------------------------------------------- single ops

def _arenas_with(b, geo, x):
    """Per-image arenas from builder `b` with int32 NHWC `x` written into point `geo`."""
    arena = b.tables()[-1]
    off, wp, cp = geo
    n, h, w, c = x.shape
    ars = np.tile(arena, (n, 1))
    view = ars[:, off:off + (h + 2) * wp * cp].reshape(n, h + 2, wp, cp)
    view[:, 1:h + 1, 1:w + 1, :c] = x
    return ars


def _interior(ars, geo, shape):
    off, wp, cp = geo
    n, (h, w, c) = len(ars), shape
    view = ars[:, off:off + (h + 2) * wp * cp].reshape(n, h + 2, wp, cp)
    return view[:, 1:h + 1, 1:w + 1, :c].astype(np.int32)


def conv3x3(x, zx, w, bias, m0, n, zy, lo, hi, stride, kernel):
    """reference.conv3x3's arguments (x int32 values of <= 8 bits, w int8) through the fast
    conv of `kernel` ('vnni' or 'portable'): for the equality tests."""
    N, H, W, C = x.shape
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    b = Builder()
    gin = b.point((H, W, C), zx, cmul=4)
    gout = b.point((ho, wo, w.shape[3]), zy)
    row = b.conv(gin, gout, (ho, wo), w, np.asarray(bias), zx, np.asarray(m0), np.asarray(n),
                 zy, lo, hi, stride)
    ops, koffs, wpk, bias_, m0_, n_, rnd, _ = b.tables()
    ars = _arenas_with(b, gin, x)
    run_one_op(KINDS[kernel], row, ars, koffs, wpk, bias_, m0_, n_, rnd, np.zeros((N, 1), np.int32))
    return _interior(ars, gout, (ho, wo, w.shape[3]))


def add(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """reference.add's arguments (int32 values of <= 8 bits) through the standalone add."""
    N, H, W, C = a.shape
    bld = Builder()
    ga, gb = bld.point(a.shape[1:], za), bld.point(b.shape[1:], zb)
    gout = bld.point((H, W, C), zy)
    row = bld.add_op(ga, za, (H, W, C), gb, b.shape[3], zb, ka, kb, stride, pad, m0, n, zy, lo,
                     hi, gout)
    ops, koffs, wpk, bias_, m0_, n_, rnd, arena = bld.tables()
    ars = _arenas_with(bld, ga, a)
    ars[:] = np.where(np.arange(ars.shape[1]) < gb[0], ars, _arenas_with(bld, gb, b))
    run_one_op(0, row, ars, koffs, wpk, bias_, m0_, n_, rnd, np.zeros((N, 1), np.int32))
    return _interior(ars, gout, (H, W, C))
