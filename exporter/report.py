"""What the report scripts share (scripts/*.py): progress lines, the machine description,
atomic writes, the generated sections of the README, predictions with progress, timing in
interleaved rounds, and the verified cache of the committed files' evaluations.

A generated section is the text between `<!-- NAME:start -->` and `<!-- NAME:end -->`; only
a script's --publish option rewrites it.
"""
import hashlib
import os
import platform
import time
from pathlib import Path

import click
import numpy as np

from intengine import __version__ as ENGINE_VERSION, cpu

BATCH = 256


class Progress:
    """One line per stage on stderr, with the time since the command started (the first
    Progress of the process), so that every stage of a run reads on one clock."""
    started = None

    def __init__(self):
        if Progress.started is None:
            Progress.started = time.perf_counter()
        self.t0 = Progress.started

    def __call__(self, msg):
        click.echo(f"[{time.perf_counter() - self.t0:7.1f} s] {msg}", err=True)


def versions(*modules):
    """{module: version or None} for python and the named modules."""
    out = {"python": platform.python_version()}
    for mod in modules:
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            out[mod] = None
    return out


def machine(**extra):
    """The processor (its model name and LLVM's name for it), cores, the flags that pick the
    engine's kernels, and the load average now; `extra` is added as is."""
    f = cpu.host_features()
    return {"cpu": cpu.processor_name(), "llvm_cpu": cpu.llvm_cpu_name(), "cores": os.cpu_count(),
            "flags": {k: bool(f.get(k)) for k in ("avx512vnni", "avxvnni", "amx-int8", "avx512bw", "avx2")},
            "load_average": list(os.getloadavg()), **extra}


def fp32_logits(model, images, norm=None, batch=500):
    """A float model's logits (float64, N x C) on uint8 NHWC images, normalized as the trainer
    normalizes them (torchao.normalize; norm: a Source's, else CIFAR-10's), in batches."""
    import torch
    from .torchao import normalize
    with torch.no_grad():
        return np.concatenate([model(normalize(images[s:s + batch], norm)).double().numpy()
                               for s in range(0, len(images), batch)])


def heldout(data_dir=None):
    """The held-out training images for choosing hyperparameters (calibrate.heldout_indices,
    docs/quantization.md section 13) and their labels (int64)."""
    from trainer import data
    from .calibrate import heldout_indices
    arr = data.load_arrays(data_dir)
    idx = heldout_indices(len(arr["x_train"]))
    return arr["x_train"][idx], np.asarray(arr["y_train"][idx]).astype(np.int64)


def write_atomic(path, data):
    """Write bytes or text to path through a temporary file, so no half-written file is left."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    (tmp.write_bytes if isinstance(data, bytes) else tmp.write_text)(data)
    os.replace(tmp, path)


def fill_section(path, name, text):
    """Replace the generated section `name` of the file at path with text; False if it has none."""
    path = Path(path)
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    body = path.read_text() if path.is_file() else ""
    if start not in body or end not in body:
        return False
    head, rest = body.split(start, 1)
    write_atomic(path, head + start + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])
    return True


def predict(fn, images, say=None, label="", every=10.0):
    """Class predictions of fn(uint8 NHWC batch) -> logits, at batch 256 (not timed); with
    `say`, a progress line at least every `every` seconds."""
    out, t0, last = [], time.perf_counter(), time.perf_counter()
    for s in range(0, len(images), BATCH):
        out.append(np.asarray(fn(images[s:s + BATCH])).argmax(1))
        if say is not None and time.perf_counter() - last > every and s + BATCH < len(images):
            last = time.perf_counter()
            say(f"{label}: {s + BATCH:,} of {len(images):,} images, {last - t0:.0f} s")
    return np.concatenate(out)


def interleaved_speed(fns, images, rounds, ref, say):
    """images/s of every contender, timed in the same block: `rounds` rounds, each running
    every contender once over `images` at batch 256, in an order that rotates each round.
    Returns {name: {median, min, max, ratio (median of the per-round ratios to `ref`), rounds}}."""
    names = list(fns)
    for name in names:                               # warm-up: JIT, caches, thread pools
        fns[name](images[:BATCH])
    seen = {n: [] for n in names}
    for k in range(rounds):
        for name in names[k % len(names):] + names[:k % len(names)]:
            t0 = time.perf_counter()
            for s in range(0, len(images), BATCH):
                fns[name](images[s:s + BATCH])
            seen[name].append(len(images) / (time.perf_counter() - t0))
        say(f"speed round {k + 1} of {rounds}: {ref} {seen[ref][-1]:.0f} images/s")
    return {n: {"median": float(np.median(v)), "min": float(min(v)), "max": float(max(v)),
                "ratio": float(np.median(np.array(v) / np.array(seen[ref]))), "rounds": v}
            for n, v in seen.items()}


def digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def user_cache(name):
    """A file in this tool's cache folder ($XDG_CACHE_HOME/lowbit-ptq, default ~/.cache/...)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lowbit-ptq" / name


class EvalCache:
    """The engine's predictions on a test set for model files (committed, or exported afresh),
    kept in .npz files by (file content digest, engine version, test-set digest): the committed
    one (`path`, written with --publish) and the user's (`local`, written after every run that
    evaluated something).  A fresh export whose bytes match a cached file's is that file.
    The engine's integers are the same on every processor, so a file's predictions are a fact
    about the file; each run still checks a seeded sample of `check` images of every cached
    file against the engine before it trusts the rest, and evaluates in full whatever is
    missing or disagrees."""

    def __init__(self, path, images, labels, check=256, local=None):
        self.path, self.local, self.images, self.check = Path(path), local, images, check
        self.test = digest(images, labels)
        self.entries, self.changed = {}, False
        for p in (self.path, self.local):
            try:
                with np.load(p, allow_pickle=False) as f:
                    for i, key in enumerate(f["keys"]):
                        self.entries[str(key)] = f[f"p{i}"].astype(np.int64)
            except Exception:        # absent or unreadable: evaluate again (the check covers wrong ones)
                continue

    def key(self, file_sha256):
        return f"{file_sha256}:{ENGINE_VERSION}:{self.test}"

    def predictions(self, model, say, label):
        """-> (predictions on every image, how: 'cached, N checked' or 'evaluated')."""
        key = self.key(model.header["content_sha256"])
        pred = self.entries.get(key)
        if pred is not None and len(pred) == len(self.images):
            idx = np.sort(np.random.default_rng(0).choice(len(pred), min(self.check, len(pred)), replace=False))
            if np.array_equal(predict(model.run, self.images[idx]), pred[idx]):
                return pred, f"cached evaluation, {len(idx)} images checked again"
            say(f"{label}: the cached predictions disagree with the engine; evaluating in full")
        pred = predict(model.run, self.images, say, label)
        self.entries[key], self.changed = pred, True
        return pred, "evaluated"

    def save(self, path=None):
        """Write every entry to `path` (default: the user's cache file), atomically."""
        path = Path(path or self.local)
        path.parent.mkdir(parents=True, exist_ok=True)
        keys = sorted(self.entries)
        buf = path.with_name(path.name + ".tmp.npz")
        np.savez_compressed(buf, keys=np.array(keys),
                            **{f"p{i}": self.entries[k].astype(np.int16) for i, k in enumerate(keys)})
        os.replace(buf, path)
