"""The comparison report: FP32, PyTorch's own quantization and the integer engine, side by
side, on this machine, in one run.

    CIFAR10_DIR=../shared/data python scripts/compare.py [--quick] [--out reports] [--publish]

The engine's W4A8 and W2A8 rows are what `python -m exporter --bits B` gives with no
options (block reconstruction with learned step sizes); round-to-nearest files are the
ablation.  Every row is measured here: top-1 on the test images, the difference to FP32 in
pp, top-1 agreement with FP32 and the size on disk.  Speed is timed in one block at the
end, every contender in interleaved rounds (so each ratio is to a torch.ao measured at the
same moment), median and spread.  It also runs the cross-check of the engine against
torch.ao (op by op, free-running, top-1 agreement) and records which kernels torch.ao ran.

Writes results.json (a stable `rows` list), RESULTS.md (generated, never typed) and
accuracy_vs_size.png into --out (default reports/, untracked); --publish also replaces the
committed RESULTS.md, results/ and the README's table.  The console ends with the verdict.

With no --checkpoint or --model (the main job) it also measures every shipped network
(exporter/shipped.py): its FP32 checkpoint and the peers, and its committed default exports
run by the engine; RESULTS.md then opens with one table across the networks.
`--checkpoint checkpoints/<arch>.pt --publish` makes and commits such a network's files.
"""
import os
# Threads that busy-wait after a parallel region (OpenMP's default) steal the cores from the
# next contender in this one process; every row runs with passive waiting (set before any
# library that starts threads is imported), onnxruntime's own pool too (onnxrt.session).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import click  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import intengine  # noqa: E402
from exporter import crosscheck, onnxrt, shipped, source, torchao  # noqa: E402
from exporter.source import SourceError  # noqa: E402
from exporter.pipeline import Config, export  # noqa: E402
from exporter.report import (BATCH, EvalCache, Progress, fill_section, interleaved_speed, machine,  # noqa: E402
                             predict, user_cache, versions, write_atomic)
from exporter.quantize import ExportError  # noqa: E402
from exporter.reconstruct import recorded_config  # noqa: E402
from intengine.cifar10 import DataError, load_test, seeded_subset  # noqa: E402
from intengine.fileformat import FormatError  # noqa: E402
from trainer.checkpoint import CheckpointError  # noqa: E402
from trainer import data  # noqa: E402

QUICK_ITERS = 100          # --quick: reconstruction steps per block (the exporter's default: 500-600)
STUDY = ROOT / "checkpoints" / "resnet20.pt"             # the shipped network of the whole study


def torch_fn(model, half=False, norm=None):
    def fn(x):
        with torch.no_grad():
            t = torchao.normalize(x, norm)
            if half:                                  # channels_last: ~5x faster fp16 on this CPU
                t = t.half().contiguous(memory_format=torch.channels_last)
            return model(t).float().numpy()
    return fn


def state_size(model):
    """Bytes of the model's tensors as torch.save writes them (a program's float graph: its
    layers' weights and biases)."""
    buf = io.BytesIO()
    if isinstance(model, source.FloatGraph):
        torch.save({f"{k}.{t}": op[t] for k, op in enumerate(model.ops) for t in ("weight", "bias") if t in op}, buf)
    else:
        torch.save(model.state_dict(), buf)
    return buf.getbuffer().nbytes


def kernel_probe():
    """Which library ran torch.ao's int8 convs (ONEDNN_VERBOSE in a child), and how its
    quantized average pool rounds ties."""
    code = ("import torch, numpy as np, warnings; warnings.simplefilter('ignore');"
            "from exporter import torchao; from trainer.model import ResNet20;"
            "q = torchao.static_int8(ResNet20().eval(), np.zeros((8,32,32,3), np.uint8), 'full');"
            "x = torchao.normalize(np.zeros((2,32,32,3), np.uint8));"
            "ctx = torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON);"
            "ctx.__enter__(); q(x); ctx.__exit__(None, None, None)")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if "verbose" in l and ",exec," in l]
    conv = [l for l in lines if "convolution" in l and ("s8" in l or "u8" in l)]   # int8 convs only
    ties = {}
    for v in (0.5, 1.5, 2.5, 3.5):
        s = int(v * 64)
        vals = torch.full((64,), s // 64, dtype=torch.int64)
        vals[: s % 64] += 1
        q = torch._make_per_tensor_quantized_tensor((vals + 5).to(torch.uint8).view(1, 1, 8, 8), 0.1, 5)
        ties[str(v)] = int(torch.nn.functional.adaptive_avg_pool2d(q, 1).int_repr().item()) - 5
    return {"quantized_engine": torch.backends.quantized.engine,
            "conv_library": ("oneDNN" if conv else "fbgemm (no int8 oneDNN convolution in the verbose log)"),
            "onednn_conv_calls": len(conv), "onednn_example": conv[0][:240] if conv else None,
            "adaptive_avg_pool_ties": ties}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", default=str(STUDY), show_default=True,
              help="A trainer checkpoint (any --arch). The shipped ResNet20's gets the whole study; any other "
                   "network gets its own report: FP32, the peers and the default exports at every width.")
@click.option("--model", "program", default=None, metavar="NET.pt2",
              help="Your own network, saved with torch.export.save, in place of --checkpoint.")
@click.option("--mean", default=None, help="With --model: the input's per-channel mean, 0..1 scale, comma-separated "
                                           "(default: the checkpoint's, else CIFAR-10's).")
@click.option("--std", default=None, help="With --model: the input's per-channel std (as --mean).")
@click.option("--data-dir", default=None, help="Folder with cifar10.npz [default: $CIFAR10_DIR]")
@click.option("--quick", is_flag=True,
              help=f"About two minutes: 1,000 seeded test images, 256 calibration images, {QUICK_ITERS} "
                   f"reconstruction steps per block (the default export uses 500-600), 3 speed rounds of 256 images.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Seeded test subset of this many images (default: all 10,000; 1,000 with --quick).")
@click.option("--calib-images", type=click.IntRange(1, 1024), default=None,
              help="Calibration images (default: 1024; 256 with --quick).")
@click.option("--iters", type=click.IntRange(1), default=None,
              help=f"Reconstruction steps per block of the W4A8 and W2A8 exports (default: the exporter's; "
                   f"{QUICK_ITERS} with --quick).")
@click.option("--seed", type=int, default=0, show_default=True, help="Calibration and --limit seed.")
@click.option("--out", "out", default=str(ROOT / "reports"), show_default=True, type=click.Path(file_okay=False),
              help="Report folder: results.json, RESULTS.md and accuracy_vs_size.png.")
@click.option("--exports-dir", default=str(ROOT / "exports"), show_default=True, type=click.Path(file_okay=False),
              help="Where the .npz files go.")
@click.option("--publish", is_flag=True,
              help="Also replace the committed figures: RESULTS.md, results/ and the README table; with "
                   "--checkpoint of another shipped network (its training finished), commit its default "
                   "exports to models/ and its report to results/networks/ARCH/.")
@click.option("--render-only", "render_from", default=None, metavar="RESULTS.json",
              help="Measure nothing: redraw the report from a results.json (e.g. results/results.json).")
