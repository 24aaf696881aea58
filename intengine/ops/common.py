"""What several kinds share: the requantize tail that each reference ends with (eq. 8, 14,
16a), a window's output size and taps (the two pools), and the small registrations of
one-input, one-channel kinds."""
import numpy as np
from numba import njit, prange

from ..fixedpoint import requant_array

MAX_KERNEL = 16                        # a window's side: conv and pools (docs/format.md "Limits")
MAX_STRIDE = 16


def finish(acc, m0, n, zy, lo, hi, rounding=requant_array):
    """clip(z_y + requantize(acc), lo, hi) as int32."""
    return np.clip(zy + rounding(acc, m0, n), lo, hi).astype(np.int32)


def out_size(size, k, stride, pad):
    """The output length of a window of k taps at `stride` over `size` inputs padded by `pad`
    on both sides (PyTorch's floor rule)."""
    return (size + 2 * pad - k) // stride + 1


def window_taps(x, kh, kw, stride, ph, pw, fill):
    """The reference pools' taps: x (N,H,W,C) int64 padded with `fill`, then for each of the
    kh x kw taps the (N,Ho,Wo,C) view of what that tap sees in every window."""
    N, H, W, C = x.shape
    ho, wo = out_size(H, kh, stride, ph), out_size(W, kw, stride, pw)
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)), constant_values=fill)
    return [xp[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            for ky in range(kh) for kx in range(kw)]


@njit(cache=True, parallel=True)
def window_kernel(x, kh, kw, stride, ph, pw, zx, largest):
    """The scalar pools' window loop: x (N,H,W,C) -> (N,Ho,Wo,C) int64, the largest value of
    each window (largest=True; -1 when no tap is inside, which cannot happen for a valid
    window) or the sum of x - zx over its taps inside the input (padding adds nothing)."""
    N, H, W, C = x.shape
    Ho, Wo = (H + 2 * ph - kh) // stride + 1, (W + 2 * pw - kw) // stride + 1
    out = np.empty((N, Ho, Wo, C), np.int64)
    for r in prange(N * Ho):
        i, oy = r // Ho, r % Ho
        for ox in range(Wo):
            for c in range(C):
                acc = np.int64(-1) if largest else np.int64(0)
                for ky in range(kh):
                    iy = oy * stride + ky - ph
                    if iy < 0 or iy >= H:
                        continue
                    for kx in range(kw):
                        ix = ox * stride + kx - pw
                        if ix >= 0 and ix < W:
                            v = np.int64(x[i, iy, ix, c])
                            acc = max(acc, v) if largest else acc + v - zx
                out[i, oy, ox, c] = acc
    return out


def one_input(spec):
    """The `inputs` of a kind that reads one point."""
    return [spec["in"]]


def one_channel(spec):
    """The `channels` of a kind with one multiplier and shift (no weights)."""
    return 1


def no_channel(spec):
    """The `channels` of a kind that does not requantize (max pool, flatten)."""
    return 0


def use_one_channel(c, spec):
    """Check and claim the one channel entry of a kind without weights."""
    o = c.int(spec, "offset", 0, c.nch - 1)
    c.use("channels", o, o + 1)


def no_fields(op, spec, arrays):
    """`load` of a kind whose only arrays are its one channel's requantize (model.Op has those)."""


def window(c, spec, sin, sout, name):
    """Check a pool's window fields (kh, kw, stride, ph, pw) against its shapes -> (kh, kw, s, ph, pw)."""
    kh, kw = c.int(spec, "kh", 1, MAX_KERNEL), c.int(spec, "kw", 1, MAX_KERNEL)
    s = c.int(spec, "stride", 1, MAX_STRIDE)
    ph, pw = c.int(spec, "ph", 0, kh // 2), c.int(spec, "pw", 0, kw // 2)
    if len(sin) != 3:
        c.fail(f"{name} {spec['name']!r}: input {sin} is not an H x W x C map")
    ho, wo = out_size(sin[0], kh, s, ph), out_size(sin[1], kw, s, pw)
    if ho < 1 or wo < 1 or sout != (ho, wo, sin[2]):
        c.fail(f"{name} {spec['name']!r}: shapes {sin} -> {sout} do not fit a {kh}x{kw} window, "
               f"stride {s}, padding ({ph}, {pw})")
    return kh, kw, s, ph, pw
