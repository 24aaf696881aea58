"""Single ops through the fast path, for the equality tests: reference.py's arguments in,
the fast kernel's output out (tests/test_fast_kernels.py, tests/test_kernels.py)."""
from types import SimpleNamespace

import numpy as np

from intengine.fastops import run_one_op
from intengine.graph import PATH_IDS, Lowering
from intengine.layout import set_fields
from intengine.ops import add as add_kind, conv


def _arenas_with(b, geo, x):
    """Per-image arenas from builder `b` with int32 NHWC `x` written into point `geo`."""
    arena = b.tables()[-1]
    off, wp, cp = geo                            # the point's origin (layout.py)
    n, h, w, c = x.shape
    ars = np.tile(arena, (n, 1))
    view = ars[:, off:off + h * wp * cp].reshape(n, h, wp, cp)
    view[:, :, :w, :c] = x
    return ars


def _interior(ars, geo, shape):
    off, wp, cp = geo
    n, (h, w, c) = len(ars), shape
    view = ars[:, off:off + h * wp * cp].reshape(n, h, wp, cp)
    return view[:, :, :w, :c].astype(np.int32)


def _op(kind, ins, out, zx, zy, lo, hi, m0, n, **params):
    """A model.Op stand-in with the fields the kinds' `lower` reads."""
    return SimpleNamespace(kind=kind, name=kind, ins=ins, out=out, zx=zx, zy=zy, lo=lo, hi=hi,
                           m0=np.atleast_1d(np.asarray(m0, np.int64)), n=np.atleast_1d(np.asarray(n, np.int64)),
                           **params)


def conv3x3(x, zx, w, bias, m0, n, zy, lo, hi, stride, kernel, madd=None, rows=None):
    """reference.conv's arguments for a 3x3 conv with padding 1 (x int32 values of <= 8 bits,
    w int8) through the fast conv of `kernel` ('vnni', 'avx2' or 'portable'): for the equality
    tests.  madd: overrides the row's MADD field (the AVX2 saturation test); rows: a list that
    gets the op table."""
    N, H, W, C = x.shape
    ho, wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    op = _op("conv", [0], 1, [zx], zy, lo, hi, m0, n, w=w, bias=np.asarray(bias, np.int64), stride=stride,
             ph=1, pw=1, groups=1)
    lw = Lowering([op], [(H, W, C), (ho, wo, w.shape[3])], [zx, zy], fuse=False, wide=kernel == "avx2", amx=kernel == "amx")
    gin = lw.point(0, cmul=4)
    conv.lower(op, 0, lw)
    b = lw.builder
    ops, koffs, wpk, bias_, m0_, n_, rnd, _ = b.tables()
    ars = _arenas_with(b, gin, x)
    if madd is not None:
        set_fields(ops[0], MADD=madd)
    if rows is not None:
        rows.append(ops)
    run_one_op(PATH_IDS[kernel], ops[0], ars, koffs, wpk, bias_, m0_, n_, rnd, np.zeros((N, 1), np.int32))
    return _interior(ars, lw.geo[1], (ho, wo, w.shape[3]))


def add(a, za, b, zb, ka, kb, stride, pad, m0, n, zy, lo, hi):
    """reference.add's arguments (int32 values of <= 8 bits) through the standalone add."""
    N, H, W, C = a.shape
    op = _op("add", [0, 1], 2, [za, zb], zy, lo, hi, m0, n, ka=ka, kb=kb, stride=stride, pad=pad)
    lw = Lowering([op], [a.shape[1:], b.shape[1:], (H, W, C)], [za, zb, zy], fuse=False)
    ga, gb = lw.point(0), lw.point(1)
    add_kind.lower(op, 0, lw)
    bld = lw.builder
    ops, koffs, wpk, bias_, m0_, n_, rnd, arena = bld.tables()
    ars = _arenas_with(bld, ga, a)
    ars[:] = np.where(np.arange(ars.shape[1]) < gb[0], ars, _arenas_with(bld, gb, b))
    run_one_op(0, ops[0], ars, koffs, wpk, bias_, m0_, n_, rnd, np.zeros((N, 1), np.int32))
    return _interior(ars, lw.geo[2], (H, W, C))


def conv_add(conv_args, b, zb, ka, kb, pad, m0, n, zy, lo, hi, kernel, split=None):
    """A 3x3 conv (reference.conv's arguments before ph, pw, groups) and the residual add after it (shortcut source b,
    reference.add's other arguments) through the fast path with fusion on: -> (add output,
    whether the add went into the conv's epilogue).  split=(A_h, B_h, L, side, n) replaces
    the fused row's eq. (14a) constants, to test the epilogue on its own terms."""
    x, zx, w, bias, cm0, cn, czy, clo, chi, stride = conv_args
    N, H, W, C = x.shape
    ho, wo, co = (H - 1) // stride + 1, (W - 1) // stride + 1, w.shape[3]
    cv = _op("conv", [0], 2, [zx], czy, clo, chi, cm0, cn, w=w, bias=np.asarray(bias, np.int64), stride=stride,
             ph=1, pw=1, groups=1)
    ad = _op("add", [2, 1], 3, [czy, zb], zy, lo, hi, m0, n, ka=ka, kb=kb, stride=stride, pad=pad)
    lw = Lowering([cv, ad], [(H, W, C), b.shape[1:], (ho, wo, co), (ho, wo, co)], [zx, zb, czy, zy], fuse=True,
                  wide=kernel == "avx2", amx=kernel == "amx")
    gx, gb = lw.point(0, cmul=4), lw.point(1)
    conv.lower(cv, 0, lw)
    if 1 not in lw.skip:
        add_kind.lower(ad, 1, lw)
    bld = lw.builder
    ops, koffs, wpk, bias_, m0_, n_, rnd, _ = bld.tables()
    if split is not None:
        ah, bh, low, side, sn = split
        set_fields(ops[0], AH=ah, BH=bh, AL=low, ASIDE=side, A_N=sn)
    ars = _arenas_with(bld, gx, x)
    ars[:] = np.where(np.arange(ars.shape[1]) < gb[0], ars, _arenas_with(bld, gb, b))
    for row in ops:
        run_one_op(PATH_IDS[kernel], row, ars, koffs, wpk, bias_, m0_, n_, rnd, np.zeros((N, 1), np.int32))
    return _interior(ars, lw.geo[3], (ho, wo, co)), 1 in lw.skip
