"""The fast paths (graph.py, fastops.py, vnni.py) equal the NumPy reference bit for bit, on every path
this processor has: 'vnni' where it has AVX512-VNNI, 'avxvnni' where it has 256-bit vpdpbusd,
'avx2' where it has AVX2 (else the tests
say why they skip), and 'portable' everywhere.  Random shapes, every weight width, 8- and 4-bit activations, the
extreme values, and whole exported models at batch 1 (one image on every thread, or alone) and batch > threads
(images across threads)."""
import json
import zlib

import numpy as np
import pytest

import intengine
import fast_harness
from intengine import cpu, layout, reference
from intengine.fixedpoint import ADD_LANES32_N_MIN

rng = np.random.default_rng(11)
KERNELS = ["amx", "vnni", "avxvnni", "avx2", "portable"]


@pytest.fixture(autouse=True)
def _seed_from_the_test(request):
    """Each test draws its cases from a generator seeded by its own name and parameters, so
    a `-k` run sees the same cases as a full run."""
    global rng
    rng = np.random.default_rng(zlib.crc32(request.node.name.encode()))


def need(kernel):
    if kernel not in cpu.fast_kernels():
        pytest.skip(f"this processor ({cpu.llvm_cpu_name()}) cannot run the {kernel} path (no "
                    f"{FEATURE[kernel]}); the others are tested instead")


FEATURE = {"amx": "AMX-INT8 granted by Linux", "vnni": "AVX512-VNNI", "avxvnni": "AVX-VNNI or AVX512-VNNI with AVX512VL", "avx2": "AVX2"}


def weights(shape, bits):
    if bits <= 4:   # midrise levels
        L = 2 * np.arange(1 << bits) + 1 - (1 << bits)
        return L[rng.integers(0, 1 << bits, size=shape)].astype(np.int8)
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def conv_case(n, h, w, ci, co, wbits, abits, stride, relu, zx=None, zy=None):
    hi = (1 << abits) - 1
    x = rng.integers(0, hi + 1, size=(n, h, w, ci)).astype(np.int32)
    zx = int(rng.integers(0, hi + 1)) if zx is None else zx
    zy = int(rng.integers(0, hi + 1)) if zy is None else zy
    wt = weights((3, 3, ci, co), wbits)
    spread = np.sqrt(9 * ci) * np.abs(wt).max() * hi         # typical |acc|
    bias = rng.integers(-spread, spread + 1, size=co)
    m0 = rng.integers(1 << 30, 1 << 31, size=co)               # M ~ 2^abits / spread: a full output range
    sh = np.clip(np.round(30 + np.log2(spread) - abits) + rng.integers(-1, 2, size=co), 31, 62).astype(np.int64)
    return (x, zx, wt, bias, m0, sh, zy, zy if relu else 0, hi, stride)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("wbits", [2, 4, 8])
@pytest.mark.parametrize("abits", [8, 4, 2])
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_equals_reference(kernel, wbits, abits, stride):
    need(kernel)
    seen = set()
    for n, h, w, ci, co in [(2, 8, 8, 16, 32), (1, 5, 11, 3, 16), (3, 9, 6, 20, 40), (1, 4, 3, 5, 7)]:
        args = conv_case(n, h, w, ci, co, wbits, abits, stride, relu=bool(rng.integers(2)))
        want = reference.conv(*args, 1, 1, 1)
        got = fast_harness.conv3x3(*args, kernel)
        assert got.dtype == np.int32 and got.shape == want.shape
        assert np.array_equal(got, want), (n, h, w, ci, co)
        seen.update(np.unique(want).tolist())
    assert len(seen) >= min(6, (1 << abits) - 1)    # not saturated, trivially equal outputs


