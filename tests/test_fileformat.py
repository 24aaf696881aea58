"""docs/format.md: packing order, the content digest, and bad files get one clear line before
any kernel runs.  The 200-case fuzz corpus is tests/test_fuzz.py."""
import json
import zipfile

import numpy as np
import pytest

import intengine
from conftest import one_line_error, run_cli
from intengine import fileformat
from intengine.fileformat import FormatError


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_pack_round_trip(bits):
    rng = np.random.default_rng(bits)
    lo, hi = (0, 1 << bits) if bits <= 4 else (-(1 << (bits - 1)), 1 << (bits - 1))
    codes = rng.integers(lo, hi, size=1001)
    packed = fileformat.pack_codes(codes, bits)
    assert packed.dtype == np.uint8 and len(packed) == fileformat.packed_nbytes(1001, bits)
    assert np.array_equal(fileformat.unpack_codes(packed, bits, 1001), codes)


def test_bit_order_by_hand():
    assert fileformat.pack_codes([1, 2, 3, 0], 2).tolist() == [0b00111001]   # first code, low bits
    assert fileformat.pack_codes([0xA, 0x5, 0x3], 4).tolist() == [0x5A, 0x03]
    assert fileformat.pack_codes([-2, 1], 16).tolist() == [0xFE, 0xFF, 0x01, 0x00]


def rewrite(good, tmp_path, mutate):
    header, arrays = fileformat.read(good)
    arrays = {k: v for k, v in arrays.items() if k not in ("magic", "version", "header")}
    mutate(header, arrays)
    out = tmp_path / "bad.npz"
    fileformat.write(out, header, arrays)
    return out


def _set(name, fn):
    def mutate(header, arrays):
        arrays[name] = fn(arrays[name].copy())
    return mutate


def _op(i, key, value):
    def mutate(header, arrays):
        header["ops"][i][key] = value
    return mutate


