"""Every Numba kernel equals the NumPy reference (np.array_equal), at every width; the conv
test also runs the fast paths (graph.py) that this processor has, at <= 8 bits."""
import zlib

import numpy as np
import pytest

import fast_harness
from intengine import cpu, kernels, reference

FAST = cpu.fast_kernels()

rng = np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_from_the_test(request):
    """Each test draws its cases from a generator seeded by its own name and parameters, so
    a `-k` run sees the same cases as a full run."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


WIDTHS = {  # (weight bits, act bits, weight dtype, acc dtype)
    "w2a8": (2, 8, np.int8, np.int32), "w4a8": (4, 8, np.int8, np.int32),
    "w8a8": (8, 8, np.int8, np.int32), "w16a16": (16, 16, np.int16, np.int64),
}


def acts(shape, bits):
    return rng.integers(0, 1 << bits, size=shape).astype(np.int32)


def weights(shape, bits, dtype):
    if bits <= 4:   # midrise levels
        L = 2 * np.arange(1 << bits) + 1 - (1 << bits)
        return L[rng.integers(0, 1 << bits, size=shape)].astype(dtype)
    return rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape).astype(dtype)


def mult(count):
    return (rng.integers(1 << 30, 1 << 31, size=count).astype(np.int64),
            rng.integers(36, 50, size=count).astype(np.int64))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("relu", [False, True])
def test_conv3x3(width, stride, relu):
    wb, ab, wdt, adt = WIDTHS[width]
    hi = (1 << ab) - 1
    x = acts((3, 8, 8, 16), ab)
    zx = int(rng.integers(0, hi))
    zy = int(rng.integers(0, hi // 2))         # room above z_y: a ReLU output keeps a range
    w = weights((3, 3, 16, 32), wb, wdt)
    bias = rng.integers(-(1 << 20), 1 << 20, size=32)
    m0, n = mult(32)
    lo = zy if relu else 0
    want = reference.conv(x, zx, w, bias, m0, n, zy, lo, hi, stride, 1, 1, 1)
    got = kernels.conv(x, zx, w, bias, m0, n, zy, lo, hi, stride, 1, 1, 1, np.zeros(1, adt))
    assert got.dtype == np.int32 and want.shape == got.shape
    assert np.array_equal(got, want)
    assert len(np.unique(want)) > 10            # not a saturated, trivially equal output
    if wb <= 8:
        for path in FAST:                      # the vnni path where the processor has it
            assert np.array_equal(fast_harness.conv3x3(x, zx, w, bias, m0, n, zy, lo, hi, stride, path), want), path


@pytest.mark.parametrize("ab", [8, 16])
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 8)])
def test_add(ab, stride, pad):
    hi = (1 << ab) - 1
    a = acts((2, 4, 4, 32), ab)
    b = acts((2, 4 * stride, 4 * stride, 32 - 2 * pad), ab)
    za, zb, zy = (int(v) for v in rng.integers(0, hi, 3))
    ka, kb = 1 << 28, int(rng.integers(1 << 26, 1 << 28))
    m0, n = mult(1)
    args = (a, za, b, zb, ka, kb, stride, pad, int(m0[0]), int(n[0]) + 12, zy, zy, hi)
    assert np.array_equal(kernels.add(*args), reference.add(*args))


@pytest.mark.parametrize("ab", [8, 16])
def test_gap_and_linear(ab):
    hi = (1 << ab) - 1
    x = acts((5, 8, 8, 64), ab)
    args = (x, 3, 1 << 30, 36, 7, 0, hi)               # M = 1/64
    assert np.array_equal(kernels.gap(*args), reference.gap(*args))
    p = acts((5, 64), ab)
    w = weights((64, 10), 16 if ab == 16 else 8, np.int16 if ab == 16 else np.int8)
    bias = rng.integers(-(1 << 30), 1 << 30, size=10)
    m0, n = mult(10)
    args = (p, 5, w, bias, m0, n + 8, 100, 0, hi)
    assert np.array_equal(kernels.linear(*args), reference.linear(*args))


def test_input_lut():
    images = rng.integers(0, 256, size=(4, 32, 32, 3)).astype(np.uint8)
    lut = rng.integers(0, 256, size=(3, 256)).astype(np.int32)
    got = kernels.input_lut(images, lut)
    assert np.array_equal(got, reference.input_lut(images, lut))
    assert got[1, 2, 3, 2] == lut[2, images[1, 2, 3, 2]]


def test_conv_by_hand():
    """One 3x3 image, one channel, all-ones weights, M = 1/2: the centre sees 9 taps,
    a corner 4; padded taps hold z_x = 2 and add nothing."""
    x = np.full((1, 3, 3, 1), 3, np.int32)              # real value 3 - 2 = 1 everywhere
    w = np.ones((3, 3, 1, 1), np.int8)
    out = kernels.conv(x, 2, w, np.array([1]), np.array([1 << 30]), np.array([31]),
                       10, 0, 255, 1, 1, 1, 1, np.zeros(1, np.int32))
    # acc = 1 + taps; y = 10 + floor(acc/2 + 1/2)
    assert out[0, :, :, 0].tolist() == [[13, 14, 13], [14, 15, 14], [13, 14, 13]]
    assert np.array_equal(out, reference.conv(x, 2, w, np.array([1]), np.array([1 << 30]),
                                              np.array([31]), 10, 0, 255, 1, 1, 1, 1))


def test_add_shortcut_by_hand():
    """Option A: a 2x2 block input, stride 2, one pad channel each side holding z_b."""
    a = np.full((1, 1, 1, 3), 5, np.int32)              # real 5 - 5 = 0
    b = np.array([[[[7], [0]], [[0], [0]]]], np.int32)  # (1,2,2,1); b[0,0,0] real 7 - 1 = 6
    out = kernels.add(a, 5, b, 1, 1 << 28, 1 << 28, 2, 1, 1 << 30, 59, 0, 0, 255)   # M = 2^-29 * 2^28 ... = 1/2^29
    want = reference.add(a, 5, b, 1, 1 << 28, 1 << 28, 2, 1, 1 << 30, 59, 0, 0, 255)
    assert np.array_equal(out, want)
    assert out[0, 0, 0].tolist() == [0, 3, 0]           # 6 * 2^28 * 2^30 / 2^59 = 3
