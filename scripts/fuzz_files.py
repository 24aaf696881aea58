"""A seeded fuzz corpus of damaged model files and checkpoints, and the driver that runs it
through the command lines in one process (docs/reliability.md, tests/test_fuzz.py).

    python scripts/fuzz_files.py make GOOD.npz DIR [--seed 0]       # >= 200 files + DIR/cases.json
    python scripts/fuzz_files.py check DIR --data-dir D              # intengine info/verify/eval on each
    python scripts/fuzz_files.py make-checkpoints GOOD.pt GOOD.npz DIR   # ~30 bad checkpoints (torch)
    python scripts/fuzz_files.py check-exporter DIR --data-dir D     # python -m exporter on each

The oracle, per case and command: exit status 2 with exactly one `error:` line on stderr
that contains the case's keyword (when it has one), or -- only where the content is proven
intact, by reading it back and comparing every array and the header with the valid file --
exit 0 with output identical to the valid file's.  Never a traceback, another exit status,
more than 10 s, or an allocation beyond the address-space limit the driver sets.
`check` prints `fuzz: tried N, passed M` and exits 0 only if M == N.
"""
import contextlib
import io
import json
import os
import random
import re
import resource
import signal
import sys
import time
import traceback
import zipfile
from pathlib import Path

import click
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from intengine import fileformat                                    # noqa: E402
from intengine.fileformat import DIGEST_KEY, MEMBERS, canonical_json, content_digest   # noqa: E402

CASE_SECONDS = 10
ADDRESS_SPACE = 6 << 30          # the driver's RLIMIT_AS: an attempt to allocate gigabytes fails


# ---------------------------------------------------------------- building zips by hand

def npy(a, allow_pickle=False):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(a), allow_pickle=allow_pickle)
    return buf.getvalue()


