import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

# The tests run beside a training job on small machines; one thread keeps them predictable.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir():
    """The folder with the real cifar10.npz, from $CIFAR10_DIR (set by .ci/run and the README)."""
    d = os.environ.get("CIFAR10_DIR")
    if not d:
        pytest.skip("CIFAR10_DIR is not set; see README (Data)")
    if not (Path(d) / "cifar10.npz").is_file():
        pytest.fail(f"CIFAR10_DIR={d} holds no cifar10.npz")
    return d


SHIPPED = ROOT / "checkpoints" / "resnet20.pt"
CALIB = 128          # calibration images for the test exports (the default is 1024)


@pytest.fixture(scope="session")
def shipped(tmp_path_factory):
    """A snapshot of the shipped checkpoint (a training run may be rewriting the original)."""
    import shutil
    copy = tmp_path_factory.mktemp("shipped") / "resnet20.pt"
    shutil.copyfile(SHIPPED, copy)
    return copy


@pytest.fixture(scope="session")
def exported(data_dir, shipped, tmp_path_factory):
    """The shipped checkpoint exported at every width: bits -> (path, qnet, float ops).
    Round-to-nearest at every width, so the fixture takes seconds; the default learned
    rounding below 8 bits has its own tests (test_reconstruct.py)."""
    from exporter.pipeline import Config, export
    out = {}
    folder = tmp_path_factory.mktemp("exports")
    for bits in (2, 4, 8, 16):
        act = 16 if bits == 16 else 8
        path, _, qnet, ops = export(Config(shipped, bits, calib_images=CALIB, seed=0, data_dir=data_dir,
                                           rounding="nearest"), folder / f"w{bits}a{act}.npz", progress=False)
        out[bits] = (path, qnet, ops)
    for bits, act in ((4, 4), (2, 2)):             # low-bit activations (section 3): "w4a4", "w2a2"
        path, _, qnet, ops = export(Config(shipped, bits, act_bits=act, calib_images=CALIB, seed=0, data_dir=data_dir,
                                           rounding="nearest"), folder / f"w{bits}a{act}.npz", progress=False)
        out[f"w{bits}a{act}"] = (path, qnet, ops)
    return out


@pytest.fixture(scope="session")
def test_images(data_dir):
    """64 seeded test images and labels, uint8 NHWC."""
    from intengine.cifar10 import load_test, seeded_subset
    x, y = load_test(data_dir)
    idx = seeded_subset(len(y), 64, 1)
    return x[idx], y[idx]


def run_cli(module, *args, env=None):
    """python -m module args -> CompletedProcess (text)."""
    import subprocess
    import sys
    e = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True,
                          text=True, env=e, cwd=ROOT, timeout=600)


def one_line_error(r, match):
    assert r.returncode == 2, r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert "Traceback" not in r.stderr
    assert match in lines[0], lines[0]