def main(checkpoint, program, mean, std, data_dir, quick, limit, calib_images, iters, seed, out, exports_dir, publish,
         render_from):
    """The comparison report: FP32, torch.ao's quantization, onnxruntime, AIMET and the integer
    engine at every bit width, side by side on this machine: accuracy, size and speed, plus the
    cross-check of the engine against torch.ao.  It ends with the verdict: per width, the
    default export's top-1 and size beside the best peer.

    Writes the report into --out (default reports/, not tracked by git). The committed figures
    (RESULTS.md, results/results.json, the plot and the README table) change only with --publish.
    """
    try:
        t0 = time.perf_counter()
        main_job = program is None and Path(checkpoint).resolve() == STUDY.resolve()
        network = None                              # --publish of another shipped network: its folder
        if render_from:
            rep = json.loads(Path(render_from).read_text())
        else:
            n = limit or (1000 if quick else None)
            calib = calib_images or (256 if quick else 1024)
            iters = iters or (QUICK_ITERS if quick else None)
            src = source.load(None if program else checkpoint, program, mean=source.floats(mean, "--mean"),
                              std=source.floats(std, "--std"))
            if publish and not is_study(src):
                network = publishable(src, quick or limit or iters or calib_images or mean or std)
            rep = measure(src, data_dir, n, calib, seed, Path(exports_dir), iters, quick, publish)
            if main_job:
                rep["networks"] = [measure(source.load(Path(m["root"]) / m["checkpoint"]), data_dir, n, calib, seed,
                                           Path(exports_dir), iters, quick, publish, committed=m)
                                   for m in shipped_networks(rep)]
                rep["total_s"] = time.perf_counter() - t0
        write_report(rep, Path(out))
        if network:
            write_report(rep, network)
            exports = {(r["bits_w"], r["bits_a"]): r["file"] for r in rep["rows"] if r["kind"] == "ours"}
            listed = shipped.publish(ROOT, rep, exports, 1024, src.path)
            click.echo(f"published: {network}, {listed.relative_to(ROOT)} and its files in models/; the main job "
                       f"measures it from now on", err=True)
        elif publish:
            write_report(rep, ROOT / "results", ROOT / "RESULTS.md", readme=ROOT / "README.md")
            click.echo(f"published: {ROOT / 'RESULTS.md'}, {ROOT / 'results'}, README table", err=True)
        else:
            click.echo(f"wrote {Path(out) / 'RESULTS.md'}, results.json and {PLOT}", err=True)
        click.echo(summary(rep))
    except (DataError, CheckpointError, FormatError, ExportError, SourceError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None


def publishable(src, options):
    """--publish with a network other than the study's: the folder its report goes to, if it is
    a trainer checkpoint in checkpoints/ whose training finished, measured with the defaults."""
    ckpts = (ROOT / "checkpoints").resolve()
    if isinstance(src.module, source.FloatGraph) or src.path.resolve().parent != ckpts:
        raise click.UsageError("--publish takes the shipped ResNet20 or a trainer checkpoint in checkpoints/; "
                               "another network's report goes to --out")
    if options:
        raise click.UsageError("--publish of a network measures it with the defaults: drop --quick, --limit, "
                               "--iters, --calib-images, --mean and --std")
    why = shipped.unfinished(src.path)
    if why:
        raise click.UsageError(why)
    return ROOT / shipped.FOLDER / src.arch


def shipped_networks(rep):
    """The shipped networks to measure (exporter/shipped.py); each one left out is said, and
    recorded in rep["networks_left_out"]."""
    say, ok = Progress(), []
    rep["networks_left_out"] = []
    for m, why in shipped.networks(ROOT):
        if why:
            say(f"{m['arch']}: left out, {why}")
            rep["networks_left_out"].append({"network": m["arch"], "why": why})
        else:
            ok.append(m)
    return ok


def is_study(src):
    """The shipped ResNet20 checkpoint, which the committed files, AIMET's figures and the
    cross-check belong to."""
    program = isinstance(src.module, source.FloatGraph)
    return src.sha256 is not None and not program and src.sha256 == source.file_sha256(STUDY)


class Run:
    """One report's measurements as they go: the network and how the exporter is told of it,
    the test and calibration images, the rows so far, the contenders to time, the engine's
    evaluation cache and the progress line."""

    def __init__(self, src, data_dir, n_test, calib_n, seed, out_dir, iters, quick):
        self.t_start, self.load_before = time.perf_counter(), os.getloadavg()
        self.say = Progress()
        self.src, self.study, self.program = src, is_study(src), isinstance(src.module, source.FloatGraph)
        self.data_dir, self.calib_n, self.seed, self.out_dir, self.iters, self.quick = (
            data_dir, calib_n, seed, out_dir, iters, quick)
        self.say(f"loading the test images; the network: {src.arch} ({src.path.name})")
        x, y = load_test(data_dir)
        if n_test and n_test < len(y):
            idx = seeded_subset(len(y), n_test, seed)
            x, y = x[idx], y[idx]
        self.x, self.y = x, y.astype(np.int64)
        self.train = data.load_arrays(data_dir)["x_train"]
        self.calib = self.train[seeded_subset(len(self.train), calib_n, seed)]
        given = src.norm_from == "--mean/--std"
        checkpoint = None if self.program else str(src.path)
        # what the exporter's Config is told of the network
        self.net = dict(checkpoint=checkpoint, program=None if checkpoint else str(src.path),
                        mean=tuple(src.norm["mean"]) if given else None, std=tuple(src.norm["std"]) if given else None)
        self.rows, self.timed, self.fp32_pred = [], {}, None
        # the engine's predictions of every file it runs, fresh exports included, by file digest
        self.cache = EvalCache(EVALS, self.x, self.y, local=user_cache("evals.npz"))
        out_dir.mkdir(parents=True, exist_ok=True)

    def engine_pred(self, m, name):
        pred, how = self.cache.predictions(m, self.say, name)
        self.say(f"{name}: {how}")
        return pred, how

    def add(self, name, method, kind, bits_w, bits_a, fn, size, note="", simulated=False, speed=True, pred=None,
            **extra):
        """kind: fp32, peer, ours (the default export), ours-ablation (round-to-nearest),
        ours-committed (a file in models/), peer-committed (a committed figure).  pred: the
        predictions when known (a committed file's cached evaluation)."""
        pred = predict(fn, self.x, self.say, name) if pred is None else pred
        if self.fp32_pred is None:
            self.fp32_pred = pred
        self.rows.append({"name": name, "method": method, "kind": kind, "bits_w": bits_w, "bits_a": bits_a,
                          "accuracy": float((pred == self.y).mean()),
                          "agreement_fp32": float((pred == self.fp32_pred).mean()),
                          "size_bytes": size, "simulated": simulated, "note": note, **extra})
        if speed:
            self.timed[name] = fn
        self.say(f"{name}: top-1 {self.rows[-1]['accuracy']:.4f}")
        return pred


def measure(src, data_dir, n_test, calib_n, seed, out_dir, iters=None, quick=False, publish=False, committed=None):
    """Run every row, the speed block and the cross-check; return the report dict (what
    results.json holds).  src: the network (exporter.source.Source).  The shipped ResNet20
    gets the whole study (committed files, torch.ao's other settings, AIMET, the cross-check);
    any other network its FP32 model, the peers that take it (torch.ao by FX for a trainer
    checkpoint, by PT2E for a program; onnxruntime) and the default exports at W8A8, W4A8,
    W2A8 and W4A4, or with `committed` (a shipped network's files.json) its committed files.
    iters: reconstruction steps per block of the exports below 8 bits (None: the exporter's
    default)."""
    torch.backends.quantized.engine = "x86"
    run = Run(src, data_dir, n_test, calib_n, seed, out_dir, iters, quick)
    say, add, engine_pred, x, calib = run.say, run.add, run.engine_pred, run.x, run.calib
    model, norm, program, study = src.module, src.norm, run.program, run.study
    checkpoint = None if program else str(src.path)
    rows, timed, cache = run.rows, run.timed, run.cache
    calib10 = run.train[seeded_subset(len(run.train), 10, seed)]

    add("FP32 (torch)", "fp32", "fp32", 32, 32, torch_fn(model, norm=norm), state_size(model))
    reference = TORCHAO
    if not program:
        best = torchao.fx_int8(model, calib, "best")          # torch.ao's graph mode on the float model
        add(TORCHAO, "torch.ao best", "peer", 8, 7, torch_fn(best, norm=norm), state_size(best),
            "FX graph mode, x86 default mapping (HistogramObserver reduce_range=True: activations use 7 bits)")
        full_fx = torchao.fx_int8(model, calib, "full")
        add("torch.ao int8 full range (W8A8)", "torch.ao full", "peer", 8, 8, torch_fn(full_fx, norm=norm),
            state_size(full_fx), "FX graph mode, HistogramObserver full range, per-channel weights")
    elif why_not := torchao.pt2e_missing():
        say(f"torch.ao PT2E skipped: {why_not}")
        reference = None
    else:
        say("torch.ao PT2E: export, X86InductorQuantizer, calibration, torch.compile")
        converted, compiled = torchao.pt2e_int8(model, calib, norm)
        reference = TORCHAO_PT2E
        add(TORCHAO_PT2E, "torch.ao pt2e", "peer", 8, 8, torch_fn(compiled, norm=norm), None,
            "PT2E (torchao package): X86InductorQuantizer default config, uint8 activations, per-channel int8 "
            "weights, run through torch.compile; no size: the converted program keeps float weights, which "
            "inductor quantizes when it compiles")
    why = onnxrt.missing()
    if why:
        say(f"onnxruntime int8 skipped: {why}")
    else:
        fn, size = onnxrt.int8_row(model, calib, out_dir / "onnx", torch.get_num_threads(), norm)
        add("onnxruntime int8 (static QDQ, per-channel)", "onnxruntime int8", "peer", 8, 8, fn, size,
            "onnxruntime quantize_static: MinMax on the same calibration images, uint8 activations")
    if not study:
        return network_rows(run, reference, committed, publish)
    for b in (8, 4, 2):
        q = torchao.fx_int8(model, calib10, "original", bits=b)
        add(f"torch.ao original settings, weights {b}-bit", "torch.ao original", "peer", b, 8, torch_fn(q),
            state_size(q), f"MinMax per tensor, 10 images; activations observed on [0, {2**b - 1}] but stored "
            f"as quint8", speed=b == 8)
    half = source.checkpoint_model(checkpoint).half().to(memory_format=torch.channels_last)
    add("torch fp16", "fp16", "peer", 16, 16, torch_fn(half, half=True), state_size(half),
        "float16 weights and activations, channels_last")
    sim16 = torchao.int16_simulated(model, calib)
    add("torch.ao int16 (simulated, FakeQuantize)", "torch.ao int16 sim", "peer", 16, 16, torch_fn(sim16), None,
        "float kernels with 16-bit fake quantization; no int16 kernels exist in torch", simulated=True)
    dyn = torchao.dynamic_int8(model)
    add("torch.ao dynamic int8 (fc only)", "torch.ao dynamic", "peer", 8, 32, torch_fn(dyn), state_size(dyn),
        "quantize_dynamic only has a kernel for the final linear layer")
    preds = {}                                      # engine predictions per weight width
    for b in (16, 8, 4, 2):                         # the defaults, as `python -m exporter --bits B`
        a = 16 if b == 16 else 8
        recon = {"iters": iters} if iters and b < 8 else None
        rounding = "brecq" if b < 8 else "nearest"
        steps = f", {iters} steps per block" if recon else ""
        say(f"exporting W{b}A{a} with the defaults ({rounding}{steps}, {calib_n} calibration images)")
        t0 = time.perf_counter()
        path, size, _, _ = export(Config(checkpoint, b, calib_images=calib_n, seed=seed, data_dir=data_dir,
                                         recon=recon), out_dir / f"resnet20_w{b}a{a}.npz", progress=False,
                                  log=lambda m: say(f"  {m}"))
        secs = time.perf_counter() - t0
        m = intengine.load(path)
        meta = m.header["meta"]
        assert meta["rounding"] == rounding, meta["rounding"]
        note = ("first/last layer 8-bit, block reconstruction with learned step sizes" + steps if b < 8
                else "round-to-nearest") + f"; export {secs:.0f} s; kernel {m.kernel}"
        pred, how = engine_pred(m, f"intengine W{b}A{a}")
        preds[b] = add(f"intengine W{b}A{a}", "intengine (default)", "ours", b, a, m.run, size, note,
                       first_last_bits=8 if b < 8 else b, export_s=secs, rounding=rounding,
                       iters=recon_iters(meta), pred=pred, evaluation=how)
        rows[-1]["cli"] = (f"python -m exporter --bits {b} --calib-images {calib_n} --seed {seed}"
                           + (f" --iters {iters}" if recon else "") + f" --out {path} && "
                           f"python -m intengine eval {path} --json")
    for b in (4, 2):                                # the ablation: plain round-to-nearest
        say(f"exporting W{b}A8 with --rounding nearest (the ablation)")
        t0 = time.perf_counter()
        path, size, _, _ = export(Config(checkpoint, b, calib_images=calib_n, seed=seed, data_dir=data_dir,
                                         rounding="nearest"), out_dir / f"resnet20_w{b}a8_nearest.npz",
                                  progress=False)
        secs = time.perf_counter() - t0
        m = intengine.load(path)
        pred, how = engine_pred(m, f"intengine W{b}A8 nearest")
        add(f"intengine W{b}A8 nearest (ablation)", "intengine nearest", "ours-ablation", b, 8, m.run, size,
            f"first/last layer 8-bit, round-to-nearest + bias correction; export {secs:.0f} s", speed=False,
            first_last_bits=8, export_s=secs, rounding="nearest", pred=pred, evaluation=how)
        rows[-1]["cli"] = (f"python -m exporter --bits {b} --rounding nearest --calib-images {calib_n} "
                           f"--seed {seed} --out {path}")
    committed_rows(add, rows, say, cache)           # models/ and AIMET's committed figures
    say("exporting W8A8 with torch.ao's parameters")
    path, size, _, _ = export(Config(checkpoint, 8, calib_images=calib_n, seed=seed, data_dir=data_dir,
                                     params_from="torchao"), out_dir / "resnet20_w8a8_torchao.npz", progress=False)
    tao = intengine.load(path)
    pred, how = engine_pred(tao, "intengine W8A8, torch.ao parameters")
    tao_pred = add("intengine W8A8, torch.ao parameters", "intengine (torch.ao params)", "ours-ablation", 8, 8,
                   tao.run, size, f"the cross-check file: torch.ao's weights, scales and zero points; "
                   f"kernel {tao.kernel}", speed=False, pred=pred, evaluation=how)
    if cache.changed:
        cache.save()                                # the user's cache; the committed one with --publish
    if publish:
        cache.save(EVALS)
    rows[-1]["cli"] = (f"python -m exporter --bits 8 --params-from torchao --calib-images {calib_n} "
                       f"--seed {seed} --out {path}")
    speed_protocol = speed_block(rows, timed, x, quick, TORCHAO, say)

    # the cross-check reads torch.ao's eager-mode model, whose modules name every point: `full`
    # is calibrated on the same images as the file's parameters (HistogramObserver is
    # deterministic), so it is the model the file was read from
    say("cross-check against torch.ao: op by op and free-running")
    full = torchao.static_int8(model, calib, "full")
    full_pred = predict(torch_fn(full), x, say, "torch.ao eager full range")
    pts = torchao.capture(full, x[:256])
    tf = crosscheck.teacher_forced(tao, pts)
    fr = crosscheck.free_running(tao, x[:256], pts)
    say("probing torch.ao's kernels")
    cross = {"teacher_forced": tf, "free_running": fr, "n_layerwise": 256,
             "top1_agreement_engine_vs_torchao": float((tao_pred == full_pred).mean()),
             "top1_agreement_our_w8a8_vs_torchao": float((preds[8] == full_pred).mean()),
             "kernels": kernel_probe()}
    say("done measuring")
    return report_dict(run, speed_protocol, crosscheck=cross)


def speed_block(rows, timed, x, quick, reference, say):
    """Time every contender in `timed` in interleaved rounds (report.interleaved_speed) and put
    images/s and the ratio to `reference` in its row -> the protocol's description."""
    n_speed, rounds = (256, 3) if quick else (min(512, len(x)), 3)     # the fair race: scripts/bench.py
    say(f"speed: {len(timed)} contenders, {rounds} interleaved rounds of {min(n_speed, len(x))} images")
    speed = interleaved_speed(timed, x[:n_speed], rounds, reference, say)
    for r in rows:
        s = speed.get(r["name"])
        r.update(images_per_s=s and s["median"], speed_spread=s and [s["min"], s["max"]],
                 speed_vs_torchao_int8=s and s["ratio"])
    return {"images": min(n_speed, len(x)), "rounds": rounds, "reference": reference,
            "process": "one process, OMP_WAIT_POLICY=" + str(os.environ.get("OMP_WAIT_POLICY"))
                       + ", onnxruntime's threads not spinning between runs"}


def report_dict(run, speed_protocol, **extra):
    """The report (what results.json holds): the rows, each with its difference to FP32 (the
    first row), how they were measured and the machine."""
    import numba
    src, rows = run.src, run.rows
    for r in rows:
        r["delta_pp"] = 100 * (r["accuracy"] - rows[0]["accuracy"])
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/compare.py"] + sys.argv[1:]),
        "network": src.arch, "study": run.study,
        "n_test": len(run.y), "calibration_images": run.calib_n, "seed": run.seed, "batch_size": BATCH,
        "recon_iters": run.iters, "quick": run.quick, "speed_protocol": speed_protocol,
        "checkpoint": str(src.path), "checkpoint_sha256": src.sha256, "input_normalization": src.norm_from,
        "machine": {**machine(torch_threads=torch.get_num_threads(), numba_threads=int(numba.config.NUMBA_NUM_THREADS),
                              omp_wait_policy=os.environ.get("OMP_WAIT_POLICY")),
                    "load_average": {"before": run.load_before, "after": os.getloadavg()}},
        "versions": versions("torch", "numpy", "numba", "onnxruntime", "torchao"),
        "rows": rows, **extra, "total_s": time.perf_counter() - run.t_start}


