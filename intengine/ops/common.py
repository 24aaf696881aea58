"""The requantize tail that every kind's reference ends with: eq. (8), (14), (16a)."""
import numpy as np

from ..fixedpoint import requant_array


def finish(acc, m0, n, zy, lo, hi, rounding=requant_array):
    """clip(z_y + requantize(acc), lo, hi) as int32."""
    return np.clip(zy + rounding(acc, m0, n), lo, hi).astype(np.int32)


def one_input(spec):
    """The `inputs` of a kind that reads one point."""
    return [spec["in"]]


def one_channel(spec):
    """The `channels` of a kind with one multiplier and shift (no weights)."""
    return 1


def use_one_channel(c, spec):
    """Check and claim the one channel entry of a kind without weights."""
    o = c.int(spec, "offset", 0, c.nch - 1)
    c.use("channels", o, o + 1)


def no_fields(op, spec, arrays):
    """`load` of a kind whose only arrays are its one channel's requantize (model.Op has those)."""

