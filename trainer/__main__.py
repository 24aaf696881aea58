"""`python -m trainer [OPTIONS]` trains; `python -m trainer eval` evaluates a checkpoint.

Multi-GPU or multi-process: `torchrun --nproc_per_node N -m trainer [OPTIONS]`.
"""
from intengine.cli import require_torch

require_torch("python -m trainer")

import dataclasses
import json
import signal
import threading
from pathlib import Path

import click
import torch

from intengine.cli import fail as _fail, run as run_cli

from . import checkpoint, data, evaluate as evaluate_mod
from .checkpoint import DEFAULT_CHECKPOINT
from .model import ARCHS
from .train import (PRECISIONS, SCHEDULES, Config, init_distributed, resolve_device,
                    resolve_precision, train)

_D = Config()




def train_options(f):
    opts = [
        click.option("--arch", "model", type=click.Choice(list(ARCHS)), default=_D.model, show_default=True,
                     help="The network; the checkpoint is OUT_DIR/ARCH.pt and records it."),
        click.option("--epochs", type=click.IntRange(1), default=_D.epochs, show_default=True),
        click.option("--batch-size", type=click.IntRange(1), default=_D.batch_size, show_default=True,
                     help="Global batch, split across DDP ranks."),
        click.option("--lr", type=click.FloatRange(0, min_open=True), default=_D.lr, show_default=True,
                     help="Peak learning rate."),
        click.option("--schedule", type=click.Choice(SCHEDULES), default=_D.schedule, show_default=True),
        click.option("--warmup-epochs", type=click.FloatRange(0), default=_D.warmup_epochs, show_default=True),
        click.option("--weight-decay", type=click.FloatRange(0), default=_D.weight_decay, show_default=True,
                     help="On conv and linear weights only."),
        click.option("--momentum", type=click.FloatRange(0, 1), default=_D.momentum, show_default=True),
        click.option("--nesterov/--no-nesterov", default=_D.nesterov, show_default=True),
        click.option("--label-smoothing", type=click.FloatRange(0, 1), default=_D.label_smoothing,
                     show_default=True),
        click.option("--seed", type=click.IntRange(0, 2**31 - 1), default=_D.seed, show_default=True),
        click.option("--device", default=_D.device, show_default=True, help="auto, cpu, cuda, cuda:1, ..."),
        click.option("--precision", type=click.Choice(PRECISIONS), default=_D.precision, show_default=True,
                     help="bf16 = autocast on CPU and CUDA; auto = bf16 where the hardware has it natively."),
        click.option("--channels-last/--no-channels-last", default=_D.channels_last, show_default=True),
        click.option("--out-dir", default=_D.out_dir, show_default=True, type=click.Path(file_okay=False)),
        click.option("--limit", type=click.IntRange(1), default=None,
                     help="Train on a seeded random subset of this many images."),
        click.option("--test-limit", type=click.IntRange(1), default=None,
                     help="Evaluate each epoch on a seeded random subset of the test set."),
        click.option("--resume", is_flag=True, help="Continue from OUT_DIR/ARCH.pt if it exists."),
        click.option("--overwrite", is_flag=True, help="Start afresh even if OUT_DIR/ARCH.pt exists."),
        click.option("--data-dir", default=None, help="Folder with cifar10.npz (else $CIFAR10_DIR, else a cache)."),
        click.option("--progress/--no-progress", default=True, help="Per-epoch progress bar."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


# Options that may change when a run is resumed: where it runs, and the autocast precision
# (a long run may move to a processor without native bf16; each epoch's row in the log
# records the precision it ran at).
_RESUMABLE = {"device", "out_dir", "precision"}


def run_train(resume, overwrite, data_dir, progress, **kw):
    cfg = Config(**kw, name=kw["model"])
    path = Path(cfg.out_dir) / f"{cfg.name}.pt"
    if path.is_file() and not (resume or overwrite):
        _fail(f"{path} exists; pass --resume to continue that run, --overwrite to replace it, "
              f"or --out-dir for a new one")
    if resume and path.is_file():
        saved = checkpoint.load(path)["config"]
        fields = {f.name for f in dataclasses.fields(Config)}
        if set(saved) - fields:
            _fail(f"{path} was written by another trainer version (config keys "
                  f"{sorted(set(saved) - fields)}); resume it with that version")
        # The run continues with the config it started with.  Options given on the command
        # line must agree with it (or be about where it runs).
        ctx = click.get_current_context()
        for key, value in kw.items():
            given = ctx.get_parameter_source(key) == click.core.ParameterSource.COMMANDLINE
            if given and key not in _RESUMABLE and key in saved and saved[key] != value:
                _fail(f"--{key.replace('_', '-')} {value} differs from the resumed run's {saved[key]}; "
                      f"a resumed run keeps its config (start a new run with --out-dir to change it)")
        keep = {"device": cfg.device, "out_dir": cfg.out_dir}
        if ctx.get_parameter_source("precision") == click.core.ParameterSource.COMMANDLINE:
            keep["precision"] = cfg.precision
        cfg = Config(**{**saved, **keep})
    elif cfg.warmup_epochs > cfg.epochs / 2:
        # A warmup as long as the run never reaches the peak learning rate: cap the default
        # at half the run, and warn about an explicit one.
        ctx = click.get_current_context()
        if ctx.get_parameter_source("warmup_epochs") == click.core.ParameterSource.COMMANDLINE:
            click.echo(f"warning: --warmup-epochs {cfg.warmup_epochs:g} is more than half of --epochs "
                       f"{cfg.epochs}; the peak learning rate is reached late or never", err=True)
        else:
            click.echo(f"note: warmup capped at {cfg.epochs / 2:g} epochs (half of --epochs {cfg.epochs}) "
                       f"so the run reaches its peak learning rate; --warmup-epochs sets it", err=True)
            cfg.warmup_epochs = cfg.epochs / 2
    try:
        cfg.precision = resolve_precision(cfg.precision, resolve_device(cfg.device))
        rank, _ = init_distributed(cfg.device)
    except RuntimeError as e:
        _fail(str(e))
    if rank == 0:
        click.echo("config " + json.dumps(dataclasses.asdict(cfg)))
    before = path.stat().st_mtime_ns if path.is_file() else None
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, _interrupt) if main_thread else None
    try:
        train(cfg, resume=resume, data_dir=data_dir, progress=progress)
    except KeyboardInterrupt:
        if not path.is_file() or (not resume and path.stat().st_mtime_ns == before):
            _fail("interrupted before the first epoch finished; no checkpoint was written, "
                  "so rerun the same command to start again")
        done = checkpoint.load(path)["epoch"]
        _fail(f"interrupted; {path} holds epoch {done} of {cfg.epochs}: rerun the same command "
              f"with --resume to continue from there")
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during training, raised by our SIGINT handler.  A subclass: CPython sets its
    "unhandled KeyboardInterrupt" flag when exactly KeyboardInterrupt leaves code run through
    PyRun_String, and then ends the process with SIGINT (status -2) even after the interrupt
    was handled here.  This was seen once in CI (one line printed, status -2); with the
    subclass the one-line error keeps its exit status 2."""


def _interrupt(signum, frame):
    raise Interrupted()


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@train_options
@click.pass_context
def cli(ctx, **kw):
    """Train a CIFAR-10 network (`--arch`, ResNet20 by default), or evaluate a checkpoint (`eval`)."""
    if ctx.invoked_subcommand is None:
        _guard(run_train, **kw)


@cli.command("train")
@train_options
def train_cmd(**kw):
    """Train a CIFAR-10 network (same as running with no command)."""
    _guard(run_train, **kw)


@cli.command("eval")
@click.option("--checkpoint", "ckpt", default=str(DEFAULT_CHECKPOINT), show_default=True,
              type=click.Path(dir_okay=False))
@click.option("--data-dir", default=None, help="Folder with cifar10.npz (else $CIFAR10_DIR, else a cache).")
@click.option("--limit", type=click.IntRange(1), default=None, help="Seeded random subset of the test set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit subset.")
@click.option("--batch-size", type=click.IntRange(1), default=1000, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line: accuracy, n, loss, ...")
def eval_cmd(ckpt, data_dir, limit, seed, batch_size, device, as_json):
    """Evaluate a checkpoint on the CIFAR-10 test set in float32."""
    def run():
        dev = resolve_device(device)
        model, state = evaluate_mod.load_model(ckpt)
        test = data.load("test", data_dir, limit=limit, seed=seed)
        loss, acc, n = evaluate_mod.evaluate(model.to(dev), test, dev, batch_size=batch_size)
        result = {"checkpoint": str(ckpt), "accuracy": acc, "n": n, "loss": loss,
                  "epoch": state["epoch"], "precision": "fp32", "torch": str(torch.__version__)}
        if as_json:
            click.echo(json.dumps(result))
        else:
            click.echo(f"{ckpt}: accuracy {acc:.4f} ({round(acc * n)}/{n}), loss {loss:.4f}, "
                       f"epoch {state['epoch']}")
    _guard(run)


def _guard(fn, **kw):
    """Expected failures (bad data, bad checkpoint, bad arguments) end in one line, exit 2."""
    try:
        fn(**kw)
    except (data.DataError, checkpoint.CheckpointError, ValueError) as e:
        _fail(str(e))
    except OSError as e:                       # unwritable output folder, full disk, ...
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    except KeyboardInterrupt:
        _fail("interrupted")


def main():
    run_cli(cli)


if __name__ == "__main__":
    main()