NETWORK_WIDTHS = [(8, 8), (4, 8), (2, 8), (4, 4)]    # a network report's default exports


def network_rows(run, reference, committed=None, publish=False):
    """The rest of a network's report (measure's docstring): the default exports at each of
    NETWORK_WIDTHS, as `python -m exporter --bits B [--act-bits A]` makes them, or the
    committed ones listed in `committed`; the speed block -> the report.  reference: the speed
    block's yardstick (None: no torch.ao row)."""
    net, iters, say = run.net, run.iters, run.say
    for f in (committed or {}).get("files", []):
        path = Path(committed["root"]) / f["file"]
        m = intengine.load(path)
        meta = m.header["meta"]
        b, a = f["bits"], f["act_bits"]
        pred, how = run.engine_pred(m, f"intengine W{b}A{a}")
        run.add(f"intengine W{b}A{a}", "intengine (default)", "ours", b, a, m.run, path.stat().st_size,
                f"committed file {f['file']} ({f['note']}); kernel {m.kernel}",
                first_last_bits=meta["first_last_bits"], export_s=f["export_s"], rounding=meta["rounding"],
                iters=recon_iters(meta), pred=pred, evaluation=how, cli=f["command"], file=f["file"])
    for b, a in [] if committed else NETWORK_WIDTHS:
        recon = {"iters": iters} if iters and b < 8 else None
        steps = f", {iters} steps per block" if recon else ""
        say(f"exporting W{b}A{a} with the defaults{steps}, {run.calib_n} calibration images")
        t0 = time.perf_counter()
        path, size, _, _ = export(Config(bits=b, act_bits=a, calib_images=run.calib_n, seed=run.seed,
                                         data_dir=run.data_dir, recon=recon, **net),
                                  run.out_dir / f"{run.src.arch}_w{b}a{a}.npz", progress=False,
                                  log=lambda m: say(f"  {m}"))
        secs = time.perf_counter() - t0
        m = intengine.load(path)
        meta = m.header["meta"]
        pred, how = run.engine_pred(m, f"intengine W{b}A{a}")
        run.add(f"intengine W{b}A{a}", "intengine (default)", "ours", b, a, m.run, size,
                f"{meta['rounding']}{steps}; first/last layer {meta['first_last_bits']}-bit; export {secs:.0f} s; "
                f"kernel {m.kernel}", first_last_bits=meta["first_last_bits"], export_s=secs,
                rounding=meta["rounding"], iters=recon_iters(meta), pred=pred, evaluation=how)
        where = f"--model {net['program']}" if net["program"] else f"--checkpoint {net['checkpoint']}"
        run.rows[-1]["cli"] = (f"python -m exporter {where} --bits {b}" + (f" --act-bits {a}" if a != 8 else "")
                               + f" --calib-images {run.calib_n} --seed {run.seed}"
                               + (f" --iters {iters}" if recon else "") + f" --out {path}")
        run.rows[-1]["file"] = str(path)
    if run.cache.changed:
        run.cache.save()
    if publish:
        run.cache.save(EVALS)                       # the main job finds these files' predictions
    speed_protocol = speed_block(run.rows, run.timed, run.x, run.quick, reference, say)
    say("done measuring")
    return report_dict(run, speed_protocol, **({"shipped_checkpoint": committed["checkpoint"]} if committed else {}))


