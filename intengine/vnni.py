"""The conv micro-kernel: 8 output pixels x 16 output channels of int32 sums, in registers.

    acc[p, c] = sum_t sum_j x[off_p + koff[t] + j] * w[wbase + 64 t + 4 c + j]     (j < 4)

x is uint8 (activations of <= 8 bits), w is int8 (weights of <= 8 bits), packed by the
conv's `lower` (intengine/ops/conv.py): each K-group t of 4 input bytes (4 channels of one tap) has 64 bytes, 4 per
output channel.  This is the operand layout of AVX512-VNNI's vpdpbusd, which adds the four
u8 x s8 products of each 32-bit lane to an int32 lane, without saturation.

Five bodies, chosen at run time by `path` (cpu.py decides which is allowed):
  1 (vnni)      llvm.x86.avx512.vpdpbusd.512, emitted only when cpu.HAS_VNNI
  4 (avxvnni)   llvm.x86.avx512.vpdpbusd.256: vpdpbusd on ymm, VEX-encoded on AVX-VNNI
                processors, EVEX where AVX512VL is there; emitted only when cpu.HAS_AVXVNNI;
                exact for every 8-bit weight (int32 sums, no saturation), 256-bit tile as below
  2 (avx2)      256-bit vpmaddubsw (u8 x s8 pairs summed in int16), the int16 sums of m
                K-groups added, then vpmaddwd by ones (widened to int32); emitted only when
                cpu.HAS_AVX2; only for a layer whose every weight pair keeps
                255 m (|w0| + |w1|) <= 32767 (the conv's `lower` proves it from the layer's
                weights and stores m in the layout field MADD), so vpmaddubsw's saturation
                and vpaddw's wrap never act (docs/engine.md "The AVX2 tile", eq. A1-A2)
  3 (avx2)      256-bit vpmaddwd on int16 pairs: the layers that bound does not hold for
                (their weights stored once more as int16 at load, the row's WIDE)
  0 (portable)  generic LLVM vectors: bytes widened to i32 pairs, multiplied and pairwise
                added (x86 lowers this to vpmaddwd on SSE2/AVX2/AVX-512; other CPUs to
                their own multiply-adds)
The 256-bit bodies run the 8 pixels as two passes of 4: 4 pixels x 16 channels are 8 ymm
accumulators, which leaves registers for the weights and the broadcast input (AVX2 has 16).
All are exact: every product |x*w| <= 255*128 < 2^15, and the sum of K of them stays below
K * 2^15 <= 2^31 for K < 65536 taps (the conv's `lower` checks it for each layer; ResNet20 has
K <= 576, |acc| < 2^25).  The sums are the integer sum, whatever the order, so the bodies are
bit-identical.  Written as LLVM IR through llvmlite: no C, no assembly, no floats.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu import HAS_AVX2, HAS_AVXVNNI, HAS_VNNI
from .fixedpoint import ADD_HI_BITS, ADD_LANES32_N_MIN, ADD_LOW_BITS, ADD_SPLIT

P, CO = 8, 16                      # the tile: 8 output pixels x 16 output channels
I8, I32, I64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
V16 = ir.VectorType(I32, 16)
I16 = ir.IntType(16)
Y32 = ir.VectorType(I32, 8)                      # a ymm register of int32, int16 and bytes
Y16, Y8 = ir.VectorType(I16, 16), ir.VectorType(I8, 32)
VNNI, AVX2_BYTES, AVX2_WORDS, AVX_VNNI, PORTABLE = 1, 2, 3, 4, 0     # the micro kernels' `path`
# 4 broadcast input bytes (x0 x1 x2 x3, repeated) -> (x0, x1, x2, x3) as int16, repeated: each
# even byte takes an input byte of its own 128-bit half (vpshufb), each odd byte a zero
WIDEN = ir.Constant(ir.VectorType(I32, 32), [32 if b % 2 else 16 * (b // 16) + (b // 2) % 4 for b in range(32)])


def _load(builder, base, offset, ty):
    """Load `ty` from byte pointer base + offset (unaligned)."""
    ptr = builder.gep(base, [offset])
    return builder.load(builder.bitcast(ptr, ty.as_pointer()), align=1)


def _broadcast(builder, scalar, n):
    vec = builder.insert_element(ir.Constant(ir.VectorType(scalar.type, n), None), scalar,
                                 ir.Constant(I32, 0))
    return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(I32, n), [0] * n))


def _body(builder, vnni, accs, xptr, offs, kptr, nk, wptr, wbases):
    """The K loop: accs[j][p] (alloca'd <16 x i32>) += the products of channel tile j, whose
    weights start at byte wbases[j], over nk groups."""
    if vnni:
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(V16, [V16, V16, V16]),
                                            "llvm.x86.avx512.vpdpbusd.512")
    with cgutils.for_range(builder, nk) as loop:
        t = loop.index
        ko = builder.load(builder.gep(kptr, [t]))
        wbs = [builder.add(wb, builder.mul(t, ir.Constant(I64, 64))) for wb in wbases]
        if vnni:
            wv = [_load(builder, wptr, wb, V16) for wb in wbs]
            for p in range(P):
                a = _broadcast(builder, _load(builder, xptr, builder.add(offs[p], ko), I32), 16)
                for acc_j, w_j in zip(accs, wv):
                    builder.store(builder.call(fn, [builder.load(acc_j[p]), a, w_j]), acc_j[p])
        else:
            for acc_j, wb in zip(accs, wbs):
                _portable_step(builder, acc_j, xptr, offs, ko, wptr, wb)


def _portable_step(builder, accs, xptr, offs, ko, wptr, wb):
    """One K-group without VNNI: (u8 pair) . (s8 pair) per i32 lane, twice (vpmaddwd-shaped)."""
    w8 = _load(builder, wptr, wb, ir.VectorType(I8, 64))
    wh = []                     # the weight pairs (2h, 2h+1) of each channel, as i32 lanes
    for h in range(2):
        idx = [4 * c + 2 * h + j for c in range(CO) for j in range(2)]
        sel = builder.shuffle_vector(w8, w8, ir.Constant(ir.VectorType(I32, 32), idx))
        wh.append(builder.sext(sel, ir.VectorType(I32, 32)))
    even = ir.Constant(ir.VectorType(I32, 16), list(range(0, 32, 2)))
    odd = ir.Constant(ir.VectorType(I32, 16), list(range(1, 32, 2)))
    for p in range(P):
        a4 = _load(builder, xptr, builder.add(offs[p], ko), ir.VectorType(I8, 4))
        acc = builder.load(accs[p])
        for h in range(2):
            pair = builder.shuffle_vector(a4, a4, ir.Constant(ir.VectorType(I32, 32),
                                                              [2 * h, 2 * h + 1] * 16))
            prod = builder.mul(builder.zext(pair, ir.VectorType(I32, 32)), wh[h])
            acc = builder.add(acc, builder.add(builder.shuffle_vector(prod, prod, even),
                                               builder.shuffle_vector(prod, prod, odd)))
        builder.store(acc, accs[p])


def _avx2(builder, mode, xptr, offs, kptr, nk, wptr, wbases, accptr, groups16, a0, tstride):
    """The 256-bit bodies, for each channel tile j in passes over the pixels, then the sums
    stored at acc[a0 + j tstride + 16 p + c].  mode: AVX2_BYTES, AVX2_WORDS or AVX_VNNI.

    dot (path 4): 4 pixels a pass, 8 ymm accumulators; a K-group's 4 input bytes broadcast to
    32, vpdpbusd adds the four u8 x s8 products of each lane (8 channels x 4 weight bytes) to
    its int32 lane: one channel's products per lane, as on zmm.
    bytes_ (path 2): 4 pixels a pass, 8 ymm accumulators (channels 0-7 and 8-15 of each
    pixel).  A K-group's 4 input bytes are broadcast to 32, vpmaddubsw multiplies them by 32
    weight bytes (8 channels x 4) and sums pairs into int16; the int16 sums of `groups16`
    K-groups are added up in int16 (vpaddw), then vpmaddwd by ones sums the pairs into int32:
    one channel's products per lane.
    words (path 3): 3 pixels a pass, 12 accumulators of (channel, pair) lanes.  The group's
    weights are read as int16 (128 bytes, 4 channels x 4 per ymm: the row's WIDE copy, widened
    at load), as vpmaddwd's memory operands; the 4 input bytes are broadcast and zero-extended
    to 4 int16 (WIDEN), and vpmaddwd sums each pair; the two pair lanes of a channel are added
    when the sums are stored.  docs/engine.md "The AVX2 tile"."""
    mod = builder.module
    bytes_ = mode == AVX2_BYTES
    if mode == AVX_VNNI:
        dot = cgutils.get_or_insert_function(mod, ir.FunctionType(Y32, [Y32, Y32, Y32]), "llvm.x86.avx512.vpdpbusd.256")
    else:
        maddubs = cgutils.get_or_insert_function(mod, ir.FunctionType(Y16, [Y8, Y8]), "llvm.x86.avx2.pmadd.ub.sw")
        maddwd = cgutils.get_or_insert_function(mod, ir.FunctionType(Y32, [Y16, Y16]), "llvm.x86.avx2.pmadd.wd")
    ones = ir.Constant(Y16, [1] * 16)
    barrier = ir.InlineAsm(ir.FunctionType(ir.VoidType(), []), "", "~{memory}", side_effect=True)
    out = builder.bitcast(accptr, I32.as_pointer())
    per, nacc = (3, 4) if mode == AVX2_WORDS else (4, 2)   # pixels a pass, ymm accumulators a pixel
    for j, wbase in enumerate(wbases):
        for first in range(0, P, per):
            px = offs[first:first + per]
            accs = [[cgutils.alloca_once(builder, Y32) for _ in range(nacc)] for _ in px]
            for a in sum(accs, []):
                builder.store(ir.Constant(Y32, None), a)
            if bytes_:
                sums = [[cgutils.alloca_once(builder, Y16) for _ in range(nacc)] for _ in px]
                one = ir.Constant(I64, 1)
                chunks = builder.sdiv(builder.sub(builder.add(nk, groups16), one), groups16)
                with cgutils.for_range(builder, chunks) as outer:
                    start = builder.mul(outer.index, groups16)
                    left = builder.sub(nk, start)
                    cnt = builder.select(builder.icmp_signed("<", left, groups16), left, groups16)
                    for s_ in sum(sums, []):
                        builder.store(ir.Constant(Y16, None), s_)
                    with cgutils.for_range(builder, cnt) as loop:
                        t = builder.add(start, loop.index)
                        ko = builder.load(builder.gep(kptr, [t]))
                        wb = builder.add(wbase, builder.mul(t, ir.Constant(I64, 64)))
                        wv = [_load(builder, wptr, builder.add(wb, ir.Constant(I64, 32 * k)), Y8) for k in range(2)]
                        for p, off in enumerate(px):
                            xs = builder.bitcast(_broadcast(builder, _load(builder, xptr, builder.add(off, ko), I32), 8),
                                                 Y8)
                            for k in range(nacc):
                                builder.store(builder.add(builder.load(sums[p][k]),
                                                          builder.call(maddubs, [xs, wv[k]])), sums[p][k])
                    for p in range(len(px)):
                        for k in range(nacc):
                            wide = builder.call(maddwd, [builder.load(sums[p][k]), ones])
                            builder.store(builder.add(builder.load(accs[p][k]), wide), accs[p][k])
            elif mode == AVX_VNNI:
                with cgutils.for_range(builder, nk) as loop:
                    t = loop.index
                    ko = builder.load(builder.gep(kptr, [t]))
                    wb = builder.add(wbase, builder.mul(t, ir.Constant(I64, 64)))
                    wv = [_load(builder, wptr, builder.add(wb, ir.Constant(I64, 32 * k)), Y32) for k in range(2)]
                    for p, off in enumerate(px):
                        xs = _broadcast(builder, _load(builder, xptr, builder.add(off, ko), I32), 8)
                        for k in range(nacc):
                            builder.store(builder.call(dot, [builder.load(accs[p][k]), xs, wv[k]]), accs[p][k])
            else:
                with cgutils.for_range(builder, nk) as loop:
                    t = loop.index
                    ko = builder.load(builder.gep(kptr, [t]))
                    wb = builder.add(wbase, builder.mul(t, ir.Constant(I64, 128)))
                    for p, off in enumerate(px):
                        # the weights are loaded for each pixel, after a compiler barrier, so that
                        # they stay memory operands of vpmaddwd: the 12 accumulators keep the registers
                        builder.call(barrier, [])
                        wv = [_load(builder, wptr, builder.add(wb, ir.Constant(I64, 32 * k)), Y16) for k in range(4)]
                        xb = builder.bitcast(_broadcast(builder, _load(builder, xptr, builder.add(off, ko), I32), 8),
                                             Y8)
                        xs = builder.bitcast(builder.shuffle_vector(xb, ir.Constant(Y8, [0] * 32), WIDEN), Y16)
                        for k in range(nacc):
                            builder.store(builder.add(builder.load(accs[p][k]), builder.call(maddwd, [xs, wv[k]])),
                                          accs[p][k])
            for p in range(len(px)):
                base = builder.add(a0, builder.add(builder.mul(tstride, ir.Constant(I64, j)),
                                                   ir.Constant(I64, 16 * (first + p))))
                for k in range(nacc):
                    v = builder.load(accs[p][k])
                    if mode != AVX2_WORDS:           # channels 8k..8k+7 in order
                        halves = [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, 4), list(range(h, h + 4))))
                                  for h in (0, 4)]
                        slots = [8 * k + 4 * h for h in range(2)]
                    else:                # lanes (c, pair) of channels 4k..4k+3: add the pairs
                        ev = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, 4), [0, 2, 4, 6]))
                        od = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, 4), [1, 3, 5, 7]))
                        halves, slots = [builder.add(ev, od)], [4 * k]
                    for h, slot in zip(halves, slots):
                        dst = builder.gep(out, [builder.add(base, ir.Constant(I64, slot))])
                        builder.store(h, builder.bitcast(dst, ir.VectorType(I32, 4).as_pointer()), align=1)


def _operands(context, builder, tys, args, where, koff0):
    """The data pointers of the x, koff (from koff0 on), w and acc arguments at `where`; acc as
    <16 x i32> vectors."""
    x, k, w, a = (context.make_array(tys[i])(context, builder, args[i]).data for i in where)
    return x, builder.gep(k, [koff0]), w, builder.bitcast(a, V16.as_pointer())


def _pixel_offsets(builder, xoff0, pstride, npix):
    """The byte offset of each of the tile's P pixels, xoff0 + min(p, npix - 1) * pstride."""
    last = builder.sub(npix, ir.Constant(I64, 1))
    offs = []
    for p in range(P):
        pc = ir.Constant(I64, p)
        q = builder.select(builder.icmp_signed("<", pc, last), pc, last)
        offs.append(builder.add(xoff0, builder.mul(q, pstride)))
    return offs


def _switch(builder, path, cases, default):
    """Emit the body of the case (value, body) whose value equals `path`, else default()."""
    if not cases:
        default()
        return
    (value, body), rest = cases[0], cases[1:]
    with builder.if_else(builder.icmp_signed("==", path, ir.Constant(I64, value))) as (on, off):
        with on:
            body()
        with off:
            _switch(builder, path, rest, default)


def _make_micro(tiles):
    def micro(typingctx, path, x, xoff0, pstride, npix, koff, koff0, nk, w, wbase, acc, groups16, a0, tstride):
        sig = types.void(types.int64, x, types.int64, types.int64, types.int64, koff, types.int64,
                         types.int64, w, types.int64, acc, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            tys = signature.args
            path, x, xoff0, pstride, npix, koff, koff0, nk, w, wbase, acc, groups16, a0, tstride = args
            xptr, kptr, wptr, accptr = _operands(context, builder, tys, args, (1, 5, 8, 10), koff0)
            offs = _pixel_offsets(builder, xoff0, pstride, npix)
            # channel tile j's weights follow tile j-1's: nk groups of 64 bytes (ops/conv.py), or
            # of 128 for path 3's int16 weights

            def bases(step):
                return [builder.add(wbase, builder.mul(nk, ir.Constant(I64, step * j))) for j in range(tiles)]
            wbases = bases(64)

            def zmm_shaped(vnni):
                accs = [[cgutils.alloca_once(builder, V16) for _ in range(P)] for _ in range(tiles)]
                for a in sum(accs, []):
                    builder.store(ir.Constant(V16, None), a)
                _body(builder, vnni, accs, xptr, offs, kptr, nk, wptr, wbases)
                out = builder.bitcast(accptr, I32.as_pointer())
                for j in range(tiles):
                    for p in range(P):
                        at = builder.add(a0, builder.add(builder.mul(tstride, ir.Constant(I64, j)),
                                                         ir.Constant(I64, CO * p)))
                        builder.store(builder.load(accs[j][p]), builder.bitcast(builder.gep(out, [at]), V16.as_pointer()),
                                      align=1)

            cases = {}                  # the bodies this processor may run, by path id; else portable
            if HAS_VNNI:
                cases[VNNI] = lambda: zmm_shaped(True)
            for mode, allowed in ((AVX2_BYTES, HAS_AVX2), (AVX2_WORDS, HAS_AVX2), (AVX_VNNI, HAS_AVXVNNI)):
                if allowed:
                    cases[mode] = (lambda m: lambda: _avx2(builder, m, xptr, offs, kptr, nk, wptr,
                                                           bases(128) if m == AVX2_WORDS else wbases, accptr,
                                                           groups16, a0, tstride))(mode)
            _switch(builder, path, list(cases.items()), lambda: zmm_shaped(False))
            return context.get_dummy_value()

        return sig, codegen

    micro.__name__ = micro.__qualname__ = f"micro{tiles}"
    micro.__doc__ = f"""acc[a0 + j tstride + 16 p + c] (int32; j < {tiles} channel tiles, p < 8, c < 16) = the tile
    sums of the module docstring.

    path: 1 vnni, 2 avx2 bytes, 3 avx2 words, 4 avxvnni, 0 portable.  x (bytes,) uint8; pixel p starts at byte
    xoff0 + min(p, npix-1)*pstride (pixels past npix repeat the last one).  koff (groups,)
    int64 byte offsets, this tile's K-groups are koff[koff0 : koff0+nk].  w (bytes,) int8,
    channel tile j's weights at wbase + 64 nk j.  groups16: on path 2, how many K-groups' int16
    sums are added before widening (the row's MADD, ops/conv.bytes_groups; at least 1)."""
    return intrinsic(micro)


micro = _make_micro(1)      # 8 pixels x 16 channels: 8 zmm accumulators
micro2 = _make_micro(2)     # 8 pixels x 32 channels: 16 accumulators, one broadcast per 2 vpdpbusd


@intrinsic
def dw_micro(typingctx, x, xoff0, pstride, npix, koff, koff0, nk, w, wbase, wstride, acc):
    """The depthwise tile: acc[16 p + c] (int32, p < 8, c < 16) = sum over the nk taps t of
    x[xoff0 + p*pstride + koff[koff0 + t] + c] * w[wbase + t*wstride + c]: 16 channels of one
    pixel per vector, each channel its own weight (no sum across channels).  Pixels past npix
    repeat the last one.  Generic LLVM vectors (u8 and s8 widened to i32): every processor;
    exact, |x*w| < 2^15 and nk < 2^16 taps."""
    sig = types.void(x, types.int64, types.int64, types.int64, koff, types.int64, types.int64, w, types.int64,
                     types.int64, acc)

    def codegen(context, builder, signature, args):
        tys = signature.args
        x, xoff0, pstride, npix, koff, koff0, nk, w, wbase, wstride, acc = args
        xptr, kptr, wptr, accptr = _operands(context, builder, tys, args, (0, 4, 7, 10), koff0)
        offs = _pixel_offsets(builder, xoff0, pstride, npix)
        accs = [cgutils.alloca_once(builder, V16) for _ in range(P)]
        for a in accs:
            builder.store(ir.Constant(V16, None), a)
        v16i8 = ir.VectorType(I8, 16)
        with cgutils.for_range(builder, nk) as loop:
            t = loop.index
            ko = builder.load(builder.gep(kptr, [t]))
            wv = builder.sext(_load(builder, wptr, builder.add(wbase, builder.mul(t, wstride)), v16i8), V16)
            for p in range(P):
                xv = builder.zext(_load(builder, xptr, builder.add(offs[p], ko), v16i8), V16)
                builder.store(builder.add(builder.load(accs[p]), builder.mul(xv, wv)), accs[p])
        for k, a in enumerate(accs):
            builder.store(builder.load(a), builder.gep(accptr, [ir.Constant(I64, k)]), align=1)
        return context.get_dummy_value()

    return sig, codegen


def _vec_load(builder, arr_ptr, index, ty):
    """Load vector `ty` from typed pointer arr_ptr + index elements (unaligned)."""
    return builder.load(builder.bitcast(builder.gep(arr_ptr, [index]), ty.as_pointer()), align=1)


V8 = ir.VectorType(I64, 8)
EVEN, ODD = list(range(0, 16, 2)), list(range(1, 16, 2))


def _lanes(builder, v, idx):
    """Lanes idx of a <16 x i64> -> <8 x i64>."""
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, len(idx)), idx))


