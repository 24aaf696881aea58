"""The CIFAR-10 file on disk, without torch: where it is, how it is laid out, how it is read.

This is the one definition of the dataset location and of the normalization constants.
`trainer.data` (torch) imports it, and the integer engine reads the test set through it,
so the engine never needs torch or torchvision.

Where the data comes from (first match wins):
  1. `--data-dir DIR` on the command line,
  2. the environment variable CIFAR10_DIR,
  3. a cache folder, `$XDG_CACHE_HOME/lowbit-ptq/cifar10` (default `~/.cache/...`).

`cifar10.npz` layout: x_train (50000,32,32,3) uint8 HWC RGB, y_train (50000,) uint8,
x_test (10000,32,32,3) uint8, y_test (10000,) uint8, classes (10,) str.
"""
import os
from pathlib import Path

import numpy as np

# Per-channel mean and std of the CIFAR-10 training set, on a 0..1 scale.  They are
# saved in every checkpoint and written into every exported file.
MEAN = (0.49139968, 0.48215841, 0.44653091)
STD = (0.24703223, 0.24348513, 0.26158784)

CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
           "dog", "frog", "horse", "ship", "truck")
NPZ_NAME = "cifar10.npz"
ENV_VAR = "CIFAR10_DIR"
SHAPES = {"x_train": (50000, 32, 32, 3), "y_train": (50000,),
          "x_test": (10000, 32, 32, 3), "y_test": (10000,)}


class DataError(Exception):
    """The dataset is missing or unreadable; the message says where we looked."""


def resolve_data_dir(data_dir=None):
    """--data-dir, else $CIFAR10_DIR, else the cache folder."""
    if data_dir:
        return Path(data_dir).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "lowbit-ptq" / "cifar10"


def missing_hint(data_dir=None):
    """Where the folder came from and what to do, for 'no cifar10.npz in DIR' messages."""
    if data_dir:
        return "(the folder given by --data-dir); point --data-dir at the folder that holds it"
    if os.environ.get(ENV_VAR):
        return f"(the folder ${ENV_VAR} names); set {ENV_VAR} to the folder that holds it"
    return f"(the default cache folder); pass --data-dir or set {ENV_VAR}"


def read_npz(path, splits=("train", "test")):
    """Read and validate cifar10.npz -> dict of numpy arrays.  Raises DataError."""
    path = Path(path)
    keys = [k for k in SHAPES if k.split("_")[1] in splits]
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in keys}
    except Exception as e:  # truncated zips, bad headers, missing keys: all mean "not readable"
        raise DataError(f"{path} is not a readable CIFAR-10 npz ({type(e).__name__}: {e}); "
                        f"delete it and rerun, or point --data-dir/{ENV_VAR} at a good copy") from None
    for key in keys:
        a, shape = arrays[key], SHAPES[key]
        if a.shape != shape or a.dtype != np.uint8:
            raise DataError(f"{path}: {key} has shape {a.shape} dtype {a.dtype}, "
                            f"expected {shape} uint8; the file is not CIFAR-10 in the expected layout")
        if key.startswith("y_") and a.max() > 9:
            raise DataError(f"{path}: labels outside 0..9 in {key}")
    return arrays


def npz_path(data_dir=None):
    """The cifar10.npz to read, or a DataError that says where we looked."""
    root = resolve_data_dir(data_dir)
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a folder; pass the folder that holds {NPZ_NAME}")
    return root / NPZ_NAME


def load_test(data_dir=None):
    """The test split as (images (10000,32,32,3) uint8 NHWC, labels (10000,) uint8)."""
    path = npz_path(data_dir)
    if not path.is_file():
        raise DataError(f"no {NPZ_NAME} in {path.parent} {missing_hint(data_dir)} "
                        f"(`python -m trainer eval` downloads it with torchvision when online)")
    arrays = read_npz(path, splits=("test",))
    return arrays["x_test"], arrays["y_test"]


def seeded_subset(n, limit, seed):
    """Indices of a seeded random subset of range(n) (never the first `limit`), sorted."""
    if limit is None or limit >= n:
        return np.arange(n)
    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))