def test_avx2_uses_vpmaddubsw_only_where_the_weights_keep_it_exact():
    """vpmaddubsw sums a pair of u8 x s8 products into int16 and saturates past 32,767: the
    conv's `lower` lets the AVX2 path use it only when 255 (|w0| + |w1|) <= 32,767 for every
    weight pair of the layer (layout field MADD, docs/engine.md eq. A1), else vpmaddwd.
    Weights of magnitude 64 sit at the edge (exact); one weight of 65 moves the layer to
    vpmaddwd; and forcing vpmaddubsw on 8-bit weights gives saturated, wrong sums, so the check
    is what keeps the path exact."""
    need("avx2")
    x = np.full((1, 6, 6, 8), 255, np.int32)
    # acc = 255 * 72 taps * w: a multiplier of 2^-14 puts the outputs inside 0..255, unclamped
    args = lambda w: (x, 0, w, np.zeros(16, np.int64), np.full(16, 1 << 30), np.full(16, 44), 0, 0, 255, 1)
    edge = np.full((3, 3, 8, 16), 64, np.int8)
    edge[..., 1::2] = -64
    over = edge.copy()
    over[1, 1, 2, 5] = 65                                     # one pair of 65 + 64: 33,405 > 32,767
    big = np.full((3, 3, 8, 16), 127, np.int8)
    for w, madd in ((edge, 1), (over, 0), (big, 0)):
        rows = []
        got = fast_harness.conv3x3(*args(w), "avx2", rows=rows)
        assert rows[0][0][layout.MADD] == madd
        assert np.array_equal(got, reference.conv(*args(w), 1, 1, 1)), madd
        assert 0 < got.max() < 255
    forced = fast_harness.conv3x3(*args(big), "avx2", madd=1)
    assert not np.array_equal(forced, reference.conv(*args(big), 1, 1, 1))


def test_avx2_adds_int16_sums_over_as_many_groups_as_the_weights_allow():
    """Path 2 adds the int16 pair sums of m K-groups before widening them (vpaddw), with m the
    most that keeps 255 m max(|w0| + |w1|) within 32,767 (docs/engine.md eq. A2): 21 for 2-bit
    midrise weights, 4 for 4-bit, over 9 x 16 = 144 groups (chunks and a remainder).  One group
    more than the bound overflows int16 and gives wrong sums."""
    need("avx2")
    for levels, m in ((3, 21), (15, 4)):
        x = np.full((1, 5, 5, 64), 255, np.int32)
        w = np.full((3, 3, 64, 16), levels, np.int8)
        w[:, :, ::3, ::2] = -levels                          # mixed signs, still inside the output range
        args = (x, 0, w, np.zeros(16, np.int64), np.full(16, 1 << 30), np.full(16, 45), 0, 0, 255, 1)
        want = reference.conv(*args, 1, 1, 1)
        rows = []
        assert np.array_equal(fast_harness.conv3x3(*args, "avx2", rows=rows), want)
        assert rows[0][0][layout.MADD] == m and 0 < want.max() < 255
        assert not np.array_equal(fast_harness.conv3x3(*args, "avx2", madd=m + 1), want)


