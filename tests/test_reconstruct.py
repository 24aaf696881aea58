"""Learned rounding (exporter/reconstruct.py, docs section 13) and 4-bit activations.

Fast settings only: a few steps on 64 calibration images.  No timing assertions."""
import numpy as np
import pytest
import torch

import intengine
from conftest import run_cli
from exporter import build, calibrate, reconstruct
from exporter.quantize import act_qparams
from exporter.simulate import run_exact

FAST = {"iters": 8, "batch": 8}


@pytest.fixture(scope="module")
def brecq_file(data_dir, shipped, tmp_path_factory):
    """A fast-setting brecq W2A8 export through the public function."""
    from exporter.__main__ import export
    out = tmp_path_factory.mktemp("recon") / "w2_brecq.npz"
    path, _, qnet, _ = export(shipped, 2, 8, 8, 64, 0, data_dir, out, progress=False,
                              rounding="brecq", recon=FAST)
    return path, qnet


def test_reconstructed_file_equals_exact_simulation(brecq_file, test_images):
    path, qnet = brecq_file
    model = intengine.load(path)
    x = test_images[0][:8]
    fast, sim = model.run(x, keep=True), run_exact(qnet, x)
    for name, a, b in zip(model.points, fast, sim):
        assert np.array_equal(a, b.numpy()), f"engine != exact simulation at {name}"
    meta = intengine.fileformat.read(path)[0]["meta"]
    assert meta["rounding"] == "brecq" and meta["reconstruction"]["config"]["iters"] == FAST["iters"]


def test_fast_regeneration_cli_and_engine(data_dir, shipped, tmp_path):
    """The committed files' command at a fast setting: it runs, and the engine runs its file."""
    out = tmp_path / "w2.npz"
    r = run_cli("exporter", "--bits", "2", "--rounding", "brecq", "--iters", "4", "--recon-batch", "4",
                "--calib-images", "32", "--checkpoint", str(shipped), "--no-progress", "--out", str(out),
                env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr
    assert "brecq rounding" in r.stdout and "layer3.2" in r.stderr       # one line per block
    r = run_cli("intengine", "eval", str(out), "--limit", "64", env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr


def _tiny_layer(seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, 3, 3, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(6, generator=g, dtype=torch.float64) * 0.1
    points = [{"name": "input", "shape": [8, 8, 3]}, {"name": "stem", "shape": [8, 8, 6]}]
    ops = [{"op": "conv", "name": "stem", "in": 0, "out": 1, "cin": 3, "cout": 6, "stride": 1,
            "relu": False, "weight": w, "bias": b}]
    rng = np.random.default_rng(seed)          # smooth, nearly gray images: correlated inputs,
    base = rng.integers(0, 256, (128, 2, 2, 1)).repeat(4, 1).repeat(4, 2)  # where rounding matters
    images = np.clip(base + rng.integers(-20, 21, (128, 8, 8, 3)), 0, 255).astype(np.uint8)
    return points, ops, images


def test_reconstruction_lowers_the_output_error_on_a_tiny_layer():
    points, ops, images = _tiny_layer()
    lo, hi = calibrate.minmax(ops, len(points), images, progress=False)
    qpts = [{**p, "bits": 8, **dict(zip(("scale", "zp"), act_qparams(l, h, 8)))}
            for p, l, h in zip(points, lo, hi)]
    weights = build.quantize_weights_all(ops, bits=2, first_last_bits=2, levels="midrise", clip="mse")
    cfg = dict(batch=32, qdrop=0.0, lr=1e-2, progress=False)
    w0, r0 = reconstruct.reconstruct(ops, qpts, images, weights, iters=0, **cfg)
    w1, r1 = reconstruct.reconstruct(ops, qpts, images, weights, iters=300, **cfg)
    assert np.array_equal(w0["stem"][2], weights["stem"][2])       # no steps: round-to-nearest
    assert r1["units"][0]["changed_vs_nearest"] > 0
    assert r1["units"][0]["mse"] < 0.9 * r0["units"][0]["mse"]
    levels = set(np.unique(w1["stem"][3][w1["stem"][2]]).tolist())
    assert levels <= {-3, -1, 1, 3}


def test_four_bit_activations_run_through_the_engine(data_dir, shipped, tmp_path, test_images):
    from exporter.__main__ import export
    path, _, qnet, _ = export(shipped, 4, 4, 8, 64, 0, data_dir, tmp_path / "w4a4.npz", progress=False)
    model = intengine.load(path)
    assert set(model.act_bits.tolist()) == {4}
    x = test_images[0][:8]
    fast = model.run(x, keep=True)
    ref = model.run(x, reference_ops=True, keep=True)
    sim = run_exact(qnet, x)
    for name, a, b, c in zip(model.points, fast, ref, sim):
        assert np.array_equal(a, b), f"kernels != reference at {name}"
        assert np.array_equal(a, c.numpy()), f"engine != exact simulation at {name}"
        assert a.max() <= 15
