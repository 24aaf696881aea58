"""The comparison report: FP32, PyTorch's own quantization and the integer engine, side by
side, on this machine, in one run.

    CIFAR10_DIR=../shared/data python scripts/compare.py [--quick] [--out reports] [--publish]

Writes results.json (a stable `rows` list), RESULTS.md (generated, never typed) and
accuracy_vs_bits.png into --out (default reports/, untracked); --publish also replaces the
committed RESULTS.md, results/ and the README's table.  Every row is measured here: top-1 on
the test images, the difference to FP32 in pp, top-1 agreement with FP32, the size on disk, and images/s at
batch 256 for the same region (uint8 NHWC images in, logits out), with the ratio to
torch.ao int8.  It also runs the cross-check of the engine against torch.ao (op by op,
free-running, top-1 agreement) and records which kernels torch.ao ran.
"""
import os
# Threads that busy-wait after a parallel region (OpenMP's default) steal the cores from the
# next contender in this one process; every row runs with passive waiting (set before any
# library that starts threads is imported).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
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
from exporter import crosscheck, fold, onnxrt, torchao  # noqa: E402
from exporter.pipeline import export  # noqa: E402
from exporter.quantize import ExportError  # noqa: E402
from exporter.reconstruct import recorded_config  # noqa: E402
from intengine.cifar10 import DataError, load_test, seeded_subset  # noqa: E402
from intengine.cpu import host_features  # noqa: E402
from intengine.fileformat import FormatError  # noqa: E402
from trainer.checkpoint import CheckpointError  # noqa: E402
from publish import fill_section, write_atomic  # noqa: E402
from train_report import cpu_name  # noqa: E402
from trainer import data  # noqa: E402

BATCH = 256


def timed_predict(fn, images):
    """Class predictions and images/s of fn(uint8 NHWC batch) -> logits; one warm-up batch
    first, then the whole set timed at batch 256."""
    fn(images[:BATCH])
    preds = []
    t0 = time.perf_counter()
    for s in range(0, len(images), BATCH):
        out = fn(images[s:s + BATCH])
        preds.append(np.asarray(out).argmax(1))
    return np.concatenate(preds), len(images) / (time.perf_counter() - t0)


def torch_fn(model, half=False):
    def fn(x):
        with torch.no_grad():
            t = torchao.normalize(x)
            if half:                                  # channels_last: ~5x faster fp16 on this CPU
                t = t.half().contiguous(memory_format=torch.channels_last)
            return model(t).float().numpy()
    return fn


def state_size(model):
    buf = io.BytesIO()
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
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None, help="Folder with cifar10.npz [default: $CIFAR10_DIR]")
@click.option("--quick", is_flag=True, help="1,000 seeded test images and 256 calibration images.")
@click.option("--limit", type=click.IntRange(1), default=None,
              help="Seeded test subset of this many images (default: all 10,000; 1,000 with --quick).")
@click.option("--calib-images", type=click.IntRange(1, 1024), default=None,
              help="Calibration images (default: 1024; 256 with --quick).")
@click.option("--seed", type=int, default=0, show_default=True, help="Calibration and --limit seed.")
@click.option("--out", "out", default=str(ROOT / "reports"), show_default=True, type=click.Path(file_okay=False),
              help="Report folder: results.json, RESULTS.md and accuracy_vs_bits.png.")
@click.option("--exports-dir", default=str(ROOT / "exports"), show_default=True, type=click.Path(file_okay=False),
              help="Where the .npz files go.")
@click.option("--publish", is_flag=True,
              help="Also replace the committed figures: RESULTS.md, results/ and the README table.")
@click.option("--render-only", "render_from", default=None, metavar="RESULTS.json",
              help="Measure nothing: redraw the report from a results.json (e.g. results/results.json).")
