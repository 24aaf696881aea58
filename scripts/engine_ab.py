"""Two checkouts of the engine side by side on the same model files: images/s at batch 256 and
the batch-1 p50, each (checkout, file) in its own fresh process, in interleaved rounds whose
order rotates; medians, spreads and the per-round ratio new / old.  For "did this change slow
the engine down": `git worktree add /tmp/old <commit>`, then

    CIFAR10_DIR=../shared/data python scripts/engine_ab.py --old /tmp/old models/a.npz models/b.npz
"""
import json
import statistics
import subprocess
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.report import machine, versions  # noqa: E402

CHILD = """
import json, sys, time
sys.path.insert(0, sys.argv[1])
import numpy as np
import intengine
from intengine import cifar10
x = cifar10.load_test(sys.argv[3])[0][:int(sys.argv[4])]
m = intengine.load(sys.argv[2])
m.predict(x[:256]); m.predict(x[:1])
t = time.perf_counter(); m.predict(x, batch_size=256); speed = len(x) / (time.perf_counter() - t)
lat = []
for i in range(int(sys.argv[5])):
    t = time.perf_counter_ns(); m.predict(x[i:i + 1]); lat.append(time.perf_counter_ns() - t)
print(json.dumps({"images_per_s": speed, "p50_ms": float(np.median(lat)) / 1e6, "kernel": m.kernel}))
"""


def child(root, path, data_dir, images, calls):
    r = subprocess.run([sys.executable, "-c", CHILD, str(root), str(path), data_dir, str(images), str(calls)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode:
        raise click.ClickException(f"{root} on {path}: {r.stderr.strip().splitlines()[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("files", nargs=-1, required=True)
@click.option("--old", required=True, type=click.Path(exists=True, file_okay=False), help="The other checkout.")
@click.option("--data-dir", envvar="CIFAR10_DIR", required=True, help="Folder with cifar10.npz [$CIFAR10_DIR].")
@click.option("--rounds", type=click.IntRange(1), default=5, show_default=True)
@click.option("--images", type=click.IntRange(256), default=4096, show_default=True)
@click.option("--calls", type=click.IntRange(1), default=300, show_default=True, help="Batch-1 calls per run.")
def main(files, old, data_dir, rounds, images, calls):
    """Engine speed of this checkout against --old, on FILES."""
    roots = {"new": ROOT, "old": Path(old).resolve()}
    runs = [(f, which) for f in files for which in roots]
    got = {run: [] for run in runs}
    for r in range(rounds):
        for k in range(len(runs)):
            f, which = runs[(k + r) % len(runs)]
            got[(f, which)].append(child(roots[which], f, data_dir, images, calls))
        click.echo(f"round {r + 1}/{rounds} done", err=True)
    click.echo(json.dumps({"machine": machine(), "versions": versions("numpy", "numba")}))
    click.echo(f"{rounds} rounds, {images} images at batch 256, {calls} batch-1 calls; median (min-max)")
    click.echo("| file | kernel | images/s new | images/s old | new / old | p50 ms new | p50 ms old | new / old |")
    click.echo("|---|---|---|---|---|---|---|---|")
    for f in files:
        new, was = got[(f, "new")], got[(f, "old")]
        cells = [Path(f).name, new[0]["kernel"]]
        for key in ("images_per_s", "p50_ms"):
            a, b = [v[key] for v in new], [v[key] for v in was]
            ratio = statistics.median(x / y for x, y in zip(a, b))
            cells += [f"{statistics.median(a):.4g} ({min(a):.4g}-{max(a):.4g})",
                      f"{statistics.median(b):.4g} ({min(b):.4g}-{max(b):.4g})", f"{ratio:.3f}"]
        click.echo("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
