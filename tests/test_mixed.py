"""Mixed precision under a byte budget (exporter/mixed.py, docs section 14)."""
import itertools
import json

import numpy as np
import pytest
import torch

import intengine
from intengine import cpu
from conftest import ROOT, one_line_error, run_cli
from exporter import mixed


def _problem(seed, n=5):
    """n fake layers with random sizes and sensitivities that fall with the width."""
    rng = np.random.default_rng(seed)
    ops = [{"op": "conv", "name": f"l{k}", "weight": torch.zeros(int(rng.integers(50, 400)))} for k in range(n)]
    sens = {}
    for op in ops:
        s2 = float(rng.uniform(0.01, 1.0))
        sens[op["name"]] = {2: s2, 4: s2 * float(rng.uniform(0.01, 0.5)), 8: 0.0}
    return ops, sens


def _brute(ops, sens, capacity):
    best = None
    for combo in itertools.product(mixed.CHOICES, repeat=len(ops)):
        c = sum(mixed.layer_bytes(op, b) for op, b in zip(ops, combo))
        s = sum(sens[op["name"]][b] for op, b in zip(ops, combo))
        if c <= capacity and (best is None or s < best[0] - 1e-12):
            best = (s, combo)
    return best


@pytest.mark.parametrize("seed", range(6))
def test_solve_is_exact_against_brute_force(seed):
    ops, sens = _problem(seed)
    lo = sum(mixed.layer_bytes(op, 2) for op in ops)
    hi = sum(mixed.layer_bytes(op, 8) for op in ops)
    for capacity in np.linspace(lo, hi, 7).astype(int):
        alloc = mixed.solve(ops, sens, int(capacity))
        want = _brute(ops, sens, int(capacity))
        got = sum(sens[n][b] for n, b in alloc.items())
        assert got == pytest.approx(want[0], abs=1e-12), (capacity, alloc, want)
        assert sum(mixed.layer_bytes(op, alloc[op["name"]]) for op in ops) <= capacity
        g = mixed.greedy(ops, sens, int(capacity))        # the peer fits but is never better
        assert sum(mixed.layer_bytes(op, g[op["name"]]) for op in ops) <= capacity
        assert sum(sens[n][b] for n, b in g.items()) >= got - 1e-12
    assert mixed.solve(ops, sens, lo - 1) is None and mixed.greedy(ops, sens, lo - 1) is None


def test_layer_bytes_match_the_packing():
    from intengine.fileformat import pack_codes
    op = {"op": "conv", "name": "x", "weight": torch.zeros(16, 16, 3, 3)}
    for b in (2, 4, 8):
        codebook = 2 * (1 << b) if b <= 4 else 0
        assert mixed.layer_bytes(op, b) == len(pack_codes(np.zeros(op["weight"].shape, np.int64), b)) + codebook


def test_parse_budget():
    assert mixed.parse_budget("100KB") == 100_000 and mixed.parse_budget("90000") == 90_000
    assert mixed.parse_budget("97.5KiB") == 99_840 and mixed.parse_budget("0.1MB") == 100_000
    for bad in ("lots", "-5KB", "100 GB"):
        with pytest.raises(mixed.BudgetError, match="expected bytes"):
            mixed.parse_budget(bad)


def test_budget_export_fits_and_says_how(data_dir, shipped, tmp_path):
    """`python -m exporter --bits 2 --budget 100KB` at fast settings: the file fits, the
    per-layer table and the predicted and actual bytes are printed, the file records its
    allocation, the engine runs it and `intengine info` shows each layer's width."""
    out = tmp_path / "b100.npz"
    r = run_cli("exporter", "--bits", 2, "--budget", "100KB", "--iters", 2, "--calib-images", 32,
                "--sensitivity-images", 64, "--checkpoint", shipped, "--no-progress", "--out", out,
                env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr[-3000:]
    assert out.stat().st_size <= 100_000
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}: {out.stat().st_size:,} bytes (predicted ") and "budget 100,000" in last
    assert "sensitivity layer1.0.conv1: W2 +" in r.stderr
    meta = intengine.fileformat.read(out)[0]["meta"]
    alloc = meta["layer_bits"]
    assert len(alloc) == 20 and set(alloc.values()) <= {2, 4, 8} and len(set(alloc.values())) > 1
    assert meta["budget"]["budget_bytes"] == 100_000 and meta["rounding"] == "brecq"
    for name, b in alloc.items():
        assert any(line.split()[:2] == [name, str(b)] for line in r.stdout.splitlines()), name
    info = json.loads(run_cli("intengine", "info", out, "--json").stdout)
    assert {l["name"]: l["bits_w"] for l in info["layers"] if l["op"] in ("conv", "linear")} == alloc
    model = intengine.load(out)
    assert model.kernel == cpu.choose(True)                 # the fast path (or $INTENGINE_KERNEL's)
    r = run_cli("intengine", "info", out)
    assert " mixed W" in r.stdout.splitlines()[0], r.stdout


def test_budget_below_the_minimum_names_it(data_dir, shipped, tmp_path):
    r = run_cli("exporter", "--bits", 2, "--budget", "20KB", "--iters", 2, "--calib-images", 32,
                "--sensitivity-images", 16, "--checkpoint", shipped, "--out", tmp_path / "x.npz",
                env={"CIFAR10_DIR": data_dir})
    one_line_error(r, "--budget 20,000 bytes is below the smallest possible file, ")
    assert "bytes predicted (every layer at 2 bits)" in r.stderr and not list(tmp_path.iterdir())
    assert "sensitivity" not in r.stderr                  # refused before the measurement
    one_line_error(run_cli("exporter", "--bits", 2, "--budget", "cheap", "--out", tmp_path / "x.npz"),
                   "expected bytes")
    one_line_error(run_cli("exporter", "--bits", 2, "--budget", "90KB", "--first-last-bits", 8,
                           "--out", tmp_path / "x.npz"), "does not go with --first-last-bits")


def test_budget_sweep_tiny(data_dir, tmp_path):
    """scripts/budget_sweep.py end to end on a tiny setting; no tracked file changes."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, "scripts/budget_sweep.py", "--budgets", "min,100KB", "--greedy", "100KB",
                        "--iters", "2", "--calib-images", "32", "--sensitivity-images", "32", "--limit", "64",
                        "--data-dir", data_dir, "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                       timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rep = json.loads((tmp_path / "results.json").read_text())
    runs = rep["runs"]
    assert [(x["solver"]) for x in runs] == ["dp", "dp", "greedy"]
    assert runs[0]["bytes"] <= runs[0]["budget_bytes"] and set(runs[0]["allocation"].values()) == {2}
    assert all(x["bytes"] <= x["budget_bytes"] for x in runs) and all(0 <= x["accuracy"] <= 1 for x in runs)
    assert (tmp_path / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "README.md").read_text().startswith("# Mixed precision under a byte budget")
    assert r.stdout.startswith("Budget sweep (64 test images):")
    st = subprocess.run(["git", "status", "--porcelain", "models", "results"], cwd=ROOT, capture_output=True,
                        text=True)
    assert "budget" not in st.stdout
