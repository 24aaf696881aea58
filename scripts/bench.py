"""Engine speed, side by side: intengine's kernel paths against torch.ao int8, onnxruntime
int8 and FP32 torch, on this machine (docs/engine.md).

    CIFAR10_DIR=../shared/data python scripts/bench.py [--quick] [--threads 2] [--out DIR] [--publish]

Every contender gets the same threads, the same images and the same timed region: uint8
NHWC pixels in, logits out.  Figures:
- the fair protocol, the headline: images/s at batch 256 with each contender alone in its
  own fresh process at its own default runtime settings (the user's OMP_WAIT_POLICY, if any,
  else each library's default), --rounds rounds interleaved A B C A B C ..., the order
  rotating each round; the median, the spread, and the median of the per-round ratios to
  torch.ao int8;
- the machine's own int8 peak (the roofline): a loop of 16 independent vpdpbusd
  accumulators on one thread and on all threads, in multiply-accumulates per second, and
  each op's and the whole network's fraction of it;
- in this one process (the second table): images/s at batch 256, the median of --passes
  passes after a warm-up,
  the contenders taking turns pass by pass, so that a busy neighbour slows them all alike;
- batch-1 latency p50 / p99 over --latency-images images (taking turns every 100 images);
- in a fresh process each (a child of this script): the time from process start to the
  first logits with a warm cache, the same with an empty Numba cache (intengine's compile),
  and the peak resident memory after a batch of 256.
Ratios to torch.ao int8 are the headline: absolute figures move between machines and runs.
The report records the processor, its VNNI/AMX flags, the versions and the load average.
It also checks that each intengine fast path returns exactly the logits of the scalar
kernels (kernels.py, bit-identical to reference.py) on the first images.

--isa avx2 races an AVX2-only processor on an AVX-512 one: every contender is limited to AVX2
by its own switch (ISA_LIMITS: the engine compiles for haswell with the host's features less
every AVX-512, AMX and AVX-VNNI one (cpu.limited_features) and takes its avx2 path; torch's
fbgemm, oneDNN and ATen, and OpenVINO's oneDNN, by their environment variables; onnxruntime
has none and is named as not limited), and the report labels the rows "AVX2, emulated on
<processor>".  Only a real AVX2 processor settles an AVX2 figure.  --isa avxvnni does the same
for an Intel client chip (AVX-VNNI, no AVX-512): the engine compiles for alderlake and takes
its avxvnni path (VEX vpdpbusd on ymm, no AVX-512 feature), oneDNN is held to AVX2_VNNI, fbgemm (which has no
AVX-VNNI kernels) and ATen to AVX2.

Writes bench.json and bench.md into --out (default reports/bench, untracked); --publish
writes results/bench.json and results/bench.md instead.  Every published race also goes into
results/bench_kinds.json, one entry per processor kind (its fastest path, and the ISA limit of
an emulated race), which the README shows as one row each with its date and processor:
--publish with --isa writes only that row, labelled emulated; --add-run REPORT.json adds a
race already run to --out.  --quick (256 images, W8A8 only,
64 calibration images, no cold-compile child) is the smoke run that the tests use; a peer
whose package is missing (onnxruntime: the `peers` extra) is skipped with a printed note.
"""
import datetime
import json
import os

# In this process the contenders' thread pools sleep when idle instead of spinning, so that
# one contender's idle threads do not take the cores from the next one (both torch and Numba
# use OpenMP).  Measured here: spinning pools cut torch.ao int8 to a sixth of its speed in
# this process.  The fair protocol's children get the user's own setting back.
USER_OMP_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))          # the checkout's packages, installed or not (children too)
CHILD = "--child"


def load_contender(kind, path, threads):
    """In a child: the predict function of one contender, as its users load it."""
    if kind.startswith("intengine:"):
        import intengine
        return intengine.load(path, kernel=kind.split(":")[1]).run
    if kind == "onnx":
        from exporter import onnxrt
        return onnxrt.predictor(path, threads)
    if kind == "openvino":
        from exporter import openvino
        return openvino.predictor(path, threads)
    import torch
    torch.set_num_threads(threads)
    m = torch.jit.load(path)

    def fn(a):
        with torch.inference_mode():
            return m(torch.from_numpy(a)).numpy()
    return fn


def child_speed(argv):
    """In a fresh process (the fair protocol): one warm-up batch, then one timed pass over the
    images at batch 256.  Prints {"images_per_s": ...}."""
    kind, path, threads = argv[0], argv[1], int(argv[2])
    x = np.load(argv[3])
    fn = load_contender(kind, path, threads)
    fn(x[:BATCH])
    t = time.perf_counter()
    for s in range(0, len(x), BATCH):
        fn(x[s:s + BATCH])
    print(json.dumps({"images_per_s": len(x) / (time.perf_counter() - t)}))


def child_latency(argv):
    """In a fresh process (the fair protocol for latency): 20 warm-up calls, then batch-1 calls
    over the images.  Prints {"p50_s": ..., "p99_s": ...}."""
    kind, path, threads = argv[0], argv[1], int(argv[2])
    x = np.load(argv[3])
    fn = load_contender(kind, path, threads)
    for i in range(20):
        fn(x[i:i + 1])
    times = []
    for i in range(len(x)):
        t = time.perf_counter()
        fn(x[i:i + 1])
        times.append(time.perf_counter() - t)
    print(json.dumps({"p50_s": float(np.percentile(times, 50)), "p99_s": float(np.percentile(times, 99))}))


def child_main(argv):
    """In a fresh process: load one contender, first logits, then a batch of 256.

    argv: kind path threads.  Prints one JSON line; the parent subtracts its own start."""
    kind, path, threads = argv[0], argv[1], int(argv[2])
    x = np.load(argv[3])
    fn = load_contender(kind, path, threads)
    fn(x[:1])
    first = time.time()
    fn(x)
    # VmHWM, not getrusage: Linux carries ru_maxrss over exec from the parent
    hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM:")]
    rss = int(hwm[0].split()[1]) * 1024 if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"first_logits_at": first, "peak_rss_bytes": rss}))


