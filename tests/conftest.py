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