@pytest.mark.parametrize("kernel", KERNELS)
def test_the_epilogue_shifts_by_high_dwords_only_where_every_shift_is_32_or_more(kernel):
    """vnni.epilogue requantizes a tile with floor(floor(a / 2^32) / 2^(n-32)) (32-bit shifts)
    when every channel's n >= 32, else with 64-bit shifts: both equal floor(a / 2^n) (eq. 8).
    Shifts at the edges (32, 62), mixed, one channel at 31 that sends the tile to the
    64-bit form, and 24 channels (a tile half padded, its padding at shift 32), on
    accumulators of both signs."""
    need(kernel)
    for shifts in ([32] * 16, [62] * 16, list(range(32, 48)), [31] + [40] * 15, [33] * 8 + [31] * 8, [40] * 24):
        x, zx, wt, bias, _, _, zy, _, _, _ = conv_case(2, 6, 6, 16, len(shifts), 8, 8, 1, relu=False, zy=128)
        sh = np.array(shifts, np.int64)
        acc = np.sqrt(9 * 16) * 74 * 74                      # about |acc| for these random x and w
        m0 = np.minimum((1 << 31) - 1, np.round(20 / acc * np.exp2(sh))).astype(np.int64)   # |q - z| ~ 20
        args = (x, zx, wt, bias, m0, sh, zy, 0, 255, 1)
        want = reference.conv(*args, 1, 1, 1)
        assert np.array_equal(fast_harness.conv3x3(*args, kernel), want), shifts
        if max(shifts) < 48:                                 # M0 < 2^31 holds it: values, not just z_y
            assert want.min() < zy < want.max() and ((want > 0) & (want < 255)).mean() > 0.3, shifts


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("zx", [0, 255])
def test_conv_extremes(kernel, zx):
    """All-255 inputs against all -128 weights (the largest |sum|, 9*64*255*128 < 2^25), with
    z_x = 0 or 255 and z_y = 0, 128 or 255, M0 = 2^31 - 1."""
    need(kernel)
    x = np.full((2, 8, 8, 64), 255, np.int32)
    w = np.full((3, 3, 64, 32), -128, np.int8)
    bias = rng.integers(-(1 << 20), 1 << 20, size=32)
    m0 = np.full(32, (1 << 31) - 1)
    for zy in (0, 128, 255):
        args = (x, zx, w, bias, m0, np.full(32, 48), zy, 0, 255, 1)
        want = reference.conv(*args, 1, 1, 1)
        assert np.array_equal(fast_harness.conv3x3(*args, kernel), want), zy
        if zy == 128:     # not saturated: corners (4 taps), edges (6) and the interior differ
            assert len(np.unique(want)) > (3 if zx == 0 else 1)


def test_a_wrong_kernel_fails():
    """The check can fail: a zero point off by one changes the output."""
    args = conv_case(1, 8, 8, 16, 16, 8, 8, 1, False, zx=10, zy=128)
    want = reference.conv(*args, 1, 1, 1)
    bad = (args[0], 11) + args[2:]
    assert not np.array_equal(fast_harness.conv3x3(*bad, "portable"), want)


@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 8)])
def test_standalone_add(stride, pad):
    a = rng.integers(0, 256, size=(2, 4, 4, 32)).astype(np.int32)
    b = rng.integers(0, 256, size=(2, 4 * stride, 4 * stride, 32 - 2 * pad)).astype(np.int32)
    za, zb, zy = (int(v) for v in rng.integers(0, 255, 3))
    args = (a, za, b, zb, 1 << 28, int(rng.integers(1 << 26, 1 << 28)), stride, pad,
            int(rng.integers(1 << 30, 1 << 31)), 60, zy, zy, 255)
    assert np.array_equal(fast_harness.add(*args), reference.add(*args))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("stride,pad", [(1, 0), (2, 8), (2, 4)])
def test_fused_conv_add(kernel, stride, pad):
    """A conv with the add after it in its epilogue (eq. 14a) equals the reference conv then
    add: the larger factor on either side, K_b = 0, equal factors, the extreme multipliers;
    and an add with neither factor 2^28 runs as its own row, equal too."""
    need(kernel)
    big = 1 << 28
    cases = [(big, int(rng.integers(1 << 20, big)), None), (int(rng.integers(1 << 20, big)), big, None),
             (big, 0, None), (big, big, None), (big, int(rng.integers(1 << 26, big)), ((1 << 31) - 1, 59)),
             (big, 3, (1 << 30, 58)), (big - 5, big - 3, None)]
    for ka, kb, mn in cases:
        conv_args = conv_case(2, 9, 11, 12, 32, 8, 8, stride, relu=True)
        co = conv_args[2].shape[3]
        b = rng.integers(0, 256, size=(2, 9, 11, co - 2 * pad)).astype(np.int32)
        zb, zy = int(rng.integers(0, 256)), int(rng.integers(0, 128))       # the add's output: relu at z_y
        m0, n = mn or (int(rng.integers(1 << 30, 1 << 31)), 59)
        add_args = (zb, ka, kb, stride, pad, m0, n, zy, zy, 255)
        c = reference.conv(*conv_args, 1, 1, 1)
        want = reference.add(c, conv_args[6], b, *add_args)
        got, fused = fast_harness.conv_add(conv_args, b, zb, ka, kb, pad, m0, n, zy, zy, 255, kernel)
        assert fused == (ka == big or kb == big), (ka, kb)
        assert np.array_equal(got, want), (ka, kb, m0, n)
        # not saturated by the add: as varied as the conv's own output, up to 5 values
        assert len(np.unique(want)) >= min(5, len(np.unique(c))), (ka, kb, m0, n)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("side", [0, 1])