def main(checkpoint, data_dir, quick, limit, calib_images, seed, out, exports_dir, publish, render_from):
    """The comparison report: FP32, torch.ao's quantization and the integer engine at every
    bit width, side by side on this machine: accuracy, size and speed, plus the cross-check of
    the engine against torch.ao.

    Writes the report into --out (default reports/, not tracked by git). The committed figures
    (RESULTS.md, results/results.json, the plot and the README table) change only with --publish.
    """
    try:
        if render_from:
            rep = json.loads(Path(render_from).read_text())
        else:
            n = limit or (1000 if quick else None)
            calib = calib_images or (256 if quick else 1024)
            rep = measure(checkpoint, data_dir, n, calib, seed, Path(exports_dir))
        click.echo(write_report(rep, Path(out)))
        if publish:
            write_report(rep, ROOT / "results", ROOT / "RESULTS.md", readme=ROOT / "README.md")
            click.echo(f"published: {ROOT / 'RESULTS.md'}, {ROOT / 'results'}, README table", err=True)
        else:
            click.echo(f"wrote {Path(out) / 'RESULTS.md'} and {Path(out) / 'results.json'}", err=True)
    except (DataError, CheckpointError, FormatError, ExportError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None


class Progress:
    """One line per stage on stderr, with the time since the start."""

    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self, msg):
        click.echo(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", err=True)


def measure(checkpoint, data_dir, n_test, calib_n, seed, out_dir):
    """Run every row and the cross-check; return the report dict (what results.json holds)."""
    t_start, load_before = time.perf_counter(), os.getloadavg()
    say = Progress()
    torch.backends.quantized.engine = "x86"
    say("loading CIFAR-10 and the checkpoint")
    x, y = load_test(data_dir)
    if n_test and n_test < len(y):
        idx = seeded_subset(len(y), n_test, seed)
        x, y = x[idx], y[idx]
    y = y.astype(np.int64)
    train = data.load_arrays(data_dir)["x_train"]
    calib = train[seeded_subset(len(train), calib_n, seed)]
    calib10 = train[seeded_subset(len(train), 10, seed)]
    model = fold.load_resnet20(checkpoint)
    rows, fp32_pred = [], None
    out_dir.mkdir(parents=True, exist_ok=True)

    def add(name, method, bits_w, bits_a, fn, size, note="", simulated=False):
        nonlocal fp32_pred
        pred, speed = timed_predict(fn, x)
        if fp32_pred is None:
            fp32_pred = pred
        rows.append({"name": name, "method": method, "bits_w": bits_w, "bits_a": bits_a,
                     "accuracy": float((pred == y).mean()), "agreement_fp32": float((pred == fp32_pred).mean()),
                     "size_bytes": size, "images_per_s": speed, "simulated": simulated, "note": note})
        say(f"{name}: top-1 {rows[-1]['accuracy']:.4f}, {speed:.0f} images/s")
        return pred

    add("FP32 (torch)", "fp32", 32, 32, torch_fn(model), state_size(model))
    best = torchao.static_int8(model, calib, "best")
    add("torch.ao int8 best practice (x86, W8A7)", "torch.ao best", 8, 7, torch_fn(best), state_size(best),
        "HistogramObserver reduce_range=True: activations use 7 bits")
    full = torchao.static_int8(model, calib, "full")
    full_pred = add("torch.ao int8 full range (W8A8)", "torch.ao full", 8, 8, torch_fn(full), state_size(full))
    why = onnxrt.missing()
    if why:
        say(f"onnxruntime int8 skipped: {why}")
    else:
        fn, size = onnxrt.int8_row(model, calib, out_dir / "onnx", torch.get_num_threads())
        add("onnxruntime int8 (static QDQ, per-channel)", "onnxruntime int8", 8, 8, fn, size,
            "onnxruntime quantize_static: MinMax on the same calibration images, uint8 activations")
    for b in (8, 4, 2):
        q = torchao.static_int8(model, calib10, "original", bits=b)
        add(f"torch.ao original settings, weights {b}-bit", "torch.ao original", b, 8, torch_fn(q), state_size(q),
            f"MinMax per tensor, 10 images; activations observed on [0, {2**b - 1}] but stored as quint8")
    half = fold.load_resnet20(checkpoint).half().to(memory_format=torch.channels_last)
    add("torch fp16", "fp16", 16, 16, torch_fn(half, half=True), state_size(half),
        "float16 weights and activations, channels_last")
    sim16 = torchao.int16_simulated(model, calib)
    add("torch.ao int16 (simulated, FakeQuantize)", "torch.ao int16 sim", 16, 16, torch_fn(sim16), None,
        "float kernels with 16-bit fake quantization; no int16 kernels exist in torch", simulated=True)
    dyn = torchao.dynamic_int8(model)
    add("torch.ao dynamic int8 (fc only)", "torch.ao dynamic", 8, 32, torch_fn(dyn), state_size(dyn),
        "quantize_dynamic only has a kernel for the final linear layer")
    preds = {}                                      # engine predictions per weight width
    for b in (16, 8, 4, 2):
        say(f"exporting W{b} ({calib_n} calibration images)")
        a = 16 if b == 16 else 8
        path, size, _, _ = export(checkpoint, b, a, 8 if b < 8 else b, calib_n, seed, data_dir,
                                  out_dir / f"resnet20_w{b}a{a}.npz", progress=False)
        m = intengine.load(path)
        preds[b] = add(f"intengine W{b}A{a}", "intengine", b, a, m.run, size,
                       ("first/last layer 8-bit; " if b < 8 else "") + f"kernel {m.kernel}")
        rows[-1]["cli"] = (f"python -m exporter --bits {b} --calib-images {calib_n} --seed {seed} --out {path} && "
                           f"python -m intengine eval {path} --json")
    lowbit_rows(add, rows, say)                     # committed learned-rounding files + AIMET, issue 9
    say("exporting W8A8 with torch.ao's parameters")
    path, size, _, _ = export(checkpoint, 8, 8, 8, calib_n, seed, data_dir, out_dir / "resnet20_w8a8_torchao.npz",
                              progress=False, params_from="torchao")
    tao = intengine.load(path)
    tao_pred = add("intengine W8A8, torch.ao parameters", "intengine (torch.ao params)", 8, 8, tao.run, size,
                   f"the cross-check file: torch.ao's weights, scales and zero points; kernel {tao.kernel}")
    rows[-1]["cli"] = (f"python -m exporter --bits 8 --params-from torchao --calib-images {calib_n} "
                       f"--seed {seed} --out {path}")
    ref = next(r for r in rows if r["method"] == "torch.ao best")["images_per_s"]
    for r in rows:
        r["delta_pp"] = 100 * (r["accuracy"] - rows[0]["accuracy"])
        r["speed_vs_torchao_int8"] = r["images_per_s"] / ref if r["images_per_s"] else None

    # `full` is calibrated on the same images as the file's parameters (HistogramObserver is
    # deterministic), so it is the model the file was read from
    say("cross-check against torch.ao: op by op and free-running")
    pts = torchao.capture(full, x[:256])
    tf = crosscheck.teacher_forced(tao, pts)
    fr = crosscheck.free_running(tao, x[:256], pts)
    say("probing torch.ao's kernels")
    cross = {"teacher_forced": tf, "free_running": fr, "n_layerwise": 256,
             "top1_agreement_engine_vs_torchao": float((tao_pred == full_pred).mean()),
             "top1_agreement_our_w8a8_vs_torchao": float((preds[8] == full_pred).mean()),
             "kernels": kernel_probe()}
    say("done measuring")
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/compare.py"] + sys.argv[1:]),
        "n_test": len(y), "calibration_images": calib_n, "seed": seed, "batch_size": BATCH,
        "checkpoint": str(checkpoint), "checkpoint_sha256": fold.file_sha256(checkpoint),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "numba_threads": int(__import__("numba").config.NUMBA_NUM_THREADS),
                    "flags": {k: bool(host_features().get(k)) for k in ("avx512vnni", "amx-int8")},
                    "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                    "load_average": {"before": load_before, "after": os.getloadavg()}},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "numba": __import__("numba").__version__},
        "rows": rows, "crosscheck": cross, "total_s": time.perf_counter() - t_start}


