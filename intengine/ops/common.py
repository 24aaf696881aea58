"""What several kinds share: the requantize tail that each reference ends with (eq. 8, 14,
16a), the output size of a window, and the small registrations of one-input, one-channel kinds."""
import numpy as np

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
