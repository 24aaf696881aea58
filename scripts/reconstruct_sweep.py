"""Learned rounding (docs/quantization.md section 13): the held-out sweep, the committed
exports, and their evaluation.  Every figure it writes comes from a run it made.

    CIFAR10_DIR=../shared/data python scripts/reconstruct_sweep.py sweep --set iters=500,qdrop=0.5 [...]
    CIFAR10_DIR=../shared/data python scripts/reconstruct_sweep.py export [--only NAME] [--publish]
    CIFAR10_DIR=../shared/data python scripts/reconstruct_sweep.py evaluate [--publish]

- `sweep` exports W{bits}A{act} at calibration seed 0 with each setting and scores the file
  with the engine on 5,000 *training* images held out from every calibration sample
  (exporter.calibrate.heldout_indices): accuracy and top-1 agreement with FP32.  The test
  set is never read.  One JSON line per run is printed, and with --publish appended to
  results/lowbit/sweep.jsonl.
- `export` makes the files of EXPORTS (the chosen settings) with `python -m exporter` in a
  subprocess, timing each and recording the load average; with --publish into models/ and
  results/lowbit/exports.json, else into exports/lowbit/ (untracked).
- `evaluate` runs the engine and the fake-quant simulation on all 10,000 test images for
  every file in the export record, and writes results/lowbit/eval.json and
  results/lowbit/README.md (3-seed mean, std and worst seed) with --publish, else prints.
  `evaluate --render-only` redraws that README from the JSON records (printed, or written
  with --publish).
"""
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from exporter.report import write_atomic  # noqa: E402

RESULTS = ROOT / "results" / "lowbit"

# The committed exports: name -> exporter options.  The settings are the held-out choice
# (results/lowbit/sweep.jsonl, section 13); seeds 0-2 differ in calibration images and
# reconstruction randomness.  `_lsq` files learn the activation step sizes too (eq. 21);
# the others are the same method with min/max step sizes and fewer steps, kept as the ablation.
_RECON = ["--rounding", "brecq", "--recon-batch", "16", "--lr", "0.1", "--reg", "0.01", "--qdrop", "0"]
W2 = [*_RECON, "--iters", "300"]
W4 = [*_RECON, "--iters", "150"]
W2_LSQ = [*_RECON, "--iters", "600"]      # ~2 min at load 1.5 (budget 15)
W4_LSQ = [*_RECON, "--iters", "500"]      # ~2 min at load 1.5 (budget 5)
A8_LR = {"2": ["--act-lr", "0.01"], "4": ["--act-lr", "0.003"]}
A4 = ["--act-bits", "4", "--act-lr", "0.03"]
EXPORTS = {}
for _s in (0, 1, 2):
    EXPORTS[f"w4a8_brecq_lsq_s{_s}"] = ["--bits", "4", *W4_LSQ, *A8_LR["4"], "--seed", str(_s)]
    EXPORTS[f"w2a8_brecq_lsq_s{_s}"] = ["--bits", "2", *W2_LSQ, *A8_LR["2"], "--seed", str(_s)]
EXPORTS["w2a8_all2_brecq_lsq_s0"] = ["--bits", "2", "--first-last-bits", "2", *W2_LSQ, *A8_LR["2"], "--seed", "0"]
EXPORTS["w4a4_brecq_lsq_s0"] = ["--bits", "4", *W4_LSQ, *A4, "--seed", "0"]
EXPORTS["w2a4_brecq_lsq_s0"] = ["--bits", "2", *W2_LSQ, *A4, "--seed", "0"]
EXPORTS["w2a2_brecq_lsq_s0"] = ["--bits", "2", *W2_LSQ, "--act-bits", "2", "--act-lr", "0.03", "--seed", "0"]
for _s in (0, 1, 2):
    EXPORTS[f"w4a8_brecq_s{_s}"] = ["--bits", "4", *W4, "--seed", str(_s)]
    EXPORTS[f"w2a8_brecq_s{_s}"] = ["--bits", "2", *W2, "--seed", str(_s)]
EXPORTS["w2a8_all2_brecq_s0"] = ["--bits", "2", "--first-last-bits", "2", *W2, "--seed", "0"]
# round-to-nearest at the same widths (the exporter's defaults: MSE clipping + bias correction)
for _n, _o in (("w2a8_all2_nearest_s0", ["--bits", "2", "--first-last-bits", "2"]),
               ("w4a4_nearest_s0", ["--bits", "4", "--act-bits", "4"]),
               ("w2a4_nearest_s0", ["--bits", "2", "--act-bits", "4"]),
               ("w2a2_nearest_s0", ["--bits", "2", "--act-bits", "2"])):
    EXPORTS[_n] = [*_o, "--rounding", "nearest", "--seed", "0"]