@pytest.mark.parametrize("n,ah,bh,low", [(33, 3, 2, (1 << 28) - 12345),
                                         (ADD_LANES32_N_MIN, 3 * (1 << 16) + 1, (1 << 17) + 5, (1 << 28) - 1),
                                         (62, (1 << 31) - 1, (1 << 31) - 2, (1 << 28) - 1)])
def test_fused_add_epilogue_computes_eq_14a(kernel, side, n, ah, bh, low):
    """The epilogue's eq. (14a) term by term, in int64 lanes (n = 33: a small shift n - 28,
    where the low term moves the result) and in the int32 lanes of eq. (14b) (from
    n = ADD_LANES32_N_MIN, and at the largest constants): equal to oracles.requant_add on the
    reference conv's output."""
    from oracles import requant_add
    need(kernel)
    conv_args = conv_case(2, 16, 16, 12, 32, 8, 8, 1, relu=True, zy=0)          # d_a over [0, 255]
    b = rng.integers(0, 256, size=(2, 16, 16, 32)).astype(np.int32)
    zb, zy = int(rng.integers(0, 256)), 20
    split = (ah, bh, low, side, n)
    got, fused = fast_harness.conv_add(conv_args, b, zb, 1 << 28, 1 << 27, 0, 1 << 30, 58, zy, zy, 255,
                                       kernel, split=split)
    c = reference.conv(*conv_args, 1, 1, 1).astype(np.int64)
    f = np.vectorize(lambda da, db, lw: requant_add(int(da), int(db), ah, bh, int(lw), side, n))
    want = np.clip(zy + f(c - conv_args[6], b - zb, low), zy, 255)
    no_low = np.clip(zy + f(c - conv_args[6], b - zb, 0), zy, 255)
    assert fused and len(np.unique(want)) > 3
    assert n == 62 or not np.array_equal(want, no_low)        # the low term matters here
    assert np.array_equal(got, want)


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bits", [8, 4, 2, "w4a4", "w2a2"])
def test_model_equals_reference(kernel, bits, exported, test_images):
    """Whole networks (fused conv+add, pool, linear): logits equal the reference path."""
    need(kernel)
    model = intengine.load(exported[bits][0], kernel=kernel)
    assert model.kernel == kernel and model.graph is not None
    x = test_images[0][:9]
    want = model.run(x, reference_ops=True)
    assert np.array_equal(model.run(x), want)                     # images across threads
    assert np.array_equal(model.run(x[:1]), want[:1])             # batch 1 (graph.BatchOne's way)
    assert np.array_equal(model.predict(x, batch_size=4), want)   # arenas reused, ragged batches


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bits", [8, 2, "w4a4", "w2a2"])
def test_one_image_shared_by_threads_equals_reference(kernel, bits, exported, test_images):
    """One image split over threads (fastops.run_shared): for plans made for 1 to 4 threads and
    1 to 5 workers, more workers than Numba has threads included (some then run one after
    another, and the late ones find every task taken), the logits equal the reference's."""
    from numba import get_num_threads
    from intengine.fastops import run_shared
    need(kernel)
    model = intengine.load(exported[bits][0], kernel=kernel)
    g = model.graph
    x = test_images[0][:4]
    want = model.run(x, reference_ops=True)
    for threads in (1, 2, 3, 4):
        plan, sync = g.plan(threads)
        assert plan[0, 0] == -1 and list(plan[1:, 0]) == list(range(len(g.ops)))
        rows = [32] + [r[layout.HO] if r[layout.ROW] in (layout.CONV, layout.ADD) else 1 for r in g.ops]
        assert (plan[:, 1] * plan[:, 2] >= rows).all() and ((plan[:, 1] - 1) * plan[:, 2] < rows).all()
        for workers in (1, 2, 5):
            for i in range(len(x)):
                out = np.full(g.classes, -1, np.int32)
                run_shared(g.path, x[i], g.lut, g.inp, g.ops, plan, g.koffs, g.wpk, g.bias, g.m0, g.n,
                           g.rnd, g.arenas()[0], sync, out, workers)
                assert np.array_equal(out, want[i]), (threads, workers, i)
                assert (sync[::8 * (threads + 1)] == plan[:, 1]).all()   # every task counted done once
    g.way = intengine.graph.BatchOne()                             # both ways at batch 1, through run
    got = [model.run(x[i % 4:i % 4 + 1])[0] for i in range(8)]
    if get_num_threads() > 1:                                      # (one thread never shares)
        assert len(g.way.ns[True]) == len(g.way.ns[False]) == 3
    assert np.array_equal(np.array(got), np.concatenate([want, want]))


