"""Run by tests/test_ddp.py under `torchrun --nproc_per_node 2`: train a few steps with
DistributedDataParallel on gloo, then save this rank's weights as OUT/rank{R}.pt."""
import sys
from pathlib import Path

import torch

from trainer.train import Config, init_distributed, train

if __name__ == "__main__":
    out, data_dir = Path(sys.argv[1]), sys.argv[2]
    torch.set_num_threads(1)
    rank, world = init_distributed("cpu")
    assert world == 2, world
    cfg = Config(limit=256, test_limit=100, batch_size=64, epochs=2, warmup_epochs=0.5,
                 device="cpu", precision="fp32", out_dir=str(out))
    model, _ = train(cfg, data_dir=data_dir, progress=False, log=lambda *a: None)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
