"""Fixed-point helpers: the requantization of docs/quantization.md section 6.

Each helper has a one-line contract. `requant` is the scalar form used inside the Numba
kernels; `requant_array` is the NumPy form used by the reference. They are the same
formula, eq. (11), and tests/test_fixedpoint.py checks both against Python's unbounded
integers, eq. (10) (the oracles are in tests/oracles.py). Nothing here uses floats.
"""
import numpy as np
from numba import njit

M0_MIN, M0_MAX = 1 << 30, (1 << 31) - 1     # eq. (9): 2^30 <= M0 < 2^31 (or M0 == 0)
SHIFT_MIN, SHIFT_MAX = 31, 62               # eq. (9): n in [31, 62]
REQUANT_ACC_LIMIT = 1 << 62                  # eq. (11) is exact for |acc| < 2^62
FILE_ACC_BOUND = 1 << 47                     # section 5: a file's accumulators stay below 2^47
INT32_ACC_MAX = (1 << 31) - 1                # an int32 accumulator (the fast path, kernels.py)
LOW31 = (1 << 31) - 1


def acc_bound(bias_abs_max, taps, w_abs_max, in_bits):
    """The largest |accumulator| of a conv/linear layer, section 5: |bias| + taps * |w| *
    (2^in_bits - 1), the input centred on its zero point (|x - z| < 2^in_bits).  The one
    definition: the exporter, validate, model (int32 or int64 sums) and graph.py use it."""
    return int(bias_abs_max) + int(taps) * int(w_abs_max) * ((1 << int(in_bits)) - 1)


@njit(cache=True, inline="always")
def _split(acc, m0, n):
    """(t, r) with acc*m0 + 2^(n-1) == t*2^31 + r, 0 <= r < 2^31, for |acc| < 2^62, eq. (11)."""
    acc = np.int64(acc)
    a = (acc >> 31) * np.int64(m0)          # h*M0, |h| <= 2^31
    b = (acc & LOW31) * np.int64(m0)        # l*M0, 0 <= l < 2^31
    if n >= 32:
        a += np.int64(1) << (n - 32)
    else:
        b += np.int64(1) << 30
    return a + (b >> 31), b & LOW31


@njit(cache=True, inline="always")
def requant(acc, m0, n):
    """floor((acc*m0 + 2^(n-1)) / 2^n) exactly, for int64 |acc| < 2^62, eq. (11).  Round half up."""
    t, _ = _split(acc, m0, n)
    return t >> (n - 31)


@njit(cache=True, inline="always")
def requant_even(acc, m0, n):
    """Like requant, but an exact tie rounds to the even integer, eq. (16a)."""
    t, r = _split(acc, m0, n)
    q = t >> (n - 31)
    # a tie is exactly when t*2^31 + r is a multiple of 2^n
    if r == 0 and (t & ((np.int64(1) << (n - 31)) - 1)) == 0 and (q & 1) == 1:
        q -= 1
    return q


@njit(cache=True, inline="always")
def clamp(x, lo, hi):
    """min(max(x, lo), hi)."""
    return lo if x < lo else (hi if x > hi else x)


def _split_array(acc, m0, n):
    """_split on int64 arrays (m0, n broadcast against acc)."""
    acc = np.asarray(acc, dtype=np.int64)
    m0 = np.asarray(m0, dtype=np.int64)
    n = np.asarray(n, dtype=np.int64)
    a = (acc >> 31) * m0 + np.where(n >= 32, np.left_shift(1, np.maximum(n - 32, 0)), 0)
    b = (acc & LOW31) * m0 + np.where(n >= 32, 0, 1 << 30)
    return a + (b >> 31), b & LOW31, n


def requant_array(acc, m0, n):
    """eq. (11) on int64 arrays."""
    t, _, n = _split_array(acc, m0, n)
    return t >> (n - 31)


def requant_even_array(acc, m0, n):
    """eq. (16a) on int64 arrays."""
    t, r, n = _split_array(acc, m0, n)
    q = t >> (n - 31)
    tie = (r == 0) & ((t & ((np.int64(1) << (n - 31)) - 1)) == 0) & ((q & 1) == 1)
    return q - tie


# eq. (12): the add's common unit u = max(s_a, s_b) / 2^ADD_UNIT_BITS, so the larger factor K is
# exactly 2^ADD_UNIT_BITS and the other at most that (+1 from rounding).  eq. (14a) splits
# K*M0 at the same power, which is what makes that factor's low part zero (add_split).
ADD_UNIT_BITS = 28
ADD_FACTOR_MAX = (1 << ADD_UNIT_BITS) + 1
ADD_SPLIT = ADD_UNIT_BITS
ADD_LANE_MAX = (1 << 31) - 1                 # eq. (14a): each factor and the result fit int32
# eq. (14b), (14a) with int32 products only: A_h and B_h split at 2^ADD_HI_BITS, L at 2^ADD_LOW_BITS;
# it needs n - 28 > ADD_HI_BITS (the rounding half is then a multiple of 2^ADD_HI_BITS)
ADD_HI_BITS, ADD_LOW_BITS = 16, 14
ADD_LANES32_N_MIN = ADD_SPLIT + ADD_HI_BITS + 1


def add_split(ka, kb, m0, n, d_max=255):
    """The constants of eq. (14a), or None where the int32-lane form does not apply:
    (A_h, B_h, L, side, n) with K_a*M0 = A_h*2^28 + A_l, K_b*M0 = B_h*2^28 + B_l, L the low
    part that is not zero (side 1: a's, 0: b's; L = 0 when both are), for |d_a|, |d_b| <= d_max.
    None when both low parts are non-zero (eq. (12) makes one K exactly 2^ADD_UNIT_BITS = 2^ADD_SPLIT,
    so an exported file always has one), when A_h or B_h does not fit int32, or when the result might not."""
    ah, al = divmod(int(ka) * int(m0), 1 << ADD_SPLIT)
    bh, bl = divmod(int(kb) * int(m0), 1 << ADD_SPLIT)
    if al and bl or max(ah, bh) > ADD_LANE_MAX or int(n) < SHIFT_MIN:
        return None
    side, low = (1, al) if al else (0, bl)
    top = d_max * (ah + bh + 1) + (1 << (int(n) - ADD_SPLIT - 1))
    if (top >> (int(n) - ADD_SPLIT)) + 1 > ADD_LANE_MAX - 512:
        return None
    return ah, bh, low, side, int(n)