BATCH = 256
# --isa avx2: each library's own switch down to AVX2, set before anything starts (the script
# runs itself again under them, so the children inherit them too)
ISA_LIMITS = {"avx2": {"NUMBA_CPU_NAME": "haswell", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
                       "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
              "avxvnni": {"NUMBA_CPU_NAME": "alderlake", "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
                          "ONEDNN_MAX_CPU_ISA": "AVX2_VNNI", "ATEN_CPU_CAPABILITY": "avx2"}}
ISA_ENV = "LOWBIT_BENCH_ISA"                   # set in the run that is limited
CHILDREN = {CHILD: child_main, CHILD + "-speed": child_speed, CHILD + "-latency": child_latency}
if len(sys.argv) > 1 and sys.argv[1] in CHILDREN:      # before the heavy imports below
    CHILDREN[sys.argv[1]](sys.argv[2:])
    sys.exit(0)

import numba  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import intengine  # noqa: E402
from exporter import onnxrt, openvino, source, synthetic, torchao  # noqa: E402
from exporter.pipeline import Config, export  # noqa: E402
from intengine import cpu  # noqa: E402
from intengine.cifar10 import load_test, seeded_subset  # noqa: E402
from exporter.report import Progress, fill_section, write_atomic  # noqa: E402
from trainer import data  # noqa: E402


def torch_contender(model):
    wrapped = onnxrt.uint8_input(model)

    def fn(x):
        with torch.inference_mode():
            return wrapped(torch.from_numpy(x)).numpy()
    return fn, wrapped


def throughput(fns, x, passes, say):
    """{name: median images/s}, {name: per-pass images/s}, {name: median images per CPU
    second} at batch 256, the contenders taking turns pass by pass.  The CPU figure (this
    process's CPU time, all its threads) is steadier than wall time when other jobs share
    the machine; spinning thread pools count against it."""
    speeds, cpu = {k: [] for k in fns}, {k: [] for k in fns}
    for f in fns.values():
        f(x[:BATCH])                                   # warm-up
    for p in range(passes):
        for k, f in fns.items():
            t, c = time.perf_counter(), time.process_time()
            for s in range(0, len(x), BATCH):
                f(x[s:s + BATCH])
            speeds[k].append(len(x) / (time.perf_counter() - t))
            cpu[k].append(len(x) / max(time.process_time() - c, 1e-9))
        say(f"throughput pass {p + 1}/{passes}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in speeds.items()))
    med = lambda d: {k: float(np.median(v)) for k, v in d.items()}
    return med(speeds), speeds, med(cpu)


def latency(fns, x, n):
    """{name: (p50 s, p99 s)} of batch-1 calls over n images, turns every 100 images."""
    times = {k: [] for k in fns}
    for f in fns.values():
        f(x[:1])
    for s in range(0, n, 100):
        for k, f in fns.items():
            for i in range(s, min(s + 100, n)):
                t = time.perf_counter()
                f(x[i:i + 1])
                times[k].append(time.perf_counter() - t)
    return {k: (float(np.percentile(v, 50)), float(np.percentile(v, 99))) for k, v in times.items()}


def fair_env(threads):
    """A child's environment at its own defaults: the user's OMP_WAIT_POLICY (or none), the
    same thread count for every library."""
    e = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if USER_OMP_WAIT_POLICY is not None:
        e["OMP_WAIT_POLICY"] = USER_OMP_WAIT_POLICY
    return {**e, "NUMBA_NUM_THREADS": str(threads), "OMP_NUM_THREADS": str(threads)}


def fair_rounds(files, threads, images_path, rounds, ref, say, what="speed", key="images_per_s"):
    """The fair protocol: every contender in its own fresh process, `rounds` rounds, the
    order rotating each round.  files {name: (kind, path)} or (kind, path, threads) for a
    contender at another thread count (the scaling rows).  what: "speed" (images/s at batch
    256) or "latency" (key p50_s: batch-1 calls).  -> {name: {median, min, max, ratio,
    rounds}}, ratio the median of the per-round ratios to `ref`."""
    names = list(files)
    seen = {n: [] for n in names}
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            kind, path, t = (*files[name], threads)[:3]
            r = subprocess.run([sys.executable, __file__, f"{CHILD}-{what}", kind, str(path), str(t),
                                str(images_path)], capture_output=True, text=True, env=fair_env(t),
                               cwd=ROOT, timeout=900)
            if r.returncode != 0:
                raise RuntimeError(f"child {name} failed: {r.stderr.strip().splitlines()[-1:]}")
            seen[name].append(json.loads(r.stdout.strip().splitlines()[-1])[key])
        say(f"fair {what} round {k + 1}/{rounds}: " + ", ".join(f"{n} {v[-1]:.4g}" for n, v in seen.items()))
    return {n: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)),
                "ratio": float(np.median(np.array(v) / np.array(seen[ref]))), "rounds": v}
            for n, v in seen.items()}


def _peak_types():
    from llvmlite import ir
    i8, i16, i32 = ir.IntType(8), ir.IntType(16), ir.IntType(32)
    v = ir.VectorType
    # instruction: (LLVM name, accumulator type, operand type, result type, MACs per instruction)
    return {"vpdpbusd": ("llvm.x86.avx512.vpdpbusd.512", v(i32, 16), v(i32, 16), v(i32, 16), 64),
            "vpdpbusd-ymm": ("llvm.x86.avx512.vpdpbusd.256", v(i32, 8), v(i32, 8), v(i32, 8), 32),
            "vpmaddubsw": ("llvm.x86.avx2.pmadd.ub.sw", v(i8, 32), v(i8, 32), v(i16, 16), 32),
            "vpmaddwd": ("llvm.x86.avx2.pmadd.wd", v(i16, 16), v(i16, 16), v(i32, 8), 16)}


# the instructions whose peak the bench measures, when the processor runs them; and which one
# each path is built on (vnni.py): its roofline
PEAK_INSTRUCTIONS = {"tdpbusd": lambda: cpu.HAS_AMX, "vpdpbusd": lambda: cpu.HAS_VNNI, "vpdpbusd-ymm": lambda: cpu.HAS_AVXVNNI,
                     "vpmaddubsw": lambda: cpu.HAS_AVX2, "vpmaddwd": lambda: cpu.HAS_AVX2}
PATH_INSTRUCTION = {"amx": "tdpbusd", "vnni": "vpdpbusd", "avxvnni": "vpdpbusd-ymm", "avx2": "vpmaddubsw", "portable": "vpmaddwd"}