def lowbit_rows(add, rows, say):
    """The committed learned-rounding files (models/, listed with their export command and
    time in results/lowbit/exports.json; the engine runs them, nothing is re-optimized) and
    AIMET AdaRound's committed figures (results/aimet_adaround.json, its own fake-quant sim)."""
    rec_path = ROOT / "results" / "lowbit" / "exports.json"
    if rec_path.is_file():
        for name, r in json.loads(rec_path.read_text()).items():
            path = ROOT / r["file"]
            if not path.is_file():
                continue
            say(f"committed file {r['file']}")
            model = intengine.load(path)
            learned = recorded_config(model.header["meta"]).get("act_lr")
            method = f"intengine {r['rounding']}" + (" + learned step sizes" if learned else "")
            add(f"intengine W{r['bits']}A{r['act_bits']} {r['rounding']} ({name})", method,
                r["bits"], r["act_bits"], model.run, path.stat().st_size,
                f"{r['note']}; export {r['export_seconds']:.0f} s, load {r['load1_before']:.1f}-{r['load1_after']:.1f}")
            rows[-1].update(cli=r["command"], export_s=r["export_seconds"])
    aimet = ROOT / "results" / "aimet_adaround.json"
    if aimet.is_file():
        for key, a in json.loads(aimet.read_text()).items():
            rows.append({"name": f"AIMET AdaRound W{a['bits']}A8 ({key}), committed figure", "method": "AIMET AdaRound",
                         "bits_w": a["bits"], "bits_a": 8, "accuracy": a["top1"], "agreement_fp32": a["agree_fp32"],
                         "size_bytes": None, "images_per_s": None, "simulated": True, "export_s": a["export_seconds"],
                         "cli": a["command"], "note": f"AIMET's fake-quant sim on {a['test_images']:,} images; "
                         f"{a['iters_per_layer']} steps/layer, export {a['export_seconds']:.0f} s at load {a['load1_before']:.1f}"})


