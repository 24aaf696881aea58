"""The definitions that the engine's fixed-point helpers (intengine/fixedpoint.py) must equal,
with Python's unbounded integers: test-only oracles."""
from intengine.fixedpoint import ADD_HI_BITS, ADD_LOW_BITS, ADD_SPLIT


def requant_even_exact(acc, m0, n):
    """eq. (16a) with Python ints: round(acc*m0 / 2^n), ties to even."""
    q, rem = divmod(int(acc) * int(m0), 1 << int(n))
    twice = 2 * rem
    return q + 1 if twice > (1 << int(n)) else (q + (q & 1) if twice == (1 << int(n)) else q)


def requant_add(da, db, ah, bh, low, side, n):
    """eq. (14a) with Python ints, as vnni.epilogue computes it: equals
    requant(K_a*da + K_b*db, M0, n) for the constants of add_split."""
    ds = da if side else db
    t = da * ah + db * bh + (1 << (n - ADD_SPLIT - 1)) + ((ds * low) >> ADD_SPLIT)
    return t >> (n - ADD_SPLIT)


def requant_add32(da, db, ah, bh, low, side, n):
    """eq. (14b) with Python ints, as vnni.epilogue computes it for n >= ADD_LANES32_N_MIN,
    every intermediate checked to fit int32: equals requant_add."""
    hb, lb = ADD_HI_BITS, ADD_LOW_BITS
    ds = da if side else db

    def i32(v):
        assert -(1 << 31) <= v < 1 << 31, v
        return v
    lt = i32(i32(ds * (low >> lb)) + i32(i32(ds * (low & ((1 << lb) - 1))) >> lb)) >> lb
    hi = i32(i32(da * (ah >> hb)) + i32(db * (bh >> hb)) + (1 << (n - ADD_SPLIT - hb - 1)))
    lo = i32(i32(da * (ah & ((1 << hb) - 1))) + i32(db * (bh & ((1 << hb) - 1))) + lt)
    return i32(hi + (lo >> hb)) >> (n - ADD_SPLIT - hb)


def requant_exact(acc, m0, n):
    """eq. (10) with Python ints: the definition that eq. (11) must equal."""
    return (int(acc) * int(m0) + (1 << (int(n) - 1))) >> int(n)