def instruction_of(path, kernel, macs):
    """The instruction that does most of a file's multiply-accumulates on `kernel`: on avx2,
    vpmaddubsw for the conv layers whose weights allow it (the row's MADD), else vpmaddwd."""
    if kernel != "avx2":
        return PATH_INSTRUCTION[kernel]
    from intengine.layout import CONV, MADD, ROW
    g = intengine.load(path, kernel="avx2").graph
    on = {"vpmaddubsw": 0, "vpmaddwd": 0}
    for name, row in zip(g.names, g.ops):
        if row[ROW] == CONV:
            on["vpmaddubsw" if row[MADD] else "vpmaddwd"] += macs.get(name.split(" + ")[0], 0)
    return max(on, key=on.get)


def _amx_chains():
    """n rounds of 4 independent AMX tdpbusd chains (16 x 16 x 64 products each, the tile
    registers 0-3 accumulating, A and B loaded once), as chain_loop(n, seed) -> int64."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
    from intengine import amx
    i8, i64 = ir.IntType(8), ir.IntType(64)
    ptr = i8.as_pointer()
    cfg = amx.tile_config(16, 16)

    @intrinsic
    def chain_loop(typingctx, n, seed):
        def codegen(context, builder, signature, args):
            def fn(name, argt):
                return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), argt), name)
            buf = cgutils.alloca_once(builder, ir.ArrayType(i8, 1024))
            builder.store(ir.Constant(ir.ArrayType(i8, 1024), [1] * 1024), buf)
            conf = cgutils.alloca_once(builder, ir.ArrayType(i8, 64))
            builder.store(ir.Constant(ir.ArrayType(i8, 64), list(cfg)), conf)
            builder.call(fn("llvm.x86.ldtilecfg", [ptr]), [builder.bitcast(conf, ptr)])
            for t in (4, 6):
                builder.call(fn("llvm.x86.tileloadd64", [i8, ptr, i64]),
                             [ir.Constant(i8, t), builder.bitcast(buf, ptr), ir.Constant(i64, 64)])
            for t in range(4):
                builder.call(fn("llvm.x86.tilezero", [i8]), [ir.Constant(i8, t)])
            with cgutils.for_range(builder, args[0]):
                for t in range(4):
                    builder.call(fn("llvm.x86.tdpbusd", [i8, i8, i8]), [ir.Constant(i8, t), ir.Constant(i8, 4),
                                                                         ir.Constant(i8, 6)])
            builder.call(fn("llvm.x86.tilestored64", [i8, ptr, i64]),
                         [ir.Constant(i8, 0), builder.bitcast(buf, ptr), ir.Constant(i64, 64)])
            builder.call(fn("llvm.x86.tilerelease", []), [])
            first = builder.load(builder.bitcast(buf, ir.IntType(32).as_pointer()))
            return builder.add(builder.sext(first, i64), args[1])
        return types.int64(types.int64, types.int64), codegen
    return chain_loop, 4 * 16 * 16 * 64


def peak_macs(threads, instruction="vpdpbusd", seconds=0.3):
    """The machine's own int8 multiply-accumulate peak (the roofline) of one instruction:
    16 independent chains of it (vpdpbusd on zmm; vpmaddubsw, vpmaddwd on ymm), or AMX's
    tdpbusd on 4 independent accumulator tiles, on one thread and on `threads` threads ->
    (MAC/s 1 thread, MAC/s all threads)."""
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
    if instruction == "tdpbusd":
        chain_loop, macs_per_iter = _amx_chains()
    else:
        chain_loop, macs_per_iter = _chains(instruction, ir, types, cgutils, intrinsic)

    @njit(nogil=True)
    def one(n, seed):
        return chain_loop(n, seed)

    @njit(parallel=True)
    def many(n, seed, t):
        out = np.zeros(t, np.int64)
        for i in prange(t):
            out[i] = chain_loop(n, seed + i)
        return out.sum()

    one(1000, 1), many(1000, 1, threads)       # compile
    n = 1 << 16
    t = time.perf_counter()
    one(n, 1)
    n = max(n, int(n * seconds / max(time.perf_counter() - t, 1e-6)))
    best1 = max(n * macs_per_iter / _timed(lambda: one(n, 1)) for _ in range(3))
    numba.set_num_threads(threads)
    bestn = max(n * threads * macs_per_iter / _timed(lambda: many(n, 1, threads)) for _ in range(3))
    return best1, bestn


def _chains(instruction, ir, types, cgutils, intrinsic):
    """16 independent chains of one SIMD multiply-add, as chain_loop(n, seed) -> int64; and
    the multiply-accumulates a round."""
    name, acc_t, arg_t, res_t, per = _peak_types()[instruction]
    i32 = ir.IntType(32)

    @intrinsic
    def chain_loop(typingctx, n, seed):
        def codegen(context, builder, signature, args):
            n, seed = args
            dot = instruction.startswith("vpdpbusd")
            args_t = [acc_t, arg_t] + ([arg_t] if dot else [])
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(res_t, args_t), name)
            s = builder.trunc(seed, acc_t.element)

            def splat(v, t):
                return builder.shuffle_vector(builder.insert_element(ir.Constant(t, None), v, ir.Constant(i32, 0)),
                                              ir.Constant(t, None), ir.Constant(ir.VectorType(i32, t.count),
                                                                                [0] * t.count))
            b = builder.bitcast(splat(builder.add(s, ir.Constant(acc_t.element, 1)), acc_t), arg_t)
            accs = [cgutils.alloca_once(builder, acc_t) for _ in range(16)]
            for k, acc in enumerate(accs):
                builder.store(splat(builder.add(s, ir.Constant(acc_t.element, k)), acc_t), acc)
            with cgutils.for_range(builder, n):
                for acc in accs:
                    a = builder.load(acc)
                    r = builder.call(fn, [a, b, b] if dot else [a, b])
                    builder.store(builder.bitcast(r, acc_t), acc)
            total = ir.Constant(i32, 0)
            for acc in accs:
                e = builder.extract_element(builder.bitcast(builder.load(acc), ir.VectorType(i32, 8 if
                                            instruction != "vpdpbusd" else 16)), ir.Constant(i32, 0))
                total = builder.add(total, e)
            return builder.sext(total, ir.IntType(64))
        return types.int64(types.int64, types.int64), codegen
    return chain_loop, 16 * per                # 16 chains, `per` byte or word products each


def _timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def network_macs(path):
    """Multiply-accumulates per image of each weighted op of a model file, by name."""
    m = intengine.load(path, kernel="scalar")
    shapes = [tuple(p["shape"]) for p in m.header["points"]]
    out = {}
    for op in m.ops:
        if op.kind == "conv":
            ho, wo, co = shapes[op.out]
            out[op.name] = ho * wo * co * op.spec["kh"] * op.spec["kw"] * op.spec["cin"] // op.spec["groups"]
        elif op.kind == "linear":
            out[op.name] = op.spec["cin"] * op.spec["cout"]
    return out


def in_child(kind, path, threads, images_path, env=None):
    """-> (seconds from process start to first logits, peak RSS bytes) in a fresh process."""
    e = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), **(env or {}))
    t0 = time.time()
    r = subprocess.run([sys.executable, __file__, CHILD, kind, str(path), str(threads), str(images_path)],
                       capture_output=True, text=True, env=e, cwd=ROOT, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"child {kind} failed: {r.stderr.strip().splitlines()[-1:]}")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res["first_logits_at"] - t0, res["peak_rss_bytes"]


def machine(threads):
    f = cpu.host_features()
    versions = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__,
                "torch": torch.__version__}
    for mod in ("llvmlite", "onnxruntime", "onnx"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            versions[mod] = None
    limit = os.environ.get(ISA_ENV)
    return {"cpu": cpu.processor_name(), "llvm_cpu": cpu.llvm_cpu_name(), "cores": os.cpu_count(), "threads": threads,
            "isa_limit": limit and {"isa": limit, "env": {**ISA_LIMITS[limit], "NUMBA_CPU_FEATURES":
                                                          f"the host's, less {cpu.LIMITED_OFF[limit]}"},
                                    "not_limited": ["onnxruntime (no switch: its own dispatch)"]},
            "flags": {k: f.get(k, False) for k in ("avx512vnni", "avxvnni", "amx-int8", "avx512bw", "avx2")},
            "versions": versions, "torch_quantized_engine": torch.backends.quantized.engine}


def measure(checkpoint, data_dir, quick, threads, n_images, passes, n_latency, calib_n, seed, work, say,
            rounds=5):
    torch.set_num_threads(threads)
    numba.set_num_threads(threads)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    x, y = load_test(data_dir)
    idx = seeded_subset(len(y), n_images, seed)
    x, y = np.ascontiguousarray(x[idx]), y[idx].astype(np.int64)
    train = data.load_arrays(data_dir)["x_train"]
    calib = train[seeded_subset(len(train), calib_n, seed)]
    model = source.checkpoint_model(checkpoint)
    fns, files, notes, files_used = {}, {}, [], {}

    say("torch.ao int8 (x86, FX graph mode on the float model, full range) and FP32")
    fns["torch.ao int8"], tq = torch_contender(torchao.fx_int8(model, calib, "full"))
    fns["FP32 torch"], tf = torch_contender(model)
    for name, m in (("torch.ao int8", tq), ("FP32 torch", tf)):
        files[name] = ("torchscript", work / f"{name.split()[0]}.pt")
        with torch.inference_mode():
            torch.jit.save(torch.jit.trace(m, torch.from_numpy(x[:2])), str(files[name][1]))
    def peer(name, lib, kind, path, what):
        """A peer runtime on the QDQ file `path`, or a note that says why it is missing."""
        why = lib.missing()
        if why:
            notes.append(f"{name} skipped: {why}")
            say(notes[-1])
            return False
        say(f"{name} ({what})")
        # this process times every contender: onnxruntime's idle threads must not spin here
        # (onnxrt.session); its own process (the fair protocol) keeps its defaults
        fns[name] = lib.predictor(path, threads, shared=True) if lib is onnxrt else lib.predictor(path, threads)
        files[name] = (kind, path)
        return True

    qdq = None if onnxrt.missing() else onnxrt.quantize_int8(model, calib, work / "onnx")   # OpenVINO reads it too
    if peer("onnxruntime int8", onnxrt, "onnx", qdq, "static QDQ, per-channel, MinMax"):
        peer("OpenVINO int8", openvino, "openvino", qdq, "the same QDQ file, OpenVINO's CPU defaults")
    kernels = cpu.fast_kernels()              # every path this processor runs, fastest first
    fast = kernels[0]
    identical, profile = {}, None
    w8_path = None
    shipped = Path(checkpoint).resolve() == (ROOT / "checkpoints" / "resnet20.pt").resolve()
    for bits in ((8,) if quick else (8, 4, 2)):
        committed = ROOT / "models" / f"resnet20_w{bits}a8_brecq_lsq_s0.npz"
        if bits < 8 and shipped and committed.is_file():       # the default method's file: its top-1 is real
            say(f"W{bits}A8: the committed default-method file {committed.relative_to(ROOT)}")
            path = committed
        else:      # W8A8's default is round-to-nearest; another checkpoint gets nearest files (the same work)
            say(f"exporting W{bits}A8 ({calib_n} calibration images, round-to-nearest)")
            path = export(Config(checkpoint, bits, calib_images=calib_n, seed=seed, data_dir=data_dir,
                                 rounding="nearest"), work / f"w{bits}a8.npz", progress=False)[0]
            if bits < 8:
                notes.append(f"W{bits}A8 is a round-to-nearest export of {checkpoint} (the same work as the "
                             f"default file; its top-1 is not the default's)")
        files_used[bits] = str(path)
        w8_path = w8_path or path
        ref = intengine.load(path, kernel="scalar").run(x[:64 if quick else BATCH])
        for kernel in kernels:
            name = f"intengine W{bits}A8 {kernel}"
            m = intengine.load(path, kernel=kernel)
            fns[name] = m.run
            files[name] = (f"intengine:{kernel}", path)
            identical[name] = bool(np.array_equal(m.run(x[:len(ref)]), ref))
            if bits == 8 and kernel == fast:
                say(f"per-op profile of {name} (one thread, CPU time)")
                profile = {"name": name, "ops": [[k, v * 1e6] for k, v in m.graph.profile(x[:BATCH])]}
    say("per-op profile of an inverted residual (exporter/synthetic.py: 1x1, depthwise 3x3, 1x1)")
    ir_path = work / "inverted_residual.npz"
    synthetic.write(*synthetic.inverted_residual(np.random.default_rng(seed)), ir_path)
    m = intengine.load(ir_path, kernel=fast)
    ir_x = np.random.default_rng(seed).integers(0, 256, (BATCH, *m.input_shape)).astype(np.uint8)
    ir_profile = {"name": f"inverted residual, 16x16, 32 -> 192 -> 32 channels, {fast}",
                  "ops": [[k, v * 1e6] for k, v in m.graph.profile(ir_x)]}
    say(f"top-1 of every contender on the {len(x)} images it is timed on")
    preds = {k: np.concatenate([np.asarray(f(x[s:s + BATCH])).argmax(1) for s in range(0, len(x), BATCH)])
             for k, f in fns.items()}
    np.save(work / "images_all.npy", x)
    fair_names = ["torch.ao int8", "onnxruntime int8", "OpenVINO int8"] + [
        f"intengine W{b}A8 {k}" for k in kernels if k != "portable" for b in (8, 4, 2)] + [
        "intengine W8A8 portable", "FP32 torch"]
    fair_files = {n: files[n] for n in fair_names if n in files}
    scaling = {}                          # the same contenders on one thread: the thread scaling
    if threads > 1:
        for n in ((f"intengine W8A8 {fast}",) if quick else ("torch.ao int8", f"intengine W8A8 {fast}")):
            scaling[n] = f"{n}, 1 thread"
            fair_files[scaling[n]] = (*files[n], 1)
    say(f"fair protocol: {len(fair_files)} contenders, each in its own fresh process at its own defaults, "
        f"{rounds} interleaved rounds of {len(x)} images")
    fair = fair_rounds(fair_files, threads, work / "images_all.npy", rounds, "torch.ao int8", say)
    fair_lat = {}
    if "onnxruntime int8" in files:       # batch-1 latency by the same rule, against onnxruntime
        lat_files = {n: files[n] for n in ("onnxruntime int8", f"intengine W8A8 {fast}")}
        np.save(work / "images_latency.npy", x[:n_latency])
        say(f"fair protocol, batch-1 latency: {len(lat_files)} contenders, {rounds} rounds of {n_latency} images")
        fair_lat = fair_rounds(lat_files, threads, work / "images_latency.npy", rounds, "onnxruntime int8", say,
                               "latency", "p50_s")
    say("the machine's peak of each multiply-add instruction the paths use (16 accumulators)")
    peaks = {ins: peak_macs(threads, ins) for ins in PEAK_INSTRUCTIONS if PEAK_INSTRUCTIONS[ins]()}
    peak = peaks.get(PATH_INSTRUCTION[fast])
    macs = network_macs(w8_path)
    ir_macs = network_macs(ir_path)
    say(f"throughput at batch {BATCH}: {len(x)} images x {passes} passes, {threads} threads")
    speed, all_speeds, per_cpu = throughput(fns, x, passes, say)
    say(f"batch-1 latency over {n_latency} images")
    lat = latency(fns, x, n_latency)
    np.save(work / "images.npy", x[:BATCH])
    start, cold = {}, {}
    for name, (kind, path) in files.items():
        if quick and kind == "torchscript":
            continue
        say(f"fresh process: {name}")
        start[name] = in_child(kind, path, threads, work / "images.npy")
        if kind.startswith("intengine") and not quick and name.startswith("intengine W8A8"):
            with tempfile.TemporaryDirectory() as cache:
                cold[name] = in_child(kind, path, threads, work / "images.npy", {"NUMBA_CACHE_DIR": cache})[0]
    ref_name = "torch.ao int8"
    scaling = {n: {"threads": threads, "images_per_s": fair[n]["median"], "one_thread": fair[one]["median"],
                   "speedup": fair[n]["median"] / fair[one]["median"]} for n, one in scaling.items()}
    rows = []
    for k in fns:
        r = {"name": k, "images_per_s": speed[k], "passes": all_speeds[k],
             "x_torchao": speed[k] / speed[ref_name], "images_per_cpu_s": per_cpu[k],
             "cpu_x_torchao": per_cpu[k] / per_cpu[ref_name], "p50_ms": lat[k][0] * 1e3, "p99_ms": lat[k][1] * 1e3,
             "p50_x_torchao": lat[k][0] / lat[ref_name][0],
             "top1_timed_images": float((preds[k] == y).mean())}
        if "onnxruntime int8" in lat:
            r["p50_x_onnxruntime"] = lat[k][0] / lat["onnxruntime int8"][0]
        if k in start:
            r["start_to_first_logits_s"], r["peak_rss_bytes"] = start[k]
        if k in cold:
            r["cold_cache_first_logits_s"] = cold[k]
        if k in identical:
            r["bit_identical_to_scalar"] = identical[k]
        if k in fair:
            r.update(fair_images_per_s=fair[k]["median"], fair_spread=[fair[k]["min"], fair[k]["max"]],
                     fair_x_torchao=fair[k]["ratio"], fair_rounds=fair[k]["rounds"])
        if k in fair_lat:
            fl = fair_lat[k]
            r.update(fair_p50_ms=fl["median"] * 1e3, fair_p50_spread_ms=[fl["min"] * 1e3, fl["max"] * 1e3],
                     fair_p50_x_onnxruntime=fl["ratio"], fair_p50_rounds_ms=[v * 1e3 for v in fl["rounds"]])
        rows.append(r)
    mac_image = sum(macs.values())
    roofline = {"macs_per_image": mac_image, "instruction": PATH_INSTRUCTION[fast],
                "peak_macs_per_s_1_thread": peak and peak[0], "peak_macs_per_s_all_threads": peak and peak[1],
                "threads": threads, "peaks": {k: {"one_thread": v[0], "all_threads": v[1]} for k, v in peaks.items()}}
    for r in rows:                        # each path against the peak of the instruction it runs most
        ins = instruction_of(files[r["name"]][1], r["name"].rsplit(" ", 1)[-1], macs) \
            if r["name"].startswith("intengine") else None
        if "fair_images_per_s" in r and ins in peaks:
            r["fraction_of_peak"] = r["fair_images_per_s"] * mac_image / peaks[ins][1]
            r["peak_instruction"] = ins
    if peak:
        for prof, mac in ((profile, macs), (ir_profile, ir_macs)):
            for op in prof["ops"] if prof else []:
                m = mac.get(op[0].split(" + ")[0])
                op.append(m / (op[1] * 1e-6) / peak[0] if m and op[1] > 0 else None)
    return {"generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": "python scripts/bench.py" + (" --quick" if quick else "")
            + (f" --isa {os.environ[ISA_ENV]}" if os.environ.get(ISA_ENV) else ""),
            "seconds": time.perf_counter() - t_start, "images": len(x), "passes": passes,
            "latency_images": n_latency, "calibration_images": calib_n, "seed": seed, "batch": BATCH,
            "machine": machine(threads), "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "load_average": {"before": load_before, "after": os.getloadavg()},
            "fast_kernel": fast, "files": files_used, "notes": notes, "rows": rows, "targets": targets(rows, fast),
            "profile_us_per_image": profile, "profile_inverted_residual": ir_profile, "roofline": roofline, "fair_rounds": rounds, "thread_scaling": scaling,
            "fair_env": {"OMP_WAIT_POLICY": USER_OMP_WAIT_POLICY, "threads": threads}}


def targets(rows, fast):
    """The bars of the open speed issue on this processor's path, measured: (figure, bar,
    measured, holds).  The AVX2 bars where the fastest path is avx2, the VNNI ones on vnni."""
    r = {x["name"]: x for x in rows}
    out = []
    w8, port = r.get(f"intengine W8A8 {fast}"), r.get("intengine W8A8 portable")
    kind = {"avx2": "AVX2", "vnni": "VNNI", "avxvnni": "AVX-VNNI", "amx": "AMX (a VNNI machine)"}.get(fast, fast)
    bar8 = {"avx2": 1.0, "vnni": 1.33, "amx": 1.33}.get(fast)
    if w8 and "fair_x_torchao" in w8 and bar8:
        out.append([f"{kind}: W8A8 batch 256, x torch.ao int8 (fair protocol)", f">= {bar8}", w8["fair_x_torchao"],
                    w8["fair_x_torchao"] >= bar8])
    for b in (4, 2):
        low = r.get(f"intengine W{b}A8 {fast}")
        if fast == "avx2" and low and "fair_x_torchao" in low:
            out.append([f"AVX2: W{b}A8 batch 256, x torch.ao int8 (fair protocol)", ">= 1.3", low["fair_x_torchao"],
                        low["fair_x_torchao"] >= 1.3])
    ov = r.get("OpenVINO int8")
    ours = [x for x in rows if x["name"].startswith("intengine") and x["name"].endswith(fast) and "fair_images_per_s" in x]
    if ov and "fair_images_per_s" in ov and ours:
        best = max(ours, key=lambda x: x["fair_images_per_s"])
        ratio = best["fair_images_per_s"] / ov["fair_images_per_s"]
        bar = 0.8 if fast == "avx2" else None
        out.append([f"{kind}: best intengine ({best['name']}) x OpenVINO int8 (fair protocol, medians)",
                    f">= {bar}" if bar else "reported", ratio, ratio >= bar if bar else True])
    if w8 and "fraction_of_peak" in w8 and fast == "vnni":
        out.append(["whole network, fraction of the measured int8 MAC peak", ">= 0.35", w8["fraction_of_peak"],
                    w8["fraction_of_peak"] >= 0.35])
    if w8 and "fair_p50_x_onnxruntime" in w8:
        out.append(["W8A8 batch-1 p50, x onnxruntime int8 (fair protocol)", "<= 0.7", w8["fair_p50_x_onnxruntime"],
                    w8["fair_p50_x_onnxruntime"] <= 0.7])
    if port and "fair_x_torchao" in port:
        out.append(["portable path batch 256, x torch.ao int8 (fair protocol)", ">= 0.4", port["fair_x_torchao"],
                    port["fair_x_torchao"] >= 0.4])
    if w8 and "start_to_first_logits_s" in w8:
        s = w8["start_to_first_logits_s"]
        out.append(["W8A8 warm cache, process start to first logits (s)", "<= 3", s, s <= 3])
    return out


KINDS = ROOT / "results" / "bench_kinds.json"       # one published race per processor kind


def kind_row(rep):
    """A race's summary for the per-processor table: the fair-protocol ratios of every file
    on its fastest path, against torch.ao int8, OpenVINO int8 and (batch 1) onnxruntime int8."""
    r = {x["name"]: x for x in rep["rows"]}
    fast, lim = rep["fast_kernel"], rep["machine"].get("isa_limit")
    get = lambda name, key: (r.get(name) or {}).get(key)         # noqa: E731
    ov = get("OpenVINO int8", "fair_images_per_s")
    ours = {b: get(f"intengine W{b}A8 {fast}", "fair_images_per_s") for b in (8, 4, 2)}
    return {"generated": rep["generated"],
            "command": rep["command"], "processor": rep["machine"]["cpu"], "llvm_cpu": rep["machine"]["llvm_cpu"],
            "path": fast, "emulated": bool(lim), "images": rep["images"], "rounds": rep["fair_rounds"],
            "x_torchao": {b: get(f"intengine W{b}A8 {fast}", "fair_x_torchao") for b in (8, 4, 2)},
            "x_openvino": {b: (v / ov if v and ov else None) for b, v in ours.items()},
            "p50_x_onnxruntime": get(f"intengine W8A8 {fast}", "fair_p50_x_onnxruntime"),
            "top1": {b: get(f"intengine W{b}A8 {fast}", "top1_timed_images") for b in (8, 4, 2)},
            "torchao_top1": get("torch.ao int8", "top1_timed_images"),
            "openvino_top1": get("OpenVINO int8", "top1_timed_images")}


def kind_key(row):
    """The per-processor table's key of a row: its path, and whether the race was emulated."""
    return row["path"] + (" (emulated)" if row["emulated"] else "")


