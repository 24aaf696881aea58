"""The gap between the two simulation modes of exporter/simulate.py, at every width.

    CIFAR10_DIR=../shared/data python scripts/sim_gap.py [--limit 2000] [--bits 16,8,4,2] [--publish]

*exact* carries the engine's integers (it equals the engine with tolerance 0, which a test
checks). *fake-quant* is the differentiable float model that rounds weights and every
activation point, but has no integer bias, no fixed-point multipliers and no input LUT
(docs/quantization.md section 11). For each width this prints the top-1 of both, the top-1
agreement, and how far the logits differ, in units of the logits' quantization step (LSB).
It writes sim_gap.md and sim_gap.json into --out (reports/, untracked); --publish writes
the committed results/sim_gap.*.
"""
import json
import sys
import tempfile
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import calibrate  # noqa: E402
from exporter.pipeline import Config, export  # noqa: E402
from exporter.report import write_atomic  # noqa: E402
from exporter.simulate import FakeQuantNet, run_exact  # noqa: E402
from intengine.cifar10 import load_test, seeded_subset  # noqa: E402


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", default="16,8,4,2", show_default=True, help="Comma-separated weight widths.")
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None, help="Folder with cifar10.npz  [default: $CIFAR10_DIR]")
@click.option("--limit", type=click.IntRange(1), default=2000, show_default=True, help="Seeded test subset.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", default=str(ROOT / "reports"), show_default=True, type=click.Path(file_okay=False),
              help="Folder for sim_gap.md and sim_gap.json (untracked).")
@click.option("--publish", is_flag=True, help="Write the committed results/sim_gap.md and .json instead.")
def main(bits, checkpoint, data_dir, limit, seed, out, publish):
    """The gap between the exact and the fake-quant simulation (exporter/simulate.py) at each
    width, on round-to-nearest exports: top-1 of both, their agreement and the logit gap in LSB."""
    try:
        widths = [int(v) for v in bits.split(",")]
    except ValueError:
        raise click.BadParameter(f"{bits!r}: expected comma-separated widths, e.g. 8,2", param_hint="--bits") from None
    bad = [b for b in widths if b not in (2, 4, 8, 16)]
    if bad:
        raise click.BadParameter(f"{bad[0]} is not one of 2, 4, 8, 16", param_hint="--bits")
    x, y = load_test(data_dir)
    idx = seeded_subset(len(y), limit, seed)
    x, y = x[idx], y[idx].astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in widths:
            a = 16 if b == 16 else 8
            _, _, qnet, ops = export(Config(checkpoint, b, seed=seed, data_dir=data_dir, rounding="nearest"),
                                     Path(tmp) / "m.npz", progress=False)
            logit_pt = qnet["points"][-1]
            exact, fake = [], []
            net = FakeQuantNet(qnet, ops)
            with torch.no_grad():
                for s in range(0, len(y), 250):
                    exact.append(run_exact(qnet, x[s:s + 250])[-1].numpy())
                    fake.append(net(calibrate.normalize64(x[s:s + 250]).float()).numpy())
            q = np.concatenate(exact)
            f = np.concatenate(fake)
            real_exact = logit_pt["scale"] * (q - logit_pt["zp"])
            lsb = np.abs(real_exact - f) / logit_pt["scale"]
            rows.append({"bits_w": b, "bits_a": a, "n": len(y),
                         "exact_accuracy": float((q.argmax(1) == y).mean()),
                         "fake_accuracy": float((f.argmax(1) == y).mean()),
                         "agreement": float((q.argmax(1) == f.argmax(1)).mean()),
                         "logit_diff_mean_lsb": float(lsb.mean()), "logit_diff_max_lsb": float(lsb.max())})
            click.echo(json.dumps(rows[-1]), err=True)
    lines = [f"# Exact vs fake-quant simulation ({len(y):,} seeded test images, seed {seed})", "",
             "| model | exact top-1 | fake-quant top-1 | top-1 agreement | mean logit gap (LSB) | max (LSB) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| W{r['bits_w']}A{r['bits_a']} | {r['exact_accuracy']:.4f} | {r['fake_accuracy']:.4f} | "
              f"{r['agreement']:.4f} | {r['logit_diff_mean_lsb']:.3f} | {r['logit_diff_max_lsb']:.2f} |" for r in rows]
    lines += ["", f"Command: `python scripts/sim_gap.py {' '.join(sys.argv[1:])}`; torch {torch.__version__}.", ""]
    folder = ROOT / "results" if publish else Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "sim_gap.json", json.dumps({"rows": rows, "seed": seed}, indent=1) + "\n")
    write_atomic(folder / "sim_gap.md", "\n".join(lines))
    click.echo("\n".join(lines))
    click.echo(f"wrote {folder / 'sim_gap.md'} and sim_gap.json", err=True)


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
