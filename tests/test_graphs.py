"""Random graphs of every op kind (exporter/synthetic.py): on each, the reference (reference.py),
the scalar kernels (kernels.py) and every fast path this processor has give the same integers
at every point, and so does the exporter's exact simulation (exporter/simulate.run_exact), an
independent torch implementation of the same equations."""
import numpy as np
import pytest

from exporter import synthetic
import intengine
from exporter.simulate import run_exact
from intengine import cpu, fileformat

GRAPHS = 200
PATHS = cpu.fast_kernels()


def points_equal(a, b):
    """The indices of the points where two runs (lists of arrays, None where a run does not
    keep that point) differ."""
    return [i for i, (x, y) in enumerate(zip(a, b)) if x is not None and y is not None and not np.array_equal(x, y)]


def check_graph(seed, tmp_path, low=True):
    """One random graph: every path equals the reference at every point.  -> the fast paths
    that ran it (a file the fast path cannot take runs the scalar kernels)."""
    rng = np.random.default_rng(seed)
    qnet, classes = synthetic.random_qnet(rng, low=low)
    path = tmp_path / f"g{seed}.npz"
    synthetic.write(qnet, classes, path)
    x = synthetic.images(rng, qnet)
    model = intengine.load(path, kernel="scalar")
    want = model.run(x, reference_ops=True, keep=True)
    assert not points_equal(model.run(x, keep=True), want), f"seed {seed}: scalar"
    exact = [t.numpy() for t in run_exact(qnet, x)]
    assert not points_equal(exact, want), f"seed {seed}: exact simulation"
    ran = []
    for kernel in PATHS if low else []:
        model.set_kernel(kernel)
        if model.kernel == "scalar":
            continue
        ran.append(kernel)
        bad = points_equal(model.run(x, keep=True), want)
        assert not bad, f"seed {seed}: {kernel} differs at points {bad}"
        assert np.array_equal(model.predict(x), want[-1]), f"seed {seed}: {kernel} fused"
        assert np.array_equal(model.predict(x[:1]), want[-1][:1]), f"seed {seed}: {kernel} batch of one"
    return qnet, ran


def test_random_graphs_agree_bit_for_bit_on_every_path(tmp_path):
    kinds, taken = set(), 0
    for seed in range(GRAPHS):
        qnet, ran = check_graph(seed, tmp_path, low=seed % 5 != 4)   # every fifth: 16-bit widths too
        kinds |= {op["op"] if op["op"] != "conv" or op["groups"] == 1 else
                  ("depthwise" if op["groups"] == op["cin"] == op["cout"] else "grouped") for op in qnet["ops"]}
        taken += ran == PATHS
    assert kinds == {"conv", "depthwise", "grouped", "linear", "add", "requant", "gap", "avgpool", "maxpool",
                     "flatten"}, kinds
    assert taken >= 0.75 * GRAPHS, f"only {taken} of {GRAPHS} graphs ran on every fast path"


def test_the_random_graph_check_can_fail(tmp_path, monkeypatch):
    """A one-off error in one kernel is caught: the depthwise fast row with its padding moved by
    one pixel."""
    from intengine.ops import conv
    real = conv.lower_depthwise

    def shifted(op, lw):
        op.ph += 1
        try:
            real(op, lw)
        finally:
            op.ph -= 1
    monkeypatch.setattr(conv, "lower_depthwise", shifted)
    with pytest.raises(AssertionError, match="differs at points"):
        for seed in range(GRAPHS):
            check_graph(seed, tmp_path)


def test_generated_files_name_every_kind_with_its_fields(tmp_path):
    """The converters write each kind's FIELDS (plus INFO) and nothing else, for every kind."""
    from exporter.ops import CONVERTERS
    from intengine.ops import KINDS
    seen = set()
    for seed in range(40):
        qnet, classes = synthetic.random_qnet(np.random.default_rng(seed))
        synthetic.write(qnet, classes, tmp_path / "g.npz")
        header, _ = fileformat.read(tmp_path / "g.npz")
        for spec in header["ops"]:
            assert set(spec) == {"op", "name", "in", "out", *KINDS[spec["op"]].FIELDS,
                                 *CONVERTERS[spec["op"]].INFO}, spec
            seen.add(spec["op"])
    assert seen == set(KINDS)


LIMITED_RUN = """
import json, re, sys
from pathlib import Path
sys.path.insert(0, "tests")
from intengine import cpu, fastops
import test_graphs
test_graphs.PATHS = cpu.fast_kernels()
ran = [test_graphs.check_graph(seed, Path(sys.argv[1]))[1] for seed in range(40)]
asm = "".join(fastops.conv_rows.inspect_asm(s) for s in fastops.conv_rows.signatures)
print(json.dumps({"paths": cpu.fast_kernels(), "ran": sum(r[:1] == cpu.fast_kernels()[:1] for r in ran),
                  "dot": sorted(set(re.findall(r"(\\{vex\\}\\s*)?vpdpbusd\\s+%([xyz]mm)", asm))),
                  "maddubs": "vpmaddubsw" in asm, "avx512_registers": re.findall(r"zmm|[xy]mm(?:1[6-9]|2\\d|3[01])", asm)}))
"""


@pytest.mark.parametrize("isa,name", [("avx2", "haswell"), ("avxvnni", "alderlake")])
def test_a_processor_without_avx512_runs_its_own_path_and_agrees(isa, name, tmp_path):
    """What an AVX2-only processor (Zen 2 and 3) and an Intel client chip (AVX-VNNI, no AVX-512)
    run, compiled here for one: NUMBA_CPU_NAME and the host's features less AVX-512 and AMX
    (cpu.limited_features).  The engine picks that processor's path, emits no AVX-512 register,
    the avxvnni path only the VEX-encoded vpdpbusd on ymm, and random graphs equal the reference
    at every point.  Runs where this processor executes that instruction set."""
    if not cpu.host_features().get(isa):
        pytest.skip(f"this processor ({cpu.processor_name()}) has no {isa}; on a processor with it this runs")
    import json
    import subprocess
    import sys
    from conftest import ROOT
    env = {"NUMBA_CPU_NAME": name, "NUMBA_CPU_FEATURES": cpu.limited_features(isa),
           "NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", LIMITED_RUN, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["paths"] == ["avxvnni", "avx2", "portable"][isa == "avx2":], got
    assert got["ran"] >= 20 and got["avx512_registers"] == [], got      # most graphs take the fast path
    if isa == "avxvnni":
        assert got["dot"] == [["{vex}\t", "ymm"]], got
    else:
        assert got["dot"] == [] and got["maddubs"], got
