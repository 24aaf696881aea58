"""The op kinds' registry (intengine/ops/): every kind defines the whole interface, the
places that dispatch on kinds take them from the registry, and the names in a header come
from each kind's FIELDS."""
import inspect

import numpy as np
import pytest

from intengine import fileformat, ops, validate
from intengine.ops import INTERFACE, KINDS, WEIGHTED_INTERFACE


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_defines_the_interface(name):
    mod = KINDS[name]
    missing = [n for n in INTERFACE if not hasattr(mod, n)]
    assert not missing, f"{mod.__name__} lacks {missing}"
    assert mod.NAME == name and mod.N_IN in (1, 2)
    for fn in ("inputs", "channels", "check", "load", "run", "lower", "integers", "header", "float_op", "exact"):
        assert callable(getattr(mod, fn))
    assert hasattr(mod.kernel, "py_func"), "the scalar kernel is a Numba function"
    assert "offset" in mod.FIELDS
    if mod.WEIGHTED:
        assert all(callable(getattr(mod, n, None)) for n in WEIGHTED_INTERFACE)


def test_the_input_lut_kind():
    for n in ("check", "reference", "kernel", "lower", "integers", "exact"):
        assert callable(getattr(ops.INPUT, n))


def test_no_kind_branches_left_in_the_dispatchers():
    """The places that used to branch on the kind (validate, model.Op, graph, the exporter's
    build and simulate) dispatch through KINDS: none compares a kind with a kind name."""
    from exporter import build, simulate
    from intengine import graph, model
    for fn in (validate.check, model.Op, model.Model.run, graph, build.quantize_graph, build.to_file,
               build.widen_outputs, build.quantize_weights_all, simulate.apply, simulate.run_exact,
               simulate.FakeQuantNet):
        src = inspect.getsource(fn)
        for name in KINDS:
            for pat in (f'kind == "{name}"', f'["op"] == "{name}"', f'kind in ("{name}"', f'["op"] in ("{name}"'):
                assert pat not in src, f"{fn.__name__} still branches on {pat}"


def test_header_fields_come_from_the_kinds(exported):
    """Every op of an exported file has exactly its kind's fields (plus op/name/in/out and
    `levels`, the exporter's description of a weighted layer)."""
    header, _ = fileformat.read(exported["w4a4"][0])
    seen = set()
    for spec in header["ops"]:
        kind = KINDS[spec["op"]]
        extra = {"levels"} if kind.WEIGHTED else set()
        assert set(spec) == {"op", "name", "in", "out", *kind.FIELDS, *extra}, spec["name"]
        seen.add(spec["op"])
    assert seen == set(KINDS), "the W4A4 file has every kind"


def test_an_unknown_kind_fails_in_one_line(exported, tmp_path):
    header, arrays = fileformat.read(exported[4][0])
    header["ops"][3]["op"] = "conv1x1"
    with pytest.raises(fileformat.FormatError, match="unknown op 'conv1x1'"):
        validate.check(header, arrays, "f.npz")


def test_context_records_ranges_and_fails_in_one_line():
    arrays = {"multiplier": np.zeros(3)}
    c = validate.Context("f.npz", [], [], arrays)
    c.use("channels", 0, 2)
    assert c.used["channels"] == [(0, 2)] and c.nch == 3
    assert c.int({"name": "a", "k": 2}, "k", 0, 5) == 2
    with pytest.raises(fileformat.FormatError, match="field 'k' = 9 is not an integer in"):
        c.int({"name": "a", "k": 9}, "k", 0, 5)
