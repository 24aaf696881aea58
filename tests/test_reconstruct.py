"""Learned rounding (exporter/reconstruct.py, docs section 13) and 4-bit activations.

Fast settings only: a few steps on 64 calibration images.  No timing assertions."""
import numpy as np
import pytest
import torch

import intengine
from conftest import one_line_error, run_cli
from exporter import build, calibrate, reconstruct
from exporter.simulate import run_exact

FAST = {"iters": 8, "batch": 8, "act_lr": 0.01, "scale_lr": 0.01}     # eq. (21) and (22) included


@pytest.fixture(scope="module")
def brecq_file(data_dir, shipped, tmp_path_factory):
    """A fast-setting brecq W2A8 export through the public function."""
    from exporter.pipeline import Config, export
    out = tmp_path_factory.mktemp("recon") / "w2_brecq.npz"
    path, _, qnet, _ = export(Config(shipped, 2, calib_images=64, data_dir=data_dir, rounding="brecq", recon=FAST),
                              out, progress=False)
    return path, qnet


def test_reconstructed_file_equals_exact_simulation(brecq_file, test_images):
    path, qnet = brecq_file
    model = intengine.load(path)
    x = test_images[0][:8]
    fast, sim = model.run(x, keep=True), run_exact(qnet, x)
    for name, a, b in zip(model.points, fast, sim):
        assert np.array_equal(a, b.numpy()), f"engine != exact simulation at {name}"
    header, arrays = intengine.fileformat.read(path)
    meta = header["meta"]
    assert meta["rounding"] == "brecq" and meta["reconstruction"]["config"]["iters"] == FAST["iters"]
    assert meta["reconstruction"]["config"]["act_lr"] == FAST["act_lr"]
    learned = np.array([p["scale"] for p in qnet["points"]])
    assert np.array_equal(arrays["act_scale"], learned)