TORCHAO = "torch.ao int8 best practice (x86, W8A7)"     # the speed yardstick
TORCHAO_PT2E = "torch.ao int8 (PT2E, x86 inductor)"     # a program's yardstick
EVALS = ROOT / "results" / "evals.npz"     # the committed files' predictions (report.EvalCache; --publish)
PLOT = "accuracy_vs_size.png"


def recon_iters(meta):
    return recorded_config(meta).get("iters")


def committed_rows(add, rows, say, cache):
    """The committed learned-rounding files (models/, listed with their export command and
    time in results/lowbit/exports.json; the engine runs them, nothing is re-optimized) and
    AIMET AdaRound's committed figures (results/aimet_adaround.json, its own fake-quant sim).
    The files' predictions come from `cache` where it holds them, checked again on a sample."""

    def run(path):
        model = intengine.load(path)
        pred, how = cache.predictions(model, say, f"committed file {path.name}")
        say(f"committed file {path.relative_to(ROOT)}: {how}")
        return model, pred, how
    rec_path = ROOT / "results" / "lowbit" / "exports.json"
    if rec_path.is_file():
        for name, r in json.loads(rec_path.read_text()).items():
            path = ROOT / r["file"]
            if not path.is_file():
                continue
            model, pred, how = run(path)
            learned = bool(recorded_config(model.header["meta"]).get("act_lr"))
            method = f"intengine {r['rounding']}" + (" + learned step sizes" if learned else "")
            add(f"intengine W{r['bits']}A{r['act_bits']} {r['rounding']} ({name})", method, "ours-committed",
                r["bits"], r["act_bits"], model.run, path.stat().st_size,
                f"{r['note']}; export {r['export_seconds']:.0f} s, machine load average "
                f"{r['load1_before']:.1f}-{r['load1_after']:.1f}", speed=False,
                first_last_bits=r["first_last_bits"], seed=r["seed"], rounding=r["rounding"],
                learned_steps=learned, default_method=r["rounding"] == "brecq" and learned,
                cli=r["command"], export_s=r["export_seconds"], pred=pred, evaluation=how)
    budget = ROOT / "results" / "budget" / "results.json"
    if budget.is_file():                            # mixed precision under a byte budget (section 14)
        for r in json.loads(budget.read_text())["runs"]:
            path = ROOT / r["file"]
            if not path.is_file():
                continue
            model, pred, how = run(path)
            alloc = r["allocation"]
            counts = ", ".join(f"{sum(v == c for v in alloc.values())} layers W{c}" for c in (2, 4, 8))
            widths = sorted(set(alloc.values()))
            add(f"intengine mixed, budget {r['budget_bytes']:,} B ({'exact' if r['solver'] == 'dp' else 'greedy'})",
                "intengine mixed" if r["solver"] == "dp" else "intengine mixed greedy",
                "ours-mixed" if r["solver"] == "dp" else "ours-ablation", min(widths), 8, model.run,
                path.stat().st_size, f"{counts}; {'exact' if r['solver'] == 'dp' else 'greedy'} allocation, "
                f"then reconstruction; export {r['export_seconds']:.0f} s, machine load average "
                f"{r['load1_before']:.1f}-{r['load1_after']:.1f}", speed=False,
                bits_label="/".join(map(str, widths)), allocation=alloc, cli=r["command"],
                export_s=r["export_seconds"], budget_bytes=r["budget_bytes"], pred=pred, evaluation=how)
    qat_rec = ROOT / "results" / "qat" / "exports.json"
    if qat_rec.is_file():                           # our QAT files (section 15)
        for name, r in json.loads(qat_rec.read_text()).items():
            path = ROOT / r["file"]
            if not path.is_file():
                continue
            model, pred, how = run(path)
            meta = model.header["meta"]
            h = meta["qat"]["history"]
            add(f"intengine W{meta['bits']}A{meta['act_bits']} QAT ({name})", "intengine QAT", "ours-qat",
                meta["bits"], meta["act_bits"], model.run, path.stat().st_size,
                f"{len(h) - 1} QAT epochs from the brecq + learned step sizes file, {r['seconds_per_epoch']:.0f} s "
                f"per epoch, {r['qat_seconds'] / 60:.0f} min at machine load average {r['load1_start']:.1f}-"
                f"{r['load1_end']:.1f}" + (" (some epochs not at full speed; results/qat/README.md gives its cost)" if r.get("note")
                                           else "")
                + f"; held-out agreement {h[0]['heldout_agree']:.4f} -> {h[-1]['heldout_agree']:.4f}",
                speed=False, first_last_bits=meta["first_last_bits"], cli=r["command"], export_s=r["qat_seconds"],
                pred=pred, evaluation=how)
    tao_qat = ROOT / "results" / "qat" / "torchao.json"
    if tao_qat.is_file():                           # torch.ao's QAT (scripts/torchao_qat.py)
        for key, a in json.loads(tao_qat.read_text()).items():
            sim = a["bits_w"] < 8
            rows.append({"name": f"torch.ao QAT W{a['bits_w']}A8 ({key}), committed figure", "method": "torch.ao QAT",
                         "kind": "peer-committed", "bits_w": a["bits_w"], "bits_a": a["bits_a"],
                         "accuracy": a["top1_int8"], "agreement_fp32": a["agree_fp32"], "size_bytes": None,
                         "simulated": sim, "export_s": a["seconds"], "cli": a["command"],
                         "note": f"prepare_qat + convert, {a['epochs']} epoch{'s' * (a['epochs'] != 1)}, torch's int8 kernels on "
                                 f"{a['test_images']:,} images (fake-quant {a['top1_fakequant']:.4f})"
                                 + (f"; {a['bits_w']}-bit weight values in int8 kernels" if sim else "")
                                 + (f"; the trained weights put back after convert_fx, whose own model scores "
                                    f"{a['top1_int8_as_converted']:.4f} (scripts/torchao_qat.py trained_weights)"
                                    if a.get("trained_weights") else "")
                                 + f"; {a['seconds'] / 60:.0f} min at machine load average {a['load1_start']:.1f}"})
    aimet = ROOT / "results" / "aimet_adaround.json"
    if aimet.is_file():
        for key, a in json.loads(aimet.read_text()).items():
            rows.append({"name": f"AIMET AdaRound W{a['bits']}A8 ({key}), committed figure", "method": "AIMET AdaRound",
                         "kind": "peer-committed", "bits_w": a["bits"], "bits_a": 8, "accuracy": a["top1"],
                         "agreement_fp32": a["agree_fp32"], "size_bytes": None, "simulated": True,
                         "export_s": a["export_seconds"], "iters": a["iters_per_layer"], "cli": a["command"],
                         "note": f"AIMET's fake-quant sim on {a['test_images']:,} images; {a['iters_per_layer']} "
                                 f"steps/layer, export {a['export_seconds']:.0f} s at machine load average "
                                 f"{a['load1_before']:.1f}"})


