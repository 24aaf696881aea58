"""The dataset file on disk, without torch: where it is, how it is laid out, how it is read.

This is the one definition of the dataset location and of the normalization constants.
`trainer.data` (torch) imports it, and the integer engine reads the test set through it,
so the engine never needs torch or torchvision.

Where the data comes from (first match wins):
  1. `--data-dir DIR` on the command line,
  2. the environment variable CIFAR10_DIR,
  3. a cache folder, `$XDG_CACHE_HOME/lowbit-ptq/cifar10` (default `~/.cache/...`).

`cifar10.npz` layout: x_train (50000,32,32,3) uint8 HWC RGB, y_train (50000,) uint8,
x_test (10000,32,32,3) uint8, y_test (10000,) uint8, classes (10,) str.

Any dataset in that layout is read the same way (SVHN, CIFAR-100, a user's own images): any
image count, any H x W with 1 to 4 channels (the same in both splits), integer labels below
the number of `classes` (CIFAR-10's names when the file has none and the labels fit 10).
`--data-dir` names its folder (holding `cifar10.npz`) or the `.npz` file itself.
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
SHAPES = {"x_train": (50000, 32, 32, 3), "y_train": (50000,),      # CIFAR-10's own
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
    """Read and validate a dataset in the cifar10.npz layout -> dict of numpy arrays, with
    `classes` (a tuple of names).  Raises DataError."""
    path = Path(path)
    keys = [f"{xy}_{s}" for s in ("train", "test") if s in splits for xy in "xy"]
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in keys}
            classes = f["classes"] if "classes" in f.files else None
    except Exception as e:  # truncated zips, bad headers, missing keys: all mean "not readable"
        raise DataError(f"{path} is not a readable dataset npz ({type(e).__name__}: {e}); "
                        f"delete it and rerun, or point --data-dir/{ENV_VAR} at a good copy") from None
    hwc = None
    for s in splits:
        x, y = arrays[f"x_{s}"], arrays[f"y_{s}"]
        if x.dtype != np.uint8 or x.ndim != 4 or not 1 <= x.shape[3] <= 4 or min(x.shape[1:3]) < 1 \
                or len(x) < 1:
            raise DataError(f"{path}: x_{s} has shape {x.shape} dtype {x.dtype}, expected (N, H, W, C) uint8 "
                            f"with 1 to 4 channels; the file is not in the cifar10.npz layout")
        if hwc is not None and x.shape[1:] != hwc:
            raise DataError(f"{path}: x_train is {hwc} per image and x_test {x.shape[1:]}; they must agree")
        hwc = x.shape[1:]
        if y.shape != (len(x),) or y.dtype.kind not in "iu" or y.min() < 0:
            raise DataError(f"{path}: y_{s} has shape {y.shape} dtype {y.dtype}, expected ({len(x)},) "
                            f"non-negative integers")
    top = max(int(arrays[f"y_{s}"].max()) for s in splits) + 1
    if classes is None:
        classes = CLASSES if top <= len(CLASSES) else tuple(str(i) for i in range(top))
    elif classes.ndim != 1 or classes.dtype.kind not in "US":
        raise DataError(f"{path}: classes must be a 1-D array of names, not {classes.dtype} {classes.shape}")
    arrays["classes"] = tuple(str(c) for c in classes)
    if top > len(arrays["classes"]):
        raise DataError(f"{path}: a label of {top - 1}, outside 0..{len(arrays['classes']) - 1} "
                        f"(the file names {len(arrays['classes'])} classes)")
    return arrays


def npz_path(data_dir=None):
    """The dataset file to read (the folder's cifar10.npz, or an .npz named directly), or a
    DataError that says where we looked."""
    root = resolve_data_dir(data_dir)
    if root.suffix == ".npz" and not root.is_dir():
        return root
    if root.exists() and not root.is_dir():
        raise DataError(f"{root} is a file, not a folder or an .npz; pass the folder that holds {NPZ_NAME}")
    return root / NPZ_NAME


def load_test(data_dir=None):
    """The test split as (images (N,H,W,C) uint8 NHWC, labels (N,))."""
    path = npz_path(data_dir)
    if not path.is_file():
        raise DataError(f"no {path.name} in {path.parent} {missing_hint(data_dir)} "
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
