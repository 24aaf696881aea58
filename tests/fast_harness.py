"""Single ops through the fast path, for the equality tests: reference.py's arguments in,
the fast kernel's output out (tests/test_fast_kernels.py, tests/test_kernels.py)."""
import numpy as np

from intengine.fastops import run_one_op
from intengine.graph import KINDS
from intengine.layout import Builder


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