def test_batch_one_takes_the_faster_way_and_probes_the_other():
    from intengine.graph import BatchOne
    b = BatchOne()
    ways = []
    for _ in range(8):                              # each way timed three times first, after one warm-up
        ways.append(b.shared())
        b.took(ways[-1], 100 if ways[-1] else 300)
    assert ways == [True, True, False, False, True, False, True, False]
    assert b.ns == {True: [100] * 3, False: [300] * 3}
    runs = []
    for _ in range(2 * b.PROBE):
        w = b.shared()
        runs.append(w)
        b.took(w, 100 if w else 300)
    assert runs.count(False) == 2                  # the slower way, once every PROBE calls
    for _ in range(3):                             # the machine gets busy: sharing slows down
        b.took(True, 10_000)
    assert not b.shared() and not b.shared()
    for _ in range(3):                             # and idle again, seen by the probes
        b.took(True, 100)
    assert b.shared()


@pytest.fixture(scope="module")
def batch256(data_dir):
    """256 seeded test images (a real batch)."""
    from intengine.cifar10 import load_test, seeded_subset
    x, _ = load_test(data_dir)
    return x[seeded_subset(len(x), 256, 5)]


_REFERENCE = {}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("bits", [8, 4, 2, "w4a4", "w2a2"])
def test_fast_path_equals_reference_at_every_point(kernel, bits, exported, batch256):
    """The debug layout (no fusion) of the fast path returns every point; on a batch of 256
    test images each one equals reference.py, and the fused layout's logits equal them too."""
    need(kernel)
    model = intengine.load(exported[bits][0], kernel=kernel)
    fast = model.run(batch256, keep=True)
    assert model._debug is not None and not model._debug.fused and model.graph.fused
    if bits not in _REFERENCE:                                     # shared by both paths
        _REFERENCE[bits] = model.run(batch256, reference_ops=True, keep=True)
    ref = _REFERENCE[bits]
    assert len(fast) == len(ref) == len(model.points)
    for name, a, b in zip(model.points, fast, ref):
        assert a is not None and np.array_equal(a, b), f"{kernel} != reference at {name}"
    assert len(np.unique(ref[-1])) > 20                            # real logits, not a constant
    assert np.array_equal(model.run(batch256), ref[-1])            # the fused layout