def test_fast_regeneration_cli_and_engine(data_dir, shipped, tmp_path):
    """The committed files' command at a fast setting: it runs, and the engine runs its file."""
    out = tmp_path / "w2.npz"
    r = run_cli("exporter", "--bits", "2", "--rounding", "brecq", "--iters", "4", "--recon-batch", "4",
                "--calib-images", "32", "--checkpoint", str(shipped), "--no-progress", "--out", str(out),
                env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr
    assert "brecq rounding" in r.stdout and "layer3.2" in r.stderr       # one line per block
    cfg = intengine.fileformat.read(out)[0]["meta"]["reconstruction"]["config"]
    assert cfg["iters"] == 4 and cfg["act_lr"] == reconstruct.defaults(2, 8)["act_lr"] > 0
    r = run_cli("intengine", "eval", str(out), "--limit", "64", env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr


def _tiny_layer(seed=0, second=False):
    """One conv on 8x8 images; with `second`, two more convs after it, so that the first
    conv's output is an inner point (below 8 bits the edge points stay 8-bit, section 4)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, 3, 3, generator=g, dtype=torch.float64) * 0.3
    b = torch.randn(6, generator=g, dtype=torch.float64) * 0.1
    points = [{"name": "input", "shape": [8, 8, 3]}, {"name": "stem", "shape": [8, 8, 6]}]
    k3 = {"kh": 3, "kw": 3, "stride": 1, "ph": 1, "pw": 1, "groups": 1}
    ops = [{"op": "conv", "name": "stem", "in": 0, "out": 1, "cin": 3, "cout": 6, **k3,
            "relu": False, "weight": w, "bias": b}]
    for k, name in enumerate(("mid", "head") if second else ()):
        w2 = torch.randn(6, 6, 3, 3, generator=g, dtype=torch.float64) * 0.2
        points.append({"name": name, "shape": [8, 8, 6]})
        ops.append({"op": "conv", "name": name, "in": k + 1, "out": k + 2, "cin": 6, "cout": 6, **k3,
                    "relu": False, "weight": w2, "bias": torch.zeros(6, dtype=torch.float64)})
    rng = np.random.default_rng(seed)          # smooth, nearly gray images: correlated inputs,
    base = rng.integers(0, 256, (128, 2, 2, 1)).repeat(4, 1).repeat(4, 2)  # where rounding matters
    images = np.clip(base + rng.integers(-20, 21, (128, 8, 8, 3)), 0, 255).astype(np.uint8)
    return points, ops, images


def test_reconstruction_lowers_the_output_error_on_a_tiny_layer():
    points, ops, images = _tiny_layer()
    lo, hi = calibrate.minmax(ops, len(points), images, progress=False)
    qpts = build.act_points(points, ops, lo, hi, 8)
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
    from exporter.pipeline import Config, export
    path, _, qnet, _ = export(Config(shipped, 4, act_bits=4, calib_images=64, data_dir=data_dir, rounding="nearest"),
                              tmp_path / "w4a4.npz", progress=False)
    model = intengine.load(path)
    readers = {i for op in model.ops if op.kind == "conv" for i in op.ins} - {0}
    assert [int(b) for b in model.act_bits] == [4 if i in readers else 8 for i in range(len(model.points))]
    assert sum(op.kind == "requant" for op in model.ops) == 9                   # section 3
    x = test_images[0][:8]
    fast = model.run(x, keep=True)
    ref = model.run(x, reference_ops=True, keep=True)
    sim = run_exact(qnet, x)
    for name, a, b, c in zip(model.points, fast, ref, sim):
        assert np.array_equal(a, b), f"kernels != reference at {name}"
        assert np.array_equal(a, c.numpy()), f"engine != exact simulation at {name}"
        assert a.max() <= (1 << int(model.act_bits[model.points.index(name)])) - 1


def test_learned_step_sizes_lower_the_error_at_four_bits():
    """eq. (21) on the tiny layer with 4-bit activations: the learned output step size moves
    away from min/max and the unit's output error falls below that of rounding alone."""
    points, ops, images = _tiny_layer(1, second=True)
    lo, hi = calibrate.minmax(ops, len(points), images, progress=False)
    qpts = build.act_points(points, ops, lo, hi, 4)
    assert [p["bits"] for p in qpts] == [8, 4, 4, 8]
    weights = build.quantize_weights_all(ops, bits=4, first_last_bits=4, levels="midrise", clip="mse")
    cfg = dict(batch=32, qdrop=0.0, lr=1e-2, iters=200, progress=False)
    _, fixed = reconstruct.reconstruct(ops, qpts, images, weights, act_lr=0.0, **cfg)
    _, learned = reconstruct.reconstruct(ops, qpts, images, weights, act_lr=0.02, **cfg)
    assert "act_scales" not in fixed
    s = learned["act_scales"]
    assert s[0] is None and s[1] != qpts[1]["scale"]
    assert learned["units"][0]["mse"] < 0.95 * fixed["units"][0]["mse"]
    w_scaled, _ = reconstruct.reconstruct(ops, qpts, images, weights, act_lr=0.02, scale_lr=0.01, **cfg)
    assert not np.array_equal(w_scaled["stem"][4], weights["stem"][4])       # eq. (22): s_w moved
    qnet = build.quantize_graph(points, ops, lo, hi, weights, act_bits=4, scales=s)
    assert qnet["points"][1]["scale"] == s[1] and qnet["points"][1]["zp"] == qpts[1]["zp"]
    assert qnet["points"][0]["scale"] == qpts[0]["scale"]


def test_auto_rounding_is_reconstruction_below_eight_bits():
    assert reconstruct.choose(2, 8, 8) == ("brecq", "below 8 bits (weights 2-bit)")
    assert reconstruct.choose(8, 4, 8)[0] == "brecq"
    assert reconstruct.choose(8, 8, 4)[0] == "brecq"
    assert reconstruct.choose(8, 8, 8)[0] == reconstruct.choose(16, 16, 16)[0] == "nearest"


def test_default_export_says_which_rounding_ran_and_why(data_dir, shipped, tmp_path):
    """Issue 15: `python -m exporter --bits 2` with no rounding option runs block
    reconstruction with learned step sizes and says so; at 8 bits it rounds to nearest."""
    env = {"CIFAR10_DIR": data_dir}
    out = tmp_path / "w2.npz"
    r = run_cli("exporter", "--bits", "2", "--iters", "3", "--recon-batch", "4", "--calib-images", "32",
                "--checkpoint", shipped, "--no-progress", "--out", out, env=env)
    assert r.returncode == 0, r.stderr
    assert "rounding: brecq (the default for below 8 bits (weights 2-bit)): learned rounding with " \
           "learned step sizes, 3 steps per block" in r.stderr
    assert "brecq rounding with learned step sizes" in r.stdout
    meta = intengine.fileformat.read(out)[0]["meta"]
    assert meta["rounding"] == "brecq" and meta["bias_correction"] is False
    assert meta["reconstruction"]["config"]["act_lr"] == reconstruct.defaults(2, 8)["act_lr"] > 0
    r = run_cli("exporter", "--bits", "8", "--calib-images", "32", "--checkpoint", shipped, "--no-progress",
                "--out", tmp_path / "w8.npz", env=env)
    assert r.returncode == 0, r.stderr
    assert "rounding: nearest (the default for all widths 8 bits or more)" in r.stderr
    assert intengine.fileformat.read(tmp_path / "w8.npz")[0]["meta"]["rounding"] == "nearest"


def test_options_that_do_not_apply_are_refused(data_dir, shipped, tmp_path):
    env = {"CIFAR10_DIR": data_dir}
    for args, match in [(("--bits", "8", "--iters", "5"), "--iters sets learned rounding, but the rounding is "
                                                            "nearest (the default for all widths 8 bits or more)"),
                        (("--bits", "2", "--rounding", "nearest", "--lr", "0.1", "--act-lr", "0"),
                         "--lr, --act-lr set learned rounding, but the rounding is nearest (--rounding nearest)")]:
        r = run_cli("exporter", *args, "--checkpoint", shipped, "--out", tmp_path / "x.npz", env=env)
        one_line_error(r, match)
    assert not list(tmp_path.iterdir())