BAD = {
    "multiplier": (_set("multiplier", lambda a: np.where(np.arange(len(a)) == 3, 5, a).astype(np.int32)), "multiplier"),
    "shift": (_set("shift", lambda a: np.where(np.arange(len(a)) == 0, 70, a).astype(np.int8)), "shift"),
    "zero point": (_set("act_zero_point", lambda a: a + 1000), "zero point"),
    "lut": (_set("lut", lambda a: a[:2]), "LUT"),
    "codebook": (_set("codebook", lambda a: (a * 100).astype(np.int16)), "codebook"),
    "bias dtype": (_set("bias", lambda a: a.astype(np.float32)), "dtype"),
    "cin": (_op(1, "cin", 17), "cin=17"),
    "stride": (_op(4, "stride", 2), "conv"),
    "reads later point": (_op(0, "in", 5), "before it is computed"),
    "weight bytes": (_op(2, "w_nbytes", 7), "weight bytes"),
    "unknown op": (_op(3, "op", "softmax"), "unknown op"),
    "bits": (_op(2, "bits_w", 3), "weight bits"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_invalid_fields_are_refused(exported, tmp_path, case):
    mutate, match = BAD[case]
    bad = rewrite(exported[4][0], tmp_path, mutate)
    with pytest.raises(FormatError, match=match):
        intengine.load(bad)


def _members(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def test_wrong_version_magic_and_members(exported, tmp_path):
    good = exported[8][0]
    arrays = _members(good)
    cases = {"version": dict(arrays, version=np.array(4, np.int32)),
             "magic": dict(arrays, magic=np.frombuffer(b"NOTOURS!", np.uint8)),
             "missing": {k: v for k, v in arrays.items() if k != "bias"},
             "header": dict(arrays, header=np.frombuffer(b"{not json", np.uint8))}
    for name, match in [("version", "format version 4"), ("magic", "wrong magic"),
                        ("missing", "missing arrays ['bias']"), ("header", "not valid JSON")]:
        np.savez(tmp_path / f"{name}.npz", **cases[name])
        with pytest.raises(FormatError, match=match.replace("[", r"\[").replace("]", r"\]")):
            intengine.load(tmp_path / f"{name}.npz")
        assert "python -m exporter --bits" in str(pytest.raises(FormatError, intengine.load, tmp_path / f"{name}.npz").value)


@pytest.mark.parametrize("member,value", [("weights", 0xFF), ("bias", 2**31 - 1), ("multiplier", 2**31 - 1)])
def test_digest_refuses_edits_within_valid_ranges(exported, tmp_path, member, value):
    """The issue's examples: re-saved with numpy, every value still in range -> refused."""
    arrays = _members(exported[4][0])
    arrays[member] = np.full_like(arrays[member], value)
    bad = tmp_path / "edited.npz"
    np.savez(bad, **arrays)
    with pytest.raises(FormatError, match="modified or damaged") as e:
        intengine.load(bad)
    assert f"python -m exporter --bits 4 --out {bad}" in str(e.value)


def test_digest_is_in_the_header_and_covers_the_content(exported):
    header, arrays = fileformat.read(exported[2][0])
    assert fileformat.VERSION == 3 and int(arrays["version"]) == 3
    digest = header[fileformat.DIGEST_KEY]
    assert len(digest) == 64 and digest == fileformat.content_digest(header, arrays)
    for name in fileformat.MEMBERS:                   # every member changes the digest
        if name == "header":
            changed = dict(header, classes=header["classes"][::-1])
            assert fileformat.content_digest(changed, arrays) != digest
            continue
        a = arrays[name].copy()
        a.reshape(-1)[0] += 1
        assert fileformat.content_digest(header, dict(arrays, **{name: a})) != digest, name


def test_version_1_files_are_refused_with_the_command(exported, tmp_path):
    arrays = _members(exported[4][0])
    header = json.loads(arrays["header"].tobytes())
    header.pop(fileformat.DIGEST_KEY)
    v1 = tmp_path / "v1.npz"
    np.savez(v1, **dict(arrays, version=np.array(1, np.int32),
                        header=np.frombuffer(json.dumps(header).encode(), np.uint8)))
    r = run_cli("intengine", "eval", v1)
    one_line_error(r, "format version 1")
    assert f"python -m exporter --bits 4 --out {v1}" in r.stderr


def test_cli_one_line_errors(exported, tmp_path):
    good = exported[2][0]
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    one_line_error(run_cli("intengine", "info", trunc), "truncated or damaged")
    one_line_error(run_cli("intengine", "eval", tmp_path / "none.npz"), "no such file")
    text = tmp_path / "text.npz"                       # issue 8 item 5: never suggest allow_pickle
    text.write_text("hello")
    r = run_cli("intengine", "eval", text)
    one_line_error(r, "not a model file written by the exporter")
    assert "pickle" not in r.stderr
    pickled = tmp_path / "pickle.npz"
    np.savez(pickled, **dict(_members(good), header=np.array([{"ops": []}], dtype=object)))
    r = run_cli("intengine", "info", pickled)
    one_line_error(r, "pickle")
    assert "allow_pickle" not in r.stderr
    bad = rewrite(good, tmp_path, BAD["multiplier"][0])
    one_line_error(run_cli("intengine", "eval", bad), "multiplier")


def test_zip_members_in_order_without_dates(exported):
    with zipfile.ZipFile(exported[4][0]) as z:
        infos = z.infolist()
    assert [i.filename[:-4] for i in infos] == list(fileformat.MEMBERS)
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}


def _graph_file(tmp_path, kinds):
    """A random graph (exporter/synthetic.py) with every kind in `kinds`, written -> (header, arrays)."""
    from exporter import synthetic
    for seed in range(500):
        qnet, classes = synthetic.random_qnet(np.random.default_rng(seed))
        if kinds <= {op["op"] if op["op"] != "conv" or op["groups"] < op["cin"] else "depthwise"
                     for op in qnet["ops"]}:
            synthetic.write(qnet, classes, tmp_path / "g.npz")
            return tmp_path / "g.npz"
    raise AssertionError(f"no graph with {kinds}")


def _first(kind, key, value):
    """Set `key` of the first op of `kind` (depthwise: a conv with groups = cin)."""
    def mutate(header, arrays):
        op = next(o for o in header["ops"] if o["op"] == kind or
                  kind == "depthwise" and o["op"] == "conv" and o["groups"] == o["cin"] > 1)
        op[key] = value(op) if callable(value) else value
    return mutate


V3_BAD = {
    "depthwise groups": (_first("depthwise", "groups", lambda op: op["cin"] + 1), "groups"),
    "groups not dividing": (_first("depthwise", "groups", lambda op: op["cin"] - 1 if op["cin"] > 2 else 0),
                            "groups|not an integer"),
    "kernel too large": (_first("conv", "kh", 17), "'kh'"),
    "padding past the kernel": (_first("conv", "ph", lambda op: op["kh"]), "'ph'"),
    "pool bigger than its input": (_first("maxpool", "kh", 16), "do not fit|'ph'|'kh'"),
    "pool padding": (_first("avgpool", "ph", lambda op: op["kh"]), "'ph'"),
    "flatten size": (lambda h, a: h["points"][next(o["out"] for o in h["ops"] if o["op"] == "flatten")]
                     ["shape"].__setitem__(0, 7), "flatten|linear|do not fit"),
    "clamp inverted": (_first("gap", "lo", lambda op: op["hi"] + 1), "clamp|'lo'"),
    "clamp missing": (lambda h, a: h["ops"][0].pop("hi"), "lacks fields \\['hi'\\]"),
    "maxpool changes the zero point": (lambda h, a: a.__setitem__("act_zero_point", np.where(
        np.arange(len(a["act_zero_point"])) == next(o["out"] for o in h["ops"] if o["op"] == "maxpool"),
        (a["act_zero_point"] + 1) % 2, a["act_zero_point"]).astype(np.int32)), "zero point"),
    "lut rows": (_set("lut", lambda a: np.concatenate([a, a[:1]])), "LUT"),
}


@pytest.mark.parametrize("case", list(V3_BAD))
def test_invalid_version_3_fields_are_refused(tmp_path, case):
    """The fields of format version 3, malformed in a generated graph: one FormatError that
    names the op or field."""
    needs = {"depthwise": "depthwise", "groups": "depthwise", "pool bigger": "maxpool", "maxpool": "maxpool",
             "pool padding": "avgpool", "flatten": "flatten", "clamp inverted": "gap"}
    good = _graph_file(tmp_path, {next((v for k, v in needs.items() if case.startswith(k)), "conv")})
    mutate, match = V3_BAD[case]
    bad = rewrite(good, tmp_path, mutate)
    with pytest.raises(FormatError, match=match):
        intengine.load(bad)


def test_committed_version_2_files_give_the_logits_they_gave_before(data_dir):
    """tests/data/v2_logits.npz holds the integer logits of four committed version-2 files on
    the first 64 test images, computed by the engine before format version 3 (commit 0f4d0f1,
    its reference path; its vnni, portable and scalar paths agreed).  Read through
    upgrade_v2, every path gives them bit for bit."""
    from intengine import cifar10, cpu
    from conftest import ROOT
    want = np.load(ROOT / "tests" / "data" / "v2_logits.npz")
    x = cifar10.load_test(data_dir)[0][:64]
    for name in want.files:
        for kernel in cpu.fast_kernels() + ["scalar"]:
            m = intengine.load(ROOT / "models" / name, kernel=kernel)
            assert m.format_version == 2 and m.kernel == kernel
            assert np.array_equal(m.predict(x), want[name]), (name, kernel)
        assert np.array_equal(m.run(x, reference_ops=True), want[name]), name
