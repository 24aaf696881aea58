"""The input table of eq. (5): LUT[c, pixel] for every channel and byte at point 0's scale."""
import numpy as np
import torch

from ..quantize import rnd


def integers(p, mean, std):
    """eq. (5) for the normalization (mean, std) of the model's input, on a 0..1 scale."""
    x = (np.arange(256)[None, :] / 255.0 - np.array(mean)[:, None]) / np.array(std)[:, None]
    return np.clip(rnd(x / p["scale"]) + p["zp"], 0, (1 << p["bits"]) - 1).astype(np.int64)


def exact(lut, images):
    """The images' point 0 as a torch int64 tensor, NHWC."""
    x = torch.as_tensor(np.asarray(images)).long()
    lut = torch.as_tensor(lut).long()
    return lut[torch.arange(lut.shape[0]), x]
