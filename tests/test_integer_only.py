"""No float instruction in any compiled kernel signature (docs/quantization.md, engine rule).

The scan covers kernels.py and the fast path (fastops.py with its vnni.py micro-kernel: the
VNNI, AVX-VNNI, AVX2 and portable bodies, and amx.py's tiles); where the processor has AMX
(AVX512-VNNI, 256-bit VNNI, AVX2) it also checks that the scanned IR does call tdpbusd
(vpdpbusd on zmm, on ymm, vpmaddubsw and vpmaddwd), so those bodies really are in what was
scanned.

Numba cannot show the IR of code loaded from its cache, so this compiles the kernels in a
fresh process with an empty cache folder and scans inspect_llvm() of every signature, the
parallel (gufunc) bodies included.  The same scan must find floats in a float function.
"""
import json
import subprocess
import sys

from conftest import ROOT

FLOAT_OPS = r"\b(fadd|fsub|fmul|fdiv|frem|fneg|fptosi|fptoui|sitofp|uitofp|fcmp|fpext|fptrunc)\b"

SCAN = """
import json, re, sys
import numpy as np
from numba import njit
import intengine
from intengine import cpu, fastops, kernels
sys.path.insert(0, "tests")
import fast_harness
from exporter import synthetic
pat = re.compile(r"%s")
paths = sys.argv[2:]
for seed in range(12):                                   # random graphs: every op kind and row type
    q, classes = synthetic.random_qnet(np.random.default_rng(seed), low=seed != 4)
    paths.append(f"{sys.argv[1]}/g{seed}.npz")
    synthetic.write(q, classes, paths[-1])
for path in paths:
    m = intengine.load(path, kernel="scalar")
    x = np.zeros((2, *m.input_shape), np.uint8)
    m.run(x)
    m.set_kernel(None)                                   # the fast path where the file allows it
    m.run(x)
    m.run(x[:1])
z = np.zeros
fast_harness.conv3x3(z((1, 4, 4, 3), np.int32), 0, z((3, 3, 3, 16), np.int8), z(16, np.int64),
              np.full(16, 1 << 30), np.full(16, 40), 0, 0, 255, 1, "portable")
found, amx, vnni, avxvnni, avx2 = {}, False, False, False, False
for mod, names in ((kernels, ("input_lut", "conv", "add", "requantize", "gap", "avgpool", "maxpool", "flatten",
                             "linear")),
                   (fastops, ("input_lut", "conv_rows", "amx_rows", "dwconv_rows", "add_rows", "gap", "window_rows",
                              "flatten", "linear", "output", "run_op", "run", "run_one_op", "share_image",
                              "run_shared"))):
    for name in names:
        k = getattr(mod, name)
        for sig in k.signatures:
            ir = k.inspect_llvm(sig)
            assert "define" in ir, "no IR (cached code?)"
            found[f"{mod.__name__}.{name}{sig}"] = sorted(set(pat.findall(ir)))
            amx |= "llvm.x86.tdpbusd" in ir
            vnni |= "llvm.x86.avx512.vpdpbusd.512" in ir
            avxvnni |= "llvm.x86.avx512.vpdpbusd.256" in ir
            avx2 |= "llvm.x86.avx2.pmadd.ub.sw" in ir and "llvm.x86.avx2.pmadd.wd" in ir
assert amx == cpu.HAS_AMX, (amx, cpu.HAS_AMX)
assert vnni == cpu.HAS_VNNI, (vnni, cpu.HAS_VNNI)
assert avx2 == cpu.HAS_AVX2, (avx2, cpu.HAS_AVX2)
assert avxvnni == cpu.HAS_AVXVNNI, (avxvnni, cpu.HAS_AVXVNNI)
@njit
def f(x):
    return x * 0.5 + 1.0
f(3)
control = sorted(set(pat.findall(f.inspect_llvm(f.signatures[0]))))
print(json.dumps({"kernels": found, "control": control}))
""" % FLOAT_OPS


def test_no_float_instructions(exported, tmp_path):
    # int32 and int64 accumulators, int8/int16 weights, and the requant op of 4-bit activations
    paths = [str(exported[b][0]) for b in (4, 16, "w4a4")]
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "numba-cache"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", SCAN, str(tmp_path), *paths], capture_output=True, text=True, cwd=ROOT,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["control"], "the scan finds nothing even in float code"
    compiled = {k.split("(")[0] for k in result["kernels"]}
    assert len(compiled) == 9 + 15, compiled                 # every kernel of both lists ran
    assert any(k.startswith("intengine.fastops.run(") for k in result["kernels"])
    assert any(k.startswith("intengine.kernels.requantize(") for k in result["kernels"])
    offenders = {k: v for k, v in result["kernels"].items() if v}
    assert not offenders, offenders
