"""Exporter: BN folding, sizes, determinism, and engine == reference == exact simulation."""
import numpy as np
import pytest
import torch

import intengine
from conftest import CALIB, one_line_error, run_cli
from exporter import blocks, calibrate, source
from exporter.simulate import FakeQuantNet, forward, run_exact

MAX_SIZE = {2: 90_000, 4: 160_000, 8: 300_000}


def test_fold_matches_the_float_model(test_images, shipped):
    model = source.checkpoint_model(shipped)
    _, ops = source.graph_of(model)
    x = calibrate.normalize64(test_images[0][:16])
    with torch.no_grad():
        want = model(x.float()).double()
        got = forward(ops, x)
    assert torch.allclose(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_file_size(exported, bits):
    size = exported[bits][0].stat().st_size
    assert size <= MAX_SIZE[bits], size


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
def test_engine_equals_reference_and_simulation_at_every_point(exported, test_images, bits):
    path, qnet, _ = exported[bits]
    model = intengine.load(path)
    x = test_images[0][:16]
    fast = model.run(x, keep=True)
    ref = model.run(x, reference_ops=True, keep=True)
    sim = run_exact(qnet, x)
    assert len(fast) == len(ref) == len(sim) == len(model.points) == 31
    for name, a, b, c in zip(model.points, fast, ref, sim):
        assert np.array_equal(a, b), f"kernels != reference at {name}"
        assert np.array_equal(a, c.numpy()), f"engine != exact simulation at {name}"
    assert len(np.unique(fast[-1])) > 5              # real logits, not a constant


def test_exports_are_byte_identical(exported, data_dir, shipped, tmp_path):
    from exporter.pipeline import Config, export
    path, _, _, _ = export(Config(shipped, 4, calib_images=CALIB, data_dir=data_dir, rounding="nearest"),
                           tmp_path / "again.npz", progress=False)
    assert path.read_bytes() == exported[4][0].read_bytes()


def test_file_records_its_provenance(exported, shipped):
    meta = intengine.load(exported[2][0]).header["meta"]
    assert meta["checkpoint_sha256"] == source.file_sha256(shipped)
    cal = meta["calibration"]
    assert (cal["images"], cal["seed"], cal["method"]) == (CALIB, 0, "minmax")
    assert len(cal["indices_sha256"]) == 64
    assert meta["bias_correction"] is True and meta["weight_clip"] == "mse"      # defaults at 2 bits
    info = intengine.load(exported[2][0])
    bits = [op.spec["bits_w"] for op in info.ops if op.kind in ("conv", "linear")]
    assert bits[0] == bits[-1] == 8 and set(bits[1:-1]) == {2}     # --first-last-bits default


def test_fake_quant_mode_is_differentiable_and_close(exported, test_images):
    _, qnet, ops = exported[8]
    net = FakeQuantNet(qnet, ops)
    x = calibrate.normalize64(test_images[0]).float()
    out = net(x)
    out.logsumexp(1).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.params)
    exact = run_exact(qnet, test_images[0])[-1].numpy()
    agree = (out.detach().numpy().argmax(1) == exact.argmax(1)).mean()
    assert agree >= 0.9, agree


def test_bits_3_is_refused():
    one_line_error(run_cli("exporter", "--bits", "3"), "'3' is not one of")


def test_missing_checkpoint(tmp_path):
    r = run_cli("exporter", "--bits", "4", "--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "o.npz")
    one_line_error(r, "no checkpoint")
    assert not (tmp_path / "o.npz").exists()


def test_nan_and_foreign_checkpoints(tmp_path, shipped):
    sd = source.checkpoint_model(shipped).state_dict()
    sd["layer2.1.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    one_line_error(run_cli("exporter", "--bits", "4", "--checkpoint", tmp_path / "nan.pt",
                           "--out", tmp_path / "o.npz"), "NaN")
    torch.save({"weight": torch.zeros(3)}, tmp_path / "foreign.pt")
    one_line_error(run_cli("exporter", "--bits", "4", "--checkpoint", tmp_path / "foreign.pt",
                           "--out", tmp_path / "o.npz"), "not a checkpoint of the trainer's")
    assert {p.name for p in tmp_path.iterdir()} == {"nan.pt", "foreign.pt"}     # no partial output


def test_unwritable_out_leaves_nothing(tmp_path, data_dir):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run_cli("exporter", "--bits", "8", "--calib-images", "8", "--out", blocker / "o.npz",
                env={"CIFAR10_DIR": data_dir})
    one_line_error(r, "file")
    assert {p.name for p in tmp_path.iterdir()} == {"file"}


def test_cli_export_summary_line(tmp_path, data_dir):
    out = tmp_path / "w8.npz"
    r = run_cli("exporter", "--bits", "8", "--calib-images", "16", "--no-progress", "--out", out,
                env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out}") and "W8A8" in line and "bytes" in line
    assert {p.name for p in tmp_path.iterdir()} == {"w8.npz"}


def test_bias_correction_is_the_mean_output_shift(shipped, test_images):
    """eq. (3a) on the linear layer: the shift is (W - W_q) @ E[pooled input]."""
    _, ops = source.graph_of(source.checkpoint_model(shipped))
    fc = ops[-1]
    dq = {"fc": fc["weight"] + 0.01 * torch.arange(10, dtype=torch.float64)[:, None]}
    shift = calibrate.bias_shift(ops, test_images[0][:32], dq)["fc"]
    seen = {}
    with torch.no_grad():
        forward(ops, calibrate.normalize64(test_images[0][:32]), lambda i, t: seen.setdefault(i, t))
    want = (-0.01 * torch.arange(10, dtype=torch.float64)) * seen[fc["in"]].mean(0).sum()
    assert np.allclose(shift, want.numpy(), atol=1e-9)
    assert not np.allclose(shift, 0)
    zero = calibrate.bias_shift(ops, test_images[0][:8], {"fc": fc["weight"]})["fc"]
    assert np.abs(zero).max() == 0