def kinds_markdown(kinds):
    """The README's table: one row per processor kind a published race has met."""
    f = lambda v: "n/a" if v is None else f"{v:.2f}"                # noqa: E731
    t = lambda v: "n/a" if v is None else f"{v:.4f}"                # noqa: E731
    lines = ["Every processor kind a published race has met (`scripts/bench.py --publish`; an emulated row "
             "limits every contender that has a switch to that instruction set on a larger processor, and only a real "
             "one settles it; onnxruntime has none, so its column there is its full speed). Fair protocol, batch 256, ratios to the contender measured in the same rounds; top-1 on the "
             "images timed.", "",
             "| path (processor kind) | processor | date | W8A8 × torch.ao | W4A8 × torch.ao | W2A8 × torch.ao | "
             "W8A8 × OpenVINO | best × OpenVINO | W8A8 batch-1 p50 × onnxruntime | top-1 W8A8 / torch.ao / OpenVINO |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for k in sorted(kinds.values(), key=lambda k: (k["emulated"], kind_key(k))):
        xo = [v for v in k["x_openvino"].values() if v]
        lines.append(f"| {kind_key(k)} | {k['processor']} ({k['llvm_cpu']}) | {k['generated'][:10]} | "
                     + " | ".join(f(k["x_torchao"][b]) for b in ("8", "4", "2"))
                     + f" | {f(k['x_openvino']['8'])} | {f(max(xo) if xo else None)} | {f(k['p50_x_onnxruntime'])} | "
                     f"{t(k['top1']['8'])} / {t(k['torchao_top1'])} / {t(k['openvino_top1'])} |")
    return "\n".join(lines) + "\n"


def publish_kind(rep, path=KINDS, readme=ROOT / "README.md"):
    """Put a race into the per-processor history (replacing that kind's older race) and the
    README's table."""
    kinds = json.loads(path.read_text()) if path.is_file() else {}
    row = json.loads(json.dumps(kind_row(rep)))          # int keys as JSON strings, as read back
    kinds[kind_key(row)] = row
    write_atomic(path, json.dumps(kinds, indent=1) + "\n")
    fill_section(readme, "bench-kinds", kinds_markdown(kinds))
    return row


def markdown(rep):
    m = rep["machine"]
    la = rep["load_average"]
    lim = m.get("isa_limit")
    lines = ([f"**{lim['isa'].upper()}, emulated on {m['cpu']} ({m['llvm_cpu']})**: every contender limited to "
              f"{lim['isa'].upper()} by its own switch (" + ", ".join(f"{k}={v}" for k, v in lim["env"].items())
              + "); not limited: " + ", ".join(lim["not_limited"]) + ". Only a real "
              f"{lim['isa'].upper()} processor settles these figures.", ""] if lim else []) + [
             f"Generated by `{rep['command']}` on {rep['generated']} ({rep['seconds']:.0f} s). "
             f"Machine: {m['cpu']} (LLVM: {m['llvm_cpu']}), {m['cores']} cores, {m['threads']} threads for "
             f"every contender; avx512vnni {m['flags']['avx512vnni']}, amx-int8 {m['flags']['amx-int8']}. "
             f"Load average {la['before'][0]:.1f} before, {la['after'][0]:.1f} after (absolute "
             f"figures move with the machine and its load: compare the ratios). OMP_WAIT_POLICY={rep['omp_wait_policy']}. "
             + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v) + ".",
             "",
             ]
    fair = [r for r in rep["rows"] if "fair_images_per_s" in r]
    roof = rep.get("roofline") or {}
    if fair:
        env = rep.get("fair_env", {})
        lines += [f"**The fair protocol** (the headline): each contender alone in its own fresh process at its own "
                  f"default runtime settings (OMP_WAIT_POLICY {env.get('OMP_WAIT_POLICY') or 'unset'}, "
                  f"{env.get('threads')} threads for every library), {rep['images']} test images at batch "
                  f"{rep['batch']}, {rep.get('fair_rounds')} rounds interleaved A B C ..., the order rotating each "
                  f"round. Median (min-max); x torch.ao is the median of the per-round ratios.", "",
                  f"Processor: {m['cpu']} ({m['llvm_cpu']}); an intengine row names its path (amx, vnni, avxvnni, avx2, "
                  f"portable: docs/engine.md). Top-1 is on the {rep['images']} images timed: a peer whose "
                  f"integers depend on the processor (fbgemm's and onnxruntime's int8 kernels saturate on "
                  f"processors without VNNI) shows it there; the engine's integers are the same on every "
                  f"processor.", "",
                  "| contender | images/s | min-max | × torch.ao int8 | top-1 | fraction of its instruction's peak |",
                  "|---|---|---|---|---|---|"]
        for r in fair:
            frac = f"{r['fraction_of_peak']:.2f} ({r['peak_instruction']})" if "fraction_of_peak" in r else ""
            top1 = f"{r['top1_timed_images']:.4f}" if "top1_timed_images" in r else ""
            lines.append(f"| {r['name']} | {r['fair_images_per_s']:.0f} | {r['fair_spread'][0]:.0f}-"
                         f"{r['fair_spread'][1]:.0f} | {r['fair_x_torchao']:.2f} | {top1} | {frac} |")
        lines.append("")
    lat = [r for r in rep["rows"] if "fair_p50_ms" in r]
    if lat:
        lines += [f"Batch-1 latency by the same rule: each contender in its own fresh process, "
                  f"{rep['latency_images']} single-image calls after 20 warm-up calls, {rep.get('fair_rounds')} "
                  "rounds interleaved; the median of the rounds' p50 (min-max), and the median of the per-round "
                  "ratios. Both use every thread on one image: onnxruntime its intra-op pool, intengine its "
                  "shared-image path when that is the faster (docs/engine.md, \"One image on every thread\").",
                  "", "| contender | p50 (ms) | min-max | × onnxruntime int8 |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['fair_p50_ms']:.3f} | {r['fair_p50_spread_ms'][0]:.3f}-"
                  f"{r['fair_p50_spread_ms'][1]:.3f} | {r['fair_p50_x_onnxruntime']:.2f} |" for r in lat]
        lines.append("")
    scaling = rep.get("thread_scaling") or {}
    if scaling:
        lines += ["Threads, in the same fair rounds (each contender's own process, 1 thread against "
                  f"{next(iter(scaling.values()))['threads']}): "
                  + "; ".join(f"{n} {v['one_thread']:.0f} → {v['images_per_s']:.0f} images/s, "
                              f"{v['speedup']:.2f}×" for n, v in scaling.items())
                  + ". The engine's threads share nothing but the weights: each runs whole images on its own "
                  "arena, with no synchronisation (docs/engine.md).", ""]
    for ins, pk in (roof.get("peaks") or {}).items():
        shape = "AMX tiles, 4 independent accumulator tiles" if ins == "tdpbusd" else \
            f"{'zmm' if ins == 'vpdpbusd' else 'ymm'}, 16 independent chains"
        lines += [f"The roofline of {ins} ({shape}): "
                  f"{pk['one_thread'] / 1e9:.0f} G multiply-accumulates/s on one thread and "
                  f"{pk['all_threads'] / 1e9:.0f} G on {roof['threads']}. ResNet20 is "
                  f"{roof['macs_per_image'] / 1e6:.1f} M MACs per image, so that peak is "
                  f"{pk['all_threads'] / roof['macs_per_image']:,.0f} images/s here.", ""]
    lines += [f"In one process (OMP_WAIT_POLICY={rep['omp_wait_policy']} for every contender, which favours the "
              f"engine over torch.ao; onnxruntime's threads not spinning between runs): "
              f"{rep['images']} test images at batch {rep['batch']}, median of "
              f"{rep['passes']} passes taking turns. "
              f"Latency: batch 1 over {rep['latency_images']} images. Timed region: uint8 NHWC in, logits out.",
              "",
             "| contender | images/s | × torch.ao int8 | images per CPU-s | × torch.ao | p50 (ms) | p99 (ms) | p50 × torch.ao | p50 × onnxruntime "
             "| start → first logits (s) | cold cache (s) | peak RSS (MB) | = scalar kernels |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rep["rows"]:
        f = lambda k, fmt: format(r[k], fmt) if k in r else "n/a"
        rss = f"{r['peak_rss_bytes'] / 2**20:.0f}" if "peak_rss_bytes" in r else "n/a"
        same = {True: "yes", False: "**NO**"}.get(r.get("bit_identical_to_scalar"), "")
        lines.append(f"| {r['name']} | {r['images_per_s']:.0f} | {r['x_torchao']:.2f} | "
                     f"{r['images_per_cpu_s']:.0f} | {r['cpu_x_torchao']:.2f} | {r['p50_ms']:.3f} | "
                     f"{r['p99_ms']:.3f} | {r['p50_x_torchao']:.2f} | {f('p50_x_onnxruntime', '.2f')} | "
                     f"{f('start_to_first_logits_s', '.2f')} | {f('cold_cache_first_logits_s', '.1f')} | {rss} | {same} |")
    lines += ["", "| target | bar | measured | holds |", "|---|---|---|---|"]
    lines += [f"| {t} | {b} | {v:.2f} | {'yes' if ok else 'no'} |" for t, b, v, ok in rep["targets"]]
    lines += [f"- {n}" for n in rep["notes"]]
    for prof in (rep.get("profile_us_per_image"), rep.get("profile_inverted_residual")):
        if not prof:
            continue
        total = sum(o[1] for o in prof["ops"])
        lines += ["", f"Where the time goes: {prof['name']}, each op alone on one thread, CPU time per "
                  f"image (median of 5 runs of {rep['batch']} images); {total:.0f} µs in all.", "",
                  "| op | µs per image | share | fraction of the 1-thread int8 peak |", "|---|---|---|---|"]
        lines += [f"| {o[0]} | {o[1]:.1f} | {100 * o[1] / total:.1f}% | "
                  f"{'' if len(o) < 3 or o[2] is None else format(o[2], '.2f')} |" for o in prof["ops"]]
    return "\n".join(lines) + "\n"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None, help="Folder with cifar10.npz  [default: $CIFAR10_DIR]")
