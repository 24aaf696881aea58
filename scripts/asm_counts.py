"""The conv micro-kernels' inner loops in the generated assembly (docs/engine.md, "The
micro-kernel in the assembly"): per loop, the vpdpbusd count, the accumulators they update, the
loads (weights, broadcasts, tap offsets), the stack spills and reloads, and the K-groups one
pass covers.  Read from fastops.conv_rows.inspect_asm() after running a W8A8 file, so the
compile is fresh (an empty Numba cache folder).

    python scripts/asm_counts.py [FILE] [--kernel vnni|avxvnni]

vnni reads the zmm loops (8 pixels x 16 channels a tile), avxvnni the ymm ones (4 pixels x 16
channels a pass).
"""
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
COMPILE = """
import sys, numpy as np, intengine
from intengine import fastops
m = intengine.load(sys.argv[1], kernel=sys.argv[2])
m.run(np.zeros((2, 32, 32, 3), np.uint8))
print(fastops.conv_rows.inspect_asm(fastops.conv_rows.signatures[0]))
"""


def loops(asm):
    """[(label, [instruction lines])] of every block that ends by jumping back to its own label."""
    out, label, body = [], None, []
    for line in asm.splitlines():
        m = re.match(r"^(\.LBB\w+):", line)
        if m:
            label, body = m.group(1), []
            continue
        s = re.sub(r"^\{vex\}\s*", "", line.strip())      # AVX-VNNI's encoding prefix
        if not s or s.startswith((".", "#")):
            continue
        body.append(s)
        j = re.match(r"j\w+\s+(\.LBB\w+)", s)
        if j and j.group(1) == label:
            out.append((label, list(body)))
    return out


def count(body):
    """Counts of one inner loop body."""
    dp = [s for s in body if s.startswith("vpdpbusd")]
    accs = {s.split(",")[-1].strip() for s in dp}
    stack = [s for s in body if "(%rsp)" in s]
    return {"vpdpbusd": len(dp), "accumulators": len(accs),
            "weight loads": sum(re.match(r"vmovdqu(64)?\s", s) is not None and "(%rsp)" not in s and "(" in s.split(",")[0]
                                for s in body),
            "broadcast loads": sum(s.startswith(("vpbroadcastd", "vbroadcastss")) and "(%rsp)" not in s for s in body),
            "offset loads": sum(s.startswith("movq") and "(" in s.split(",")[0] and "(%rsp)" not in s for s in body),
            "spill stores": sum(s.startswith(("vmovups", "vmovdqu64", "vmovaps")) and s.endswith("(%rsp)") for s in stack),
            "spill reloads": sum(s.split(",")[0].endswith("(%rsp)") for s in stack),
            "instructions": len(body)}


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("file", default=str(ROOT / "models" / "resnet20_w2a8_brecq_lsq_s0.npz"))
@click.option("--kernel", type=click.Choice(["vnni", "avxvnni"]), default="vnni", show_default=True)
def main(file, kernel):
    """Print the inner loops' counts as a markdown table."""
    with tempfile.TemporaryDirectory() as cache:
        r = subprocess.run([sys.executable, "-c", COMPILE, file, kernel], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "NUMBA_CACHE_DIR": cache})
    if r.returncode:
        raise click.ClickException(r.stderr.strip().splitlines()[-1])
    reg = "%zmm" if kernel == "vnni" else "%ymm"
    found = [(lab, count(b)) for lab, b in loops(r.stdout)
             if any(s.startswith("vpdpbusd") and reg in s for s in b)]
    if not found:
        raise click.ClickException(f"no vpdpbusd loop on {reg[1:]} in conv_rows ({kernel}); the processor may lack "
                                   f"{'AVX512-VNNI' if kernel == 'vnni' else 'AVX-VNNI'}")
    cols = ["vpdpbusd", "accumulators", "weight loads", "broadcast loads", "offset loads", "spill stores",
            "spill reloads", "instructions"]
    click.echo("| loop | micro-kernel | K-groups per pass | " + " | ".join(cols) + " |")
    click.echo("|---|---|---|" + "---|" * len(cols))
    for lab, c in found:
        tiles = 2 if c["accumulators"] >= 16 else 1
        groups = c["vpdpbusd"] // (8 * tiles)
        tile = f"{8} px x {16 * tiles} ch" if kernel == "vnni" else "4 px x 16 ch a pass"
        click.echo(f"| {lab} | micro{'2' if tiles == 2 else ''} ({tile}) | {groups} | "
                   + " | ".join(str(c[k]) for k in cols) + " |")


if __name__ == "__main__":
    main()