def _fits32(builder, v):
    """v (<k x i64>) whose values fit int32, said so to LLVM (x86: vpmuldq, not vpmullq)."""
    return builder.sext(builder.trunc(v, ir.VectorType(I32, v.type.count)), v.type)


def _wide_mul(builder, x, fe, fo):
    """x (<16 x i32>) times int32-valued factors -> (even lanes, odd lanes) as <8 x i64>
    products: two vpmuldq on x86, each reading the low half of every 64-bit lane."""
    x64 = builder.bitcast(x, V8)
    c32 = ir.Constant(V8, [32] * 8)
    even = builder.ashr(builder.shl(x64, c32), c32)
    odd = builder.ashr(x64, c32)
    return builder.mul(even, fe), builder.mul(odd, fo)


def _join(builder, even, odd, high=False):
    """(even lanes, odd lanes) <8 x i64> of int32 values -> <16 x i32> in lane order; with
    high, the high dword of each instead: floor(value / 2^32), exact for |value| < 2^63."""
    v = ir.VectorType(I32, 16)
    idx = [2 * (k // 2) + high + 16 * (k % 2) for k in range(16)]
    return builder.shuffle_vector(builder.bitcast(even, v), builder.bitcast(odd, v),
                                  ir.Constant(ir.VectorType(I32, 16), idx))


def _splat(builder, value, ty):
    v = value
    if v.type != ty.element:
        v = builder.sext(v, ty.element) if v.type.width < ty.element.width else builder.trunc(v, ty.element)
    return _broadcast(builder, v, ty.count)


def _clamp(builder, v, lo, hi):
    v = builder.select(builder.icmp_signed("<", v, lo), lo, v)
    return builder.select(builder.icmp_signed(">", v, hi), hi, v)


@intrinsic
def epilogue(typingctx, acc, p0, npix, nrows, arow, bias, m0, n, rnd, cb, zy, lo, hi, ar, o, ostride, orow, fuse,
             bb, bstride, brow, c0, c1, zb, add):
    """nrows rows of npix pixels of a tile: eq. (8) on 16 channels each, into the uint8 arena
    `ar`; row i's pixel k has its sums at acc[16 (p0 + i arow + k)] and goes to byte
    o + i orow + k ostride (its shortcut input, where fused: bb + i brow + k bstride).

    acc (256,) int32 tile sums, pixel p's 16 at 16 p; bias (folded), m0, n, rnd = 2^(n-1): int64
    per channel, this tile's from index cb, loaded once for all the pixels.
    q = clamp(z_y + ((acc + bias)*M0 + 2^(n-1)) >> n, lo, hi): exact, because |acc + bias| < 2^31
    (the conv's `lower` checks it), so the sum fits int32 and the product and rounding int64
    (eq. 10); the result fits int32 (M0 < 2^n).  With fuse = 1 the residual add follows
    (section 7), with add = (n, z, lo, hi, A_h, B_h, L, side) of the add (int64, eq. 14a and
    fixedpoint.add_split; in int32 lanes by eq. 14b where n >= ADD_LANES32_N_MIN):
    d_a = q - z_a, d_b = q_b - z_b with q_b = ar[bb + k*bstride + c] for lanes c0 <= c < c1,
    z_b elsewhere (padded channels hold z_b).
    Generic LLVM vectors: portable.  The 64-bit products run on even and odd int32 lanes."""
    i64 = types.int64
    sig = types.void(acc, i64, i64, i64, i64, bias, m0, n, rnd, i64, i64, i64, i64, ar, i64, i64, i64, i64, i64, i64,
                     i64, i64, i64, i64, add)

    def codegen(context, builder, signature, args):
        tys = signature.args
        (acc, p0, npix, nrows, arow, bias, m0, n, rnd, cb, zy, lo, hi, ar, o, ostride, orow, fuse, bb, bstride,
         brow, c0, c1, zb, add) = args
        data = {k: context.make_array(tys[i])(context, builder, args[i]).data
                for k, i in ((0, 0), (3, 5), (4, 6), (5, 7), (6, 8), (11, 13), (20, 24))}
        V64, V32, V16I8 = ir.VectorType(I64, 16), ir.VectorType(I32, 16), ir.VectorType(I8, 16)
        # the tile's per-channel vectors and the splats, once for all its pixels
        bias32 = builder.trunc(_vec_load(builder, data[3], cb, V64), V32)
        m_v = _vec_load(builder, data[4], cb, V64)
        n_v, rnd_v = _vec_load(builder, data[5], cb, V64), _vec_load(builder, data[6], cb, V64)
        me, mo = (_fits32(builder, _lanes(builder, m_v, ix)) for ix in (EVEN, ODD))
        ne, no = (_lanes(builder, n_v, ix) for ix in (EVEN, ODD))
        # where every channel's n >= 32, floor(a / 2^n) = floor(floor(a / 2^32) / 2^(n-32)): the
        # high dwords, shifted as int32 (AVX2 has vpsravd but no 64-bit arithmetic shift)
        high = builder.icmp_unsigned("==", builder.bitcast(builder.icmp_signed(">=", n_v, ir.Constant(V64, [32] * 16)),
                                                           I16), ir.Constant(I16, 0xFFFF))
        n32 = builder.trunc(builder.sub(n_v, ir.Constant(V64, [32] * 16)), V32)
        re, ro = (_lanes(builder, rnd_v, ix) for ix in (EVEN, ODD))
        zy32 = _splat(builder, zy, V32)
        dlo, dhi = _splat(builder, builder.sub(lo, zy), V32), _splat(builder, builder.sub(hi, zy), V32)
        an, azy, alo, ahi, ah, bh, al, aside = (
            builder.load(builder.gep(data[20], [ir.Constant(I64, k)])) for k in range(8))
        lane = ir.Constant(V32, list(range(CO)))
        inside = builder.and_(builder.icmp_signed(">=", lane, _splat(builder, c0, V32)),
                              builder.icmp_signed("<", lane, _splat(builder, c1, V32)))
        zb32 = _splat(builder, zb, V32)
        ah_v, bh_v, al_v = (_fits32(builder, _splat(builder, v, V8)) for v in (ah, bh, al))
        side_a = builder.icmp_signed("!=", aside, ir.Constant(I64, 0))
        shift = _splat(builder, builder.sub(an, ir.Constant(I64, 28)), V8)          # eq. (14a)
        half = _splat(builder, builder.shl(ir.Constant(I64, 1), builder.sub(an, ir.Constant(I64, 29))), V8)
        c28 = ir.Constant(V8, [28] * 8)
        # eq. (14b): the same in int32 lanes where n >= ADD_LANES32_N_MIN (every exported add)
        lanes32 = builder.icmp_signed(">=", an, ir.Constant(I64, ADD_LANES32_N_MIN))
        hb, lb = ir.Constant(I64, ADD_HI_BITS), ir.Constant(I64, ADD_LOW_BITS)
        a1, b1, l1 = (_splat(builder, builder.ashr(v, b), V32) for v, b in ((ah, hb), (bh, hb), (al, lb)))
        a0, b0, l0 = (_splat(builder, builder.and_(v, builder.sub(builder.shl(ir.Constant(I64, 1), b),
                                                                  ir.Constant(I64, 1))), V32)
                      for v, b in ((ah, hb), (bh, hb), (al, lb)))
        s_hi = builder.sub(an, ir.Constant(I64, ADD_LANES32_N_MIN))
        half32 = _splat(builder, builder.shl(ir.Constant(I64, 1), builder.select(lanes32, s_hi, ir.Constant(I64, 0))),
                        V32)
        shift32 = _splat(builder, builder.sub(an, ir.Constant(I64, ADD_SPLIT + ADD_HI_BITS)), V32)
        hbits, lbits = ir.Constant(V32, [ADD_HI_BITS] * CO), ir.Constant(V32, [ADD_LOW_BITS] * CO)
        azy32 = _splat(builder, azy, V32)
        alo32, ahi32 = _splat(builder, builder.sub(alo, azy), V32), _splat(builder, builder.sub(ahi, azy), V32)
        plain = builder.icmp_signed("==", fuse, ir.Constant(I64, 0))
        rows = cgutils.for_range(builder, nrows)
        row = rows.__enter__()
        i = row.index
        arow_i, orow_i, brow_i = (builder.mul(i, v) for v in (arow, orow, brow))
        with cgutils.for_range(builder, npix) as loop:
            k = loop.index
            a = _vec_load(builder, data[0], builder.mul(builder.add(builder.add(p0, arow_i), k), ir.Constant(I64, CO)),
                          V32)
            v = builder.add(a, bias32)                          # fits int32 (lower checks it)
            pe, po = _wide_mul(builder, v, me, mo)
            ae, ao_ = builder.add(pe, re), builder.add(po, ro)        # a = (acc + bias) M0 + 2^(n-1), |a| < 2^62
            with builder.if_else(high) as (by_dwords, by_qwords):
                with by_dwords:
                    t_high = builder.ashr(_join(builder, ae, ao_, high=True), n32)
                    from_high = builder.block
                with by_qwords:
                    t_low = _join(builder, builder.ashr(ae, ne), builder.ashr(ao_, no))
                    from_low = builder.block
            t = builder.phi(V32)
            t.add_incoming(t_high, from_high)
            t.add_incoming(t_low, from_low)
            d = _clamp(builder, t, dlo, dhi)                    # q - z_y, eq. (8)
            dst = builder.bitcast(builder.gep(data[11], [builder.add(builder.add(o, orow_i), builder.mul(k, ostride))]),
                                  V16I8.as_pointer())
            with builder.if_else(plain) as (store, fused):
                with store:
                    builder.store(builder.trunc(builder.add(d, zy32), V16I8), dst, align=1)
                with fused:                   # eq. (12)-(14) in the form of eq. (14b), else (14a)
                    qb = builder.zext(_vec_load(builder, data[11], builder.add(builder.add(bb, brow_i),
                                                                               builder.mul(k, bstride)), V16I8), V32)
                    db = builder.sub(builder.select(inside, qb, zb32), zb32)     # padding holds z_b
                    ds = builder.select(side_a, d, db)
                    with builder.if_else(lanes32) as (by_int32, by_int64):
                        with by_int32:            # eq. (14b): |d| <= 255, so every term fits int32
                            mul = builder.mul
                            lt = builder.ashr(builder.add(mul(ds, l1), builder.ashr(mul(ds, l0), lbits)), lbits)
                            hi_ = builder.add(builder.add(mul(d, a1), mul(db, b1)), half32)
                            lo_ = builder.add(builder.add(mul(d, a0), mul(db, b0)), lt)
                            r32 = builder.ashr(builder.add(hi_, builder.ashr(lo_, hbits)), shift32)
                            from32 = builder.block
                        with by_int64:
                            ae, ao = _wide_mul(builder, d, ah_v, ah_v)
                            be, bo = _wide_mul(builder, db, bh_v, bh_v)
                            le, lodd = _wide_mul(builder, ds, al_v, al_v)
                            # |d| <= 255, A_h, B_h < 2^31, L < 2^28: every sum is below 2^41
                            se = builder.add(builder.add(ae, be), builder.add(builder.ashr(le, c28), half))
                            so = builder.add(builder.add(ao, bo), builder.add(builder.ashr(lodd, c28), half))
                            r64 = _join(builder, builder.ashr(se, shift), builder.ashr(so, shift))  # fits int32
                            from64 = builder.block
                    r = builder.phi(V32)
                    r.add_incoming(r32, from32)
                    r.add_incoming(r64, from64)
                    r = builder.add(_clamp(builder, r, alo32, ahi32), azy32)
                    builder.store(builder.trunc(r, V16I8), dst, align=1)
        rows.__exit__(None, None, None)
        return context.get_dummy_value()

    return sig, codegen
