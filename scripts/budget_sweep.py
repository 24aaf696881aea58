"""Mixed precision under a byte budget: the Pareto sweep (docs/quantization.md section 14).

    CIFAR10_DIR=../shared/data python scripts/budget_sweep.py [--budgets 90KB,100KB] [--publish]

Measures every layer's sensitivity once on the 5,000 held-out training images, then, for each
budget, exports the most accurate file that fits (`exporter.pipeline.export_budget`: the exact
solve, then reconstruction under that allocation) and, with --greedy, the same budget with the
greedy allocation as the simpler peer, and evaluates every file with the integer engine on the
10,000 test images.  Writes results.json, README.md and pareto.png into --out (reports/budget,
untracked); --publish writes results/budget/ and the files into models/ (tracked).
"""
import datetime
import io
import json
import os
import sys
import time
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import intengine  # noqa: E402
from exporter import build, calibrate, mixed, source  # noqa: E402
from exporter.pipeline import Config, export_budget  # noqa: E402
from exporter.report import Progress, machine, versions, write_atomic  # noqa: E402
from intengine.cifar10 import DataError, load_test, seeded_subset  # noqa: E402
from trainer import data  # noqa: E402
from trainer.checkpoint import CheckpointError  # noqa: E402

# From the smallest file (every layer 2-bit) up to the W8A8 size.
BUDGETS = "min,80KB,85KB,90KB,100KB,110KB,131.3KB,160KB,200KB,256.5KB"
# The uniform files it is compared with: (label, results/results.json row name).
UNIFORM = [("W2A8", "intengine W2A8"), ("W4A8", "intengine W4A8"), ("W8A8", "intengine W8A8")]


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None, help="Folder with cifar10.npz  [default: $CIFAR10_DIR]")
@click.option("--budgets", default=BUDGETS, show_default=True,
              help="Comma-separated budgets in bytes (KB = 1000 bytes); 'min' is the all-2-bit file.")
@click.option("--greedy", "greedy_budgets", default="90KB,100KB,131.3KB", show_default=True,
              help="Budgets also exported with the greedy allocation (the simpler peer); '' for none.")
@click.option("--calib-images", type=click.IntRange(1), default=1024, show_default=True)
@click.option("--sensitivity-images", type=click.IntRange(1, 5000), default=5000, show_default=True)
@click.option("--iters", type=click.IntRange(1), default=None, help="Reconstruction steps per block "
              "[default: the exporter's]")
