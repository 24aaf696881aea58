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


@pytest.fixture
def tiny_checkpoint(tmp_path):
    """An untrained model saved in the checkpoint format (no training needed)."""
    from trainer import checkpoint
    from trainer.model import build
    from trainer.train import Config, make_optimizer
    import dataclasses
    model = build()
    opt = make_optimizer(model, Config())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    path = tmp_path / "tiny.pt"
    checkpoint.save(path, model=model, optimizer=opt, scheduler=sched, epoch=0,
                    config=dataclasses.asdict(Config()), metrics=[])
    return path


def test_missing_checkpoint(tmp_path):
    assert_one_line_error(cli("eval", "--checkpoint", str(tmp_path / "none.pt")))


def test_corrupt_checkpoint(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(SHIPPED.read_bytes()[:1000])
    assert_one_line_error(cli("eval", "--checkpoint", str(bad)))


def test_missing_dataset(tmp_path, monkeypatch, tiny_checkpoint):
    """No cifar10.npz and no network: one line that says where it looked."""
    import torchvision.datasets
    from click.testing import CliRunner
    from trainer.__main__ import cli as trainer_cli

    def offline(*args, **kw):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    result = CliRunner().invoke(trainer_cli, ["eval", "--checkpoint", str(tiny_checkpoint),
                                              "--data-dir", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "nowhere" in lines[0], result.stderr


def test_training_refuses_to_overwrite_a_checkpoint(tmp_path):
    (tmp_path / "resnet20.pt").write_bytes(b"x")
    proc = cli("--out-dir", str(tmp_path), "--epochs", "1")
    assert_one_line_error(proc)
    assert "--resume" in proc.stderr and (tmp_path / "resnet20.pt").read_bytes() == b"x"


def test_unavailable_device(tiny_checkpoint):
    proc = cli("eval", "--checkpoint", str(tiny_checkpoint), "--device", "tpu")
    assert_one_line_error(proc)
    assert "device" in proc.stderr
    if not torch.cuda.is_available():
        proc = cli("eval", "--checkpoint", str(tiny_checkpoint), "--device", "cuda")
        assert_one_line_error(proc)
        assert "CUDA is not available" in proc.stderr


def test_data_dir_that_is_a_file(tiny_checkpoint):
    proc = cli("eval", "--checkpoint", str(tiny_checkpoint), "--data-dir", str(tiny_checkpoint))
    assert_one_line_error(proc)
    assert "not a folder" in proc.stderr


def test_bad_option_values():
    for args in (["--epochs", "0"], ["--precision", "fp8"], ["--schedule", "linear"],
                 ["--seed", "-1"], ["eval", "--no-such-option"]):
        proc = cli(*args)
        assert_one_line_error(proc)
        assert proc.returncode == 2


def test_resume_through_the_cli(tmp_path, data_dir, monkeypatch):
    """A run killed after epoch 1 and resumed with `python -m trainer --resume` matches an
    uninterrupted run; options that contradict the resumed run are refused."""
    from trainer import checkpoint
    from trainer.train import Config, train
    tiny = dict(limit=256, test_limit=100, batch_size=64, epochs=2, warmup_epochs=0.5,
                device="cpu", precision="fp32")
    # One thread, as the CLI runs below get (OMP_NUM_THREADS=1).  conftest sets it, but running
    # the engine in this process before (numba's OpenMP layer) raises torch's count to 2.
    torch.set_num_threads(1)
    straight, _ = train(Config(**tiny, out_dir=str(tmp_path / "a")), data_dir=data_dir,
                        progress=False, log=lambda *a: None)
    real_save = checkpoint.save

    def save_then_die(*args, **kw):
        real_save(*args, **kw)
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(Config(**tiny, out_dir=str(tmp_path / "b")), data_dir=data_dir, progress=False,
              log=lambda *a: None)
    out = str(tmp_path / "b")
    env = {"OMP_NUM_THREADS": "1"}        # the same thread count as this process (conftest)
    assert_one_line_error(cli("--resume", "--out-dir", out, "--lr", "0.3", env=env))
    proc = cli("--resume", "--out-dir", out, "--data-dir", data_dir, "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "resumed from" in proc.stdout and "epoch 2/2" in proc.stdout
    resumed = torch.load(tmp_path / "b" / "resnet20.pt", weights_only=True)
    assert resumed["epoch"] == 2
    for k, v in straight.state_dict().items():
        assert torch.equal(resumed["model"][k], v), k


def test_arch_trains_records_itself_and_evaluates(tmp_path, data_dir):
    """`--arch mobilenetv2`: the checkpoint is OUT_DIR/mobilenetv2.pt and records its
    architecture, `trainer eval` rebuilds it from there, and each epoch's log row records the
    precision it ran at (a resumed run may change it, on another processor)."""
    out = str(tmp_path / "m")
    tiny = ["--arch", "mobilenetv2", "--limit", "128", "--test-limit", "64", "--batch-size", "64",
            "--out-dir", out, "--data-dir", data_dir, "--no-progress", "--device", "cpu"]
    proc = cli(*tiny, "--epochs", "2", "--precision", "fp32")
    assert proc.returncode == 0, proc.stderr
    state = torch.load(tmp_path / "m" / "mobilenetv2.pt", weights_only=True)
    assert state["config"]["model"] == "mobilenetv2" and state["config"]["name"] == "mobilenetv2"
    assert {r["precision"] for r in state["metrics"]} == {"fp32"}
    r = cli("eval", "--checkpoint", str(tmp_path / "m" / "mobilenetv2.pt"), "--data-dir", data_dir, "--limit", "50",
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["epoch"] == 2
    assert_one_line_error(cli("--arch", "vgg", "--epochs", "1"))