def test_dispatch(exported, monkeypatch):
    monkeypatch.delenv(cpu.ENV, raising=False)
    assert intengine.load(exported[16][0]).kernel == "scalar"     # 16-bit: the int64 kernels
    auto = intengine.load(exported[8][0]).kernel
    assert auto == cpu.fast_kernels()[0]
    monkeypatch.setenv(cpu.ENV, "portable")
    assert intengine.load(exported[8][0]).kernel == "portable"
    monkeypatch.setenv(cpu.ENV, "scalar")
    m = intengine.load(exported[8][0])
    assert m.kernel == "scalar" and m.graph is None
    monkeypatch.setenv(cpu.ENV, "fastest")
    with pytest.raises(ValueError, match="INTENGINE_KERNEL"):
        intengine.load(exported[8][0])
    monkeypatch.setattr(cpu, "HAS_AMX", True)
    assert cpu.choose(True, "auto") == "amx" and cpu.choose(True, "vnni") == "vnni"
    monkeypatch.setattr(cpu, "HAS_AMX", False)            # each feature hidden in turn
    with pytest.raises(ValueError, match="no AMX-INT8"):
        cpu.choose(True, "amx")
    monkeypatch.setattr(cpu, "HAS_VNNI", False)
    with pytest.raises(ValueError, match="no AVX512-VNNI"):
        cpu.choose(True, "vnni")
    monkeypatch.setattr(cpu, "HAS_AVXVNNI", True)
    monkeypatch.setattr(cpu, "HAS_AVX2", True)
    assert cpu.choose(True, "auto") == "avxvnni" and cpu.choose(True, "avx2") == "avx2"
    monkeypatch.setattr(cpu, "HAS_AVXVNNI", False)
    with pytest.raises(ValueError, match="no AVX-VNNI"):
        cpu.choose(True, "avxvnni")
    assert cpu.choose(True, "auto") == "avx2" and cpu.choose(True, "portable") == "portable"
    monkeypatch.setattr(cpu, "HAS_AVX2", False)
    with pytest.raises(ValueError, match="no AVX2"):
        cpu.choose(True, "avx2")
    assert cpu.choose(True, "auto") == "portable" and cpu.fast_kernels() == ["portable"]
    monkeypatch.setattr(cpu, "HAS_VNNI", True)
    assert cpu.choose(True, "auto") == "vnni" and cpu.choose(False, "auto") == "scalar"


def test_cli_says_which_kernel_ran(exported, data_dir):
    from conftest import run_cli
    r = run_cli("intengine", "info", exported[8][0], "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["kernel"] == cpu.choose(True)                  # auto, or what INTENGINE_KERNEL says
    assert info["cpu"]["avx512vnni"] == cpu.host_features().get("avx512vnni", False)
    r = run_cli("intengine", "eval", exported[8][0], "--limit", "20", "--json", "--no-progress",
                env={"CIFAR10_DIR": data_dir, cpu.ENV: "portable"})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["kernel"] == "portable"
    r = run_cli("intengine", "info", exported[16][0])
    assert r.returncode == 0 and "kernel: scalar" in r.stdout
    r = run_cli("intengine", "info", exported[8][0], env={cpu.ENV: "fastest"})
    assert r.returncode == 2 and r.stderr.startswith("error: INTENGINE_KERNEL='fastest'"), r.stderr


def test_op_table_layout():
    """The op table's fields are named once (layout.FIELDS), each name a distinct column, and
    the eight add parameters vnni.epilogue reads as one slice are contiguous and in order."""
    from intengine import layout
    assert len(set(layout.FIELDS)) == layout.NFIELDS == len(layout.FIELD)
    assert [getattr(layout, n) for n in layout.FIELDS] == list(range(layout.NFIELDS))
    assert tuple(layout.FIELDS[layout.ADD_START:layout.ADD_END]) == layout.EPILOGUE_ADD == (
        "A_N", "A_ZY", "A_LO", "A_HI", "AH", "BH", "AL", "ASIDE")
    row = layout.set_fields(np.zeros(layout.NFIELDS, np.int64), KA=3, A_HI=9)
    assert row[layout.KA] == 3 and row[layout.A_HI] == 9 and row.sum() == 12
    with pytest.raises(KeyError):
        layout.set_fields(row, NOT_A_FIELD=1)