def npy_with_header(header_dict, payload):
    """A .npy whose header says anything (absurd shapes, lying sizes)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header_dict)
    return buf.getvalue() + payload


def write_zip(path, members, method=zipfile.ZIP_DEFLATED, comment=b"", date=(1980, 1, 1, 0, 0, 0)):
    """members: list of (name, bytes); duplicates and any names allowed."""
    with zipfile.ZipFile(path, "w") as z:
        z.comment = comment
        for name, data in members:
            info = zipfile.ZipInfo(name, date_time=date)
            info.compress_type = method
            with warnings_off():
                z.writestr(info, data)


@contextlib.contextmanager
def warnings_off():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def read_good(path):
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in MEMBERS}
    header = json.loads(arrays["header"].tobytes())
    return header, arrays


def members_of(header, arrays, sign=True):
    """The (name, npy bytes) list of a file; `sign` recomputes the digest for the new content."""
    header = json.loads(json.dumps(header))
    if sign:
        try:
            header[DIGEST_KEY] = content_digest(header, arrays)
        except (KeyError, TypeError, ValueError):
            pass
    arrays = dict(arrays, header=np.frombuffer(canonical_json(header), np.uint8))
    return [(k + ".npy", npy(arrays[k])) for k in MEMBERS if k in arrays] + \
        [(k + ".npy", npy(v)) for k, v in arrays.items() if k not in MEMBERS]


# ---------------------------------------------------------------- the model-file corpus

def extremes(dtype):
    d = np.dtype(dtype)
    if d.kind == "f":
        return {"max": np.finfo(d).max, "nan": np.nan}
    return {"min": np.iinfo(d).min, "max": np.iinfo(d).max}


def model_cases(good, seed):
    """-> list of (name, category, expect, keyword, writer(path)); category semantic|intact|byte."""
    H, A = read_good(good)
    rng = random.Random(seed)
    raw = Path(good).read_bytes()
    cases = []

    def add(name, category, expect, keyword, writer):
        cases.append((name, category, expect, keyword, writer))

    def semantic(name, keyword, mutate, sign=True):
        def writer(path):
            h, a = json.loads(json.dumps(H)), {k: v.copy() for k, v in A.items()}
            mutate(h, a)
            write_zip(path, members_of(h, a, sign))
        add(name, "semantic", "error", keyword, writer)

    def set_member(name, fn):
        def mutate(h, a):
            a[name] = fn(a[name])
        return mutate

    def set_op(i, key, value):
        def mutate(h, a):
            if value is KeyError:
                del h["ops"][i][key]
            else:
                h["ops"][i][key] = value
        return mutate

    numeric = [k for k in MEMBERS if k not in ("magic", "version", "header")]
    # 1. every numeric member at its dtype's extremes, digest left as exported: the digest catches it
    for m in numeric:
        for label, v in extremes(A[m].dtype).items():
            semantic(f"{m}-all-{label}-unsigned", "modified or damaged",
                     set_member(m, lambda a, v=v: np.full_like(a, v)), sign=False)
    # 2. the same, digest recomputed (a tool that re-signs): the range checks catch it
    ranged = {"codebook": "codebook", "multiplier": "multiplier", "shift": "shift",
              "add_factor": "add factors", "weight_scale": "weight scales", "lut": "LUT",
              "act_zero_point": "zero point", "act_bits": "activation bits", "act_scale": "activation scales"}
    for m, kw in ranged.items():
        for label, v in extremes(A[m].dtype).items():
            if (m, label) in (("multiplier", "max"), ("weight_scale", "max"), ("act_scale", "max")):
                continue                # valid values (M0 = 2^31-1, finite scales): the digest's job
            semantic(f"{m}-all-{label}-signed", kw, set_member(m, lambda a, v=v: np.full_like(a, v)))
    for v in (0, 1, 4, -1, 2 ** 31 - 1):
        semantic(f"version-{v}", "version", set_member("version", lambda a, v=v: np.array(v, np.int32)))
    semantic("version-int64", "version", set_member("version", lambda a: np.array(2, np.int64)))
    semantic("magic", "magic", set_member("magic", lambda a: np.frombuffer(b"NOTOURS!", np.uint8)))

    # 3. one value out of range, digest recomputed
    def one(m, value, idx=None):
        def fn(a):
            a = a.copy()
            a.reshape(-1)[rng.randrange(a.size) if idx is None else idx] = value
            return a
        return fn
    for v in (30, 63):
        semantic(f"shift-one-{v}", "shift", set_member("shift", one("shift", v)))
    for v in (5, 2 ** 30 - 1, -(2 ** 30)):
        semantic(f"multiplier-one-{v}", "multiplier", set_member("multiplier", one("multiplier", v)))
    for v in (-1, 256):
        semantic(f"zero-point-one-{v}", "zero point", set_member("act_zero_point", one("act_zero_point", v)))
    semantic("codebook-one-128", "codebook", set_member("codebook", one("codebook", 128)))
    semantic("lut-one-256", "LUT", set_member("lut", one("lut", 256)))
    semantic("add-factor-one-2^29", "add factors", set_member("add_factor", one("add_factor", 2 ** 29)))
    semantic("act-scale-one-zero", "activation scales", set_member("act_scale", one("act_scale", 0.0)))
    semantic("act-bits-one-3", "activation bits", set_member("act_bits", one("act_bits", 3)))
    signed_pt = int(np.flatnonzero(A["act_zero_point"] > 3)[0])        # a 2-bit point cannot hold it
    semantic("act-bits-2-zero-point", "zero point", set_member("act_bits", one("act_bits", 2, idx=signed_pt)))
    semantic("weight-scale-one-inf", "weight scales", set_member("weight_scale", one("weight_scale", np.inf)))

    ops = H["ops"]
    convs = [i for i, op in enumerate(ops) if op["op"] == "conv"]
    adds = [i for i, op in enumerate(ops) if op["op"] == "add"]
    pool = next(i for i, op in enumerate(ops) if op["op"] == "gap")
    fc = next(i for i, op in enumerate(ops) if op["op"] == "linear")
    for i in rng.sample(convs, 4):                      # channel counts that disagree between layers
        name = ops[i]["name"]
        semantic(f"cin+1-{name}", name, set_op(i, "cin", ops[i]["cin"] + 1))
        semantic(f"cout-1-{name}", name, set_op(i, "cout", ops[i]["cout"] - 1))
    for i in rng.sample(convs, 3):                      # packed lengths that disagree with shapes
        name = ops[i]["name"]
        semantic(f"w_nbytes+1-{name}", name, set_op(i, "w_nbytes", ops[i]["w_nbytes"] + 1))
        semantic(f"w_nbytes-1-{name}", name, set_op(i, "w_nbytes", ops[i]["w_nbytes"] - 1))
    low = [i for i in convs if ops[i]["bits_w"] <= 4]
    high = [i for i in range(len(ops)) if ops[i].get("bits_w", 0) >= 8]
    semantic("w_offset-overlap", "weights entries", set_op(low[3], "w_offset", ops[low[2]]["w_offset"]))
    semantic("w_offset-past-end", ops[low[1]]["name"], set_op(low[1], "w_offset", len(A["weights"]) + 5))
    semantic("cb_offset-past-end", "cb_offset", set_op(low[0], "cb_offset", len(A["codebook"])))
    semantic("cb_offset-shared", "codebook entries", set_op(low[4], "cb_offset", ops[low[3]]["cb_offset"]))
    semantic("cb_offset-on-8-bit", "codebook", set_op(high[0], "cb_offset", 0))
    semantic("offset-shared", "channels entries", set_op(convs[5], "offset", ops[convs[4]]["offset"]))
    semantic("offset-negative", "offset", set_op(convs[2], "offset", -16))
    semantic("factor-offset-past-end", "factor_offset", set_op(adds[0], "factor_offset", len(A["add_factor"])))
    semantic("factor-offset-shared", "add_factor entries", set_op(adds[2], "factor_offset", ops[adds[1]]["factor_offset"]))
    for b in (1, 3, 32, "4"):
        semantic(f"bits_w-{b}", "bits_w" if b != 3 else "weight bits", set_op(convs[3], "bits_w", b))
    semantic("stride-3", "stride", set_op(convs[1], "stride", 3))
    semantic("stride-2-wrong", ops[convs[1]]["name"], set_op(convs[1], "stride", 2))
    semantic("lo-string", "'lo'", set_op(convs[1], "lo", "yes"))
    semantic("lo-above-hi", "clamp", lambda h, a: h["ops"][convs[1]].update(lo=5, hi=4))
    semantic("hi-past-the-width", "'hi'", set_op(convs[1], "hi", 1 << 20))
    semantic("clamp-missing", "lacks fields", set_op(adds[0], "lo", KeyError))
    semantic("kernel-17", "'kh'", set_op(convs[2], "kh", 17))
    semantic("kernel-1-wrong", ops[convs[2]]["name"], set_op(convs[2], "kw", 1))
    semantic("padding-past-the-kernel", "'pw'", set_op(convs[2], "pw", 3))
    semantic("groups-not-dividing", "groups", set_op(convs[2], "groups", 3))
    semantic("groups-zero", "'groups'", set_op(convs[2], "groups", 0))
    semantic("depthwise-groups-wrong", "groups", set_op(convs[2], "groups", ops[convs[2]]["cin"] + 1))
    semantic("unknown-op-pool", "unknown op", set_op(pool, "op", "pool"))
    semantic("unsupported-field-dilation", "unsupported field 'dilation'", set_op(convs[2], "dilation", 2))
    semantic("unsupported-field-relu-in-v3", "unsupported field 'relu'", set_op(adds[1], "relu", True))
    semantic("add-one-input", "two inputs", set_op(adds[0], "in", [1]))
    semantic("add-pad-wrong", ops[adds[3]]["name"], set_op(adds[3], "pad", ops[adds[3]]["pad"] + 1))
    semantic("reads-future-point", "before it is computed", set_op(0, "in", 5))
    semantic("writes-point-twice", "twice", set_op(2, "out", ops[1]["out"]))
    semantic("pool-wrong-output", "gap", set_op(pool, "out", ops[fc]["out"]))
    semantic("linear-cin", "fc", set_op(fc, "cin", 63))
    semantic("unknown-op", "unknown op", set_op(3, "op", "softmax"))
    semantic("op-missing-field", "lacks fields", set_op(4, "cin", KeyError))
    semantic("op-name-object", "name", set_op(5, "name", {"a": 1}))
    semantic("op-name-newline", "name", set_op(5, "name", "conv\nerror: fake"))
    semantic("class-name-escape", "name", lambda h, a: h["classes"].__setitem__(3, "cat\x1b[2J"))
    semantic("op-not-object", "unknown op", lambda h, a: h["ops"].__setitem__(6, [1, 2]))
    semantic("no-ops", "no ops", lambda h, a: h.__setitem__("ops", []))

    def set_point(i, shape):
        return lambda h, a: h["points"][i].__setitem__("shape", shape)
    semantic("point-stem-17-channels", "conv1", set_point(1, [32, 32, 17]))
    semantic("point-huge", "elements", set_point(3, [4096, 4096, 16]))
    semantic("point-shape-2^31", "valid shape", set_point(3, [2 ** 31, 1, 16]))
    semantic("point-shape-string", "valid shape", set_point(2, "32x32"))
    semantic("input-5-channels", "input point", set_point(0, [32, 32, 5]))
    semantic("input-16x16", "conv1", set_point(0, [16, 16, 3]))
    semantic("classes-11", "logits", lambda h, a: h["classes"].append("eleventh"))
    semantic("classes-numbers", "classes", lambda h, a: h.__setitem__("classes", list(range(10))))
    semantic("meta-list", "meta", lambda h, a: h.__setitem__("meta", [1, 2]))
    semantic("header-list", "'ops' and 'points'", lambda h, a: (h.clear(), h.update(ops=None)))

    def raw_header(data, sign=False):
        def mutate(h, a):
            a["header"] = np.frombuffer(data, np.uint8)
        def writer(path):
            a = {k: v.copy() for k, v in A.items()}
            mutate(None, a)
            write_zip(path, [(k + ".npy", npy(a[k])) for k in MEMBERS])
        return writer
    for label, data in [("not-json", b"{not json"), ("not-utf8", b'{"a": "\xff\xfe"}'),
                        ("deep-nesting", b"[" * 100000 + b"]" * 100000), ("empty", b"")]:
        add(f"header-{label}", "semantic", "error", "JSON", raw_header(data))
    semantic("digest-missing", "digest", lambda h, a: h.pop(DIGEST_KEY), sign=False)
    semantic("digest-garbage", "digest", lambda h, a: h.__setitem__(DIGEST_KEY, "xyz"), sign=False)
    semantic("digest-of-other-file", "digest", lambda h, a: h.__setitem__(DIGEST_KEY, "0" * 64), sign=False)

    # shapes and lengths of whole members, digest recomputed
    semantic("lut-2-rows", "LUT", set_member("lut", lambda a: a[:2]))
    semantic("act-bits-short", "act_bits", set_member("act_bits", lambda a: a[:-1]))
    semantic("bias-short", "bias", set_member("bias", lambda a: a[:-1]))
    semantic("weights-short", "weight", set_member("weights", lambda a: a[:-1]))
    semantic("weights-extra", "weights has", set_member("weights", lambda a: np.concatenate([a, np.zeros(10, np.uint8)])))
    semantic("codebook-extra", "codebook has", set_member("codebook", lambda a: np.concatenate([a, a[:4]])))
    semantic("codebook-2d", "codebook", set_member("codebook", lambda a: a.reshape(-1, 2)))

    # 4. members dropped, renamed, duplicated, retyped, added; lying npy headers; zip bombs
    base = members_of(H, A, sign=False)

    def zip_case(name, keyword, members, category="semantic", expect="error", **kw):
        add(name, category, expect, keyword, lambda path: write_zip(path, members, **kw))
    for k in MEMBERS:
        zip_case(f"drop-{k}", "missing arrays", [m for m in base if m[0] != k + ".npy"])
    for k, new in [("weights", "weight.npy"), ("bias", "Bias.npy"), ("header", "header.npy.npy")]:
        zip_case(f"rename-{k}", "missing arrays", [(new if n == k + ".npy" else n, d) for n, d in base])
    for k in ("weights", "header", "bias"):
        zip_case(f"duplicate-{k}", "more than once", base + [m for m in base if m[0] == k + ".npy"])
    for k, dt in [("bias", np.float32), ("multiplier", np.int64), ("shift", np.int32),
                  ("weights", np.int8), ("codebook", np.int32), ("lut", np.uint8)]:
        semantic(f"retype-{k}-{np.dtype(dt).name}", "dtype", set_member(k, lambda a, dt=dt: a.astype(dt)))
    semantic("retype-bias-int64-unsigned", "modified or damaged",
             set_member("bias", lambda a: a.astype(np.int64)), sign=False)
    zip_case("extra-member", "unexpected members", base + [("extra.npy", npy(np.zeros(3)))])
    zip_case("extra-object-array", "unexpected members",
             base + [("evil.npy", npy(np.array([{"x": 1}], dtype=object), allow_pickle=True))])
    for k in ("header", "weights"):
        zip_case(f"object-array-{k}", "pickle", [(n, npy(np.array([{"ops": []}], dtype=object), True)
                                                  if n == k + ".npy" else d) for n, d in base])
    for k, shape in [("weights", (2 ** 31,)), ("bias", (2 ** 31, 2 ** 31)), ("act_scale", (2 ** 40,))]:
        dt = A[k].dtype
        payload = npy(A[k])[len(npy(np.zeros(0, dt))):]
        hdr = {"descr": dt.str, "fortran_order": False, "shape": shape}
        zip_case(f"npy-shape-{k}-{'x'.join(map(str, shape))}", "declares shape",
                 [(n, npy_with_header(hdr, payload) if n == k + ".npy" else d) for n, d in base])
    zip_case("npy-bytes-short", "declares shape",
             [(n, d[:-1] if n == "multiplier.npy" else d) for n, d in base])
    zip_case("npy-garbage-header", "npy header",
             [(n, b"\x93NUMPY\x01\x00\x10\x00{'nonsense': 1}\n" if n == "shift.npy" else d) for n, d in base])
    zip_case("npy-not-npy", "npy header", [(n, b"hello" if n == "lut.npy" else d) for n, d in base])

    def bomb_writer(path):                               # 64 MiB of zeros, deflated to ~64 KB
        big = npy_with_header({"descr": "|u1", "fortran_order": False, "shape": (64 << 20,)},
                              bytes(64 << 20))
        write_zip(path, [(n, big if n == "weights.npy" else d) for n, d in base])
    add("zip-bomb-64MiB", "semantic", "error", "declare", bomb_writer)

    def lying_size_writer(size):
        def writer(path):
            write_zip(path, base)
            data = bytearray(Path(path).read_bytes())
            with zipfile.ZipFile(path) as z:
                info = z.getinfo("weights.npy")
            # patch the uncompressed size in the central directory entry of weights.npy
            pos = 0
            while True:
                pos = data.find(b"PK\x01\x02", pos)
                name_len = int.from_bytes(data[pos + 28:pos + 30], "little")
                if data[pos + 46:pos + 46 + name_len] == b"weights.npy":
                    data[pos + 24:pos + 28] = size.to_bytes(4, "little")
                    break
                pos += 4
            data[info.header_offset + 22:info.header_offset + 26] = size.to_bytes(4, "little")
            Path(path).write_bytes(bytes(data))
        return writer
    add("zip-declares-4GB", "semantic", "error", "declares", lying_size_writer(0xFFFF0000))
    add("zip-declares-too-small", "semantic", "error", "damaged", lying_size_writer(1000))
    zip_case("zip-lzma", "compression method", base, method=zipfile.ZIP_LZMA)
    zip_case("zip-empty", "missing arrays", [])
    zip_case("zip-100000-members", "members", [(f"m{k}.npy", b"") for k in range(100_000)],
             method=zipfile.ZIP_STORED)
    zip_case("zip-other-files", "missing arrays", [("readme.txt", b"hello"), ("a.npy", npy(np.zeros(3)))])
    zip_case("zip-pytorch-like", "PyTorch", [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/version", b"3")])

    def encrypted_writer(path):
        write_zip(path, base, method=zipfile.ZIP_STORED)
        data = bytearray(Path(path).read_bytes())
        for sig, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
            pos = data.find(sig)
            data[pos + flag_at] |= 1
        Path(path).write_bytes(bytes(data))
    add("zip-encrypted-flag", "semantic", "error", "encrypted", encrypted_writer)

    # 5. the same content in another container: accepted, identical output
    zip_case("intact-stored", None, base, category="intact", expect="same", method=zipfile.ZIP_STORED)
    zip_case("intact-reversed-order", None, base[::-1], category="intact", expect="same")
    zip_case("intact-dates-and-comment", None, base, category="intact", expect="same",
             date=(2024, 5, 6, 7, 8, 10), comment=b"copied from a backup")
    pretty = json.dumps(H, indent=2).encode()
    zip_case("intact-header-pretty-json", None,
             [(n, npy(np.frombuffer(pretty, np.uint8)) if n == "header.npy" else d) for n, d in base],
             category="intact", expect="same")
    lut_f = io.BytesIO()
    np.lib.format.write_array(lut_f, np.asfortranarray(A["lut"]))
    zip_case("intact-lut-fortran-order", None, [(n, lut_f.getvalue() if n == "lut.npy" else d) for n, d in base],
             category="intact", expect="same")

    # 6. byte level: truncation, flips, not a zip at all
    n = len(raw)
    offsets = {0, 1, 2, 4, 10, 30, 100, 1000, n // 4, n // 2, 3 * n // 4, n - 1, n - 2, n - 10, n - 22,
               n - 23, n - 100, n - 1000}
    while len(offsets) < 32:
        offsets.add(rng.randrange(1, n))
    for off in sorted(offsets):
        add(f"truncated-at-{off}", "byte", "error", None, lambda path, off=off: Path(path).write_bytes(raw[:off]))
    for k in range(36):
        flips = [(rng.randrange(n), rng.randrange(1, 256)) for _ in range(rng.choice((1, 1, 2, 8)))]

        def flip_writer(path, flips=flips):
            d = bytearray(raw)
            for pos, x in flips:
                d[pos] ^= x
            Path(path).write_bytes(bytes(d))
        add(f"flip-{k}-at-{flips[0][0]}", "byte", "either", None, flip_writer)
    others = {"text": b"hello, this is not a model\n", "random": bytes(rng.randrange(256) for _ in range(4096)),
              "png": b"\x89PNG\r\n\x1a\n" + bytes(100), "pickle": b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00K\x01.",
              "gzip": b"\x1f\x8b\x08\x00" + bytes(60), "json": b'{"ops": [], "points": []}'}
    for label, data in others.items():
        add(f"not-zip-{label}", "byte", "error", "not a model file", lambda path, data=data: Path(path).write_bytes(data))
    add("not-zip-empty", "byte", "error", "empty", lambda path: Path(path).write_bytes(b""))
    add("not-zip-folder", "byte", "error", "folder", lambda path: Path(path).mkdir())
    return cases


def make(good, out, seed):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for k, (name, category, expect, keyword, writer) in enumerate(model_cases(good, seed)):
        path = out / f"{k:03d}-{name.replace('/', '_')}.npz"
        writer(path)
        index.append({"file": path.name, "name": name, "category": category, "expect": expect,
                      "keyword": keyword})
    (out / "cases.json").write_text(json.dumps({"good": str(Path(good).resolve()), "seed": seed,
                                                "cases": index}, indent=1))
    counts = {c: sum(1 for i in index if i["category"] == c) for c in ("semantic", "intact", "byte")}
    print(f"fuzz: wrote {len(index)} cases to {out} ({counts})")
    return index


# ---------------------------------------------------------------- the in-process driver

class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def invoke(main, argv, seconds=CASE_SECONDS):
    """Run a CLI entry point in this process -> (exit status or 'crash'/'hang', stdout, stderr, s)."""
    out, err = io.StringIO(), io.StringIO()
    old = sys.argv
    sys.argv = ["prog", *map(str, argv)]
    t0 = time.perf_counter()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(seconds)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Hang:
        code = "hang"
    except BaseException:                       # noqa: BLE001 -- anything else is a finding
        code = "crash"
        err.write(traceback.format_exc())
    finally:
        signal.alarm(0)
        sys.argv = old
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def judge(code, out, err, seconds, expect, keyword, same):
    """-> None if the result meets the oracle, else why not."""
    if code in ("crash", "hang"):
        return f"{code}: {err.strip().splitlines()[-1] if err.strip() else ''}"
    if seconds > CASE_SECONDS:
        return f"took {seconds:.1f} s"
    if "Traceback" in err or "Traceback" in out:
        return "traceback"
    if code == 0:
        if expect == "error":
            return "accepted a damaged file"
        return None if same() else "accepted, but the output differs from the valid file's"
    if code != 2:
        return f"exit status {code}"
    lines = err.strip().splitlines()
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"stderr is not one error line: {err.strip()[:200]!r}"
    if expect == "same":
        return f"refused an intact file: {lines[0]}"
    if "allow_pickle" in lines[0]:
        return "the error suggests loading with pickle"
    if keyword and keyword.lower() not in lines[0].lower():
        return f"error does not name {keyword!r}: {lines[0]}"
    return None


def check(folder, data_dir):
    from intengine.__main__ import main
    folder = Path(folder)
    index = json.loads((folder / "cases.json").read_text())
    good = index["good"]
    good_header, good_arrays = fileformat.read(good)
    pred = folder / "pred.npy"
    if pred.exists():
        pred.unlink()

    def commands(path):
        return {"info": ["info", path, "--json"], "verify": ["verify", path],
                "eval": ["eval", path, "--limit", "8", "--no-progress", "--json", "--predictions", pred,
                         "--data-dir", data_dir]}

    def normal(cmd, out):
        """The part of an output that must equal the valid file's."""
        if cmd == "verify":
            return re.sub(r"[\d,]+ bytes", "", out.split(": ", 1)[1])          # without the size
        r = json.loads(out.strip().splitlines()[-1])
        if cmd == "info":
            return {k: v for k, v in r.items() if k not in ("file", "size_bytes")}
        return r["correct"], r["n"], np.load(pred).tolist()

    want = {}
    for cmd, argv in commands(good).items():
        code, out, err, _ = invoke(main, argv, seconds=120)      # the first eval compiles
        if code != 0:
            raise SystemExit(f"fuzz: the valid file fails `{cmd}`: {err.strip()}")
        want[cmd] = normal(cmd, out)

    def proven_intact(path):
        h, a = fileformat.read(path)
        return h == good_header and all(np.array_equal(a[k], good_arrays[k]) and a[k].dtype == good_arrays[k].dtype
                                        for k in MEMBERS if k != "header")

    results, tried, passed, slowest = [], 0, 0, 0.0
    for case in index["cases"]:
        path = folder / case["file"]
        problems = []
        for cmd, argv in commands(path).items():
            if pred.exists():
                pred.unlink()
            code, out, err, s = invoke(main, argv)
            slowest = max(slowest, s)

            def same():
                return normal(cmd, out) == want[cmd] and proven_intact(path)
            why = judge(code, out, err, s, case["expect"], case["keyword"], same)
            if why:
                problems.append(f"{cmd}: {why}")
            if cmd == "eval" and code != 0 and pred.exists():
                problems.append("eval: wrote --predictions for a refused file")
        tried += 1
        passed += not problems
        results.append(dict(case, ok=not problems, problems=problems))
        if problems:
            print(f"FAIL {case['file']}: {'; '.join(problems)}")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    counts = {c: sum(1 for r in results if r["category"] == c) for c in ("semantic", "intact", "byte")}
    (folder / "results.json").write_text(json.dumps({"tried": tried, "passed": passed, "counts": counts,
                                                     "max_rss_mb": rss, "results": results}, indent=1))
    print(f"fuzz: tried {tried}, passed {passed} ({counts['semantic']} semantic, {counts['intact']} "
          f"intact, {counts['byte']} byte-level; 3 commands each; slowest command {slowest:.2f} s; "
          f"peak RSS {rss} MB)")
    return tried, passed


