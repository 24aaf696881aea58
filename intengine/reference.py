"""The executable spec, gathered: every kind's plain NumPy integer function (docs/quantization.md).

Each is defined with the rest of its kind in intengine/ops/; this module names them all in
one place.  Every kernel (kernels.py, and the fast path) must return exactly what these
return (np.array_equal).  All arithmetic is int64; there are no floats.  Activations are
NHWC int32 arrays.
"""
from .ops.add import reference as add, shortcut  # noqa: F401
from .ops.common import finish  # noqa: F401
from .ops.avgpool import reference as avgpool  # noqa: F401
from .ops.conv import reference as conv  # noqa: F401
from .ops.flatten import reference as flatten  # noqa: F401
from .ops.gap import reference as gap  # noqa: F401
from .ops.linear import reference as linear  # noqa: F401
from .ops.lut import reference as input_lut  # noqa: F401
from .ops.maxpool import reference as maxpool  # noqa: F401
from .ops.requant import reference as requantize  # noqa: F401
