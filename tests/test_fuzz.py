"""Issue 10's fuzz corpus: >= 200 damaged model files through `python -m intengine` (info,
verify, eval --limit 8), and ~30 damaged checkpoints through `python -m exporter`.

The bulk runs in one driver process (scripts/fuzz_files.py check: the CLI entry point
in-process per case, 10 s alarm, address-space limit); a sample also runs as separate
`python -m intengine` processes, so the in-process driver is not the only evidence.
"""
import importlib.util
import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, one_line_error, run_cli

FUZZ = ROOT / "scripts" / "fuzz_files.py"
_spec = importlib.util.spec_from_file_location("fuzz_files", FUZZ)
fuzz = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz)


@pytest.fixture(scope="module")
def corpus(exported, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, fuzz.make(exported[4][0], folder, seed=0)


def _driver(*args):
    r = subprocess.run([sys.executable, str(FUZZ), *map(str, args)], capture_output=True, text=True,
                       cwd=ROOT, timeout=600)
    print(r.stdout[-3000:], r.stderr[-3000:])
    return r


def test_model_file_corpus(corpus, data_dir):
    folder, index = corpus
    r = _driver("check", folder, "--data-dir", data_dir)
    tried, passed = map(int, re.search(r"fuzz: tried (\d+), passed (\d+)", r.stdout).groups())
    assert r.returncode == 0 and tried == passed == len(index) >= 200, r.stdout[-3000:]
    counts = json.loads((folder / "results.json").read_text())["counts"]
    assert counts["semantic"] >= 0.6 * tried and counts["intact"] >= 5 and counts["byte"] >= 60, counts


SAMPLE = ["bias-all-max-unsigned", "weights-all-max-unsigned", "shift-one-63", "drop-weights",
          "npy-shape-weights-2147483648", "zip-bomb-64MiB", "extra-object-array", "not-zip-text",
          "intact-stored"]


def test_a_sample_in_separate_processes(corpus, exported, data_dir):
    folder, index = corpus
    want = json.loads(run_cli("intengine", "info", exported[4][0], "--json").stdout)
    r = run_cli("intengine", "eval", exported[4][0], "--limit", "8", "--json", "--no-progress",
                env={"CIFAR10_DIR": data_dir})
    want_correct = json.loads(r.stdout.splitlines()[-1])["correct"]
    by_name = {c["name"]: c for c in index}
    for name in SAMPLE + [next(c["name"] for c in index if c["name"].startswith("truncated-at-6"))]:
        case = by_name[name]
        r = run_cli("intengine", "info", folder / case["file"], "--json")
        if case["expect"] == "same":
            got = json.loads(r.stdout)
            assert r.returncode == 0 and {k: v for k, v in got.items() if k not in ("file", "size_bytes")} == \
                {k: v for k, v in want.items() if k not in ("file", "size_bytes")}
        else:
            one_line_error(r, case["keyword"] or "")
    for name in ("intact-stored", "shift-one-63"):                    # and eval --limit 8
        r = run_cli("intengine", "eval", folder / by_name[name]["file"], "--limit", "8", "--json",
                    "--no-progress", env={"CIFAR10_DIR": data_dir})
        if name == "shift-one-63":
            one_line_error(r, "shift")
        else:
            got = json.loads(r.stdout.splitlines()[-1])
            assert r.returncode == 0 and got["correct"] == want_correct
            assert got["content_sha256"] == want["content_sha256"]     # the same content, re-zipped


def test_the_oracle_can_fail():
    ok = dict(seconds=0.1, expect="error", keyword="shift", same=lambda: True)
    assert fuzz.judge(2, "", "error: x: a shift lies outside\n", **ok) is None
    assert "traceback" in fuzz.judge(2, "", "error: shift\nTraceback (most recent call last):\n", **ok)
    assert "one error line" in fuzz.judge(2, "", "error: shift\nmore\n", **ok)
    assert "exit status 1" in fuzz.judge(1, "", "error: shift\n", **ok)
    assert "accepted" in fuzz.judge(0, "", "", **ok)
    assert "does not name" in fuzz.judge(2, "", "error: something else\n", **ok)
    assert "pickle" in fuzz.judge(2, "", "error: shift, use allow_pickle=True\n", **ok)
    assert "took" in fuzz.judge(2, "", "error: shift\n", **dict(ok, seconds=11))
    assert "crash" in fuzz.judge("crash", "", "Traceback\nZeroDivisionError\n", **ok)
    assert "differs" in fuzz.judge(0, "", "", **dict(ok, expect="either", same=lambda: False))
    assert "refused an intact" in fuzz.judge(2, "", "error: shift\n", **dict(ok, expect="same"))


def test_exporter_checkpoint_corpus(exported, shipped, data_dir, tmp_path):
    """~30 damaged checkpoints, one a pickle payload that would create a file if unpickled."""
    fuzz.make_checkpoints(shipped, exported[4][0], tmp_path, seed=0)
    r = _driver("check-exporter", tmp_path, "--data-dir", data_dir)
    tried, passed = map(int, re.search(r"fuzz exporter: tried (\d+), passed (\d+)", r.stdout).groups())
    assert r.returncode == 0 and tried == passed >= 30, r.stdout[-3000:]
    assert not (tmp_path / "PAYLOAD-RAN").exists()
