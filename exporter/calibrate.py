"""Activation ranges from calibration images, docs/quantization.md section 3 (`minmax`).

The float, BN-folded graph runs in float64 on N unlabeled training images, a seeded random
sample with no augmentation. The smallest and largest value seen at each point are kept.
"""
import hashlib

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from intengine.cifar10 import MEAN, STD, seeded_subset
from .simulate import forward


def calibration_images(train_images, n, seed):
    """(images (n,32,32,3) uint8, indices, sha256 of the int64 indices)."""
    if not 1 <= n <= len(train_images):
        raise ValueError(f"--calib-images must be in [1, {len(train_images)}], got {n}")
    idx = seeded_subset(len(train_images), n, seed)
    return train_images[idx], idx, hashlib.sha256(idx.astype("<i8").tobytes()).hexdigest()


def normalize64(images, norm=None):
    """uint8 NHWC -> float64 NCHW, (p/255 - mean) / std per channel; norm {"mean", "std"}
    (source.Source.norm), CIFAR-10's when None."""
    mean, std = (norm["mean"], norm["std"]) if norm else (MEAN, STD)
    x = torch.as_tensor(np.asarray(images)).permute(0, 3, 1, 2).double() / 255.0
    return (x - torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)) / \
        torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)


@torch.no_grad()
def minmax(ops, n_points, images, batch_size=128, progress=True, norm=None):
    """-> (lo, hi) float arrays over the points, from the float graph on `images`."""
    lo = np.full(n_points, np.inf)
    hi = np.full(n_points, -np.inf)

    def observe(i, t):
        lo[i] = min(lo[i], float(t.min()))
        hi[i] = max(hi[i], float(t.max()))
        return t

    for s in tqdm(range(0, len(images), batch_size), desc="calibrating", unit="batch",
                  disable=not progress, leave=False):
        forward(ops, normalize64(images[s:s + batch_size], norm), observe)
    return lo, hi


@torch.no_grad()
def mse_ranges(ops, widths, images, lo, hi, batch_size=128, sample=200_000, grid=50, seed=0, norm=None):
    """Below 8 bits, shrink each point's min/max range by the factor a in (0, 1] (a grid of
    `grid`) that minimises the squared error of eq. (1)+(4) over the point's values on
    `images` (a seeded sample of at most `sample` values per point); points of 8 bits or
    more keep min/max (section 3).  A 2-bit point on its min/max range rounds nearly every
    value to 0.  a stays at least 2 (2^b - 1) / 255, so that the multiplier of a requant from
    an 8-bit point (eq. 17a) is at most 1/2.  -> (lo, hi) copies."""
    from .quantize import act_qparams
    low = [i for i, b in enumerate(widths) if b < 8]
    lo, hi = np.array(lo, np.float64), np.array(hi, np.float64)
    if not low:
        return lo, hi
    gen = torch.Generator().manual_seed(seed)
    seen = {i: [] for i in low}

    def observe(i, t):
        if i in seen:
            v = t.flatten()
            seen[i].append(v[torch.randint(0, v.numel(), (min(v.numel(), sample),), generator=gen)])
        return t

    for s in range(0, len(images), batch_size):
        forward(ops, normalize64(images[s:s + batch_size], norm), observe)
    for i in low:
        v = torch.cat(seen[i])
        v = v[torch.randint(0, v.numel(), (min(v.numel(), sample),), generator=gen)].numpy()
        qmax, best = (1 << widths[i]) - 1, None
        floor = 2 * qmax / 255            # keeps a requant from the 8-bit stream below 1/2 (eq. 17a)
        for a in [a for a in np.arange(1, grid + 1) / grid if a >= floor]:
            sc, z = act_qparams(lo[i] * a, hi[i] * a, widths[i])
            q = np.clip(np.floor(v / sc + 0.5) + z, 0, qmax)
            err = float(((v - (q - z) * sc) ** 2).mean())
            if best is None or err < best[0]:
                best = (err, a)
        lo[i], hi[i] = lo[i] * best[1], hi[i] * best[1]
    return lo, hi


@torch.no_grad()
def bias_shift(ops, images, dequant, batch_size=64, norm=None):
    """Empirical bias correction: E[(W - W_q) x] per output channel of every weighted op,
    over the calibration images, with x the float input of that op (section 2)."""
    sums, count = {}, {}
    for s in range(0, len(images), batch_size):
        seen = {}
        forward(ops, normalize64(images[s:s + batch_size], norm), lambda i, t: seen.setdefault(i, t))
        for op in ops:
            if op["name"] not in dequant:
                continue
            dw = op["weight"] - dequant[op["name"]]
            x = seen[op["in"]]
            y = F.conv2d(x, dw, None, op["stride"], (op["ph"], op["pw"]), 1, op["groups"]) if op["op"] == "conv" else F.linear(x, dw)
            dims = (0, 2, 3) if y.dim() == 4 else (0,)
            sums[op["name"]] = sums.get(op["name"], 0) + y.sum(dims)
            count[op["name"]] = count.get(op["name"], 0) + y.numel() // y.shape[1]
    return {k: (v / count[k]).numpy() for k, v in sums.items()}


HELDOUT_SEED = 10_000


def heldout_indices(n_train, n=5000, calib_images=1024, calib_seeds=(0, 1, 2)):
    """Training-image indices for choosing hyperparameters: a seeded sample of `n` that
    shares no image with the calibration samples of `calib_seeds` (section 13)."""
    used = np.zeros(n_train, bool)
    for s in calib_seeds:
        used[seeded_subset(n_train, calib_images, s)] = True
    free = np.flatnonzero(~used)
    return np.sort(free[np.random.default_rng(HELDOUT_SEED).choice(len(free), n, replace=False)])
