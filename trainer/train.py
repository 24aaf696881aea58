"""Training loop for the CIFAR-10 networks (trainer/model.py): one process, or many under torchrun (DDP).

What a run writes, in `out_dir`:
  ARCH.pt             checkpoint, rewritten atomically after every epoch (see checkpoint.py)
  ARCH.log.jsonl      one JSON object per epoch: losses, accuracies, lr, time, images/s

Determinism: the data order and augmentation of epoch e come from a generator seeded
with (seed, e) alone, and the model, optimizer and scheduler states are in the
checkpoint, so a run stopped anywhere and resumed from its last checkpoint produces
the same weights as an uninterrupted run (on the same device and thread count).
"""
import dataclasses
import functools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from . import checkpoint, data, evaluate
from .model import build


@dataclass
class Config:
    # model and data
    model: str = "resnet20"
    limit: int | None = None          # train on a seeded random subset of this size (None: all 50k)
    test_limit: int | None = None     # evaluate each epoch on a seeded subset (None: all 10k)
    # optimization
    epochs: int = 180
    batch_size: int = 256             # global batch; split evenly across DDP ranks
    lr: float = 0.2                   # peak learning rate
    schedule: str = "cosine"          # cosine | step | constant, after a linear warmup
    warmup_epochs: float = 5.0
    weight_decay: float = 5e-4        # on conv and linear weights only, not BN or biases
    momentum: float = 0.9
    nesterov: bool = True
    label_smoothing: float = 0.1
    # system
    seed: int = 0
    device: str = "auto"              # auto: cuda if present, else cpu
    precision: str = "auto"           # bf16 autocast | fp32 | auto: bf16 on CUDA and on CPUs with
                                      # native bf16 (AMX or AVX512-BF16), else fp32 (emulated bf16
                                      # is ~3x slower than fp32)
    channels_last: bool = True
    out_dir: str = "checkpoints"
    name: str = "resnet20"


SCHEDULES = ("cosine", "step", "constant")
PRECISIONS = ("auto", "bf16", "fp32")


def lr_factor(cfg, steps_per_epoch):
    """Multiplier of cfg.lr at optimizer step s (0-based): linear warmup, then the schedule."""
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    total = cfg.epochs * steps_per_epoch

    def f(step):
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        if cfg.schedule == "step":                   # He et al.: /10 at 50% and 75%
            return 0.1 ** ((t >= 0.5) + (t >= 0.75))
        return 1.0
    return f


def resolve_device(name):
    """'auto' -> cuda if present, else cpu.  Raises ValueError for unknown or absent devices."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for, but CUDA is not available here")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r} is not supported; use auto, cpu, cuda or cuda:N")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} does not exist: {torch.cuda.device_count()} CUDA device(s) here")
    return device


def make_deterministic(device):
    """Same seed, same weights: on CUDA, pick deterministic cuDNN/cuBLAS kernels (and warn
    about any op that has none).  CPU kernels are deterministic for a fixed thread count."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        torch.use_deterministic_algorithms(True, warn_only=True)


def batch_slice(step, rank, batch_size, world):
    """Rows of the epoch's shuffled data that `rank` trains on at `step`: the global batch
    [step*B, (step+1)*B) split into `world` equal, disjoint parts."""
    local = batch_size // world
    lo = step * batch_size + rank * local
    return slice(lo, lo + local)


def cpu_has_native_bf16():
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision, device):
    if precision != "auto":
        return precision
    return "bf16" if device.type == "cuda" or cpu_has_native_bf16() else "fp32"


def make_optimizer(model, cfg):
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)