# ---- rendering: everything below reads only the report dict ----------------------------------

WIDTHS = [(16, 16), (8, 8), (4, 8), (2, 8), (4, 4), (2, 4)]


def width_key(r):
    """The column a row belongs to: torch.ao's 7-bit activations count as A8."""
    return (r["bits_w"], 8 if r["bits_a"] == 7 else r["bits_a"])


def seed_stats(rep, w):
    """(mean, std, n) of the committed files made by the default method at width w with 8-bit
    first/last layers, or None."""
    acc = [r["accuracy"] for r in rep["rows"] if r["kind"] == "ours-committed" and r.get("default_method")
           and width_key(r) == w and r.get("first_last_bits") == 8]
    return (float(np.mean(acc)), float(np.std(acc, ddof=1)) if len(acc) > 1 else 0.0, len(acc)) if acc else None


def ours_at(rep, w):
    """The default method's row at width w: the fresh export, else the committed file (seed 0)."""
    fresh = [r for r in rep["rows"] if r["kind"] == "ours" and width_key(r) == w]
    if fresh:
        return fresh[0]
    committed = sorted((r for r in rep["rows"] if r["kind"] == "ours-committed" and r.get("default_method")
                        and width_key(r) == w and r.get("first_last_bits") == 8), key=lambda r: r.get("seed", 0))
    return committed[0] if committed else None


NAMES = {"resnet20": "ResNet20 / CIFAR-10", "resnet32": "ResNet-32 / CIFAR-10", "resnet44": "ResNet-44 / CIFAR-10",
         "resnet56": "ResNet-56 / CIFAR-10", "resnet110": "ResNet-110 / CIFAR-10",
         "mobilenetv2": "MobileNetV2 / CIFAR-10"}
PEER_METHODS = {"torch.ao pt2e": "torch.ao int8 (PT2E, x86 inductor)", "torch.ao best": "torch.ao int8 (x86 default qconfig)", "torch.ao full": "torch.ao int8 full range",
                "onnxruntime int8": "onnxruntime int8", "torch.ao original": "torch.ao, the original work's settings",
                "AIMET AdaRound": "AIMET AdaRound (committed figure on 10,000 images, simulated)", "fp16": "torch fp16",
                "torch.ao int16 sim": "torch.ao int16 (simulated)"}


def best_peer(rep, w):
    """The most accurate peer row at width w (AIMET: its best committed figure), or None."""
    peers = [r for r in rep["rows"] if r["kind"] in ("peer", "peer-committed") and width_key(r) == w]
    return max(peers, key=lambda r: r["accuracy"], default=None)


def kb(n):
    return "n/a" if not n else f"{n / 1000:,.1f} KB"


def summary(rep):
    """The verdict, a few lines: per width, the default export's top-1, Δ FP32 and size, and
    the best peer at that width."""
    fp = rep["rows"][0]
    lines = [f"Verdict ({rep['n_test']:,} test images; FP32 {fp['accuracy']:.4f}, {kb(fp['size_bytes'])}):"]
    for w in WIDTHS:
        r = ours_at(rep, w)
        if r is None:
            continue
        st = seed_stats(rep, w)
        seeds = f", committed seeds {st[0]:.4f} ± {st[1]:.4f} (n={st[2]})" if st and st[2] > 1 else ""
        src = "" if r["kind"] == "ours" else " (committed file)"
        p = best_peer(rep, w)
        peer = (f"best peer {PEER_METHODS.get(p['method'], p['method'])} {p['accuracy']:.4f}"
                + (f", {kb(p['size_bytes'])}" if p["size_bytes"] else "")) if p else "no peer at this width"
        lines.append(f"  {'W%dA%d' % w:<7}ours {r['accuracy']:.4f} ({r['delta_pp']:+.2f} pp), "
                     f"{kb(r['size_bytes'])}{src}{seeds}; {peer}")
    mixed_rows = sorted((r for r in rep["rows"] if r["kind"] == "ours-mixed"), key=lambda r: r["budget_bytes"])
    if mixed_rows:
        lines.append("  --budget (mixed W2/W4/W8, A8; committed files): " + ", ".join(
            f"<= {r['budget_bytes'] / 1000:.1f} KB {r['accuracy']:.4f}" for r in mixed_rows))
    qat_rows = [r for r in rep["rows"] if r["kind"] == "ours-qat"]
    if qat_rows:
        best = {}                                   # the best committed file at each width
        for r in qat_rows:
            if r["accuracy"] > best.get(width_key(r), {"accuracy": -1})["accuracy"]:
                best[width_key(r)] = r
        lines.append(f"  QAT (--qat-epochs, the best of {len(qat_rows)} committed files per width): " + ", ".join(
            f"W{r['bits_w']}A{r['bits_a']} {r['accuracy']:.4f}"
            for r in sorted(best.values(), key=lambda r: (-r["bits_a"], -r["bits_w"]))))
    for net in rep.get("networks", []):
        fp = net["rows"][0]
        lines.append(f"  {NAMES.get(net['network'], net['network'])} (FP32 {fp['accuracy']:.4f}): " + network_line(net))
    if rep.get("quick") or rep.get("recon_iters"):
        lines.append(f"  ({'W4A8/W2A8' if rep.get('study', True) else 'below 8 bits,'} reconstruction at "
                     f"{rep['recon_iters']} steps per block, not the "
                     f"exporter's default; the full run uses the defaults)")
    return "\n".join(lines)