def machine():
    """The processor and versions a run records (exporter.report's)."""
    from exporter import report
    return {**report.machine(), **report.versions("torch", "numpy")}


def load1():
    return round(os.getloadavg()[0], 2)


def export_cmd(opts, out):
    return ["python", "-m", "exporter", *opts, "--no-progress", "--out", str(out)]


def run_export(opts, out, data_dir):
    """-> (seconds, load before, load after, stderr log).  Exit on failure."""
    env = {**os.environ, **({"CIFAR10_DIR": data_dir} if data_dir else {})}
    cmd = export_cmd(opts, out)
    click.echo("$ " + " ".join(shlex.quote(c) for c in cmd), err=True)
    l0, t0 = load1(), time.perf_counter()
    r = subprocess.run([sys.executable if c == "python" else c for c in cmd], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode:
        raise click.ClickException(f"export failed ({r.returncode}): {r.stderr.strip().splitlines()[-1]}")
    return round(dt, 1), l0, load1(), r.stderr


def engine_top1(path, images, labels, ref):
    import intengine
    m = intengine.load(path)
    pred = m.predict(images).argmax(1)
    return float((pred == labels).mean()), float((pred == ref).mean())


def engine_heldout(path, x, y, fp_logits):
    """Held-out scores of a file: top-1, top-1 agreement with FP32, and two finer label-free
    ones, mean KL(FP32 || engine) of the softmax and mean squared logit error (sum over classes)."""
    import intengine
    m = intengine.load(path)
    z = m.predict_logits(x)
    p, q = m.softmax(fp_logits), m.softmax(z)
    kl = float((p * (np.log(p + 1e-300) - np.log(q + 1e-300))).sum(1).mean())
    return {"heldout_accuracy": float((z.argmax(1) == y).mean()),
            "heldout_agree_fp32": float((z.argmax(1) == fp_logits.argmax(1)).mean()),
            "heldout_kl_fp32": kl, "heldout_logit_mse": float(((z - fp_logits) ** 2).sum(1).mean())}


def fp32_logits(images):
    from exporter import report, source
    return report.fp32_logits(source.checkpoint_model(ROOT / "checkpoints" / "resnet20.pt"), images)


def fp32_pred(images):
    return fp32_logits(images).argmax(1)


def heldout_set(data_dir):
    """The 5,000 held-out training images, their labels and FP32's logits on them."""
    from exporter import report
    x, y = report.heldout(data_dir)
    return x, y, fp32_logits(x)


def record_heldout(rec, keys, write):
    """Print the summary of a held-out run; with write, append it to results/lowbit/sweep.jsonl."""
    click.echo(json.dumps({k: rec[k] for k in keys}))
    if write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        with open(RESULTS / "sweep.jsonl", "a") as f:
            f.write(json.dumps(rec) + "\n")


WRITE_SWEEP = click.option("--publish", "--write", "write", is_flag=True, help="(--write is the old spelling.) Append each run to results/lowbit/sweep.jsonl (tracked).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Learned rounding: held-out sweep, committed exports, their evaluation."""


@cli.command(short_help="Score exporter settings on the held-out training images.")
@click.option("--set", "sets", multiple=True, required=True,
              help="Comma-separated key=value exporter options, e.g. iters=500,qdrop=0.5,bits=2.")
@click.option("--data-dir", default=None)
@WRITE_SWEEP
def sweep(sets, data_dir, write):
    """Score settings on the 5,000 held-out training images (never the test set)."""
    x, y, ref = heldout_set(data_dir)
    tmp = ROOT / "exports" / "sweep"
    tmp.mkdir(parents=True, exist_ok=True)
    for spec in sets:
        kv = dict(item.split("=", 1) for item in spec.split(","))
        kv.setdefault("bits", "2")
        kv.setdefault("rounding", "brecq")
        opts = []
        for k, v in kv.items():
            opts += [f"--{k.replace('_', '-')}", v]
        out = tmp / ("_".join(f"{k}{v}" for k, v in kv.items()) + ".npz")
        secs, l0, l1, _ = run_export(opts, out, data_dir)
        rec = {"setting": kv, "command": " ".join(export_cmd(opts, out.relative_to(ROOT))),
               "heldout_images": len(y), **engine_heldout(out, x, y, ref),
               "fp32_heldout_accuracy": float((ref.argmax(1) == y).mean()), "export_seconds": secs,
               "load1_before": l0, "load1_after": l1, "calibration_seed": 0,
               "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine()}
        record_heldout(rec, ("setting", "heldout_accuracy", "heldout_agree_fp32", "heldout_kl_fp32",
                             "heldout_logit_mse", "export_seconds", "load1_before"), write)


@cli.command(short_help="Score existing files on the held-out training images.")
@click.argument("files", nargs=-1, required=True)
@click.option("--data-dir", default=None)
@WRITE_SWEEP
def heldout(files, data_dir, write):
    """Score existing calibration-seed-0 files on the held-out images."""
    from intengine import fileformat
    x, y, ref = heldout_set(data_dir)
    for f in files:
        meta = fileformat.read(f)[0]["meta"]
        if meta["calibration"]["seed"] != 0:
            raise click.UsageError(f"{f}: the held-out images are disjoint from seeds 0-2, but the sweep uses seed 0")
        from exporter.reconstruct import recorded_config
        cfg = recorded_config(meta)
        rec = {"setting": {"bits": meta["bits"], "act_bits": meta["act_bits"], "rounding": meta["rounding"], **cfg,
                           **({"bias_correction": True} if meta.get("bias_correction") else {})},
               "file": f, "heldout_images": len(y), **engine_heldout(f, x, y, ref),
               "fp32_heldout_accuracy": float((ref.argmax(1) == y).mean()), "calibration_seed": 0,
               "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": machine()}
        record_heldout(rec, ("setting", "heldout_accuracy", "heldout_agree_fp32", "heldout_kl_fp32",
                             "heldout_logit_mse"), write)


@cli.command(short_help="Make the committed exports in models/, timing each.")
@click.option("--only", multiple=True, help="Names from EXPORTS (default: all).")
@click.option("--publish", "--write", "write", is_flag=True, help="(--write is the old spelling.) Write models/ and results/lowbit/exports.json (tracked).")
@click.option("--data-dir", default=None)
def export(only, write, data_dir):
    """Make the committed exports, timing each."""
    names = list(only) or list(EXPORTS)
    bad = [n for n in names if n not in EXPORTS]
    if bad:
        raise click.UsageError(f"unknown export {bad[0]!r}; choose from {', '.join(EXPORTS)}")
    folder = ROOT / ("models" if write else "exports/lowbit")
    folder.mkdir(parents=True, exist_ok=True)
    record_path = (RESULTS if write else folder) / "exports.json"
    for name in names:
        out = folder / f"resnet20_{name}.npz"
        secs, l0, l1, log = run_export(EXPORTS[name], out, data_dir)
        from exporter.reconstruct import recorded_config
        from intengine import fileformat
        meta = fileformat.read(out)[0]["meta"]
        entry = {"file": str(out.relative_to(ROOT)), "bits": meta["bits"], "act_bits": meta["act_bits"],
                        "first_last_bits": meta["first_last_bits"], "rounding": meta["rounding"],
                        "seed": meta["calibration"]["seed"],
                        "note": f"first/last layer W{meta['first_last_bits']}, seed {meta['calibration']['seed']}"
                                + (", learned step sizes" if recorded_config(meta).get("act_lr") else ""),
                        "command": " ".join(export_cmd(EXPORTS[name], out.relative_to(ROOT))),
                        "export_seconds": secs, "load1_before": l0, "load1_after": l1,
                        "bytes": out.stat().st_size, "log": log.strip().splitlines()[-14:],
                        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                        "machine": machine()}
        click.echo(f"{name}: {secs} s (load {l0} -> {l1}), {out.stat().st_size:,} bytes")
        record_path.parent.mkdir(parents=True, exist_ok=True)       # re-read: parallel runs share it
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
        record[name] = entry
        write_atomic(record_path, json.dumps(dict(sorted(record.items())), indent=1) + "\n")


def fakequant_top1(path, images, labels, checkpoint):
    """Top-1 of the fake-quant simulation (section 11) rebuilt from the file's own integers."""
    import torch
    from exporter import blocks, calibrate, source
    from exporter.simulate import FakeQuantNet
    from intengine import fileformat
    header, arrays = fileformat.read(path)
    points, ops = source.graph_of(source.checkpoint_model(checkpoint))
    if any(spec["op"] == "requant" for spec in header["ops"]):          # below 8-bit activations
        points, ops = blocks.split_stream(points, ops)
    qnet = qnet_from_file(header, arrays)
    for op, q in zip(ops, qnet["ops"]):       # the file's weights: nearest() gives back its codes
        if "codes" in q:
            w = q["L"][q["codes"]] * q["w_scale"].reshape(-1, *([1] * (q["codes"].ndim - 1)))
            op["weight"] = torch.from_numpy(w)
    net = FakeQuantNet(qnet, ops)
    with torch.no_grad():
        pred = np.concatenate([net(calibrate.normalize64(images[s:s + 500]).float()).argmax(1).numpy()
                               for s in range(0, len(images), 500)])
    return float((pred == labels).mean())


def qnet_from_file(header, arrays):
    """The points and weighted-op levels/scales/bias of a file, as FakeQuantNet reads them."""
    from intengine import fileformat
    pts = [{"scale": float(s), "zp": int(z), "bits": int(b)} for s, z, b in
           zip(arrays["act_scale"], arrays["act_zero_point"], arrays["act_bits"])]
    ops = []
    for spec in header["ops"]:
        q = dict(spec)
        if spec["op"] in ("conv", "linear"):
            o, co, b = spec["offset"], spec["cout"], spec["bits_w"]
            taps = 9 if spec["op"] == "conv" else 1
            raw = arrays["weights"][spec["w_offset"]:spec["w_offset"] + spec["w_nbytes"]]
            codes = fileformat.unpack_codes(raw, b, co * taps * spec["cin"])
            if b <= 4:
                L = arrays["codebook"][spec["cb_offset"]:spec["cb_offset"] + (1 << b)].astype(np.int64)
            else:
                L = np.arange(-(1 << (b - 1)), 1 << (b - 1))
                codes = codes - L[0]
            codes = codes.reshape((co, 3, 3, spec["cin"]) if taps == 9 else (co, spec["cin"]))
            if taps == 9:
                codes = codes.transpose(0, 3, 1, 2)                 # file (Co,3,3,Ci) -> (Co,Ci,3,3)
            s_w = arrays["weight_scale"][o:o + co].astype(np.float64)
            sx = pts[spec["in"]]["scale"]
            q.update(L=L, w_scale=s_w, bias_float=arrays["bias"][o:o + co] * sx * s_w, codes=codes)
        ops.append(q)
    return {"points": pts, "ops": ops}


@cli.command(short_help="Evaluate the committed exports on all 10,000 test images.")
@click.option("--publish", "--write", "write", is_flag=True, help="(--write is the old spelling.) Write results/lowbit/eval.json and README.md (tracked).")
@click.option("--render-only", is_flag=True,
              help="Only redraw results/lowbit/README.md from the JSON records (printed; written with --publish).")
@click.option("--only", multiple=True, help="Names from the export record (default: all).")
@click.option("--data-dir", default=None)
def evaluate(write, only, data_dir, render_only):
    """Engine and fake-quant top-1 on all 10,000 test images, once per file."""
    from intengine.cifar10 import load_test
    record = json.loads((RESULTS / "exports.json").read_text())
    if render_only:
        text = render(record, json.loads((RESULTS / "eval.json").read_text()))
        if write:
            write_atomic(RESULTS / "README.md", text + "\n")
        else:
            click.echo(text)
        return
    images, labels = load_test(data_dir)
    labels = np.asarray(labels).astype(np.int64)
    ref = fp32_pred(images)
    fp32 = float((ref == labels).mean())
    ev_path = RESULTS / "eval.json"
    ev = json.loads(ev_path.read_text()) if ev_path.is_file() else {}
    for name, r in record.items():
        if only and name not in only:
            continue
        path = ROOT / r["file"]
        t0 = time.perf_counter()
        acc, agree = engine_top1(path, images, labels, ref)
        sim = fakequant_top1(path, images, labels, ROOT / "checkpoints" / "resnet20.pt")
        if write and ev_path.is_file():                   # re-read: parallel runs share it
            ev = json.loads(ev_path.read_text())
        ev[name] = {"engine_top1": acc, "agree_fp32": agree, "fakequant_top1": sim,
                    "fp32_top1": fp32, "test_images": len(labels), "eval_seconds": round(time.perf_counter() - t0, 1)}
        click.echo(f"{name}: engine {acc:.4f}, fake-quant {sim:.4f}, agreement {agree:.4f}")
        if write:
            write_atomic(ev_path, json.dumps(dict(sorted(ev.items())), indent=1) + "\n")
    if write:
        write_atomic(RESULTS / "README.md", render(record, ev) + "\n")
    else:
        click.echo(render(record, ev))


def fmt(v):
    return "-" if v is None else f"{v:.4g}"


def render(record, ev):
    import torch
    lines = ["# Learned rounding (BRECQ; QDrop as an option), the engine on all 10,000 test images", "",
             "Generated by `python scripts/reconstruct_sweep.py evaluate --publish` from "
             "results/lowbit/exports.json and eval.json. FP32: "
             f"{next(iter(ev.values()))['fp32_top1']:.4f}. Torch {torch.__version__}.", "",
             "| file | engine top-1 | fake-quant top-1 | agree FP32 | export s | load1 | command |",
             "|---|---|---|---|---|---|---|"]
    for name, r in record.items():
        if name not in ev:
            continue
        e = ev[name]
        lines.append(f"| {r['file']} | {e['engine_top1']:.4f} | {e['fakequant_top1']:.4f} | "
                     f"{e['agree_fp32']:.4f} | {r['export_seconds']} | {r['load1_before']} | `{r['command']}` |")
    lines += ["", "| setting | seeds | mean | std | worst | Δ FP32 (pp, mean) | mean export s |", "|---|---|---|---|---|---|---|"]
    groups = {}
    for name in ev:
        if name in record and "_s" in name:
            groups.setdefault(name.rsplit("_s", 1)[0], []).append(name)
    for g, names in groups.items():
        a = np.array([ev[n]["engine_top1"] for n in names])
        t = np.mean([record[n]["export_seconds"] for n in names])
        lines.append(f"| {g} | {len(a)} | {a.mean():.4f} | {a.std(ddof=1) if len(a) > 1 else 0:.4f} | "
                     f"{a.min():.4f} | {100 * (a.mean() - ev[names[0]]['fp32_top1']):+.2f} | {t:.0f} |")
    aimet = ROOT / "results" / "aimet_adaround.json"
    if aimet.is_file():
        lines += ["", "## Peer: AIMET AdaRound (results/aimet_adaround.json, AIMET's own fake-quant simulation)", "",
                  "| run | top-1 | agree FP32 | steps/layer | export s | load1 | command |", "|---|---|---|---|---|---|---|"]
        for k, a in json.loads(aimet.read_text()).items():
            lines.append(f"| {k} | {a['top1']:.4f} | {a['agree_fp32']:.4f} | {a['iters_per_layer']} | "
                         f"{a['export_seconds']} | {a['load1_before']} | `{a['command']}` |")
    sweep_path = RESULTS / "sweep.jsonl"
    if sweep_path.is_file():
        lines += ["", "## Held-out choice of the settings (5,000 training images, calibration seed 0, never the test set)", "",
                  "| W | A | rounding | iters/unit | batch | lr | reg | QDrop p | act lr | scale lr | held-out top-1 | "
                  "agree FP32 | KL(FP32‖q) | logit MSE | export s | load1 |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for ln in sweep_path.read_text().splitlines():
            r = json.loads(ln)
            k = r["setting"]
            g = lambda a, b=None: k.get(a, k.get(b, "-")) if b else k.get(a, "-")
            lines.append(f"| {k['bits']} | {k.get('act_bits', 8)} | {g('rounding')}{' + bias corr.' if k.get('bias_correction') else ''} | {g('iters')} | {g('recon_batch', 'batch')} | "
                         f"{g('lr')} | {g('reg')} | {g('qdrop')} | {k.get('act_lr', 0)} | {k.get('scale_lr', 0)} | {r['heldout_accuracy']:.4f} | "
                         f"{r['heldout_agree_fp32']:.4f} | {fmt(r.get('heldout_kl_fp32'))} | "
                         f"{fmt(r.get('heldout_logit_mse'))} | {r.get('export_seconds', '-')} | {r.get('load1_before', '-')} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from intengine.cifar10 import DataError
    from intengine.cli import fail, run as run_cli
    try:
        run_cli(cli)
    except DataError as e:                  # a missing dataset: one line, not a traceback
        fail(str(e))