@click.option("--limit", type=click.IntRange(1), default=None, help="Seeded test subset (default: all 10,000).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=str(ROOT / "reports" / "budget"), show_default=True, type=click.Path(file_okay=False))
@click.option("--publish", is_flag=True, help="Write results/budget/ and the model files into models/ (tracked).")
def main(checkpoint, data_dir, budgets, greedy_budgets, calib_images, sensitivity_images, iters, limit, seed,
         out, publish):
    """The accuracy of the most accurate file under each byte budget, measured by the engine:
    exports, evaluation, table and Pareto plot beside the uniform widths and the peers."""
    try:
        budgets = [b.strip() for b in budgets.split(",") if b.strip()]
        for b in budgets:
            if b != "min":
                mixed.parse_budget(b)
        greedy_set = {mixed.parse_budget(b) for b in greedy_budgets.split(",") if b.strip()}
        rep = sweep(checkpoint, data_dir, budgets, greedy_set, calib_images, sensitivity_images, iters, limit,
                    seed, Path(out), publish)
    except (DataError, CheckpointError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    folder = ROOT / "results" / "budget" if publish else Path(out)
    write_report(rep, folder)
    click.echo(summary(rep))
    click.echo(f"wrote {folder / 'README.md'}, results.json and pareto.png", err=True)


def sweep(checkpoint, data_dir, budgets, greedy_set, calib_images, heldout_n, iters, limit, seed, out, publish):
    say = Progress()
    t_start, load0 = time.perf_counter(), os.getloadavg()
    out.mkdir(parents=True, exist_ok=True)
    files = ROOT / "models" if publish else out
    x, y = load_test(data_dir)
    idx = seeded_subset(len(y), limit, seed)
    x, y = x[idx], y[idx].astype(np.int64)
    model = source.checkpoint_model(checkpoint)
    points, ops = source.graph_of(model)
    train = data.load_arrays(data_dir)["x_train"]
    images, _, _ = calibrate.calibration_images(train, calib_images, seed)
    lo, hi = calibrate.minmax(ops, len(points), images, progress=False)
    held = calibrate.heldout_indices(len(train), calib_images=max(1024, calib_images),
                                     calib_seeds=tuple(sorted({0, 1, 2, seed})))[:heldout_n]
    cache = out / "sensitivity.json"      # measured once; reused by a rerun of the same setting
    key = {"checkpoint_sha256": source.file_sha256(checkpoint), "calib_images": calib_images, "seed": seed,
           "heldout": len(held)}
    if cache.is_file() and json.loads(cache.read_text())["key"] == key:
        c = json.loads(cache.read_text())
        sens = {n: {int(b): v for b, v in d.items()} for n, d in c["sensitivity"].items()}
        base_kl, sens_s = c["kl_all_8bit"], c["seconds"]
        say(f"sensitivity from {cache} (measured earlier in {sens_s:.0f} s)")
    else:
        say(f"sensitivity of each layer on {len(held):,} held-out training images")
        t0 = time.perf_counter()
        sens, base_kl = mixed.sensitivity(ops, build.act_points(points, ops, lo, hi, 8), train[held], log=say)
        sens_s = time.perf_counter() - t0
        write_atomic(cache, json.dumps({"key": key, "sensitivity": sens, "kl_all_8bit": base_kl,
                                        "seconds": sens_s}, indent=1))
    cfg = Config(checkpoint, 2, act_bits=8, calib_images=calib_images, seed=seed, data_dir=data_dir,
                 recon={"iters": iters})
    runs, failed, reused = [], [], 0
    setting = {**key, "iters": iters, "growth": {str(k): v for k, v in mixed.GROWTH.items()}}
    records_path = out / "runs.json"
    records = json.loads(records_path.read_text()) if records_path.is_file() else {}
    todo = [(b, "dp") for b in budgets] + [(mixed.parse_budget(b) if b != "min" else b, "greedy")
                                          for b in budgets if b != "min" and mixed.parse_budget(b) in greedy_set]
    for spec, solver in todo:
        if spec == "min":
            nbytes = None
        else:
            nbytes = mixed.parse_budget(spec) if isinstance(spec, str) else spec
        if nbytes is None:               # the smallest possible file: ask for 1 byte, read the minimum
            try:
                export_budget(cfg, 1, out / "probe.npz", sens=sens, progress=False)
            except mixed.BudgetError as e:
                nbytes = int(str(e).split("smallest possible file, ")[1].split(" bytes")[0].replace(",", ""))
            else:
                raise ValueError("a 1-byte budget was accepted")
        path = files / f"resnet20_{nbytes}B_a8{'_greedy' if solver == 'greedy' else ''}.npz"
        rk = f"{nbytes}:{solver}"
        done = records.get(rk)
        if done and path.is_file() and done.get("sha256") == source.file_sha256(path) and done["setting"] == setting:
            say(f"budget {nbytes:,} bytes ({solver}): done earlier, {done['bytes']:,} bytes, top-1 "
                f"{done['accuracy']:.4f} ({records_path})")
            runs.append(done)
            reused += 1
            continue
        say(f"budget {nbytes:,} bytes ({solver})")
        l0, t0 = os.getloadavg()[0], time.perf_counter()
        try:
            path, size, alloc, r = export_budget(cfg, nbytes, path, sens=sens, solver=solver, progress=False,
                                                 heldout_images=len(held))
        except mixed.BudgetError as e:               # recorded, and the sweep goes on
            say(f"  failed: {e}")
            failed.append({"budget_bytes": nbytes, "solver": solver, "error": str(e)})
            continue
        secs = time.perf_counter() - t0
        m = intengine.load(path)
        pred = np.concatenate([m.run(x[s:s + 256]).argmax(1) for s in range(0, len(x), 256)])
        acc = float((pred == y).mean())
        say(f"  {size:,} bytes (predicted {r['predicted_bytes']:,}): top-1 {acc:.4f}, export {secs:.0f} s")
        cmd = (f"python -m exporter --bits 2 --budget {nbytes} --calib-images {calib_images} --seed {seed}"
               + (f" --iters {iters}" if iters else "") + f" --out {path.relative_to(ROOT) if publish else path}")
        runs.append({"budget_bytes": nbytes, "solver": solver, "file": str(path.relative_to(ROOT)) if publish
                     else str(path), "bytes": size, "predicted_bytes": r["predicted_bytes"], "accuracy": acc,
                     "allocation": alloc, "export_seconds": round(secs, 1),
                     "load1_before": round(l0, 2), "load1_after": round(os.getloadavg()[0], 2),
                     "command": cmd if solver == "dp" else f"(library) export_budget(..., solver='greedy'), {nbytes} bytes",
                     "sensitivity_sum": float(sum(sens[n][b] for n, b in alloc.items())),
                     "sha256": source.file_sha256(path), "setting": setting})
        records[rk] = runs[-1]                       # resume point: a rerun skips what is done
        write_atomic(records_path, json.dumps(records, indent=1))
    uniform = {}
    res = ROOT / "results" / "results.json"
    if res.is_file():
        rows = {r["name"]: r for r in json.loads(res.read_text())["rows"]}
        for label, key in UNIFORM:
            if key in rows:
                uniform[label] = {k: rows[key][k] for k in ("accuracy", "size_bytes")}
        uniform["peers"] = [{"name": r["name"], "accuracy": r["accuracy"], "size_bytes": r["size_bytes"]}
                            for r in rows.values() if r.get("kind") in ("peer",) and r["size_bytes"]
                            and r["method"] in ("torch.ao best", "torch.ao full", "onnxruntime int8")]
        for label in ("W4A8", "W2A8"):              # AIMET has no file: placed at our uniform file's size
            best = max((r for r in rows.values() if r["method"] == "AIMET AdaRound"
                        and f"W{r['bits_w']}A{r['bits_a']}" == label), key=lambda r: r["accuracy"], default=None)
            if best and label in uniform:
                uniform["peers"].append({"name": f"AIMET AdaRound {label} (sim., at our size)",
                                         "accuracy": best["accuracy"], "size_bytes": uniform[label]["size_bytes"]})
    try:
        import aimet_torch
        amp = f"aimet-torch {aimet_torch.__version__} is installed; its automatic mixed precision is not wired in yet"
    except ImportError:
        amp = "aimet-torch is not installed here (the `peers` extra), so its automatic mixed precision did not run"
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", "scripts/budget_sweep.py"] + sys.argv[1:]), "amp_peer": amp,
            "n_test": len(y), "calibration_images": calib_images, "seed": seed, "recon_iters": iters,
            "sensitivity": {n: {str(b): v for b, v in d.items()} for n, d in sens.items()},
            "kl_all_8bit": base_kl, "sensitivity_images": len(held), "sensitivity_seconds": round(sens_s, 1),
            "layer_params": {op["name"]: int(op["weight"].numel()) for op in mixed.weighted(ops)},
            "runs": runs, "failed": failed, "reused": reused, "uniform": uniform,
            "total_s": time.perf_counter() - t_start,
            "machine": {**machine(), "load_average": {"before": load0, "after": os.getloadavg()}},
            "versions": versions("torch", "numpy", "numba")}


def summary(rep):
    lines = [f"Budget sweep ({rep['n_test']:,} test images):"]
    for r in rep["runs"]:
        counts = "/".join(str(sum(v == c for v in r["allocation"].values())) for c in mixed.CHOICES)
        lines.append(f"  <= {r['budget_bytes']:>7,} B ({r['solver']:6}): {r['bytes']:>7,} B, top-1 {r['accuracy']:.4f}, "
                     f"layers at W2/W4/W8 {counts}")
    return "\n".join(lines)


def write_report(rep, folder):
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "results.json", json.dumps(rep, indent=1) + "\n")
    png = io.BytesIO()
    plot(rep, png)
    write_atomic(folder / "pareto.png", png.getvalue())
    write_atomic(folder / "README.md", markdown(rep))


