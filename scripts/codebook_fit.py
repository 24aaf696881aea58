"""How much a learned 2- or 4-bit codebook could gain over the uniform level set, before any
training (docs/quantization.md section 15, "Learned codebooks"): for each inner conv of the
BN-folded shipped model, the squared weight error of the MSE-clipped uniform set (section 2)
against per-layer levels with per-channel scales fitted by Lloyd's alternation from it.

    python scripts/codebook_fit.py [--bits 2] [--levels midrise] [--rounds 60]

Prints one row per layer and the total, each error as a fraction of the weights' energy.
Deterministic: no data, no seeds."""
import sys
from pathlib import Path

import click
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter import source  # noqa: E402
from exporter.quantize import LEVEL_SETS, nearest_of, quantize_weights  # noqa: E402


def fit(flat, L, s, rounds):
    """Lloyd's alternation on rows `flat` (Co, n): per-channel scales s and shared levels c,
    started at (L, s); levels renormalized to max|c| = max|L| each round.  -> (c, s)."""
    c, s = L.astype(np.float64), s.astype(np.float64)
    for _ in range(rounds):
        q = c[nearest_of(flat / s[:, None], c)]
        s = np.maximum((flat * q).sum(1) / np.maximum((q * q).sum(1), 1e-300), 1e-12)
        k = nearest_of(flat / s[:, None], c)
        sb = np.broadcast_to(s[:, None], flat.shape)
        for j in range(len(c)):
            m = k == j
            if m.any():
                c[j] = (sb[m] * flat[m]).sum() / (sb[m] ** 2).sum()
        c = np.sort(c) / np.abs(c).max() * np.abs(L).max()
    return c, s


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", type=click.Choice(["2", "4"]), default="2", show_default=True)
@click.option("--levels", type=click.Choice(LEVEL_SETS), default="midrise", show_default=True)
@click.option("--rounds", type=click.IntRange(1), default=60, show_default=True)
@click.option("--checkpoint", default=str(ROOT / "checkpoints" / "resnet20.pt"), show_default=True)
def main(bits, levels, rounds, checkpoint):
    """Squared weight error of the uniform level set against fitted per-layer codebooks.

    For each inner conv of the BN-folded shipped model: the MSE-clipped uniform set of
    section 2 beside per-layer levels with per-channel scales fitted by Lloyd's alternation."""
    _, ops = source.graph_of(source.checkpoint_model(checkpoint))
    total = {"energy": 0.0, "uniform": 0.0, "fitted": 0.0}
    click.echo(f"W{bits} {levels}, per-channel MSE-clipped scales; error / energy of the weights")
    click.echo(f"{'layer':18s} {'uniform':>8s} {'fitted':>8s}  fitted levels")
    for op in ops:
        if op["op"] != "conv" or op["name"] == "conv1":       # the stem and fc stay 8-bit
            continue
        w = op["weight"].numpy().astype(np.float64)
        flat = w.reshape(len(w), -1)
        codes, L, s = quantize_weights(w, int(bits), levels, "mse")
        err_u = ((flat - L[codes.reshape(flat.shape)] * s[:, None]) ** 2).sum()
        c, s2 = fit(flat, L, s, rounds)
        err_f = ((flat - c[nearest_of(flat / s2[:, None], c)] * s2[:, None]) ** 2).sum()
        energy = (flat ** 2).sum()
        for k, v in (("energy", energy), ("uniform", err_u), ("fitted", err_f)):
            total[k] += v
        click.echo(f"{op['name']:18s} {err_u / energy:8.4f} {err_f / energy:8.4f}  {np.round(c, 2).tolist()}")
    u, f = total["uniform"] / total["energy"], total["fitted"] / total["energy"]
    click.echo(f"{'all':18s} {u:8.4f} {f:8.4f}  ({100 * (1 - f / u):.1f}% less error fitted)")


if __name__ == "__main__":
    main()
