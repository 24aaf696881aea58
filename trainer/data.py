"""CIFAR-10 as whole uint8 tensors, and batched augmentation on tensors.

It is not a torch Dataset: the whole set is 50,000 + 10,000 images of 3x32x32 bytes
(184 MB), so it is kept in memory and batches are sliced out of it, as in
cifar10-airbench.  The dataset location, the `cifar10.npz` layout and the normalization
constants are defined once, torch-free, in `intengine/cifar10.py`.  If the chosen folder
holds no `cifar10.npz`, torchvision downloads CIFAR-10 into it, and `cifar10.npz` is
written beside the download so that the torch-free integer engine can read the test set.
"""
import os

import numpy as np
import torch
import torch.nn.functional as F

# The torch-free half (location, layout, constants) lives with the engine, which must
# read the test set without torch.
from intengine.cifar10 import (CLASSES, ENV_VAR, MEAN, NPZ_NAME, SHAPES as _SHAPES, STD,  # noqa: F401
                               DataError, missing_hint, npz_path, read_npz, resolve_data_dir, seeded_subset)


def _download(root, hint):
    """Fetch with torchvision, then write cifar10.npz beside the download (atomically)."""
    from torchvision.datasets import CIFAR10
    try:
        root.mkdir(parents=True, exist_ok=True)
        train = CIFAR10(str(root), train=True, download=True)
        test = CIFAR10(str(root), train=False, download=True)
    except Exception as e:  # network errors come in many types
        raise DataError(f"no {NPZ_NAME} in {root} {hint}, and the torchvision download failed "
                        f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    arrays = {"x_train": np.asarray(train.data, np.uint8), "y_train": np.asarray(train.targets, np.uint8),
              "x_test": np.asarray(test.data, np.uint8), "y_test": np.asarray(test.targets, np.uint8),
              "classes": np.array(CLASSES)}
    tmp = root / f"{NPZ_NAME}.{os.getpid()}.tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, root / NPZ_NAME)
    return {**arrays, "classes": CLASSES}


def load_arrays(data_dir=None, download=True):
    """The dataset as numpy arrays (HWC uint8) and its classes, from cifar10.npz (or any .npz
    in its layout, intengine/cifar10.py) or, for CIFAR-10, torchvision."""
    npz = npz_path(data_dir)
    root = npz.parent
    if npz.is_file():
        return read_npz(npz)
    if npz.name != NPZ_NAME:
        raise DataError(f"no dataset file {npz}")
    if not download:
        raise DataError(f"no {NPZ_NAME} in {root} {missing_hint(data_dir)}")
    return _download(root, missing_hint(data_dir))


class Cifar10:
    """The whole split as tensors: images (N,3,32,32) uint8 NCHW, labels (N,) int64."""

    def __init__(self, images, labels):
        self.images = images
        self.labels = labels

    def __len__(self):
        return len(self.labels)

    def to(self, device):
        return Cifar10(self.images.to(device), self.labels.to(device))


def load(split, data_dir=None, limit=None, seed=0, arrays=None):
    """Load 'train' or 'test' as a Cifar10 of tensors, optionally a seeded subset.
    `arrays` (from load_arrays) saves reading the file again for the second split."""
    arrays = load_arrays(data_dir) if arrays is None else arrays
    x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
    idx = seeded_subset(len(y), limit, seed)
    images = torch.from_numpy(np.ascontiguousarray(x[idx].transpose(0, 3, 1, 2)))
    labels = torch.from_numpy(y[idx].astype(np.int64))
    return Cifar10(images, labels)


def normalize(images, memory_format=torch.contiguous_format, norm=None):
    """uint8 (N,C,H,W) -> float32 ((x/255 - mean) / std), in the given memory format; norm
    {"mean", "std"} per channel (the exporter's source.Source.norm), CIFAR-10's when None."""
    mean, std = (norm["mean"], norm["std"]) if norm else (MEAN, STD)
    mean = torch.tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    x = (images.float() - mean) / std
    return x.contiguous(memory_format=memory_format)


def augment(images, generator, pad=4):
    """Random crop with `pad` zero pixels each side, then random horizontal flip.

    images: (N,C,H,W) uint8 on any device.  All randomness comes from `generator`
    (a CPU torch.Generator), so the result is a function of its seed alone.
    """
    n, c, h, w = images.shape
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = dy[:, None] + torch.arange(h, device=images.device)          # (N,H)
    cols = dx[:, None] + torch.arange(w, device=images.device)          # (N,W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)               # flip = reversed columns
    n_idx = torch.arange(n, device=images.device)[:, None, None]
    out = padded[n_idx, :, rows[:, :, None], cols[:, None, :]]          # (N,H,W,C)
    return out.permute(0, 3, 1, 2).contiguous()