def verdict(rep):
    """Where the exact allocation stands against each uniform file: the best mixed file at the
    same or a smaller size."""
    out = []
    for label, v in rep.get("uniform", {}).items():
        if label == "peers":
            continue
        fits = [r for r in rep["runs"] if r["solver"] == "dp" and r["bytes"] <= v["size_bytes"]]
        if fits:
            b = max(fits, key=lambda r: r["accuracy"])
            word = "at or above" if b["accuracy"] >= v["accuracy"] else "below"
            out.append(f"{label} ({v['size_bytes']:,} B, {v['accuracy']:.4f}): the best budget file at that size or "
                       f"smaller scores {b['accuracy']:.4f} ({b['bytes']:,} B), {word} it")
    return "Against the uniform files: " + "; ".join(out) + "." if out else ""


def markdown(rep):
    m = rep["machine"]
    names = list(rep["layer_params"])
    dp = [r for r in rep["runs"] if r["solver"] == "dp"]
    lines = ["# Mixed precision under a byte budget", "",
             f"Generated by `{rep['command']}` on {rep['date']} ({rep['total_s']:.0f} s). Engine top-1 on "
             f"{rep['n_test']:,} test images; calibration {rep['calibration_images']} images, seed {rep['seed']}; "
             f"sensitivity (eq. 23) on {rep['sensitivity_images']:,} held-out training images in "
             f"{rep['sensitivity_seconds']:.0f} s. Machine: {m['cpu']} ({m['llvm_cpu']}), {m['cores']} cores, "
             f"machine load average {m['load_average']['before'][0]:.1f} before, "
             f"{m['load_average']['after'][0]:.1f} after. "
             + ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if v) + "."
             + (f" {rep['reused']} of the {len(rep['runs'])} runs were made by an earlier, interrupted or "
                f"identical run of this command and reused from its record (`reports/budget/runs.json`, "
                f"checked against each file's sha256); each row keeps its own export time and load."
                if rep.get("reused") else ""), "",
             "![top-1 against file size](pareto.png)", "",
             "| budget (bytes) | allocation | file bytes | predicted | top-1 | layers at W2 / W4 / W8 | export (s) | "
             "machine load | command |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rep["runs"]:
        counts = " / ".join(str(sum(v == c for v in r["allocation"].values())) for c in mixed.CHOICES)
        lines.append(f"| {r['budget_bytes']:,} | {'exact (DP)' if r['solver'] == 'dp' else 'greedy'} | "
                     f"{r['bytes']:,} | {r['predicted_bytes']:,} | {r['accuracy']:.4f} | {counts} | "
                     f"{r['export_seconds']:.0f} | {r['load1_before']:.1f}-{r['load1_after']:.1f} | `{r['command']}` |")
    for f in rep.get("failed", []):
        lines.append(f"| {f['budget_bytes']:,} | {'exact (DP)' if f['solver'] == 'dp' else 'greedy'} | failed: "
                     f"{f['error']} | | | | | | |")
    lines += ["", verdict(rep), "",
              f"The peer for the allocation: {rep.get('amp_peer', 'AIMET AMP did not run')}; the greedy allocation "
              f"(start at 2 bits, widen the layer with the largest drop in sensitivity per byte while it fits, "
              f"`mixed.greedy`) is the documented simpler allocation beside the exact one."]
    u = rep.get("uniform", {})
    if u:
        lines += ["", "Uniform files from `results/results.json` (the default exports of the comparison report): "
                  + ", ".join(f"{k} {v['accuracy']:.4f} at {v['size_bytes']:,} bytes" for k, v in u.items()
                              if k != "peers") + "."]
    lines += ["", "## Allocations (weight bits per layer) and sensitivity", "",
              "| layer | weights | KL rise at W2 | at W4 | " + " | ".join(f"{r['budget_bytes'] // 1000} KB"
                                                                    for r in dp) + " |",
              "|---|---|---|---|" + "---|" * len(dp)]
    for n in names:
        s = rep["sensitivity"][n]
        lines.append(f"| {n} | {rep['layer_params'][n]:,} | {s.get('2', 0):.4f} | {s.get('4', 0):.4f} | "
                     + " | ".join(str(r["allocation"][n]) for r in dp) + " |")
    lines.append("")
    return "\n".join(lines)


