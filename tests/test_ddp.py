import os
import socket
import subprocess
import sys

import torch

from conftest import ROOT
from trainer.train import batch_slice


def test_ranks_split_each_global_batch_into_disjoint_parts():
    for world in (1, 2, 4):
        seen = []
        for step in range(3):
            parts = [range(1000)[batch_slice(step, r, 64, world)] for r in range(world)]
            assert all(len(p) == 64 // world for p in parts)
            seen += [i for p in parts for i in p]
        assert seen == list(range(3 * 64))        # complete and disjoint, in order


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_ranks_on_gloo_hold_identical_weights(tmp_path, data_dir):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(ROOT / "tests" / "ddp_worker.py"), str(tmp_path), data_dir]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "resnet20.pt", weights_only=True)
    assert init["epoch"] == 2 and len(init["metrics"]) == 2
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # the ranks trained: the weights moved away from a fresh model's
    torch.manual_seed(0)
    from trainer.model import build
    fresh = build().state_dict()
    assert not torch.equal(fresh["conv1.weight"], r0["conv1.weight"])
