"""The scalar path's Numba kernels, gathered: each kind's twin of its reference, defined with
the rest of the kind in intengine/ops/ (tests/test_kernels.py checks every one against
reference.py).

NHWC int32 activations.  Weights are int8 (<= 8 bits) or int16 (16 bits), already
unpacked.  The conv accumulator type is the dtype of `acc_like`: int32 where the bound of
docs/quantization.md section 5 allows it, else int64.  Integer arithmetic only:
tests/test_integer_only.py scans the LLVM IR of every compiled signature for floats.
"""
from .ops.add import kernel as add  # noqa: F401
from .ops.avgpool import kernel as avgpool  # noqa: F401
from .ops.conv import kernel as conv  # noqa: F401
from .ops.flatten import kernel as flatten  # noqa: F401
from .ops.gap import kernel as gap  # noqa: F401
from .ops.linear import kernel as linear  # noqa: F401
from .ops.lut import kernel as input_lut  # noqa: F401
from .ops.maxpool import kernel as maxpool  # noqa: F401
from .ops.requant import kernel as requantize  # noqa: F401
