"""The trainer's command line: the shipped model's accuracy, and clean failures."""
import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

SHIPPED = ROOT / "checkpoints" / "resnet20.pt"


def cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "trainer", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**os.environ, **(env or {})})


def assert_one_line_error(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr


def test_shipped_checkpoint_reaches_92_percent(data_dir):
    state = torch.load(SHIPPED, weights_only=True)
    if state["epoch"] < state["config"]["epochs"]:
        pytest.skip(f"the shipped run is still training: epoch {state['epoch']} of "
                    f"{state['config']['epochs']} (resume with the README's training command)")
    proc = cli("eval", "--json", "--data-dir", data_dir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 10000
    assert result["accuracy"] >= 0.92, result


def test_eval_json_on_a_subset(data_dir):
    proc = cli("eval", "--json", "--limit", "200", "--data-dir", data_dir)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 200 and 0 <= result["accuracy"] <= 1 and result["loss"] > 0


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(cli("eval", "--checkpoint", str(tmp_path / "none.pt")))


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(SHIPPED.read_bytes()[:1000])
    assert_one_line_error(cli("eval", "--checkpoint", str(bad)))


def test_missing_dataset(tmp_path, monkeypatch):
    """No cifar10.npz and no network: one line that says where it looked."""
    import torchvision.datasets
    from click.testing import CliRunner
    from trainer.__main__ import cli as trainer_cli

    def offline(*args, **kw):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    result = CliRunner().invoke(trainer_cli, ["eval", "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nowhere" in lines[0], result.stderr


def test_training_refuses_to_overwrite_a_checkpoint(tmp_path):
    (tmp_path / "resnet20.pt").write_bytes(b"x")
    proc = cli("--out-dir", str(tmp_path), "--epochs", "1")
    assert_one_line_error(proc)
    assert "--resume" in proc.stderr and (tmp_path / "resnet20.pt").read_bytes() == b"x"


def test_unavailable_device(tmp_path):
    assert_one_line_error(cli("eval", "--device", "tpu"))
    if not torch.cuda.is_available():
        assert_one_line_error(cli("eval", "--device", "cuda"))


def test_bad_option_values():
    for args in (["--epochs", "0"], ["--precision", "fp8"], ["--schedule", "linear"]):
        proc = cli(*args)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
