"""The converters: one module per op kind, the exporter's half of that kind (docs/engine.md
"Op kinds"), as TFLite Micro's converter has one per builtin op.  The engine's half is
intengine/ops/; the two share only the file format (docs/format.md "Ops"): the kind's NAME
and FIELDS, which tests/test_ops.py checks are the same on both sides.

Every module in CONVERTERS defines:
    NAME, FIELDS, WEIGHTED    as the engine's module of the same kind declares them
    INFO                      header fields written for people and tools, which the engine ignores
    integers(op, qpts, weights, bias_shift) -> the op's integers (exporter/build.py)
    header(q, t)              the op's header entry, its arrays appended to t (build.Tables); the
                              clamp's lo and hi (common.clamp) are build.to_file's
    float_op(op, acts, weight) the float value before ReLU (exporter/simulate.py's walks)
    exact(q, acts, pts)       the integers of docs/quantization.md in torch int64, before the
                              clamp, written independently of the engine (section 11)
    file_codes(codes)         (WEIGHTED kinds) the weight codes in the file's order

INPUT (lut.py) is the input table, the one part that is not a header op.
"""
from . import add, avgpool, conv, flatten, gap, linear, lut, maxpool, requant
from .common import CLAMPED, activate, clamp  # noqa: F401

CONVERTERS = {m.NAME: m for m in (conv, linear, add, requant, gap, avgpool, maxpool, flatten)}
INPUT = lut
INTERFACE = ("NAME", "FIELDS", "INFO", "WEIGHTED", "integers", "header", "float_op", "exact")
WEIGHTED_INTERFACE = ("file_codes",)
