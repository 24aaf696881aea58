"""Trainer checkpoints: one dict of plain types and tensors, safe for weights_only=True.

Keys:
  format, version   "lowbit-ptq/trainer-checkpoint", 1
  model             state_dict of the ResNet20 (float32)
  optimizer         SGD state_dict (momentum buffers)
  scheduler         LambdaLR state_dict
  epoch             epochs completed
  config            the resolved trainer Config as a dict (the model is rebuilt from it)
  metrics           list of per-epoch dicts, as in the .log.jsonl
  normalization     {"mean": [3 floats], "std": [3 floats]}, inputs on a 0..1 scale
  rng               torch / numpy / python (/ cuda) generator states
  versions          torch and python versions that wrote it
"""
import os
import pickle
import platform
import random
import zipfile
from pathlib import Path

import numpy as np
import torch

from intengine.fileformat import FILE_TYPES, sniff
from . import data

# The shipped model: checkpoints/resnet20.pt in the source tree (or under the current folder).
_SHIPPED = [Path(__file__).resolve().parent.parent / "checkpoints" / "resnet20.pt",
            Path("checkpoints") / "resnet20.pt"]
DEFAULT_CHECKPOINT = next((p for p in _SHIPPED if p.is_file()), _SHIPPED[0])

FORMAT = "lowbit-ptq/trainer-checkpoint"
VERSION = 1
MAX_BYTES = 256 << 20              # uncompressed; the shipped checkpoint holds 2.2 MB


class CheckpointError(Exception):
    """The checkpoint is missing, unreadable or not ours."""


def get_rng_state():
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
             "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()       # the current device's generator
    return state


def set_rng_state(state):
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save(path, *, model, optimizer, scheduler, epoch, config, metrics):
    """Write atomically: a temporary file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"format": FORMAT, "version": VERSION,
             "model": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
             "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "config": dict(config), "metrics": list(metrics),
             "normalization": {"mean": list(data.MEAN), "std": list(data.STD)},
             "rng": get_rng_state(),
             "versions": {"torch": str(torch.__version__), "python": platform.python_version()}}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())                  # on disk before it replaces the last good one
    os.replace(tmp, path)


def read_file(path):
    """torch.load(path, weights_only=True), after finding out what the file is, so that each
    kind of bad file gets its own one-line CheckpointError (never a pickle that runs code)."""
    path = Path(path)
    kind = sniff(path)
    if kind == "missing":
        raise CheckpointError(f"no checkpoint at {path}; train one with `python -m trainer` "
                              f"or pass --checkpoint")
    if kind == "model":
        raise CheckpointError(f"{path} is an integer model file written by the exporter, not a "
                              f"PyTorch checkpoint; run it with `python -m intengine eval {path}`")
    if kind not in ("pytorch", "pickle"):
        raise CheckpointError(f"{path}: {FILE_TYPES[kind]}, not a PyTorch checkpoint")
    if kind == "pytorch":               # torch.load does not check the zip CRCs; a flipped bit would load
        try:
            with zipfile.ZipFile(path) as z:
                size = sum(i.file_size for i in z.infolist())
                if size > MAX_BYTES:                # a zip bomb would take minutes to check
                    raise CheckpointError(f"{path} declares {size:,} bytes uncompressed, more than "
                                          f"{MAX_BYTES:,}; not a trainer checkpoint")
                bad = z.testzip()
        except CheckpointError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path} is a damaged zip archive ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''})") from None
        if bad:
            raise CheckpointError(f"{path} is damaged: member {bad} fails its CRC check "
                                  f"(corrupted or modified after it was saved)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():      # a truncated pickle, not a refused one
            raise CheckpointError(f"{path} is truncated or damaged ({str(e).splitlines()[0][:160]})") from None
        why = next((line.strip().rstrip(".") for line in str(e).splitlines()
                    if "unsupported" in line.lower()), "")
        raise CheckpointError(f"{path} holds Python objects other than tensors and plain values"
                              f"{' (' + why + ')' if why else ''}; refused, loading them could run "
                              f"code") from None
    except Exception as e:  # torch raises several types for truncated or damaged files
        msg = str(e).splitlines()[0] if str(e) else ""
        raise CheckpointError(f"{path} is truncated or damaged ({type(e).__name__}"
                              f"{': ' + msg[:160] if msg else ''})") from None


def load(path):
    """Load with weights_only=True and check it is one of ours.  Raises CheckpointError."""
    path = Path(path)
    state = read_file(path)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file")
    if state.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {state.get('version')}, "
                              f"this trainer reads version {VERSION}; retrain with `python -m trainer`")
    return state
