"""The op kinds' two registries, the engine's (intengine/ops/) and the exporter's
(exporter/ops/): every kind defines its side's interface, both sides name the same kinds with
the same fields, the places that dispatch on kinds take them from a registry, and the names
in a header come from each kind's FIELDS."""
import inspect

import numpy as np
import pytest

from exporter.ops import CONVERTERS, INTERFACE as CONVERTER_INTERFACE, WEIGHTED_INTERFACE
from exporter import ops as converters
from intengine import fileformat, ops, validate
from intengine.ops import INTERFACE, KINDS


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_kind_defines_the_engine_interface(name):
    mod = KINDS[name]
    missing = [n for n in INTERFACE if not hasattr(mod, n)]
    assert not missing, f"{mod.__name__} lacks {missing}"
    assert mod.NAME == name and mod.N_IN in (1, 2)
    for fn in ("inputs", "channels", "check", "load", "run", "lower"):
        assert callable(getattr(mod, fn))
    assert hasattr(mod.kernel, "py_func"), "the scalar kernel is a Numba function"
    # a kind with channel entries (a requantize) says where they start; one without has none
    assert ("offset" in mod.FIELDS) == (mod.channels({"cout": 4}) > 0), name


@pytest.mark.parametrize("name", sorted(CONVERTERS))
def test_every_converter_defines_the_exporter_interface(name):
    mod = CONVERTERS[name]
    missing = [n for n in CONVERTER_INTERFACE if not hasattr(mod, n)]
    assert not missing, f"{mod.__name__} lacks {missing}"
    for fn in ("integers", "header", "float_op", "exact"):
        assert callable(getattr(mod, fn))
    if mod.WEIGHTED:
        assert all(callable(getattr(mod, n, None)) for n in WEIGHTED_INTERFACE)


def test_both_sides_name_the_same_kinds_with_the_same_fields():
    """The engine and the exporter share only the format: each kind's NAME, FIELDS and
    WEIGHTED, declared on each side; and the fields the exporter writes only for people
    (INFO) are none that the engine reads."""
    assert set(KINDS) == set(CONVERTERS)
    for name in KINDS:
        engine, converter = KINDS[name], CONVERTERS[name]
        assert (engine.NAME, engine.FIELDS, engine.INFO, engine.WEIGHTED) == \
            (converter.NAME, converter.FIELDS, converter.INFO, converter.WEIGHTED), name
        assert not set(converter.INFO) & set(engine.FIELDS), name


def test_the_input_lut_on_both_sides():
    for n in ("check", "reference", "kernel", "lower"):
        assert callable(getattr(ops.INPUT, n))
    for n in ("integers", "exact"):
        assert callable(getattr(converters.INPUT, n))


def test_no_kind_branches_left_in_the_dispatchers():
    """The places that used to branch on the kind (validate, model.Op, graph, the exporter's
    build and simulate) dispatch through a registry: none compares a kind with a kind name."""
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
    the converter's INFO, such as `levels`, the description of a weighted layer)."""
    header, _ = fileformat.read(exported["w4a4"][0])
    seen = set()
    for spec in header["ops"]:
        kind = KINDS[spec["op"]]
        assert set(spec) == {"op", "name", "in", "out", *kind.FIELDS, *CONVERTERS[spec["op"]].INFO}, spec["name"]
        seen.add(spec["op"])
    assert seen == {"conv", "linear", "add", "requant", "gap"}, seen   # ResNet20's; the rest: test_graphs.py


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
