"""docs/reliability.md: killed processes lose nothing, swapped file types are named, and
`intengine verify` checks a file for scripts and CI (issue 10; issue 8 item 6)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
import torch

from conftest import ROOT, one_line_error, run_cli
from trainer import checkpoint

TRAIN = ["--epochs", "2", "--limit", "512", "--test-limit", "64", "--batch-size", "64",
         "--warmup-epochs", "0.5", "--device", "cpu", "--precision", "fp32", "--label-smoothing", "0",
         "--no-progress"]
ENV = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def start(module, *args, env=None):
    return subprocess.Popen([sys.executable, "-m", module, *map(str, args)], cwd=ROOT, env=env or ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(proc, stream, text, timeout=300):
    """Read `stream` of `proc` until a line contains `text`; -> that line."""
    t0 = time.monotonic()
    for line in stream:
        if text in line:
            return line
        assert time.monotonic() - t0 < timeout, f"no {text!r} after {timeout} s"
    pytest.fail(f"{proc.args} ended (status {proc.wait()}) before printing {text!r}")


def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(tmp_path, data_dir):
    straight = start("trainer", *TRAIN, "--out-dir", tmp_path / "straight", "--data-dir", data_dir)
    killed = start("trainer", *TRAIN, "--out-dir", tmp_path / "killed", "--data-dir", data_dir)
    wait_for_line(killed, killed.stdout, "epoch 1/2")        # epoch 1 is checkpointed; epoch 2 runs
    time.sleep(0.3)
    assert killed.poll() is None, "the run ended before it could be killed"
    killed.send_signal(signal.SIGKILL)
    assert killed.wait() == -signal.SIGKILL
    assert torch.load(tmp_path / "killed" / "resnet20.pt", weights_only=True)["epoch"] == 1
    assert straight.wait(timeout=600) == 0, straight.stderr.read()
    r = subprocess.run([sys.executable, "-m", "trainer", *TRAIN, "--out-dir", tmp_path / "killed",
                        "--data-dir", data_dir, "--resume"], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0 and "resumed from" in r.stdout, r.stderr
    a = checkpoint.load(tmp_path / "straight" / "resnet20.pt")
    b = checkpoint.load(tmp_path / "killed" / "resnet20.pt")
    assert a["epoch"] == b["epoch"] == 2
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert [m["epoch"] for m in b["metrics"]] == [1, 2]


def test_sigkill_while_the_exporter_writes_leaves_the_old_file_or_nothing(exported, shipped, data_dir, tmp_path):
    """LOWBIT_PTQ_TEST_PAUSE_WRITE makes fileformat.write stop halfway through the temporary
    file and say so on stderr; the test kills the real process there."""
    out = tmp_path / "model.npz"
    env = dict(ENV, LOWBIT_PTQ_TEST_PAUSE_WRITE="120")
    args = ["--bits", "8", "--checkpoint", shipped, "--out", out, "--calib-images", "16",
            "--no-progress", "--data-dir", data_dir]
    for previous in (None, exported[4][0]):
        if previous:
            shutil.copyfile(previous, out)
        p = start("exporter", *args, env=env)
        line = wait_for_line(p, p.stderr, "paused writing")
        tmp = tmp_path / line.split("paused writing ")[1].strip().rsplit("/", 1)[1]
        assert tmp.stat().st_size > 0 and not zipfile.is_zipfile(tmp)   # really half written
        p.send_signal(signal.SIGKILL)
        assert p.wait() == -signal.SIGKILL
        assert len(list(tmp_path.glob(".model.npz.*.tmp"))) == 1   # each writer cleans up the last's
        if previous is None:
            assert not out.exists()
        else:
            assert out.read_bytes() == previous.read_bytes()
            r = run_cli("intengine", "verify", out)
            assert r.returncode == 0 and ": ok, format version 3" in r.stdout, r.stderr


def test_swapped_file_types_are_named(exported, shipped, tmp_path):
    """Issue 8 item 6: each tool says what it was given and which command fits."""
    r = run_cli("intengine", "eval", shipped)
    one_line_error(r, "is a PyTorch checkpoint")
    assert "python -m exporter --bits" in r.stderr
    r = run_cli("trainer", "eval", "--checkpoint", exported[4][0])
    one_line_error(r, "integer model file written by the exporter")
    assert "python -m intengine eval" in r.stderr and "enforce" not in r.stderr
    from exporter import source
    raw = shipped.read_bytes()
    for cut, match in [(len(raw) // 2, "truncated or damaged zip"), (len(raw) - 10, "truncated or damaged zip"),
                       (0, "empty file")]:
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(raw[:cut])
        with pytest.raises(checkpoint.CheckpointError, match=match):
            source.checkpoint_model(bad)
        with pytest.raises(checkpoint.CheckpointError, match=match):
            checkpoint.load(bad)


def test_verify_command(exported, tmp_path):
    good = [exported[b][0] for b in (2, 16)]
    r = run_cli("intengine", "verify", *good)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{good[0]}: ok, format version 3, W2A8, 20 weighted layers")
    info = json.loads(run_cli("intengine", "info", good[0], "--json").stdout)
    assert info["format_version"] == 3 and lines[0].endswith(info["content_sha256"][:16])
    old = ROOT / "models" / "resnet20_w2a8_brecq_lsq_s0.npz"            # version 2, still read
    r = run_cli("intengine", "verify", old)
    assert r.returncode == 0 and r.stdout.startswith(f"{old}: ok, format version 2, W2A8"), r.stdout + r.stderr
    with np.load(good[0], allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays["bias"] = np.full_like(arrays["bias"], 2**31 - 1)
    np.savez(tmp_path / "edited.npz", **arrays)
    one_line_error(run_cli("intengine", "verify", tmp_path / "edited.npz"), "modified or damaged")
    # every file is checked and reported, then the exit status says that one was bad
    r = run_cli("intengine", "verify", good[0], tmp_path / "edited.npz", good[1])
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 3 and ": ok," in lines[0] and ": bad: " in lines[1] and ": ok," in lines[2], r.stdout
    one_line_error(r, "1 of 3 files failed verification; the first: ")


def test_every_load_checks_the_digest(exported):
    """The cost of the check is measured in docs/reliability.md (no timing assertion here)."""
    from intengine import fileformat
    calls = []
    real = fileformat.content_digest
    try:
        fileformat.content_digest = lambda *a: calls.append(1) or real(*a)
        import intengine
        intengine.load(exported[16][0])
    finally:
        fileformat.content_digest = real
    assert calls == [1]


def test_committed_model_files_verify():
    """Every model file in the repository is the current format with a matching digest
    (a version-1 file committed by mistake fails here, not on a user's machine)."""
    import intengine
    from intengine.fileformat import sniff
    r = subprocess.run(["git", "ls-files", "*.npz"], cwd=ROOT, capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout")
    models = [ROOT / f for f in r.stdout.split() if sniff(ROOT / f) == "model"]
    assert models, "no committed model files found (models/ holds the learned-rounding exports)"
    for f in models:
        intengine.load(f)               # raises FormatError naming the file and the command