def test_out_is_checked_before_any_work(tmp_path, shipped):
    """Issue 15 item 7: a bad --out fails first: with no dataset anywhere, the error is about
    --out, so nothing was loaded or calibrated before the check."""
    nowhere = tmp_path / "no-data"
    for out, match in [(tmp_path / "m.txt", "must end in .npz"), (tmp_path, "is a folder"),
                       ("/proc/x.npz", "cannot write /proc/x.npz")]:
        r = run_cli("exporter", "--bits", "8", "--checkpoint", shipped, "--data-dir", nowhere, "--out", out)
        one_line_error(r, match)
    assert not list(tmp_path.iterdir())


def test_a_failed_export_removes_the_folder_it_made(tmp_path, shipped):
    out = tmp_path / "a" / "b" / "w8.npz"
    r = run_cli("exporter", "--bits", "8", "--checkpoint", tmp_path / "none.pt", "--out", out)
    one_line_error(r, "no checkpoint")
    assert not list(tmp_path.iterdir())


def test_out_notes_a_new_folder_and_a_replaced_file(tmp_path, shipped, data_dir):
    out = tmp_path / "new" / "w8.npz"
    args = ("exporter", "--bits", "8", "--calib-images", "8", "--no-progress", "--checkpoint", shipped, "--out", out)
    r = run_cli(*args, env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0 and f"note: created the folder {out.parent}" in r.stderr, r.stderr
    first = out.read_bytes()
    r = run_cli(*args, env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0 and f"note: replaced the existing {out}" in r.stderr, r.stderr
    assert out.read_bytes() == first and sorted(p.name for p in out.parent.iterdir()) == ["w8.npz"]


def test_split_stream_keeps_the_residual_stream_at_eight_bits(shipped, test_images):
    """Below 8-bit activations (section 3): a requant before each block's first conv, every
    conv but the stem reads an a-bit point, every other point is 8-bit, the float walk is
    unchanged."""
    from exporter import build
    model = source.checkpoint_model(shipped)
    points, ops = source.graph_of(model)
    sp, so = blocks.split_stream(points, ops)
    req = [op for op in so if op["op"] == "requant"]
    assert len(req) == 9 and len(sp) == len(points) + 9 and sp[-1]["name"] == "fc"
    for r in req:
        nxt = so[so.index(r) + 1]
        assert nxt["name"].endswith(".conv1") and nxt["in"] == r["out"]
        add = next(op for op in so if op["op"] == "add" and op["name"].startswith(r["name"].rsplit(".", 1)[0]))
        assert add["in"][1] == r["in"]                          # the shortcut reads the 8-bit stream
    bits = build.point_bits(so, len(sp), 2)
    conv_in = {op["in"] for op in so if op["op"] == "conv" and op["name"] != "conv1"}
    assert {i for i, b in enumerate(bits) if b == 2} == conv_in and len(conv_in) == 18
    assert build.point_bits(so, len(sp), 8) == [8] * len(sp)
    x = calibrate.normalize64(test_images[0][:4])
    assert torch.equal(forward(ops, x), forward(so, x))


def test_split_stream_names_stay_unique_when_one_module_holds_two_such_convs():
    """Two convs of one module that each read a point a residual add reads (y = x + f(x);
    z = y + g(y)): each gets its own requant, named by the block for the first (as in
    ResNet20) and by the conv for the second, so no op or point name repeats."""
    pt = [{"name": n, "shape": [8, 8, 16]} for n in ("x", "stem", "blk.c1", "blk.add", "blk.c2", "blk.add_1")]
    ops = [{"op": "conv", "name": "stem", "in": 0, "out": 1}, {"op": "conv", "name": "blk.c1", "in": 1, "out": 2},
           {"op": "add", "name": "blk.add", "in": [2, 1], "out": 3}, {"op": "conv", "name": "blk.c2", "in": 3, "out": 4},
           {"op": "add", "name": "blk.add_1", "in": [4, 3], "out": 5}]
    sp, so = blocks.split_stream(pt, ops)
    assert [op["name"] for op in so if op["op"] == "requant"] == ["blk.requant", "blk.c2.requant"]
    assert len({op["name"] for op in so}) == len(so) and len({p["name"] for p in sp}) == len(sp)
    for conv in ("blk.c1", "blk.c2"):
        op = next(o for o in so if o["name"] == conv)
        assert so[so.index(op) - 1]["op"] == "requant" and so[so.index(op) - 1]["out"] == op["in"]


def test_widened_outputs_keep_every_multiplier_below_one():
    """eq. (9): where s_x s_w / s_y would reach 1, the output step grows (build.widen_outputs)."""
    from exporter import build
    ops = [{"op": "conv", "name": "c", "in": 0, "out": 1}]
    qpts = [{"name": "a", "scale": 1.0}, {"name": "b", "scale": 0.01}]
    weights = {"c": (2, "midrise", None, None, np.array([0.02, 0.05]))}
    assert build.widen_outputs(ops, qpts, weights) == ["b"]
    assert 1.0 * 0.05 / qpts[1]["scale"] == pytest.approx(build.MAX_MULTIPLIER)
    assert build.widen_outputs(ops, qpts, weights) == []      # already wide enough: unchanged