@click.option("--quick", is_flag=True, help="Smoke run: 256 images, W8A8 only, 64 calibration images.")
@click.option("--threads", type=click.IntRange(1), default=2, show_default=True)
@click.option("--images", "n_images", type=click.IntRange(1), default=None, help="Test images [default: all, quick 256]")
@click.option("--passes", type=click.IntRange(1), default=None, help="Throughput passes [default: 3, quick 1]")
@click.option("--latency-images", type=click.IntRange(1), default=None, help="[default: 1000, quick 20]")
@click.option("--rounds", type=click.IntRange(1), default=None,
              help="Fair-protocol rounds, each contender in its own process [default: 5, quick 3]")
@click.option("--calib-images", type=click.IntRange(1), default=None, help="[default: 1024, quick 64]")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=str(ROOT / "reports" / "bench"), show_default=True)
@click.option("--publish", is_flag=True,
              help="Write results/bench.json, results/bench.md and the README table (tracked).")
@click.option("--isa", type=click.Choice(sorted(ISA_LIMITS)), default=None,
              help="Limit every contender to this instruction set (an emulated race; see the module doc).")
@click.option("--add-run", "add_run", default=None, metavar="REPORT.json", type=click.Path(dir_okay=False),
              help="Measure nothing: add a race already run (its bench.json) to results/bench_kinds.json and the "
                   "README's per-processor table.")
