"""The fast path's jitted ops: one image's whole network on its own arena, uint8 activations
end to end (docs/engine.md).  The op table and the arena are layout.py's; graph.py calls `run`.

- Convs go through vnni.micro (8 pixels x 16 channels per call, K-groups of 4 bytes), with
  the requantize of eq. (8) and the clamp fused in the epilogue, straight into the next
  point's padded buffer.  A padded tap adds w*z, which the folded bias removes (eq. 6):
      acc = bias + sum w (x - z_x) = (bias - z_x sum w) + sum w x
  A conv whose only reader is the following residual add (conv2 of a block) also does that
  add in its epilogue (eq. 12-14) and never stores its own point.
- A depthwise conv (one input channel per group) sums its taps for 8 pixels x 16 channels
  at a time (vnni.dw_micro, generic LLVM vectors), then requantizes through the same
  vnni.epilogue.
- The input LUT (eq. 5), add (also the requant of eq. 17a, as K_b = 0: a table of its 256 input bytes), the pools (eq.
  15-16a), flatten and the linear layer are plain Numba loops with the fixedpoint.py
  helpers, as in kernels.py.  Their channel loops go through views of the arena
  (`ar[b:b + C]`), which LLVM vectorizes: indexed straight into `ar` they stayed scalar
  (a VGG-style W8A8 file's max pools took as long as its convs).
- `run` works on N images: each worker thread runs whole images on its own arena, with no
  synchronisation at all.  `run_shared` splits one image's ops into row blocks that every
  thread takes from atomic counters (sync.py), in one arena; graph.BatchOne chooses between
  it and `run` on one thread (docs/engine.md, "One image on every thread").

Every result equals reference.py bit for bit (tests/test_fast_kernels.py).  Integer-only:
tests/test_integer_only.py scans this module's IR too.
"""
import numpy as np
from numba import get_thread_id, njit, prange

from .fixedpoint import clamp, requant, requant_even
from .layout import (A_CP, A_HI, A_LO, A_M0, A_N, A_OFF, A_STRIDE, A_WP, A_ZY, ADD, ADD_END, ADD_START, AMX_CFG, AMX_K,
                     AMX_M, AMX_N, AMX_TSTEP, AMX_W, AMX_WSTEP, AVGPOOL,
                     B_C, B_CP, B_OFF, B_WP, CH, CO, CONV, COT, DWCONV, FLATTEN, FUSE, GAP, HI, HO, I_CP, I_OFF,
                     I_WP, IH, IW, KA, KB, KH, KOFF, KW, LINEAR, LO, MADD, MAXPOOL, NK, O_CP, O_OFF, O_WP, PAD, PH, PW, ROW,
                     STORE, STRIDE, WIDE, WO, WOFF, ZB, ZX, ZY)
from .sync import fetch_add, load, pause
from .vnni import AVX2_BYTES, AVX2_WORDS, CO as TILE_CO, P as TILE_P, dw_micro, epilogue, micro, micro2
from . import amx

AMX = 5                     # the amx kernel's path (graph.PATH_IDS)
SEG = 64                    # output pixels a segment: the pixels one epilogue call serves (conv_rows)
TSTRIDE = (SEG + TILE_P) * TILE_CO      # int32 sums a channel tile's: a segment and one 8-pixel block's spill
ACC = 4 * TSTRIDE           # int32 sums a worker's scratch holds: 4 channel tiles

