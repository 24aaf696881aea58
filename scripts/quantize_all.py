"""Export the shipped model at every width, evaluate each file with the integer engine, and
print the table beside FP32: the light path through the command-line tools alone.

    CIFAR10_DIR=../shared/data python scripts/quantize_all.py [--limit N] [--bits 16,8,4,2]

Each step runs as the user would run it (`python -m exporter`, `python -m intengine eval
--json`) in a subprocess. FP32 is the shipped checkpoint in float32 torch on the same
images. Writes reports/quantize_all.json and reports/quantize_all.md (--results sets the folder): accuracy, the
difference to FP32, top-1 agreement with FP32, the file size and the engine's images/s,
with the commands, the machine, the versions and the seeds. Nothing is typed by hand.
"""
import datetime
import json
import os
import platform
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

from intengine.cpu import processor_name  # noqa: E402


def run(cmd, env):
    """Run a command from the repo root, echo it, return stdout; exit on failure."""
    click.echo("$ " + " ".join(shlex.quote(c) for c in cmd), err=True)
    r = subprocess.run([sys.executable if c == "python" else c for c in cmd], cwd=ROOT, env=env,
                       stdout=subprocess.PIPE, text=True)
    if r.returncode:
        raise click.ClickException(f"`{' '.join(cmd)}` failed with exit status {r.returncode}")
    return r.stdout


def fp32_predictions(checkpoint, data_dir, limit, seed):
    from exporter import report, source
    from intengine.cifar10 import load_test, seeded_subset
    x, y = load_test(data_dir)
    if limit and limit < len(y):
        idx = seeded_subset(len(y), limit, seed)
        x, y = x[idx], y[idx]
    model, _, norm = source.read_checkpoint(checkpoint)
    return report.fp32_logits(model, x, norm).argmax(1), np.asarray(y).astype(np.int64)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", default="16,8,4,2", show_default=True, help="Weight widths to export.")
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None, help="Folder with cifar10.npz [default: $CIFAR10_DIR]")
@click.option("--limit", type=click.IntRange(1), default=None, help="Seeded test subset (default: all 10,000).")
@click.option("--seed", type=int, default=0, show_default=True, help="Calibration and --limit seed.")
@click.option("--out-dir", default=str(ROOT / "exports"), show_default=True, help="Where the .npz files go.")
@click.option("--results", default=str(ROOT / "reports"), show_default=True,
              help="Where quantize_all.json and quantize_all.md go.")
@click.option("--calib-images", type=click.IntRange(1, 1024), default=1024, show_default=True,
              help="Calibration images for each export.")
@click.option("--iters", type=click.IntRange(1), default=None,
              help="Reconstruction steps per block below 8 bits [default: the exporter's, 500-600].")
def main(bits, checkpoint, data_dir, limit, seed, out_dir, results, calib_images, iters):
    """Export the shipped model at each width with `python -m exporter` at its defaults (learned
    rounding below 8 bits), evaluate each file with `python -m intengine eval`, and print the
    table beside FP32."""
    env = dict(os.environ)
    if data_dir:
        env["CIFAR10_DIR"] = str(Path(data_dir).resolve())
    widths = [b.strip() for b in bits.split(",")]
    if not widths or any(b not in ("2", "4", "8", "16") for b in widths):
        raise click.BadParameter(f"{bits!r}: a comma-separated list of 2, 4, 8 and 16", param_hint="--bits")
    widths = [int(b) for b in widths]
    t0 = time.perf_counter()
    try:
        fp32_pred, labels = fp32_predictions(checkpoint, env.get("CIFAR10_DIR"), limit, seed)
    except Exception as e:                      # DataError, CheckpointError: one line
        raise click.ClickException(str(e)) from None
    fp32_acc = float((fp32_pred == labels).mean())
    rows, commands = [], []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for b in widths:
        a = 16 if b == 16 else 8
        npz = Path(out_dir) / f"resnet20_w{b}a{a}.npz"
        pred_file = Path(out_dir) / f"resnet20_w{b}a{a}.pred.npy"
        export = ["python", "-m", "exporter", "--bits", str(b), "--checkpoint", checkpoint,
                  "--seed", str(seed), "--calib-images", str(calib_images), "--no-progress", "--out", str(npz)] + \
                 (["--iters", str(iters)] if iters and b < 8 else [])
        evaluate = ["python", "-m", "intengine", "eval", str(npz), "--json", "--no-progress",
                    "--seed", str(seed), "--predictions", str(pred_file)] + \
                   (["--limit", str(limit)] if limit else [])
        summary = run(export, env).strip().splitlines()[-1]
        click.echo(summary, err=True)
        r = json.loads(run(evaluate, env).strip().splitlines()[-1])
        pred = np.load(pred_file)
        fl = 8 if b < 8 else b
        rows.append({"name": f"intengine W{b}A{a}", "bits_w": b, "bits_a": a, "first_last_bits": fl,
                     "accuracy": r["accuracy"], "delta_pp": 100 * (r["accuracy"] - fp32_acc),
                     "agreement_fp32": float((pred == fp32_pred).mean()), "n": r["n"],
                     "size_bytes": npz.stat().st_size, "images_per_s": r["images_per_s"],
                     "first_result_s": r["first_result_s"]})
        commands += [" ".join(export), " ".join(evaluate)]
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python", "scripts/quantize_all.py"] + sys.argv[1:]),
        "steps": commands, "seed": seed, "limit": limit, "checkpoint": checkpoint,
        "machine": {"cpu": processor_name(), "cores": os.cpu_count(), "python": platform.python_version()},
        "versions": _versions(), "fp32": {"accuracy": fp32_acc, "n": len(labels),
                                          "size_bytes": Path(checkpoint).stat().st_size},
        "rows": rows, "total_s": time.perf_counter() - t0}
    Path(results).mkdir(parents=True, exist_ok=True)
    (Path(results) / "quantize_all.json").write_text(json.dumps(report, indent=1) + "\n")
    table = markdown(report)
    (Path(results) / "quantize_all.md").write_text(table)
    click.echo(table)


def _versions():
    from exporter.report import versions
    return versions("numpy", "numba", "torch")


def markdown(r):
    n = r["fp32"]["n"]
    lines = [f"# Integer engine vs FP32 ({'all' if n == 10000 else 'a seeded subset of'} {n:,} test images)", "",
             "| model | first/last W | top-1 | Δ vs FP32 (pp) | agreement with FP32 | size (bytes) | images/s |",
             "|---|---|---|---|---|---|---|",
             f"| FP32 (torch, checkpoint) | 32 | {r['fp32']['accuracy']:.4f} | 0 | 1.0000 | "
             f"{r['fp32']['size_bytes']:,} | |"]
    for row in r["rows"]:
        lines.append(f"| {row['name']} | {row['first_last_bits']} | {row['accuracy']:.4f} | {row['delta_pp']:+.2f} | "
                     f"{row['agreement_fp32']:.4f} | {row['size_bytes']:,} | {row['images_per_s']:.0f} |")
    v = r["versions"]
    lines += ["", f"Command: `{r['command']}` ({r['total_s']:.0f} s). Machine: {r['machine']['cpu']}, "
              f"{r['machine']['cores']} cores. Python {r['machine']['python']}, numpy {v['numpy']}, "
              f"numba {v['numba']}, torch {v['torch']}. Seed {r['seed']} (calibration sample and subset). "
              f"images/s: the engine at batch 256 after the first batch; the FP32 size is the "
              f"training checkpoint (with optimizer state). Date {r['date']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