def main(checkpoint, data_dir, quick, threads, n_images, passes, latency_images, rounds, calib_images, seed, out,
         publish, isa, add_run):
    """Engine speed against torch.ao int8, onnxruntime int8, OpenVINO int8 and FP32, side by side."""
    if add_run:
        try:
            rep = json.loads(Path(add_run).read_text())
            if "--quick" in rep["command"]:
                raise click.UsageError(f"{add_run}: a --quick race is a smoke run, not a figure to publish")
            row = publish_kind(rep)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise click.ClickException(f"{add_run}: not a bench.json written by scripts/bench.py ({e})") from None
        click.echo(f"added {row['key']} ({row['processor']}, {row['generated']}) to {KINDS} and the README table")
        return
    if isa and not cpu.host_features().get(isa):
        raise click.UsageError(f"--isa {isa}: this processor ({cpu.processor_name()}) has no {isa.upper()} to limit to")
    if isa and os.environ.get(ISA_ENV) != isa:           # again, with every library limited from the start
        env = {**os.environ, **ISA_LIMITS[isa], "NUMBA_CPU_FEATURES": cpu.limited_features(isa), ISA_ENV: isa}
        os.execve(sys.executable, [sys.executable, __file__, *sys.argv[1:]], env)
    out = ROOT / "results" if publish and not isa else Path(out)   # an emulated race: only its kind's row
    out.mkdir(parents=True, exist_ok=True)
    say = Progress()
    with tempfile.TemporaryDirectory() as work:
        rep = measure(checkpoint, data_dir, quick, threads, n_images or (256 if quick else None),
                      passes or (1 if quick else 3), latency_images or (20 if quick else 1000),
                      calib_images or (64 if quick else 1024), seed, Path(work), say,
                      rounds=rounds or (3 if quick else 5))
    write_atomic(out / "bench.json", json.dumps(rep, indent=1) + "\n")
    md = markdown(rep)
    write_atomic(out / "bench.md", md)
    if publish:                                       # the README shows the same generated tables
        if not isa:
            fill_section(ROOT / "README.md", "bench", md)
        publish_kind(rep)
    click.echo(md)
    click.echo(f"wrote {out / 'bench.json'} and {out / 'bench.md'}" + (" and the README table" if publish else ""),
               err=True)


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