def network_line(net):
    """A shipped network in one line: the default exports and the int8 peers, top-1 (Δ FP32)."""
    ours = [f"W{w[0]}A{w[1]} {r['accuracy']:.4f} ({r['delta_pp']:+.2f} pp)"
            for w in NETWORK_WIDTHS if (r := ours_at(net, w))]
    peers = [f"{PEER_METHODS[r['method']]} {r['accuracy']:.4f}" for r in net["rows"]
             if r["method"] in ("torch.ao best", "torch.ao pt2e", "onnxruntime int8")]
    return "ours " + ", ".join(ours) + ("; " + ", ".join(peers) if peers else "")


def architectures(rep):
    """The headline across networks: the study's and each shipped network's FP32, default
    exports and int8 peers, one row per (network, method): top-1 (Δ FP32) · size."""
    cols = NETWORK_WIDTHS
    lines = ["| network | method | FP32 | " + " | ".join(f"W{w}A{a}" for w, a in cols) + " |",
             "|---" * (len(cols) + 3) + "|"]

    def cell(r):
        size = f" · {kb(r['size_bytes'])}" if r["size_bytes"] else ""
        return f"{r['accuracy']:.4f} ({r['delta_pp']:+.2f} pp){size}"
    for net in [rep, *rep.get("networks", [])]:
        fp = net["rows"][0]
        ours = [ours_at(net, w) for w in cols]
        name = NAMES.get(net.get("network", "resnet20"), net.get("network"))
        lines.append(f"| {name} | **intengine, the defaults** | {fp['accuracy']:.4f} · {kb(fp['size_bytes'])} | "
                     + " | ".join("" if r is None else f"**{cell(r)}**" for r in ours) + " |")
        for method in ("torch.ao best", "torch.ao pt2e", "onnxruntime int8"):
            r = next((r for r in net["rows"] if r["method"] == method), None)
            if r:
                lines.append(f"| | {PEER_METHODS[method]} | | "
                             + " | ".join(cell(r) if width_key(r) == w else "" for w in cols) + " |")
    return lines


def headline(rep):
    """The first table: one row per method, one column per width, top-1 and size."""
    study = rep.get("study", True)
    cols = WIDTHS if study else NETWORK_WIDTHS
    fp = rep["rows"][0]
    head = "| method | FP32 | " + " | ".join(f"W{w}A{a}" for w, a in cols) + " |"
    lines = [head, "|---" * (len(cols) + 2) + "|"]

    def cell(r, extra=""):
        size = f" · {kb(r['size_bytes'])}" if r["size_bytes"] else " · sim." if r.get("simulated") else ""
        return f"{r['accuracy']:.4f}{extra}{size}"

    ours = []
    for w in cols:
        r = ours_at(rep, w)
        st = seed_stats(rep, w)
        extra = f" (seeds {st[0]:.4f} ± {st[1]:.4f}, n={st[2]})" if st and st[2] > 1 else ""
        ours.append("" if r is None else ("**" + cell(r, extra) + "**" + (" ‡" if r["kind"] != "ours" else "")))
    lines.append("| **intengine, `python -m exporter --bits B`** (defaults) | | " + " | ".join(ours) + " |")
    abl = {width_key(r): r for r in rep["rows"] if r["kind"] == "ours-ablation" and r["method"] == "intengine nearest"}
    for w in ((4, 4), (2, 4)):
        near = [r for r in rep["rows"] if r["kind"] == "ours-committed" and r.get("rounding") == "nearest"
                and width_key(r) == w and r.get("first_last_bits") == 8]
        if near:
            abl[w] = near[0]
    if study:
        lines.append("| intengine, round-to-nearest (ablation) | | "
                     + " | ".join("= default" if w[0] >= 8 else cell(abl[w]) if w in abl else "" for w in cols) + " |")
    for method in ("torch.ao pt2e", "torch.ao best", "torch.ao full", "onnxruntime int8", "torch.ao original",
                   "AIMET AdaRound", "fp16"):
        rs = [r for r in rep["rows"] if r["method"] == method]
        if not rs:
            continue
        by = {}
        for r in rs:                                 # AIMET: the best committed figure per width
            if width_key(r) not in by or r["accuracy"] > by[width_key(r)]["accuracy"]:
                by[width_key(r)] = r
        lines.append(f"| {PEER_METHODS[method]} | | " + " | ".join(cell(by[w]) if w in by else "" for w in cols)
                     + " |")
    lines.append(f"| FP32 (torch) | {cell(fp)} |" + " |" * len(cols))
    return lines


KIND_WIDTHS = [(8, 8), (4, 8), (2, 8), (4, 4), (2, 2)]


def kinds(rep):
    """The kinds of quantization (docs/quantization.md section 12), ours and torch.ao's side by
    side at each width: the best row of each (kind, tool) per width."""
    def pick(test):
        by = {}
        for r in rep["rows"]:
            if test(r) and (width_key(r) not in by or r["accuracy"] > by[width_key(r)]["accuracy"]):
                by[width_key(r)] = r
        return by
    nearest = lambda r: r.get("rounding") == "nearest" and r["kind"] in ("ours", "ours-ablation", "ours-committed") \
        and r.get("first_last_bits") == 8 and "torch.ao" not in r["method"]
    recon = lambda r: (r["kind"] == "ours" and r.get("rounding") == "brecq") or \
        (r["kind"] == "ours-committed" and r.get("default_method") and r.get("first_last_bits") == 8)
    table = [("dynamic (weights int8, activations quantized at run time)", "torch.ao `quantize_dynamic`",
              pick(lambda r: r["method"] == "torch.ao dynamic")),
             ("static PTQ, round-to-nearest", "torch.ao (x86 default qconfig; below 8 bits the original settings)",
              pick(lambda r: r["method"] in ("torch.ao best", "torch.ao original"))),
             ("static PTQ, round-to-nearest", "intengine (MSE clipping, bias correction)", pick(nearest)),
             ("PTQ with learned rounding", "AIMET AdaRound (simulated)", pick(lambda r: r["method"] == "AIMET AdaRound")),
             ("PTQ with learned rounding", "intengine (BRECQ + learned step sizes, the default)", pick(recon)),
             ("QAT", "torch.ao `prepare_qat_fx` + `convert_fx` (below 8 bits simulated)",
              pick(lambda r: r["method"] == "torch.ao QAT")),
             ("QAT", "intengine (`--qat-epochs`, from the PTQ file)", pick(lambda r: r["kind"] == "ours-qat"))]
    lines = ["| kind | tool | " + " | ".join(f"W{w}A{a}" for w, a in KIND_WIDTHS) + " |",
             "|---" * (len(KIND_WIDTHS) + 2) + "|"]
    for kind, tool, by in table:
        cells = []
        for w in KIND_WIDTHS:
            r = by.get(w) or (by.get((8, 32)) if w == (8, 8) else None)
            cells.append("" if r is None else f"{r['accuracy']:.4f}" + (" (A32)" if r["bits_a"] == 32 else "")
                         + (" sim." if r.get("simulated") else ""))
        lines.append(f"| {kind} | {tool} | " + " | ".join(cells) + " |")
    return lines


