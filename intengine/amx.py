"""The AMX conv tile: Intel AMX's tdpbusd on whole tiles of pixels x channels x K-groups.

    C[p, c] += sum_r sum_j A[p, 4 r + j] * B[r, 4 c + j]        (u8 x s8 -> int32, r < R, j < 4)

is one tdpbusd: A holds M <= 16 output pixels' input bytes (a row each, 4R bytes), B holds R
K-groups of 16 channels' weights (a row each, 64 bytes: the vnni.py operand layout, so one
row of B is one K-group of the conv's packed weights), C is M x 16 int32 sums.  The sums are
the integer sums of vnni.py's tile, whatever the order: exact while |acc| < 2^31, which the
conv's `lower` checks for each layer.

A is read straight from the arena, with no copy: the kw taps of one kernel row of one pixel
are kw * Cp contiguous bytes (layout.py), and pixel p + 1 starts `stride * Cp` bytes after
pixel p, the stride that tileloadd takes.  The conv's `lower` (ops/conv.py) cuts each kernel
row's L = kw Cp / 4 K-groups into ceil(L / 16) chunks of R groups and pads the last with zero
weights; the bytes a padded group reads (past the kernel row, at most 60, inside the arena's
GUARD at its end) are multiplied by 0.  docs/engine.md, "The AMX tile".

Tile registers: C tiles 0-3 (nb pixel blocks x nt channel tiles, nb nt <= 4), A tiles 4-5
(one a pixel block), B tiles 6-7 (channel tile j in 6 + j % 2).  The tile shapes (M, R) are
the layer's, in the 64-byte configuration that `lower` writes beside its weights and
`config` loads.  Emitted only when cpu.HAS_AMX: the process has asked Linux for the AMX
state (cpu.py); elsewhere these are empty and the amx path is never chosen.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpu import HAS_AMX

I8, I64 = ir.IntType(8), ir.IntType(64)
PTR, VOID = I8.as_pointer(), ir.VoidType()
C_TILES, A_TILE, B_TILE = 0, 4, 6
SHAPES = ((1, 1), (1, 2), (1, 3), (1, 4), (2, 1), (2, 2))      # (nb, nt) that `tiles` emits


def tile_config(m, r):
    """The 64-byte tile configuration (palette 1) of a layer: C and A tiles of m rows (pixels),
    A rows of 4r bytes, B tiles of r rows (K-groups) of 64 bytes."""
    m, r = int(m), int(r)
    cfg = bytearray(64)
    cfg[0] = 1
    for t in range(8):
        rows, colsb = (m, 64) if t < A_TILE else (m, 4 * r) if t < B_TILE else (r, 64)
        cfg[16 + 2 * t:18 + 2 * t] = colsb.to_bytes(2, "little")
        cfg[48 + t] = rows
    return bytes(cfg)


def _fn(builder, name, args):
    return cgutils.get_or_insert_function(builder.module, ir.FunctionType(VOID, args), name)


def _byte_ptr(context, builder, ty, arr, offset):
    data = context.make_array(ty)(context, builder, arr).data
    return builder.gep(builder.bitcast(data, PTR), [offset])


@intrinsic
def config(typingctx, w, offset):
    """ldtilecfg from the 64 bytes at w[offset] (a layer's tile_config)."""
    sig = types.void(w, types.int64)

    def codegen(context, builder, signature, args):
        if HAS_AMX:
            builder.call(_fn(builder, "llvm.x86.ldtilecfg", [PTR]),
                         [_byte_ptr(context, builder, signature.args[0], args[0], args[1])])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def release(typingctx):
    """tilerelease: the tiles back to their initial state (the OS then saves no tile data)."""
    sig = types.void()

    def codegen(context, builder, signature, args):
        if HAS_AMX:
            builder.call(_fn(builder, "llvm.x86.tilerelease", []), [])
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def tiles(typingctx, nb, nt, x, xoff, bstep, pstride, koff, k0, nchunks, w, wbase, wstep, tstep, acc, a0, ab, aj):
    """acc (int32) gets the sums of nb pixel blocks x nt channel tiles, block b and tile j's
    pixel p at acc[a0 + b ab + j aj + 16 p + c] (p < M, c < 16), for (nb, nt) in SHAPES.

    x (bytes,) uint8: block b's pixel p reads 4R bytes at xoff + b bstep + p pstride +
    koff[k0 + i] for chunk i < nchunks.  w (bytes,) int8: channel tile j's chunk i is R rows of
    64 bytes at wbase + j tstep + i wstep.  The tile shapes are those of the last config."""
    sig = types.void(types.int64, types.int64, x, types.int64, types.int64, types.int64, koff, types.int64,
                     types.int64, w, types.int64, types.int64, types.int64, acc, types.int64, types.int64,
                     types.int64)

    def codegen(context, builder, signature, args):
        if not HAS_AMX:
            return context.get_dummy_value()
        tys = signature.args
        nb, nt, x, xoff, bstep, pstride, koff, k0, nchunks, w, wbase, wstep, tstep, acc, a0, ab, aj = args
        kptr = context.make_array(tys[6])(context, builder, koff).data
        load = _fn(builder, "llvm.x86.tileloadd64", [I8, PTR, I64])
        dot = _fn(builder, "llvm.x86.tdpbusd", [I8, I8, I8])
        zero = _fn(builder, "llvm.x86.tilezero", [I8])
        store = _fn(builder, "llvm.x86.tilestored64", [I8, PTR, I64])
        t8 = lambda k: ir.Constant(I8, k)
        c64 = lambda k: ir.Constant(I64, k)

        def body(b_n, t_n):
            def emit():
                for t in range(b_n * t_n):
                    builder.call(zero, [t8(C_TILES + t)])
                with cgutils.for_range(builder, nchunks) as loop:
                    i = loop.index
                    ko = builder.load(builder.gep(kptr, [builder.add(k0, i)]))
                    for b in range(b_n):
                        off = builder.add(builder.add(xoff, builder.mul(bstep, c64(b))), ko)
                        builder.call(load, [t8(A_TILE + b), _byte_ptr(context, builder, tys[2], x, off), pstride])
                    wi = builder.add(wbase, builder.mul(wstep, i))
                    for j in range(t_n):
                        off = builder.add(wi, builder.mul(tstep, c64(j)))
                        builder.call(load, [t8(B_TILE + j % 2), _byte_ptr(context, builder, tys[9], w, off), c64(64)])
                        for b in range(b_n):
                            builder.call(dot, [t8(C_TILES + b * t_n + j), t8(A_TILE + b), t8(B_TILE + j % 2)])
                for b in range(b_n):
                    for j in range(t_n):
                        at = builder.add(a0, builder.add(builder.mul(ab, c64(b)), builder.mul(aj, c64(j))))
                        dst = _byte_ptr(context, builder, tys[13], acc, builder.mul(at, c64(4)))
                        builder.call(store, [t8(C_TILES + b * t_n + j), dst, c64(64)])
            return emit

        def switch(cases):
            (b_n, t_n), rest = cases[0], cases[1:]
            if not rest:
                body(b_n, t_n)()
                return
            hit = builder.and_(builder.icmp_signed("==", nb, c64(b_n)), builder.icmp_signed("==", nt, c64(t_n)))
            with builder.if_else(hit) as (on, off):
                with on:
                    body(b_n, t_n)()
                with off:
                    switch(rest)
        switch(list(SHAPES))
        return context.get_dummy_value()

    return sig, codegen
