"""The activation fake-quant of QAT in one pass each way (docs/quantization.md section 15):
Numba twins of qat.LSQ, the torch reference, equal to it bit for bit in the output and in both
gradients (tests/test_qat.py).  The reference takes ten elementwise passes over a point's
float32 activations per step; these take two, which is most of a QAT epoch's time beside the
convolutions.

forward(t, s, zp, hi): v = t / s, c = clamp(floor(v + 0.5) + zp, 0, hi); out = (c - zp) s, and
the code c into an unsigned array wide enough for hi (uint8, uint16 at 16 bits).
backward(g, t, code, ...) recomputes v = t / s, the same float32 division, and writes
grad_t = g * inside and g * ds, ds = c - zp - v inside and c - zp outside; torch sums the
latter, as the reference does, so the step's gradient is its sum in the same order.  Every
operation is the reference's, in float32, in the same order: no fast math, no reciprocal.
The rules (qat.LSQ.RULES): 0 "lsq", -zp <= v <= hi - zp; 1 "interior", 0 < c < hi."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def forward(t, s, zp, hi, out, code):
    half, zero = np.float32(0.5), np.float32(0.0)
    for i in prange(t.size):
        c = np.floor(t[i] / s + half) + zp
        c = min(max(c, zero), hi)
        code[i] = c                       # an integer in [0, hi]: exact in the code's uint dtype
        out[i] = (c - zp) * s


@njit(parallel=True, cache=True)
def backward(g, t, code, s, zp, hi, rule, grad_t, grad_s):
    lo_v, hi_v = -zp, hi - zp
    zero, one = np.float32(0.0), np.float32(1.0)
    for i in prange(t.size):
        c = np.float32(code[i])
        v = t[i] / s
        if rule == 0:
            inside = v >= lo_v and v <= hi_v
        else:
            inside = c > zero and c < hi
        grad_t[i] = g[i] * (one if inside else zero)
        grad_s[i] = g[i] * ((c - zp - v) if inside else (c - zp))