# ---------------------------------------------------------------- checkpoints for the exporter

class Payload:
    """Unpickling this runs a command that creates the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def checkpoint_cases(good_pt, good_npz, marker, seed):
    """-> list of (name, keyword, writer(path)).  Every case must be refused."""
    import pickle
    import torch
    rng = random.Random(seed)
    raw = Path(good_pt).read_bytes()
    state = torch.load(good_pt, map_location="cpu", weights_only=True)
    sd = state["model"]
    cases = []

    def add(name, keyword, writer):
        cases.append((name, keyword, writer))

    def save(obj):
        return lambda path: torch.save(obj, path)

    def edited(fn):
        d = {k: v.clone() for k, v in sd.items()}
        fn(d)
        return save(dict(state, model=d))
    add("empty", "empty", lambda p: Path(p).write_bytes(b""))
    add("text", "text file", lambda p: Path(p).write_text("not a checkpoint\n"))
    add("random-bytes", "not a PyTorch checkpoint", lambda p: Path(p).write_bytes(bytes(rng.randrange(256) for _ in range(999))))
    add("engine-file", "model file written by the exporter", lambda p: Path(p).write_bytes(Path(good_npz).read_bytes()))
    add("pickle-payload", "refused", lambda p: Path(p).write_bytes(pickle.dumps(Payload(marker), protocol=2)))
    add("torch-zip-payload", "refused", save({"format": state["format"], "model": Payload(marker)}))
    with zipfile.ZipFile(good_pt) as z:          # flip bytes inside tensor data: the CRC check catches them
        infos = [i for i in z.infolist() if "/data/" in i.filename and i.file_size > 64]
    for off in sorted({10, 1000, len(raw) // 3, len(raw) // 2, len(raw) - 1, len(raw) - 22, len(raw) - 100, 100000}):
        add(f"truncated-at-{off}", "truncated", lambda p, off=off: Path(p).write_bytes(raw[:off]))
    legacy = io.BytesIO()                        # the pre-zip torch format: a bare pickle stream
    torch.save(sd, legacy, _use_new_zipfile_serialization=False)
    for off in (100, len(legacy.getvalue()) // 2):
        add(f"legacy-truncated-at-{off}", "truncated", lambda p, off=off: Path(p).write_bytes(legacy.getvalue()[:off]))
    for k in range(5):
        info = rng.choice(infos)
        with zipfile.ZipFile(good_pt) as z:
            start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
        pos = start + rng.randrange(info.file_size)

        def flip(p, pos=pos):
            d = bytearray(raw)
            d[pos] ^= 0x40
            Path(p).write_bytes(bytes(d))
        add(f"flip-in-{info.filename.rsplit('/', 1)[-1]}-at-{pos}", "CRC", flip)
    first = next(iter(sd))
    add("missing-key", "not a checkpoint of the trainer's", edited(lambda d: d.pop("fc.weight")))
    add("extra-key", "not a checkpoint of the trainer's", edited(lambda d: d.__setitem__("extra.weight", torch.zeros(3))))
    add("wrong-shape", "not a checkpoint of the trainer's", edited(lambda d: d.__setitem__("fc.weight", torch.zeros(10, 32))))
    add("nan-weight", "non-finite", edited(lambda d: d["layer1.0.conv1.weight"].view(-1).__setitem__(0, float("nan"))))
    add("inf-running-var", "non-finite", edited(lambda d: d["bn1.running_var"].fill_(float("inf"))))
    add("negative-running-var", "negative", edited(lambda d: d["layer2.1.bn2.running_var"].__setitem__(0, -1.0)))
    add("bare-state-dict-nan", "non-finite", save({k: v.clone().fill_(float("nan")) if v.is_floating_point() else v for k, v in sd.items()}))
    add("string-value", "neither", save(dict(sd, **{first: "weights"})))
    add("list", "neither", save([1, 2, 3]))
    add("bare-tensor", "neither", save(torch.zeros(3)))
    add("empty-dict", "neither", save({}))
    add("trainer-format-no-model", "neither", save({"format": state["format"], "version": 1}))
    add("other-architecture", "not a checkpoint of the trainer's", save(torch.nn.Linear(3, 2).state_dict()))
    add("zip-of-other-files", "zip archive", lambda p: write_zip(p, [("a.txt", b"hi")]))

    def bomb(p):                                 # a torch-like zip whose one member inflates to 272 MiB
        with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as z:
            z.writestr("archive/data.pkl", b"\x80\x02}q\x00.")
            with z.open("archive/data/0", "w", force_zip64=True) as f:
                block = bytes(1 << 24)
                for _ in range(17):
                    f.write(block)
    add("zip-bomb-272MiB", "declares", bomb)
    add("folder", "folder", lambda p: Path(p).mkdir())
    add("gzip", "not a PyTorch checkpoint", lambda p: Path(p).write_bytes(b"\x1f\x8b\x08\x00" + raw[:100]))
    return cases


def make_checkpoints(good_pt, good_npz, out, seed):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "PAYLOAD-RAN"
    index = []
    for k, (name, keyword, writer) in enumerate(checkpoint_cases(good_pt, good_npz, marker, seed)):
        path = out / f"{k:02d}-{name}.pt"
        writer(path)
        index.append({"file": path.name, "name": name, "keyword": keyword})
    (out / "cases.json").write_text(json.dumps({"marker": str(marker), "cases": index}, indent=1))
    print(f"fuzz: wrote {len(index)} checkpoint cases to {out}")


def check_exporter(folder, data_dir):
    from exporter.__main__ import main
    folder = Path(folder)
    index = json.loads((folder / "cases.json").read_text())
    marker = Path(index["marker"])
    tried = passed = 0
    for case in index["cases"]:
        target = folder / "out.npz"
        code, out, err, s = invoke(main, ["--bits", "4", "--checkpoint", folder / case["file"], "--out", target,
                                          "--calib-images", "8", "--no-progress", "--data-dir", data_dir])
        why = judge(code, out, err, s, "error", case["keyword"], lambda: False)
        if target.exists() or list(folder.glob(".out.npz.*")):
            why = why or "an output file was written"
        if marker.exists():
            why = "THE PICKLE PAYLOAD RAN"
        tried += 1
        passed += why is None
        if why:
            print(f"FAIL {case['file']}: {why}")
    print(f"fuzz exporter: tried {tried}, passed {passed}")
    return tried, passed


@click.group(context_settings={"help_option_names": ["-h", "--help"]}, help=__doc__.split("\n\n")[0])
def main():
    pass


SEED = click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corpus.")
DATA = click.option("--data-dir", default=lambda: os.environ.get("CIFAR10_DIR"),
                    help="Folder with cifar10.npz  [default: $CIFAR10_DIR]")


@main.command("make", short_help="Write the damaged model-file corpus from a good file.")
@click.argument("good")
@click.argument("out")
@SEED
def make_cmd(good, out, seed):
    """Write the seeded corpus of damaged model files made from GOOD into the folder OUT."""
    make(good, out, seed)


@main.command("make-checkpoints", short_help="Write the damaged checkpoint corpus.")
@click.argument("good_pt")
@click.argument("good_npz")
@click.argument("out")
@SEED
def make_checkpoints_cmd(good_pt, good_npz, out, seed):
    """Write the seeded corpus of damaged checkpoints (from GOOD_PT and GOOD_NPZ) into OUT."""
    make_checkpoints(good_pt, good_npz, out, seed)


def _check(run, folder, data_dir):
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    tried, passed = run(folder, data_dir)
    sys.exit(0 if tried and passed == tried else 1)


@main.command("check", short_help="Run the model-file corpus through the engine's CLI.")
@click.argument("folder")
@DATA
def check_cmd(folder, data_dir):
    """Run every case in FOLDER through `python -m intengine` in this process; exit 1 on a failure."""
    _check(check, folder, data_dir)


@main.command("check-exporter", short_help="Run the checkpoint corpus through the exporter's CLI.")
@click.argument("folder")
@DATA
def check_exporter_cmd(folder, data_dir):
    """Run every checkpoint case in FOLDER through `python -m exporter`; exit 1 on a failure."""
    _check(check_exporter, folder, data_dir)


if __name__ == "__main__":
    main()