@njit(cache=True)
def conv_rows(path, P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1):
    """Output rows r0..r1 of one conv on one image's arena `ar`, eq. (6)-(8).

    acc: (ACC,) int32 scratch.  bias (folded), m0, n, rnd = 2^(n-1): per output channel,
    COT*16 entries from P[CH].  The rows go in segments of up to SEG pixels (SEG // WO whole
    rows, or runs of SEG pixels of one longer row): vnni.micro2 (or micro) sums 8 pixels x 32
    (or 16) channels at a time into acc (channel tile j's pixel p at TSTRIDE j + 16 p; an
    8-pixel block past a row's end spills into the next row's place, which is written after
    it, or into the slack after the segment), then vnni.epilogue requantizes each channel
    tile of the segment in vectors, 16 channels a pixel (and does the fused add), in one call
    that loads the tile's constants once.  On the amx path, amx_rows."""
    if path == AMX and P[AMX_N] > 0:
        amx_rows(P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1)
        return
    if path == AMX:
        path = 1                          # a row with no AMX tables: vpdpbusd
    s, iwp, icp, nk = P[STRIDE], P[I_WP], P[I_CP], P[NK]
    wo, owp, ocp, ch = P[WO], P[O_WP], P[O_CP], P[CH]
    zy, lo, hi, ioff, ooff, woff = P[ZY], P[LO], P[HI], P[I_OFF], P[O_OFF], P[WOFF]
    fuse = P[FUSE]
    zb, pad, bc, ast = P[ZB], P[PAD], P[B_C], P[A_STRIDE]     # the fused residual add
    boff, bwp, bcp, aoff, awp, acp = P[B_OFF], P[B_WP], P[B_CP], P[A_OFF], P[A_WP], P[A_CP]
    addp = P[ADD_START:ADD_END]           # n, z, lo, hi, A_h, B_h, L, side (layout.EPILOGUE_ADD)
    wstep = 64                            # bytes of weights a K-group (16 channels x 4)
    if path == AVX2_BYTES and P[MADD] == 0:
        path = AVX2_WORDS                 # vpmaddubsw would saturate on this layer's weights
        woff, wstep = P[WIDE], 128        # vpmaddwd reads them as int16 (ops/conv.lower)
        if woff < 0:
            raise ValueError("conv row without int16 weights on the avx2 path (Lowering(wide=True))")
    rows = max(1, SEG // wo)
    for oy in range(r0, r1, rows):
        nr = min(rows, r1 - oy)
        for c0 in range(0, wo, SEG):
            width = min(wo, c0 + SEG) - c0
            cot = 0
            while cot < P[COT]:
                tiles = 2 if cot + 1 < P[COT] else 1        # two channel tiles share each broadcast
                wbase = woff + cot * nk * wstep
                for i in range(nr):
                    for ox0 in range(c0, c0 + width, TILE_P):
                        npix = min(TILE_P, c0 + width - ox0)
                        xoff = ioff + ((oy + i) * s * iwp + ox0 * s) * icp
                        a0 = TILE_CO * (i * width + ox0 - c0)
                        if tiles == 2:
                            micro2(path, ar, xoff, s * icp, npix, koffs, P[KOFF], nk, wpk, wbase, acc, P[MADD], a0,
                                   TSTRIDE)
                        else:
                            micro(path, ar, xoff, s * icp, npix, koffs, P[KOFF], nk, wpk, wbase, acc, P[MADD], a0,
                                  TSTRIDE)
                for j in range(tiles):        # eq. (8), and the fused add: vnni.epilogue
                    co0 = (cot + j) * TILE_CO
                    l0, l1 = max(0, pad - co0), min(TILE_CO, bc + pad - co0)   # lanes with b
                    if fuse == 0:
                        o, ostr, orow, bb, bstr, brow = ooff + (oy * owp + c0) * ocp + co0, ocp, owp * ocp, 0, 0, 0
                    else:
                        o, ostr, orow = aoff + (oy * awp + c0) * acp + co0, acp, awp * acp
                        bb = boff + (oy * ast * bwp + c0 * ast) * bcp + co0 - pad
                        bstr, brow = ast * bcp, ast * bwp * bcp
                    epilogue(acc, TSTRIDE // TILE_CO * j, width, nr, width, bias, m0, n, rnd, ch + co0, zy, lo, hi,
                             ar, o, ostr, orow, fuse, bb, bstr, brow, l0, l1, zb, addp)
                cot += tiles


@njit(cache=True)
def amx_rows(P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1):
    """conv_rows on AMX tiles (amx.py), output rows r0..r1 in segments of up to SEG pixels:
    SEG // WO whole rows, or where a row is longer, runs of SEG pixels of one row.  A
    segment's blocks of M pixels (its last block ends at its end, overlapping the one before
    where M does not divide it) go through amx.tiles two blocks x two channel tiles, or one
    block x up to four, a call, into acc (channel tile j's pixels at TSTRIDE j); then
    vnni.epilogue once a channel tile and segment, as in conv_rows (its setup, loading the
    channel constants, is then shared by up to SEG pixels)."""
    s, iwp, icp, ch, wo = P[STRIDE], P[I_WP], P[I_CP], P[CH], P[WO]
    ocp, fuse, zb, pad, bc, ast = P[O_CP], P[FUSE], P[ZB], P[PAD], P[B_C], P[A_STRIDE]
    boff, bwp, bcp, aoff, awp, acp = P[B_OFF], P[B_WP], P[B_CP], P[A_OFF], P[A_WP], P[A_CP]
    addp = P[ADD_START:ADD_END]
    M, cot_n, tstep = P[AMX_M], P[COT], P[AMX_TSTEP]
    rows = max(1, SEG // wo)                     # output rows a segment
    amx.config(wpk, P[AMX_CFG])
    for oy in range(r0, r1, rows):
        nr = min(rows, r1 - oy)
        for c0 in range(0, wo, SEG):
            c1 = min(wo, c0 + SEG)
            base = min(c0, c1 - M)                # the segment's first block starts here
            per = (c1 - base + M - 1) // M        # blocks a row
            width = c1 - base                     # acc pixels a row
            nblk = nr * per
            cot = 0
            while cot < cot_n:
                nt = min(cot_n - cot, 4 if nblk == 1 else 2)
                blk = 0
                while blk < nblk:
                    nb = 2 if blk + 1 < nblk else 1
                    i, px = blk // per, min(base + (blk % per) * M, c1 - M)      # the first block's
                    x0, a0 = P[I_OFF] + ((oy + i) * s * iwp + px * s) * icp, 16 * (i * width + px - base)
                    i, px = (blk + nb - 1) // per, min(base + ((blk + nb - 1) % per) * M, c1 - M)   # the last's
                    x1, a1 = P[I_OFF] + ((oy + i) * s * iwp + px * s) * icp, 16 * (i * width + px - base)
                    amx.tiles(nb, nt, ar, x0, x1 - x0, s * icp, koffs, P[AMX_K], P[AMX_N], wpk,
                              P[AMX_W] + cot * tstep, P[AMX_WSTEP], tstep, acc, a0, a1 - a0, TSTRIDE)
                    blk += nb
                for j in range(nt):
                    co0 = (cot + j) * TILE_CO
                    l0, l1 = max(0, pad - co0), min(TILE_CO, bc + pad - co0)     # lanes with b
                    if fuse == 0:
                        o, ostr, orow, bb, bstr, brow = P[O_OFF] + (oy * P[O_WP] + c0) * ocp + co0, ocp, \
                            P[O_WP] * ocp, 0, 0, 0
                    else:
                        o, ostr, orow = aoff + (oy * awp + c0) * acp + co0, acp, awp * acp
                        bb = boff + (oy * ast * bwp + c0 * ast) * bcp + co0 - pad
                        bstr, brow = ast * bcp, ast * bwp * bcp
                    epilogue(acc, TSTRIDE // TILE_CO * j + c0 - base, c1 - c0, nr, width, bias, m0, n, rnd, ch + co0, P[ZY], P[LO],
                             P[HI], ar, o, ostr, orow, fuse, bb, bstr, brow, l0, l1, zb, addp)
                cot += nt
    amx.release()


@njit(cache=True)
def dwconv_rows(P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1):
    """Output rows r0..r1 of a depthwise conv (channel c reads input channel c only), eq.
    (6)-(8): 8 pixels x 16 channels of int32 sums at a time (vnni.dw_micro), over the NK taps
    at koffs[KOFF:], weights [tap][COT*16] int8 at WOFF, the folded bias (eq. 6) and
    vnni.epilogue's requantize.
    |acc| < 2^31: the conv's `lower` checks the bound."""
    s, iwp, icp, nk, k0 = P[STRIDE], P[I_WP], P[I_CP], P[NK], P[KOFF]
    wo, owp, ocp, ch, woff = P[WO], P[O_WP], P[O_CP], P[CH], P[WOFF]
    cpw = P[COT] * TILE_CO                                # weights per tap
    addp = P[ADD_START:ADD_END]
    for oy in range(r0, r1):
        for ox0 in range(0, wo, TILE_P):
            npix = min(TILE_P, wo - ox0)
            for c0 in range(0, cpw, TILE_CO):
                xoff = P[I_OFF] + (oy * s * iwp + ox0 * s) * icp + c0
                dw_micro(ar, xoff, s * icp, npix, koffs, k0, nk, wpk, woff + c0, cpw, acc)
                o = P[O_OFF] + (oy * owp + ox0) * ocp + c0
                epilogue(acc, 0, npix, 1, 0, bias, m0, n, rnd, ch + c0, P[ZY], P[LO], P[HI], ar, o, ocp, 0, 0, 0, 0,
                         0, 0, 0, 0, addp)


@njit(cache=True)
def window_rows(P, ar, m0, n, r0, r1):
    """Output rows r0..r1 of a pool over KH x KW windows (stride, padding PH, PW): the largest
    value (MAXPOOL, padding excluded) or the centred sum requantized with ties to even
    (AVGPOOL, eq. 15-16a; padding adds nothing)."""
    C, s, kh, kw, ph, pw = P[CO], P[STRIDE], P[KH], P[KW], P[PH], P[PW]
    H, W = P[IH], P[IW]
    is_max, zx = P[ROW] == MAXPOOL, P[ZX]
    top = np.empty(C, np.uint8)         # max: bytes kept as bytes; every window holds a real tap
    acc = np.empty(C, np.int64)         # (ph <= kh // 2), so 0 stands for no value yet
    for y in range(r0, r1):
        for x in range(P[WO]):
            top[:] = 0
            acc[:] = 0
            for ky in range(kh):
                iy = y * s + ky - ph
                if iy < 0 or iy >= H:
                    continue
                for kx in range(kw):
                    ix = x * s + kx - pw
                    if ix < 0 or ix >= W:
                        continue
                    b = P[I_OFF] + (iy * P[I_WP] + ix) * P[I_CP]
                    px = ar[b:b + C]                  # a view: the channel loops vectorize
                    if is_max:
                        for c in range(C):
                            top[c] = max(top[c], px[c])
                    else:
                        for c in range(C):
                            acc[c] += np.int64(px[c]) - zx
            o = P[O_OFF] + (y * P[O_WP] + x) * P[O_CP]
            if is_max:
                dst = ar[o:o + C]                     # (a slice assignment would bring floats in)
                for c in range(C):
                    dst[c] = top[c]
            else:
                for c in range(C):
                    ar[o + c] = np.uint8(clamp(P[ZY] + requant_even(acc[c], m0[P[CH]], n[P[CH]]), P[LO], P[HI]))


@njit(cache=True)
def flatten(P, ar):
    """The I_ point (HO x WO x CO) -> the flat O_ point in (y, x, c) order."""
    C = P[CO]
    for y in range(P[HO]):
        for x in range(P[WO]):
            i = P[I_OFF] + (y * P[I_WP] + x) * P[I_CP]
            o = P[O_OFF] + (y * P[WO] + x) * C
            for c in range(C):
                ar[o + c] = ar[i + c]


@njit(cache=True)
def add_rows(P, ar, r0, r1):
    """relu(a + shortcut(b)) for output rows r0..r1, eq. (12)-(14); a is the I_ point.
    (ResNet20's adds are all fused into the conv before them; this serves other graphs.)
    With K_b = 0 the row is a requant, eq. (17a), whose output is a function of one input
    byte: a table of all 256 first, from the same formula, then one lookup an element."""
    ka, za, kb, zb = np.int64(P[KA]), np.int64(P[ZX]), np.int64(P[KB]), np.int64(P[ZB])
    m0, n, zy, lo, hi = P[A_M0], P[A_N], P[A_ZY], P[A_LO], P[A_HI]
    co, s, pad = P[CO], P[A_STRIDE], P[PAD]
    if kb == 0:
        lut = np.empty(256, np.uint8)
        for v in range(256):                                  # |acc| < 2^37 at 8 bits, section 7
            lut[v] = np.uint8(clamp(zy + requant(ka * (v - za), m0, n), lo, hi))
    c0, c1 = max(0, pad), min(co, P[B_C] + pad)              # the channels with a b term
    for y in range(r0, r1):
        for x in range(P[WO]):
            i = P[I_OFF] + (y * P[I_WP] + x) * P[I_CP]
            o = P[A_OFF] + (y * P[A_WP] + x) * P[A_CP]
            qa, dst = ar[i:i + co], ar[o:o + co]              # views: the loops vectorize
            if kb == 0:
                for c in range(co):
                    dst[c] = lut[qa[c]]
                continue
            b = P[B_OFF] + (y * s * P[B_WP] + x * s) * P[B_CP] - pad
            qb = ar[b + c0:b + c1]                            # padded channels hold z_b: add nothing
            for c in range(co):                               # eq. (12)-(14)
                acc = ka * (np.int64(qa[c]) - za)
                if c >= c0 and c < c1:
                    acc += kb * (np.int64(qb[c - c0]) - zb)
                dst[c] = np.uint8(clamp(zy + requant(acc, m0, n), lo, hi))


@njit(cache=True)
def gap(P, ar, m0, n):
    """Global average of the I_ point (HO x WO x CO) into the flat O_ point, eq. (15)-(16a)."""
    C = P[CO]
    acc = np.zeros(C, np.int64)                           # |acc| <= 64 * 255
    for y in range(P[HO]):
        for x in range(P[WO]):
            b = P[I_OFF] + (y * P[I_WP] + x) * P[I_CP]
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
    """The flat I_ point (I_CP values) times w (Ci, Co) -> out (Co,) int32 (the logits), or
    the flat O_ point in the arena when STORE, eq. (6)-(8)."""
    ci, co_n, ch = P[I_CP], P[CO], P[CH]
    acc = np.empty(co_n, np.int64)                          # int64: no bound needed
    for co in range(co_n):
        acc[co] = bias[ch + co]
    for k in range(ci):                                     # row by row of w: contiguous
        v = np.int64(ar[P[I_OFF] + k]) - P[ZX]
        w0 = P[WOFF] + k * co_n
        for co in range(co_n):
            acc[co] += v * np.int64(wpk[w0 + co])
    for co in range(co_n):
        q = clamp(P[ZY] + requant(acc[co], m0[ch + co], n[ch + co]), P[LO], P[HI])
        if P[STORE]:
            ar[P[O_OFF] + co] = np.uint8(q)
        else:
            out[co] = q


@njit(cache=True)
def output(P, ar, out):
    """The flat I_ point (CO values) -> the logits out (CO,) int32: the last op was not linear."""
    for c in range(P[CO]):
        out[c] = ar[P[I_OFF] + c]


@njit(cache=True)
def input_lut(img, lut, ar, off, wp, cp, y0, y1):
    """Rows y0..y1 of img (H,W,3) uint8 -> the padded input point, LUT[c, pixel], eq. (5)."""
    H, W, C = img.shape
    for y in range(y0, y1):
        for x in range(W):
            o = off + (y * wp + x) * cp
            for c in range(C):
                ar[o + c] = np.uint8(lut[c, img[y, x, c]])


@njit(cache=True)
def run_op(path, P, ar, koffs, wpk, bias, m0, n, rnd, acc, out, r0, r1):
    k = P[ROW]
    if k == CONV:
        conv_rows(path, P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1)
    elif k == DWCONV:
        dwconv_rows(P, ar, koffs, wpk, bias, m0, n, rnd, acc, r0, r1)
    elif k == ADD:
        add_rows(P, ar, r0, r1)
    elif k == GAP:
        gap(P, ar, m0, n)
    elif k == AVGPOOL or k == MAXPOOL:
        window_rows(P, ar, m0, n, r0, r1)
    elif k == FLATTEN:
        flatten(P, ar)
    elif k == LINEAR:
        linear(P, ar, wpk, bias, m0, n, out)
    else:
        output(P, ar, out)


@njit(cache=True)
def run_image(path, img, lut, inp, ops, koffs, wpk, bias, m0, n, rnd, ar, acc, out):
    """One image (H,W,3) uint8 through every op on arena `ar` -> out (C,) int32."""
    input_lut(img, lut, ar, inp[0], inp[1], inp[2], 0, img.shape[0])
    for k in range(ops.shape[0]):
        run_op(path, ops[k], ar, koffs, wpk, bias, m0, n, rnd, acc, out, 0, ops[k, HO])


@njit(cache=True, parallel=True)
def run(path, images, lut, inp, ops, koffs, wpk, bias, m0, n, rnd, arenas, logits):
    """images (N,H,W,3) uint8 -> logits (N,C) int32, written in place.

    inp = (offset, padded width, padded channels) of the input point; ops (ops, NFIELDS);
    arenas (threads, bytes), one per Numba thread id, initialised by Graph.  path 1 vnni,
    0 portable.  Images are handed out to the threads in chunks of 2 (dynamically, so that a
    thread that the OS pauses does not hold the others up); each thread uses its own arena.
    One image runs on the calling thread (run_shared splits one image over the threads)."""
    N = images.shape[0]
    if N == 1:
        run_image(path, images[0], lut, inp, ops, koffs, wpk, bias, m0, n, rnd, arenas[0],
                  np.empty(ACC, np.int32), logits[0])
        return
    for i in prange(N):                     # Graph.run sets the chunk size
        acc = np.empty(ACC, np.int32)
        run_image(path, images[i], lut, inp, ops, koffs, wpk, bias, m0, n, rnd,
                  arenas[get_thread_id()], acc, logits[i])


@njit(cache=True)
def share_image(path, img, lut, inp, ops, plan, koffs, wpk, bias, m0, n, rnd, ar, acc, out, sync, w):
    """Worker w's part of one image that every worker works on, in one arena (docs/engine.md,
    "One image on every thread").  plan (stages, 3): op row (-1: the input LUT), tasks, rows
    per task.  Each stage's tasks are cut into R ranges, one per thread the plan was made for
    (sync has R + 1 cache lines of 8 int64 per stage: the done count, then each range's next
    task).  Worker w takes tasks with fetch_add from range w mod R first, so that it mostly
    reads rows that it wrote itself, then from the others; it counts each done, and goes on to
    the next stage when all are done.  No worker waits for one that has not started: a late
    one finds fewer tasks, or none, so any number of workers, together or one after another,
    is correct."""
    R = sync.shape[0] // (8 * plan.shape[0]) - 1
    for s in range(plan.shape[0]):
        k, tasks, rows = plan[s, 0], plan[s, 1], plan[s, 2]
        h = img.shape[0] if k < 0 else ops[k, HO]            # the stage's output rows
        base = 8 * (R + 1) * s
        for j in range(R):
            r = (w + j) % R
            hi = (r + 1) * tasks // R
            while True:
                t = r * tasks // R + fetch_add(sync, base + 8 * (r + 1), 1)
                if t >= hi:
                    break
                r1 = min(t * rows + rows, h)
                if k < 0:
                    input_lut(img, lut, ar, inp[0], inp[1], inp[2], t * rows, r1)
                else:
                    run_op(path, ops[k], ar, koffs, wpk, bias, m0, n, rnd, acc, out, t * rows, r1)
                fetch_add(sync, base, 1)
        while load(sync, base) < tasks:
            pause()


@njit(cache=True, parallel=True)
def run_shared(path, img, lut, inp, ops, plan, koffs, wpk, bias, m0, n, rnd, ar, sync, out, workers):
    """One image img (H,W,3) uint8 -> out (C,) int32 on `workers` threads sharing arena `ar`;
    sync (8 (R + 1) stages,) int64 is zeroed here, before the threads start."""
    for i in range(sync.shape[0]):        # a plain loop: an array expression would be a parfor
        sync[i] = 0
    for w in prange(workers):
        acc = np.empty(ACC, np.int32)
        share_image(path, img, lut, inp, ops, plan, koffs, wpk, bias, m0, n, rnd, ar, acc, out, sync, w)


@njit(cache=True, parallel=True)
def run_one_op(path, P, arenas, koffs, wpk, bias, m0, n, rnd, out):
    """One op on each image's own arena (arenas (N, bytes)): the op-level test entry."""
    for i in prange(arenas.shape[0]):
        acc = np.empty(ACC, np.int32)
        run_op(path, P, arenas[i], koffs, wpk, bias, m0, n, rnd, acc, out[i], 0, P[HO])