def epoch_generator(seed, epoch):
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def _dist_info():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(cfg, resume=False, data_dir=None, progress=True, log=functools.partial(print, flush=True)):
    """Train per `cfg`; return (model, history).  Under torchrun, call init_distributed first."""
    rank, world = _dist_info()
    if cfg.batch_size % world:
        raise ValueError(f"batch size {cfg.batch_size} is not divisible by {world} ranks")
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / f"{cfg.name}.pt"
    log_path = out_dir / f"{cfg.name}.log.jsonl"

    make_deterministic(device)
    torch.manual_seed(cfg.seed)
    model = build(cfg.model).to(device, memory_format=fmt)
    optimizer = make_optimizer(model, cfg)
    if world > 1 and rank != 0:
        dist.barrier()                         # rank 0 fetches (or downloads) the data first
    arrays = data.load_arrays(data_dir)
    train_set = data.load("train", limit=cfg.limit, seed=cfg.seed, arrays=arrays).to(device)
    test_set = data.load("test", limit=cfg.test_limit, seed=cfg.seed, arrays=arrays).to(device)
    del arrays
    if world > 1 and rank == 0:
        dist.barrier()
    steps = len(train_set) // cfg.batch_size
    if steps == 0:
        raise ValueError(f"{len(train_set)} training images are fewer than one batch of {cfg.batch_size}")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, steps))

    start_epoch, history = 0, []
    if resume and ckpt_path.is_file():
        state = checkpoint.load(ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        start_epoch, history = state["epoch"], list(state["metrics"])
        if rank == 0:
            log(f"resumed from {ckpt_path} after epoch {start_epoch}"
                + (" (the run is complete)" if start_epoch >= cfg.epochs else ""))
    elif resume and rank == 0:
        log(f"no checkpoint at {ckpt_path}; starting from scratch")
    if rank == 0:                              # the log is the checkpoint's metrics, then one row per epoch
        write_log(log_path, history)

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.label_smoothing)
    precision = resolve_precision(cfg.precision, device)
    autocast = dict(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        g = epoch_generator(cfg.seed, epoch)
        perm = torch.randperm(len(train_set), generator=g).to(device)
        images = data.augment(train_set.images[perm], g)   # the whole epoch, augmented at once
        labels = train_set.labels[perm]
        net.train()
        sums = torch.zeros(3, device=device, dtype=torch.float64)   # loss*n, correct, n
        bar = _progress(steps, epoch, cfg.epochs, progress and rank == 0)
        for step in range(steps):
            rows = batch_slice(step, rank, cfg.batch_size, world)
            x = data.normalize(images[rows], fmt)
            y = labels[rows]
            with torch.autocast(**autocast):
                out = net(x)
                loss = criterion(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            lr = optimizer.param_groups[0]["lr"]
            scheduler.step()
            with torch.no_grad():
                sums += torch.stack([loss.detach().double() * len(y),
                                     (out.argmax(1) == y).sum().double(),
                                     torch.tensor(float(len(y)), device=device, dtype=torch.float64)])
            if bar is not None and (step % 10 == 9 or step == steps - 1):
                s = sums.tolist()
                bar.set_postfix(loss=f"{s[0] / s[2]:.3f}", acc=f"{s[1] / s[2]:.3f}",
                                img_s=f"{s[2] * world / (time.perf_counter() - t0):.0f}")
                bar.update(step + 1 - bar.n)
        if bar is not None:
            bar.close()
        if world > 1:
            dist.all_reduce(sums)
            average_bn_statistics(model, world)
        train_seconds = time.perf_counter() - t0
        test_loss, test_acc, _ = evaluate.evaluate(model, test_set, device=device,
                                                   precision=precision, memory_format=fmt)
        s = sums.tolist()
        row = {"epoch": epoch + 1, "train_loss": s[0] / s[2], "train_acc": s[1] / s[2],
               "test_loss": test_loss, "test_acc": test_acc, "lr": lr,
               "seconds": time.perf_counter() - t0, "images_per_s": s[2] / train_seconds,
               "precision": precision}
        history.append(row)
        if rank == 0:
            checkpoint.save(ckpt_path, model=model, optimizer=optimizer, scheduler=scheduler,
                            epoch=epoch + 1, metrics=history,
                            config={**dataclasses.asdict(cfg), "precision": precision})
            with open(log_path, "a") as f:    # a row lost to a crash here is rewritten on resume
                f.write(json.dumps(row) + "\n")
            log(f"epoch {epoch + 1}/{cfg.epochs}  train loss {row['train_loss']:.4f} "
                f"acc {row['train_acc']:.4f} | test loss {test_loss:.4f} acc {test_acc:.4f} | "
                f"lr {row['lr']:.4f} | {row['seconds']:.1f}s {row['images_per_s']:.0f} img/s")
        if world > 1:
            dist.barrier()
    return model, history


def write_log(path, history):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in history))
    os.replace(tmp, path)


def average_bn_statistics(model, world):
    """DDP keeps parameters in sync but each rank's BN running statistics follow its own
    batches; average them so that every rank evaluates and saves the same model."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf /= world


def _progress(total, epoch, epochs, enabled):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="step",
                leave=False, file=sys.stderr, dynamic_ncols=True)


def init_distributed(device="auto"):
    """Join the torchrun process group if launched by torchrun; return (rank, world).

    The backend follows the training device: NCCL for CUDA, gloo for the CPU."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if resolve_device(device).type == "cuda" else "gloo")
    return _dist_info()
