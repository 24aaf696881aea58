"""eq. (9)-(11): the int64 split requantize equals Python's unbounded integers."""
import random

import numpy as np
import pytest

from intengine.fixedpoint import ADD_LANES32_N_MIN, add_split, requant, requant_array, requant_even, requant_even_array
from oracles import requant_add, requant_add32, requant_even_exact, requant_exact
from exporter.quantize import ExportError, quantize_multiplier

EDGE_ACC = [0, 1, -1, 2, -2, (1 << 31) - 1, -(1 << 31), 1 << 31, (1 << 40) + 12345,
            -(1 << 47), (1 << 47) - 1, (1 << 62) - 1, -(1 << 62) + 1]
EDGE_M0 = [0, 1 << 30, (1 << 31) - 1, 1518500250]
EDGE_N = [31, 32, 33, 40, 61, 62]


def cases():
    out = [(a, m, n) for a in EDGE_ACC for m in EDGE_M0 for n in EDGE_N]
    rng = random.Random(0)
    for _ in range(3000):
        out.append((rng.randrange(-(1 << 62) + 1, 1 << 62), rng.randrange(1 << 30, 1 << 31),
                    rng.randrange(31, 63)))
    return out


def test_requant_matches_unbounded_integers():
    c = cases()
    acc, m0, n = (np.array(col, np.int64) for col in zip(*c))
    vec = requant_array(acc, m0, n)
    for i, (a, m, s) in enumerate(c):
        want = requant_exact(a, m, s)
        assert requant(a, m, s) == want, (a, m, s)
        assert vec[i] == want, (a, m, s)


def test_requant_even_matches_unbounded_integers():
    c = cases()
    rng = random.Random(1)
    for _ in range(500):                              # exact ties: acc*m0 = (2k+1) * 2^(n-1)
        n = rng.randrange(31, 40)
        c.append((((2 * rng.randrange(-1000, 1000) + 1) << (n - 1 - 30)), 1 << 30, n))
    acc, m0, n = (np.array(col, np.int64) for col in zip(*c))
    vec = requant_even_array(acc, m0, n)
    for i, (a, m, s) in enumerate(c):
        want = requant_even_exact(a, m, s)
        assert requant_even(a, m, s) == want, (a, m, s)
        assert vec[i] == want, (a, m, s)
    assert [requant_even(v, 1 << 30, 36) for v in (32, 96, 160, 224, -32, -96)] == [0, 2, 2, 4, 0, -2]


def test_fused_add_split_matches_unbounded_integers():
    """eq. (14a), the fast path's form of the add's requantize, equals eq. (10) on K_a*d_a + K_b*d_b."""
    rng = random.Random(2)
    big = 1 << 28
    ks = [(big, big), (big, 0), (0, big), (big, 1), (1, big), (big, big - 1), (12345678, big),
          (big, 200000000)] + [(big, rng.randrange(big)) if rng.random() < .5 else (rng.randrange(big), big)
                               for _ in range(200)]
    ds = [-255, -254, -1, 0, 1, 2, 254, 255]
    tried = 0
    for ka, kb in ks:
        for m0, n in [(0, 62), (1 << 30, 31), ((1 << 31) - 1, 62), (1518500250, 58), (1 << 30, 59),
                      (rng.randrange(1 << 30, 1 << 31), rng.randrange(31, 63))]:
            c = add_split(ka, kb, m0, n)
            if c is None:                     # only where the result might not fit int32
                assert max(ka, kb) * m0 >> n > 1 << 20, (ka, kb, m0, n)
                continue
            tried += 1
            for da in ds + [rng.randrange(-255, 256) for _ in range(8)]:
                for db in ds + [rng.randrange(-255, 256) for _ in range(8)]:
                    assert requant_add(da, db, *c) == requant_exact(ka * da + kb * db, m0, n), (ka, kb, m0, n, da, db)
    assert tried > 800
    assert add_split(big - 1, big - 3, (1 << 30) + 1, 60) is None          # neither low part is zero


def test_the_int32_lane_form_of_the_add_equals_eq_14a_where_it_applies():
    """eq. (14b): every intermediate fits int32 (the oracle checks each) and the result is
    eq. (14a)'s, at the largest constants A_h, B_h, L and |d| = 255, and from the smallest n it
    takes (ADD_LANES32_N_MIN) to 62."""
    rng = random.Random(3)
    top, low_top = (1 << 31) - 1, (1 << 28) - 1
    consts = [(top, top, low_top), (top, 0, 0), (0, top, low_top), (1 << 16, (1 << 16) - 1, 1 << 14),
              ((1 << 16) - 1, 1, (1 << 14) - 1)] + [(rng.randrange(1 << 31), rng.randrange(1 << 31),
                                                     rng.randrange(1 << 28)) for _ in range(60)]
    ds = [-255, -254, -129, -1, 0, 1, 2, 127, 254, 255]
    ns = [ADD_LANES32_N_MIN, ADD_LANES32_N_MIN + 1, 50, 58, 61, 62]
    tried = 0
    for ah, bh, low in consts:
        for side in (0, 1):
            for n in ns:
                for da in ds + [rng.randrange(-255, 256) for _ in range(4)]:
                    for db in ds + [rng.randrange(-255, 256) for _ in range(4)]:
                        want = requant_add(da, db, ah, bh, low, side, n)
                        assert requant_add32(da, db, ah, bh, low, side, n) == want, (ah, bh, low, side, n, da, db)
                        tried += 1
    assert tried > 100000


def test_round_half_up_by_hand():
    half = 1 << 30          # M = 2^30 / 2^31 = 1/2
    assert [requant(a, half, 31) for a in (-3, -2, -1, 0, 1, 2, 3)] == [-1, -1, 0, 0, 1, 1, 2]
    assert requant(5, half, 32) == 1                 # 5/4 = 1.25 -> 1
    assert requant(6, half, 32) == 2                 # 6/4 = 1.5 -> 2 (half up)
    assert requant(-6, half, 32) == -1               # -1.5 -> -1 (half up, toward +inf)


@pytest.mark.parametrize("m", [2.0 ** -32, 1e-9, 0.001234, 0.25, 0.5, 0.7071, 1 - 2.0 ** -20])
def test_quantize_multiplier(m):
    m0, n = quantize_multiplier(m, "t")
    assert (1 << 30) <= m0 < (1 << 31) and 31 <= n <= 62
    assert abs(m0 / 2.0 ** n - m) <= 2.0 ** -(n + 1) * 1.0000001


def test_quantize_multiplier_limits():
    assert quantize_multiplier(2.0 ** -33, "t") == (0, 62)
    with pytest.raises(ExportError, match=">= 1"):
        quantize_multiplier(1.0, "t")
    with pytest.raises(ExportError, match="rounds to 1"):
        quantize_multiplier(1 - 2.0 ** -40, "t")
    with pytest.raises(ExportError):
        quantize_multiplier(float("nan"), "t")