def verdict_text(rep):
    """Two sentences above the headline table."""
    fp = rep["rows"][0]
    parts = []
    for w in ((2, 8), (4, 8), (8, 8)):
        r, p = ours_at(rep, w), best_peer(rep, w)
        if r is None:
            continue
        s = f"W{w[0]}A{w[1]} {r['accuracy']:.4f} ({r['delta_pp']:+.2f} pp, {kb(r['size_bytes'])})"
        if p:
            s += f" against {p['accuracy']:.4f} for the best peer ({PEER_METHODS.get(p['method'], p['method'])})"
        parts.append(s)
    tao = next((r for r in rep["rows"] if r["method"] in ("torch.ao best", "torch.ao pt2e")), None)
    small = ""
    r2 = ours_at(rep, (2, 8))
    if tao and tao["size_bytes"] and r2 and r2["size_bytes"]:
        small = (f" The W2A8 file is {tao['size_bytes'] / r2['size_bytes']:.1f}x smaller than torch.ao's int8 "
                 f"model and {fp['size_bytes'] / r2['size_bytes']:.1f}x smaller than FP32.")
    mix = [r for r in rep["rows"] if r["kind"] == "ours-mixed" and r["size_bytes"] <= 100_000]
    budget = ""
    if mix:
        b = max(mix, key=lambda r: r["accuracy"])
        budget = (f" Under a byte budget, `--budget` mixes 2-, 4- and 8-bit layers: the best committed file of "
                  f"at most 100 KB scores {b['accuracy']:.4f} in {kb(b['size_bytes'])} ({b['name']}).")
    best_qat = {}                                   # the best committed QAT file at each width
    for r in rep["rows"]:
        if r["kind"] == "ours-qat" and r["accuracy"] > best_qat.get(width_key(r), {"accuracy": -1})["accuracy"]:
            best_qat[width_key(r)] = r
    qat = sorted(best_qat.values(), key=lambda r: (-r["bits_a"], -r["bits_w"]))
    qat_text = ""
    if qat:
        ptq = {width_key(r): r for r in rep["rows"] if (r["kind"] == "ours-committed" and r.get("default_method")
                                                       and r.get("first_last_bits") == 8) or
               (r["kind"] == "ours" and r.get("rounding") == "brecq")}
        qat_text = " Quantization-aware training (`--qat-epochs`, the best committed file per width) gives " + "; ".join(
            f"W{r['bits_w']}A{r['bits_a']} {r['accuracy']:.4f}"
            + (f" (PTQ {ptq[width_key(r)]['accuracy']:.4f})" if width_key(r) in ptq else "") for r in qat) + "."
    nets = "".join(f" On {NAMES.get(n['network'], n['network'])} (FP32 {n['rows'][0]['accuracy']:.4f}): "
                   + network_line(n) + "." for n in rep.get("networks", []))
    return ("**Verdict.** With no options, the exporter and the integer engine score " + "; ".join(parts)
            + f" (FP32 {fp['accuracy']:.4f})." + small + budget + qat_text + nets)


def markdown(r, plot_rel):
    m = r["machine"]
    la = m.get("load_average", {})
    study = r.get("study", True)
    lines = ["# Results" + ("" if study else f": {r['network']}"), "", verdict_text(r), ""]
    if r.get("networks"):
        lines += ["Every shipped network: top-1 on the test images (Δ FP32) · file size, what the default "
                  "commands give beside the int8 peers. Each network's every row follows *All runs*.", "",
                  *architectures(r), "", f"## {NAMES.get(r.get('network', 'resnet20'), r.get('network'))}", ""]
    lines += ["Top-1 on the test images · file size. Bold: what the default commands give "
             "(‡ a committed file in `models/` made by the same default method). Sizes are the model file "
             "on disk; *sim.* is a simulated model with no file. " + (
                 "Every figure is measured by this run except AIMET's, which come from "
                 "`results/aimet_adaround.json`." if study else
                 f"Every figure is measured by this run, on {r['network']} ({r['checkpoint']}; input "
                 f"normalization {r.get('input_normalization', '?')})."), ""]
    lines += headline(r)
    quick = ""
    if r.get("recon_iters"):
        quick = (f" **This run reconstructed {'W4A8 and W2A8' if study else 'every width below 8 bits'} with "
                 f"{r['recon_iters']} steps per block, not the "
                 f"exporter's default.**")
    lines += ["", f"![accuracy against file size]({plot_rel})", "",
              f"Generated by `{r['command']}` on {r['date']} ({r['total_s']:.0f} s). "
              f"{r['n_test']:,} test images, {r['calibration_images']} calibration images, seed {r['seed']}.{quick} "
              f"Machine: {m['cpu']} ({m.get('llvm_cpu', '?')}), {m['cores']} cores "
              f"(torch {m['torch_threads']} threads, numba {m['numba_threads']}"
              + "".join(f", {k} {v}" for k, v in m.get("flags", {}).items())
              + (", machine load average {:.1f} before, {:.1f} after".format(la["before"][0], la["after"][0])
                 if la else "") + "). "
              + ", ".join(f"{k} {v}" for k, v in r["versions"].items() if v) + ". "
              + ("Checkpoint" if study else "Network file") + f" sha256 {r['checkpoint_sha256'][:16]}.", ""]
    if study:
        lines += ["## Kinds of quantization", "",
                  "Each kind of quantization (docs/quantization.md section 12), ours and PyTorch's, at each width: "
                  "the most accurate row of that kind and tool in this report (top-1; *sim.* simulated). The QAT "
                  "and AIMET figures come from committed runs (results/qat/, results/aimet_adaround.json); our QAT "
                  "files are run by the engine here.", "", *kinds(r), ""]
    lines += ["## All runs", "", *rows_table(r)]
    c = r.get("crosscheck")
    if c is not None:                                 # the study's cross-check
        lines += appendix(r, c)
    for net in r.get("networks", []):
        nm = net["machine"]
        lines += ["", f"## {NAMES.get(net['network'], net['network'])}: all runs", "",
                  f"Measured by the same run ({net['total_s']:.0f} s) on {net['n_test']:,} test images, "
                  f"{net['calibration_images']} calibration images, seed {net['seed']}; checkpoint "
                  f"{net.get('shipped_checkpoint', net['checkpoint'])} (sha256 {net['checkpoint_sha256'][:16]}), "
                  f"load average "
                  f"{nm['load_average']['before'][0]:.1f} before, {nm['load_average']['after'][0]:.1f} after. "
                  f"The engine runs the committed files that the command in each row made "
                  f"(`--checkpoint {net.get('shipped_checkpoint', net['checkpoint'])} --publish`).", "",
                  *rows_table(net)]
    return "\n".join(lines + [""])


