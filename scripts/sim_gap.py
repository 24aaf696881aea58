"""The gap between the two simulation modes of exporter/simulate.py, at every width.

    CIFAR10_DIR=../shared/data python scripts/sim_gap.py [--limit 2000] [--bits 16,8,4,2]

*exact* carries the engine's integers (it equals the engine with tolerance 0, which a test
checks). *fake-quant* is the differentiable float model that rounds weights and every
activation point, but has no integer bias, no fixed-point multipliers and no input LUT
(docs/quantization.md section 11). For each width this prints the top-1 of both, the top-1
agreement, and how far the logits differ, in units of the logits' quantization step (LSB).
It writes results/sim_gap.md and results/sim_gap.json.
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
from exporter.pipeline import export  # noqa: E402
from exporter.simulate import FakeQuantNet, run_exact  # noqa: E402
from intengine.cifar10 import load_test, seeded_subset  # noqa: E402


@click.command()
@click.option("--bits", default="16,8,4,2", show_default=True)
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
@click.option("--data-dir", default=None)
@click.option("--limit", type=click.IntRange(1), default=2000, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--results", default=str(ROOT / "results"), show_default=True)
def main(bits, checkpoint, data_dir, limit, seed, results):
    x, y = load_test(data_dir)
    idx = seeded_subset(len(y), limit, seed)
    x, y = x[idx], y[idx].astype(np.int64)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for b in (int(v) for v in bits.split(",")):
            a = 16 if b == 16 else 8
            _, _, qnet, ops = export(checkpoint, b, a, 8 if b < 8 else b, 1024, seed, data_dir,
                                     Path(tmp) / "m.npz", progress=False, rounding="nearest")
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
    Path(results).mkdir(parents=True, exist_ok=True)
    (Path(results) / "sim_gap.json").write_text(json.dumps({"rows": rows, "seed": seed}, indent=1) + "\n")
    (Path(results) / "sim_gap.md").write_text("\n".join(lines))
    click.echo("\n".join(lines))


if __name__ == "__main__":
    main()
