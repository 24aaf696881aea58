"""The op kinds: one module each, the engine's whole definition of its kind (docs/engine.md
"Op kinds"), as TFLite Micro registers one kernel per op.  The exporter's half of each kind
(its converter) is exporter/ops/; the two share only the file format.

Every module in KINDS defines the same names (INTERFACE; tests/test_ops.py checks them):

- the file (docs/format.md "Ops"):
    NAME, FIELDS      the header's "op" value and its fields besides op/name/in/out
    INFO              fields for people that the engine ignores; any other field is refused
    WEIGHTED          True for the kinds with weight codes and per-channel tables
    N_IN, inputs(spec) how many points it reads, and which
    channels(spec)    its entries in the bias, multiplier and shift arrays
    check(c, spec, ins, out) -> multiply-accumulates per image  (c: validate.Context)
- the engine:
    load(op, spec, arrays)    unpack the parameters onto model.Op `op`
    reference                 the plain NumPy integer function: the executable spec
    kernel                    its Numba twin (the scalar path), bit-identical
    run(op, acts, scalar)     apply one of the two to the points `acts`
    lower(op, k, lw)          rows of the fast path's op table (lw: graph.Lowering)

A new kind is one new module here, added to KINDS, its converter in exporter/ops/, plus its
tests; the fast path also needs its row kind in fastops.run_op.  The input LUT (lut.py) is
the one kind that is not a header op: it maps the pixels to point 0.
"""
from . import add, avgpool, conv, flatten, gap, linear, lut, maxpool, requant

KINDS = {m.NAME: m for m in (conv, linear, add, requant, gap, avgpool, maxpool, flatten)}
INPUT = lut
INTERFACE = ("NAME", "FIELDS", "INFO", "WEIGHTED", "N_IN", "inputs", "channels", "check", "load", "reference", "kernel",
             "run", "lower")