def plot(rep, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 5))
    for solver, colour, label in (("dp", "tab:blue", "ours: exact allocation + reconstruction"),
                                  ("greedy", "tab:orange", "greedy allocation (sensitivity per byte) + reconstruction")):
        rs = sorted((r for r in rep["runs"] if r["solver"] == solver), key=lambda r: r["bytes"])
        if rs:
            ax.plot([r["bytes"] / 1000 for r in rs], [100 * r["accuracy"] for r in rs], "-o" if solver == "dp" else "s",
                    color=colour, ms=5, label=label)
    u = rep.get("uniform", {})
    uni = [(k, v) for k, v in u.items() if k != "peers"]
    if uni:
        ax.scatter([v["size_bytes"] / 1000 for _, v in uni], [100 * v["accuracy"] for _, v in uni], marker="D",
                   color="k", zorder=5, label="ours, uniform widths (default export)")
        for k, v in uni:
            ax.annotate(k, (v["size_bytes"] / 1000, 100 * v["accuracy"]), textcoords="offset points",
                        xytext=(5, -10), fontsize=8)
    for p in u.get("peers", []):
        ax.scatter([p["size_bytes"] / 1000], [100 * p["accuracy"]], marker="s", color="tab:red", zorder=5)
        ax.annotate(p["name"].split(" (")[0], (p["size_bytes"] / 1000, 100 * p["accuracy"]),
                    textcoords="offset points", xytext=(5, 3), fontsize=7, color="tab:red")
    ax.set_xscale("log")
    ax.set_xlabel("model file size (KB, log scale)")
    ax.set_ylabel("top-1 (%)")
    ax.set_title(f"Mixed precision (W2/W4/W8 per layer, A8): top-1 on {rep['n_test']:,} test images")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