def rows_table(r):
    """Every row of a report with its speed: the *All runs* table."""
    sp = r.get("speed_protocol", {})
    lines = [f"Speed: images/s at batch 256 (uint8 NHWC in, logits out), timed in one block after the "
              f"accuracy runs, {sp.get('rounds', '?')} interleaved rounds of {sp.get('images', '?')} images, "
              f"median (min-max); × torch.ao is the median of the per-round ratios to "
              f"`{sp.get('reference', TORCHAO)}`. {sp.get('process', '')}: in-process figures. "
              "The fair protocol (each contender in its own process at its own defaults) is "
              "`scripts/bench.py`, [results/bench.md](results/bench.md). Files that share a kernel with a "
              "timed row are not timed again.", "",
              "| row | W | A | top-1 | Δ FP32 (pp) | agree FP32 | size (bytes) | images/s | × torch.ao int8 | note |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        size = f"{row['size_bytes']:,}" if row["size_bytes"] else "n/a (simulated)" if row.get("simulated") else "n/a"
        ips = row.get("images_per_s")
        spd = "n/a" if not ips else (f"{ips:.0f} ({row['speed_spread'][0]:.0f}-{row['speed_spread'][1]:.0f})"
                                     if row.get("speed_spread") else f"{ips:.0f}")
        ratio = row.get("speed_vs_torchao_int8")
        lines.append(f"| {row['name']} | {row.get('bits_label', row['bits_w'])} | {row['bits_a']} | {row['accuracy']:.4f} | "
                     f"{row['delta_pp']:+.2f} | {row['agreement_fp32']:.4f} | {size} | {spd} | "
                     f"{'n/a' if ratio is None else format(ratio, '.2f')} | {row['note']} |")
    return lines


def appendix(r, c):
    """The cross-check of the engine against torch.ao (the study's)."""
    tf = c["teacher_forced"]
    worst = min(tf, key=lambda t: t["identical_active"])
    k = c["kernels"]
    lines = ["", "## Appendix: the engine against torch.ao int8 (full range)", "",
              f"- Top-1 agreement on {r['n_test']:,} images, engine (torch.ao parameters) vs torch.ao: "
              f"**{c['top1_agreement_engine_vs_torchao']:.4f}**. Our own W8A8 vs torch.ao: "
              f"{c['top1_agreement_our_w8a8_vs_torchao']:.4f}.",
              f"- Op by op (teacher-forced, {c['n_layerwise']} images): max difference "
              f"{max(t['max_abs_diff'] for t in tf)} LSB; the lowest share of identical active elements is "
              f"{worst['identical_active']:.4f} ({worst['op']}).",
              f"- torch.ao engine `{k['quantized_engine']}`; int8 convs ran in {k['conv_library']} "
              f"({k['onednn_conv_calls']} oneDNN convolution calls for one batch). Its quantized adaptive "
              f"average pool rounds ties {k['adaptive_avg_pool_ties']} (ties to even).", "",
              "Free-running mismatch, layer by layer (share of elements that differ from torch.ao):", "",
              "| point | max diff (LSB) | differing |", "|---|---|---|"]
    return lines + [f"| {p['point']} | {p['max_abs_diff']} | {1 - p['identical_all']:.4f} |"
                    for p in c["free_running"]]


def pareto(points):
    """The upper-left frontier of (size, accuracy) points: each kept point is more accurate
    than every smaller one."""
    front, best = [], -1.0
    for s, a in sorted(points, key=lambda p: (p[0], -p[1])):
        if a > best:
            front.append((s, a))
            best = a
    return front


def plot(rep, path):
    """Top-1 against file size (KB, log axis): ours as a Pareto line, peers as labelled points,
    FP32 as a line; the full range on the left, 85-93 % on the right."""
    import matplotlib.pyplot as plt
    fig = figure(rep)
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def figure(rep):
    """The plot's matplotlib figure, its labels placed (plot())."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = rep["rows"]
    size_of = {width_key(r): r["size_bytes"] for r in rows if r["kind"] == "ours" and r["size_bytes"]}
    size_of.update({width_key(r): r["size_bytes"] for r in rows if r["kind"] == "ours-committed"
                    and width_key(r) not in size_of})
    from adjustText import adjust_text          # moves the labels apart, a leader line to each point
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    texts = [[], []]                           # each panel's labels, placed once the axes are final
    fp = rows[0]
    ours = [r for r in rows if r["size_bytes"] and (r["kind"] in ("ours", "ours-mixed") or r.get("default_method"))]
    mix = [r for r in ours if r["kind"] == "ours-mixed"]
    abl = [r for r in rows if r["size_bytes"] and r["kind"] in ("ours-ablation", "ours-committed")
           and not r.get("default_method") and r["method"] != "intengine (torch.ao params)"]
    styles = [("torch.ao pt2e", "torch.ao int8 (PT2E, x86 inductor)", "tab:red", "s"),
              ("torch.ao best", "torch.ao int8 (x86 default; full range)", "tab:red", "s"),
              ("torch.ao full", None, "tab:red", "s"),
              ("onnxruntime int8", "onnxruntime int8", "tab:purple", "D"),
              ("torch.ao original", "torch.ao, original work's settings", "tab:orange", "v"),
              ("AIMET AdaRound", "AIMET AdaRound (sim., at our file size)", "tab:green", "^"),
              ("fp16", "torch fp16 / dynamic int8", "tab:brown", "P"),
              ("torch.ao dynamic", None, "tab:brown", "P")]
    for k, ax in enumerate(axes):
        zoom = k == 1
        ax.axhline(100 * fp["accuracy"], color="k", ls="--", lw=1, label=f"FP32 {100 * fp['accuracy']:.2f} %")
        ax.scatter([r["size_bytes"] / 1000 for r in abl], [100 * r["accuracy"] for r in abl], s=14, color="0.6",
                   marker="x", label="ours, ablations (nearest, min/max steps, greedy)", zorder=2)
        front = pareto([(r["size_bytes"] / 1000, 100 * r["accuracy"]) for r in ours])
        ax.plot(*zip(*front), "-", color="tab:blue", lw=2, zorder=3)
        uni = [r for r in ours if r["kind"] != "ours-mixed"]
        ax.scatter([r["size_bytes"] / 1000 for r in uni], [100 * r["accuracy"] for r in uni], s=22,
                   color="tab:blue", zorder=4, label="intengine default export (● uniform, ◆ --budget); Pareto line"
                   if mix else "intengine, the default export (Pareto line)")
        if mix:
            ax.scatter([r["size_bytes"] / 1000 for r in mix], [100 * r["accuracy"] for r in mix], s=22,
                       color="tab:blue", marker="D", zorder=4)
        for r in ours:
            if r["kind"] == "ours" or (r.get("seed") == 0 and width_key(r) in ((4, 4), (2, 4))):
                if (85 <= 100 * r["accuracy"] <= 93.5) == zoom:       # each label in one panel
                    texts[k].append(ax.text(r["size_bytes"] / 1000, 100 * r["accuracy"],
                                            f"W{r['bits_w']}A{r['bits_a']}", fontsize=7, color="tab:blue"))
        for method, label, colour, marker in styles:
            rs = [r for r in rows if r["method"] == method]
            pts = []
            for r in rs:
                size = r["size_bytes"] or (size_of.get(width_key(r)) if method == "AIMET AdaRound" else None)
                if size:
                    pts.append((size / 1000, 100 * r["accuracy"], r))
            if not pts:
                continue
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=30, color=colour, marker=marker,
                       label=label, zorder=5, edgecolor="k", linewidth=0.4)
            for s, a, r in pts:
                if (85 <= a <= 93.5) != zoom:
                    continue
                tag = f"W{r['bits_w']}A{r['bits_a']}" + (f" {r['iters']} it" if method == "AIMET AdaRound" else "")
                texts[k].append(ax.text(s, a, tag, fontsize=6.5, color=colour))
        ax.set_xscale("log")
        ax.set_xlabel("model file size (KB, log scale)")
        ax.set_ylabel("top-1 (%)")
        ax.grid(alpha=0.3, which="both")
        if zoom:
            ax.set_ylim(85, 93.5)
            ax.set_title("the 85-93 % region")
        else:
            ax.set_ylim(0, 100)
            ax.set_title(f"{NAMES.get(rep.get('network', 'resnet20'), rep.get('network'))}, {rep['n_test']:,} test "
                         f"images: top-1 against size")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.13, 1, 1))
    for ax, t in zip(axes, texts):             # away from each other and from every marker
        pts = np.concatenate([c.get_offsets() for c in ax.collections if len(c.get_offsets())])
        adjust_text(t, x=pts[:, 0], y=pts[:, 1], ax=ax, expand=(1.4, 1.8), force_text=(0.4, 0.8),
                    force_static=(0.3, 0.6), arrowprops=dict(arrowstyle="-", color="0.5", lw=0.4))
    return fig


def write_report(rep, folder, md_path=None, readme=None):
    """results.json, the plot and RESULTS.md (in `folder` unless md_path is given), and with
    `readme` the README's generated section, all from the measured report `rep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md_path = Path(md_path) if md_path else folder / "RESULTS.md"
    write_atomic(folder / "results.json", json.dumps(rep, indent=1) + "\n")
    png = io.BytesIO()
    plot(rep, png)
    write_atomic(folder / PLOT, png.getvalue())
    plot_rel = os.path.relpath(folder / PLOT, md_path.parent)
    text = markdown(rep, plot_rel)
    write_atomic(md_path, text)
    if readme is not None:                            # the README shows the verdict and the headline
        head = text.split("\n", 2)[2].split("\n## All runs", 1)[0].rstrip()
        fill_section(readme, "results", head.replace(f"]({plot_rel})", f"](results/{PLOT})")
                     + "\n\nEvery run, the speed figures and the cross-check: [RESULTS.md](RESULTS.md).")
    return text


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