def _num(v, fmt):
    return "n/a" if v is None else format(v, fmt)


def write_report(rep, folder, md_path=None, readme=None):
    """results.json, the plot and RESULTS.md (in `folder` unless md_path is given), and with
    `readme` the README's generated table, all from the measured report `rep`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    md_path = Path(md_path) if md_path else folder / "RESULTS.md"
    write_atomic(folder / "results.json", json.dumps(rep, indent=1) + "\n")
    png = io.BytesIO()
    plot(rep["rows"], png)
    write_atomic(folder / "accuracy_vs_bits.png", png.getvalue())
    plot_rel = os.path.relpath(folder / "accuracy_vs_bits.png", md_path.parent)
    text = markdown(rep, plot_rel)
    write_atomic(md_path, text)
    if readme is not None:                            # the README shows the same generated table
        fill_section(readme, "results", text.split("\n", 2)[2].replace(
            f"]({plot_rel})", "](results/accuracy_vs_bits.png)"))
    return text


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    groups = {}
    for r in rows[1:]:
        every = ", every layer" if "first/last layer W2" in r["note"] else ""   # no 8-bit first/last
        steps = re.search(r"(\d+) steps/layer", r["note"])                  # a peer's setting
        every += f", {steps.group(1)} steps" if steps else ""
        groups.setdefault((r["method"], r["bits_a"], every), []).append(r)
    colours = plt.get_cmap("tab20").colors
    for k, ((method, a, every), rs) in enumerate(sorted(groups.items())):
        # one line through the mean at each width; every run (seeds, settings) as a dot
        widths = sorted({r["bits_w"] for r in rs})
        mean = [100 * np.mean([r["accuracy"] for r in rs if r["bits_w"] == w]) for w in widths]
        style = dict(color=colours[k % len(colours)], marker="os^Dv<>p"[k % 8])
        ax.plot(widths, mean, "-", **style, ms=5,
                label=f"{method}, A{a}{every}{' (sim)' if rs[0]['simulated'] else ''}")
        ax.scatter([r["bits_w"] for r in rs], [100 * r["accuracy"] for r in rs], s=10, color=style["color"])
    ax.axhline(100 * rows[0]["accuracy"], color="k", ls="--", lw=1, label="FP32")
    ax.set_xscale("log", base=2)
    ax.set_xticks([2, 4, 8, 16], ["2", "4", "8", "16"])
    ax.set_xlabel("weight bits")
    ax.set_ylabel("top-1 (%)")
    ax.set_title("ResNet20 / CIFAR-10: accuracy against weight bits")
    ax.legend(fontsize=6.5, loc="lower right", ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def markdown(r, plot_rel):
    lines = ["# Results", "",
             f"Generated by `{r['command']}` on {r['date']} ({r['total_s']:.0f} s). "
             f"{r['n_test']:,} test images, {r['calibration_images']} calibration images, seed {r['seed']}. "
             f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores "
             f"(torch {r['machine']['torch_threads']} threads, numba {r['machine']['numba_threads']}"
             + "".join(f", {k} {v}" for k, v in r["machine"].get("flags", {}).items())
             + (", load average {before[0]:.1f} before, {after[0]:.1f} after".format(**r["machine"]["load_average"])
                if "load_average" in r["machine"] else "") + "). "
             f"Python {r['versions']['python']}, torch {r['versions']['torch']}, numpy {r['versions']['numpy']}, "
             f"numba {r['versions']['numba']}. Checkpoint sha256 {r['checkpoint_sha256'][:16]}.", "",
             "| row | W | A | top-1 | Δ FP32 (pp) | agree FP32 | size (bytes) | images/s | × torch.ao int8 | note |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in r["rows"]:
        size = f"{row['size_bytes']:,}" if row["size_bytes"] else "n/a (simulated)"
        lines.append(f"| {row['name']} | {row['bits_w']} | {row['bits_a']} | {row['accuracy']:.4f} | "
                     f"{row['delta_pp']:+.2f} | {row['agreement_fp32']:.4f} | {size} | "
                     f"{_num(row['images_per_s'], '.0f')} | {_num(row['speed_vs_torchao_int8'], '.2f')} | {row['note']} |")
    c = r["crosscheck"]
    tf = c["teacher_forced"]
    worst = min(tf, key=lambda t: t["identical_active"])
    k = c["kernels"]
    lines += ["", f"![accuracy against weight bits]({plot_rel})", "",
              "## Cross-check: the engine against torch.ao int8 (full range)", "",
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
    lines += [f"| {p['point']} | {p['max_abs_diff']} | {1 - p['identical_all']:.4f} |" for p in c["free_running"]]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
