"""Bring your own CNN: `python -m exporter --model net.pt2` (exporter/source.py), the Python
API, any dataset in the cifar10.npz layout, the blocks reconstruction finds in a graph
(exporter/blocks.py), and one line for each kind of bad input."""
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import intengine
from exporter import blocks, capture, source
from exporter.simulate import run_exact
from trainer.model import build

from conftest import ROOT


class Small(nn.Module):
    """A user's network: conv-BN-ReLU, max pool, a strided conv with bias, flatten, linear."""

    def __init__(self, cin=3, classes=10, hw=32):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(cin, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16)
        self.c2 = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.fc = nn.Linear(24 * (hw // 4) ** 2, classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        return self.fc(F.relu(self.c2(x)).flatten(1))


def _save(model, path, shape=(1, 3, 32, 32)):
    torch.manual_seed(0)
    torch.export.save(capture.export(model.eval(), torch.randn(*shape)), path)
    return path


def _exporter(*args, env=None):
    return subprocess.run([sys.executable, "-m", "exporter", *map(str, args), "--no-progress"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)


def test_module_paths_name_the_layers_and_units_follow_the_blocks():
    """Layers are named by their module (layer1.0.conv1), and reconstruction's units are the
    stem, each residual block, each inverted residual and the head; in a plain chain of
    clamped layers, one layer each."""
    src = source.from_module(build("resnet20"), torch.zeros(1, 3, 32, 32))
    names = [op["name"] for op in src.ops]
    assert names[:4] == ["conv1", "layer1.0.conv1", "layer1.0.conv2", "layer1.0.add"] and names[-2:] == ["gap", "fc"]
    assert [blocks.unit_name(u) for u in blocks.units(src.ops, "brecq")] == \
        ["conv1"] + [f"layer{s}.{j}" for s in (1, 2, 3) for j in range(3)] + ["fc"]
    mb = source.from_module(build("mobilenetv2"), torch.zeros(1, 3, 32, 32))
    units = blocks.units(mb.ops, "brecq")
    sizes = [(blocks.unit_name(u), [op["op"] for op in u]) for u in units]
    assert sizes[1] == ("features.1.conv", ["conv", "conv"])                 # t=1: depthwise, project
    assert sizes[2] == ("features.2.conv", ["conv", "conv", "conv"])         # expand, depthwise, project
    assert sizes[3] == ("features.3", ["conv", "conv", "conv", "add"])       # with its residual add
    assert len(units) == 20 and sum(len(u) for u in units) == len(mb.ops)
    chain = nn.Sequential(*[m for c in (3, 8, 8, 8) for m in (nn.Conv2d(c, 8, 3, padding=1), nn.ReLU())],
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    plain = source.from_module(chain, torch.zeros(1, 3, 8, 8))
    assert [len([o for o in u if o["op"] in ("conv", "linear")]) for u in blocks.units(plain.ops, "brecq")] == \
        [1, 1, 1, 1, 1]


def _points_equal(path, qnet, images):
    """The engine's every point equals the exact simulation (exporter/simulate.run_exact)."""
    m = intengine.load(path)
    exact = [t.numpy() for t in run_exact(qnet, images)]
    got = m.run(images, keep=True)
    return m, all(g is None or np.array_equal(g, e) for g, e in zip(got, exact)) and \
        np.array_equal(m.predict(images), exact[-1])


def test_the_python_api_exports_a_module_exactly(data_dir, tmp_path, test_images):
    """export_module(model, example, out, bits=4): reconstruction by default below 8 bits;
    the engine equals the exact simulation at every point; the file names the network."""
    from exporter import export_module
    path, size, qnet, _ = export_module(Small().eval(), torch.randn(1, 3, 32, 32), tmp_path / "s.npz", bits=4,
                                        data_dir=data_dir, calib_images=64, recon={"iters": 10})
    m, same = _points_equal(path, qnet, test_images[0][:24])
    assert same and m.header["arch"] == "small" and m.header["meta"]["rounding"] == "brecq"
    assert m.header["meta"]["source"] == {"kind": "module", "arch": "small", "file": None,
                                          "normalization": "CIFAR-10's (no --mean/--std given)"}


def test_a_saved_program_exports_from_the_command_line(data_dir, tmp_path):
    """--model NET.pt2 at the defaults, then `python -m intengine eval` on it: the export line
    names the network and where its normalization came from; the default name is the program's."""
    prog = _save(Small(), tmp_path / "small.pt2")
    r = subprocess.run([sys.executable, "-m", "exporter", "--bits", "8", "--model", str(prog), "--calib-images",
                        "64", "--data-dir", data_dir, "--no-progress"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr
    out = tmp_path / "exports" / "small_w8a8.npz"
    assert f"wrote exports/small_w8a8.npz" in r.stdout and "small (" in r.stdout
    assert "input normalization CIFAR-10's (no --mean/--std given)" in r.stdout
    src, x = source.load(program=prog), torch.randn(5, 3, 32, 32)   # its float network takes any batch
    traced = torch.export.load(prog).module()                         # (the program: batch 1 only)
    assert (src.module(x) - torch.cat([traced(x[i:i + 1]) for i in range(5)])).abs().max() < 1e-4
    e = subprocess.run([sys.executable, "-m", "intengine", "eval", str(out), "--limit", "64", "--data-dir",
                        data_dir, "--no-progress"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                       env=_env())
    assert e.returncode == 0 and "accuracy" in e.stdout, e.stderr
    meta = intengine.load(out).header["meta"]
    assert meta["source"]["kind"] == "program" and meta["program_sha256"] == source.file_sha256(prog)


def _env():
    import os
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_any_dataset_in_the_layout_with_its_own_shape_classes_and_normalization(tmp_path):
    """A grayscale 16x16 dataset of 5 named classes, given as an .npz file to --data-dir, and a
    1-channel program with --mean/--std: the file records the input shape, the classes and the
    normalization, and the engine evaluates it on that dataset."""
    rng = np.random.default_rng(0)
    y_train, y_test = rng.integers(0, 5, 300), rng.integers(0, 5, 50)
    make = lambda y: np.clip(y[:, None, None, None] * 50 + rng.integers(0, 40, (len(y), 16, 16, 1)), 0, 255)
    data = tmp_path / "shapes.npz"
    np.savez(data, x_train=make(y_train).astype(np.uint8), y_train=y_train.astype(np.uint8),
             x_test=make(y_test).astype(np.uint8), y_test=y_test.astype(np.uint8),
             classes=np.array(["a", "b", "c", "d", "e"]))
    prog = _save(Small(cin=1, classes=5, hw=16), tmp_path / "gray.pt2", shape=(1, 1, 16, 16))
    out = tmp_path / "gray.npz"
    r = _exporter("--bits", 8, "--model", prog, "--data-dir", data, "--calib-images", 100, "--mean", "0.4",
                  "--std", "0.3", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "input normalization --mean/--std" in r.stdout
    m = intengine.load(out)
    assert m.input_shape == (16, 16, 1) and list(m.classes) == ["a", "b", "c", "d", "e"]
    assert m.header["normalization"] == {"mean": [0.4], "std": [0.3]}
    e = subprocess.run([sys.executable, "-m", "intengine", "eval", str(out), "--data-dir", str(data),
                        "--no-progress"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert e.returncode == 0 and "(" in e.stdout and "/50)" in e.stdout, e.stderr


def test_a_trainer_checkpoint_of_another_architecture_exports(data_dir, tmp_path):
    """--checkpoint takes every architecture the trainer trains: the checkpoint records it."""
    from trainer import checkpoint
    model = build("mobilenetv2")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    ckpt = tmp_path / "mnv2.pt"
    checkpoint.save(ckpt, model=model, optimizer=opt, scheduler=sched, epoch=0, config={"model": "mobilenetv2"},
                    metrics=[])
    out = tmp_path / "mnv2.npz"
    r = _exporter("--bits", 8, "--checkpoint", ckpt, "--calib-images", 16, "--data-dir", data_dir, "--out", out)
    assert r.returncode == 0, r.stderr
    assert "mobilenetv2 (" in r.stdout and "input normalization the checkpoint's" in r.stdout
    m = intengine.load(out)
    assert m.header["arch"] == "mobilenetv2" and sum(op["op"] == "add" for op in m.header["ops"]) == 10


def _compare(*args):
    return subprocess.run([sys.executable, "scripts/compare.py", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900)


def test_the_comparison_reports_a_users_program_beside_the_peers_that_take_it(data_dir, tmp_path):
    """`scripts/compare.py --model NET.pt2`: the user's network gets its own report (not the
    shipped ResNet20's study): FP32, torch.ao by PT2E (FX cannot read a program) and
    onnxruntime where they are installed, and the default exports at W8A8, W4A8, W2A8 and
    W4A4, run by the engine; RESULTS.md opens with the verdict and names the network.  And
    --publish, which replaces the shipped study's committed report, is refused for it."""
    from exporter import onnxrt, torchao
    prog = _save(Small(), tmp_path / "small.pt2")
    r = _compare("--model", prog, "--quick", "--limit", 96, "--calib-images", 32, "--iters", 2, "--data-dir",
                 data_dir, "--out", tmp_path / "report", "--exports-dir", tmp_path / "exports")
    assert r.returncode == 0, r.stderr[-2000:]
    rep = __import__("json").loads((tmp_path / "report" / "results.json").read_text())
    assert rep["network"] == "small" and rep["study"] is False and rep["n_test"] == 96
    methods = [row["method"] for row in rep["rows"]]
    assert methods[0] == "fp32" and methods.count("intengine (default)") == 4
    assert ("torch.ao pt2e" in methods) == (torchao.pt2e_missing() is None)
    assert ("onnxruntime int8" in methods) == (onnxrt.missing() is None)
    assert "torch.ao best" not in methods and not any(m.startswith("intengine committed") for m in methods)
    ours = {(row["bits_w"], row["bits_a"]): row for row in rep["rows"] if row["kind"] == "ours"}
    assert sorted(ours) == [(2, 8), (4, 4), (4, 8), (8, 8)]
    for (b, a), row in ours.items():
        m = intengine.load(tmp_path / "exports" / f"small_w{b}a{a}.npz")
        assert m.header["arch"] == "small" and m.header["meta"]["bits"] == b and row["images_per_s"] > 0
    md = (tmp_path / "report" / "RESULTS.md").read_text()
    assert md.startswith("# Results: small\n\n**Verdict.**") and "| method | FP32 | W8A8 | W4A8 | W2A8 | W4A4 |" in md
    assert "Appendix" not in md and "Kinds of quantization" not in md
    assert r.stdout.startswith("Verdict (96 test images")
    p = _compare("--model", prog, "--publish", "--data-dir", data_dir, "--out", tmp_path / "no")
    assert p.returncode != 0 and "--publish takes the shipped ResNet20 or a trainer checkpoint in checkpoints/" in p.stderr
    assert len(p.stderr.strip().splitlines()) <= 3 and "Traceback" not in p.stderr and not (tmp_path / "no").exists()


@pytest.mark.parametrize("args,what", [
    (["--model", "{sig}"], "unsupported op aten.sigmoid.default at node"),
    (["--model", "{junk}"], "is not a program saved by torch.export.save (not a zip archive)"),
    (["--model", "{ckpt}"], "a trainer checkpoint goes to --checkpoint"),
    (["--model", "{missing}"], "no program at"),
    (["--model", "{small}", "--checkpoint", "{ckpt}"], "give --checkpoint or --model, not both"),
    (["--model", "{small}", "--mean", "0.5,0.5,0.5"], "give --mean and --std together"),
    (["--model", "{small}", "--mean", "0.5,0.5", "--std", "1,1"], "2 means and 2 stds for an input of 3 channels"),
    (["--model", "{small}", "--mean", "0.5,a,1", "--std", "1,1,1"], "expected numbers separated by commas"),
    (["--model", "{small}", "--mean", "0.5,0.5,0.5", "--std", "1,0,1"], "std must be positive"),
    (["--model", "{nan}"], "non-finite weights (NaN/inf) in c1"),
    (["--model", "{small}", "--data-dir", "{baddata}"], "a label of 7, outside 0..4"),
    (["--model", "{small}", "--data-dir", "{small16}"], "the network takes 32x32x3 images (H x W x C) and the dataset holds 16x16x3"),
    (["--model", "{small}", "--data-dir", "{five}"], "the network gives 10 outputs and the dataset names 5 classes"),
])
def test_bad_input_is_one_line_and_writes_nothing(args, what, tmp_path, data_dir):
    class Sig(nn.Module):
        def __init__(self):
            super().__init__()
            self.c, self.fc = nn.Conv2d(3, 4, 3), nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(self.c(x)).mean((2, 3)))
    nan = Small()
    nan.c1.weight.data[0, 0, 0, 0] = float("nan")
    (tmp_path / "junk.pt2").write_text("hello")
    bad = tmp_path / "bad.npz"
    np.savez(bad, x_train=np.zeros((4, 32, 32, 3), np.uint8), y_train=np.array([0, 1, 7, 2], np.uint8),
             x_test=np.zeros((2, 32, 32, 3), np.uint8), y_test=np.zeros(2, np.uint8), classes=np.array(list("abcde")))
    small16, five = tmp_path / "small16.npz", tmp_path / "five.npz"
    for path, hw in ((small16, 16), (five, 32)):
        np.savez(path, x_train=np.zeros((8, hw, hw, 3), np.uint8), y_train=np.arange(8, dtype=np.uint8) % 5,
                 x_test=np.zeros((2, hw, hw, 3), np.uint8), y_test=np.zeros(2, np.uint8),
                 **({"classes": np.array(list("abcde"))} if path == five else {}))
    paths = {"sig": _save(Sig(), tmp_path / "sig.pt2"), "junk": tmp_path / "junk.pt2", "missing": tmp_path / "no.pt2",
             "ckpt": ROOT / "checkpoints" / "resnet20.pt", "small": _save(Small(), tmp_path / "small.pt2"),
             "nan": _save(nan, tmp_path / "nan.pt2"), "baddata": bad, "small16": small16, "five": five}
    out = tmp_path / "out.npz"
    args = [a.format(**paths) for a in args]
    r = _exporter("--bits", 8, *args, "--out", out, *([] if "--data-dir" in args else ["--data-dir", data_dir]))
    assert r.returncode != 0 and what in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not out.exists()
