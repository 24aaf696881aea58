"""`python -m exporter --bits {2,4,8,16}`: checkpoint -> BN folding -> calibration ->
integer network -> bit-packed model file (docs/format.md).  Floats are allowed here; the
file holds only what the integer engine needs, plus scales for printing."""
from intengine.cli import require_torch

require_torch("python -m exporter")

import dataclasses
import os
import tempfile
import time
from pathlib import Path

import click

from intengine.cli import fail as _fail, run as run_cli
from intengine import fileformat
from intengine.fileformat import ACT_BITS, WEIGHT_BITS
from trainer import data
from trainer.checkpoint import DEFAULT_CHECKPOINT, CheckpointError
from . import mixed, pipeline, qat, reconstruct
from .pipeline import export
from .quantize import LEVEL_SETS, ExportError
from .source import SourceError, floats

RECON_OPTIONS = ("iters", "recon_batch", "lr", "reg", "qdrop", "act_lr", "scale_lr")
CREATED = []                    # folders check_out made for this export


def cleanup():
    """After a failed export: remove the folders check_out made, if they are still empty."""
    for folder in CREATED:
        try:
            folder.rmdir()
        except OSError:
            pass


def check_out(out, explicit):
    """Refuse, before any work, an --out that cannot be written: a wrong suffix, a folder, or
    a folder that refuses a new file (probed by creating one).  Returns the notes to print
    once the export has succeeded (a created folder, a replaced file), so that a failure
    stays one line; a folder it creates is listed in CREATED, for `cleanup` to remove again
    if the export fails."""
    notes = []
    if out.is_dir():
        raise ValueError(f"--out {out} is a folder; give a file name")
    if out.suffix != ".npz":
        raise ValueError(f"--out {out}: a model file name must end in .npz")
    parent = out.parent
    if not parent.is_dir():
        if parent.exists():
            raise ValueError(f"--out {out}: {parent} is not a folder")
        missing = [p for p in [parent, *parent.parents] if not p.exists()]
        try:
            parent.mkdir(parents=True)
        except OSError as e:
            raise ValueError(f"--out {out}: cannot create the folder {parent}: {e.strerror or e}") from None
        CREATED.extend(missing)
        if explicit:
            notes.append(f"created the folder {parent}")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.probe"):
            pass
    except OSError as e:
        raise ValueError(f"cannot write {out}: {e.strerror or e}") from None
    if out.exists():
        if not os.access(out, os.W_OK):
            raise ValueError(f"cannot write {out}: the existing file is read-only")
        notes.append(f"replaced the existing {out}")
    return notes


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), required=True,
              help="Weight bits of the inner layers.")
@click.option("--checkpoint", default=None,
              help=f"A trainer checkpoint, any --arch  [default: {DEFAULT_CHECKPOINT}, unless --model]")
@click.option("--model", "program", default=None, metavar="NET.pt2",
              help="Your own CNN: a program saved with torch.export.save (float, eval mode, normalized NCHW "
                   "input), in place of --checkpoint.")
@click.option("--mean", default=None, metavar="M1,M2,M3",
              help="The input normalization's per-channel mean on a 0..1 scale  [default: the checkpoint's, "
                   "else CIFAR-10's]")
@click.option("--std", default=None, metavar="S1,S2,S3", help="... and its per-channel std (with --mean).")
@click.option("--act-bits", type=click.Choice([str(b) for b in ACT_BITS]), default=None,
              help="Activation bits  [default: 8, or 16 with --bits 16]")
@click.option("--first-last-bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), default=None,
              help="Weight bits of the stem conv and the fc layer  [default: 8 below 8 bits, else --bits]")
@click.option("--calib-images", type=int, default=1024, show_default=True,
              help="Unlabeled training images for the activation ranges (seeded sample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--data-dir", default=None,
              help="Folder with cifar10.npz, or any dataset .npz in its layout (calibration images, held-out "
                   "choices)  [default: $CIFAR10_DIR, else the cache]")
@click.option("--weight-clip", type=click.Choice(["mse", "minmax"]), default="mse", show_default=True,
              help="Per-channel scale: MSE search, or plain min-max round-to-nearest.")
@click.option("--weight-levels", type=click.Choice(LEVEL_SETS), default="midrise", show_default=True,
              help="Level set at 2 and 4 bits (docs/quantization.md section 2).")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="Empirical bias correction from the calibration images  [default: on at 4 bits and below]")
@click.option("--params-from", type=click.Choice(["ours", "torchao"]), default="ours", show_default=True,
              help="torchao: take every scale, zero point and weight from a calibrated full-range "
                   "torch.ao int8 model (the cross-check; --bits 8 only).")
@click.option("--rounding", type=click.Choice(("auto",) + reconstruct.METHODS), default="auto",
              show_default=True,
              help="Weight rounding.  auto: block reconstruction with learned activation step sizes "
                   "(brecq) when any width is below 8 bits, else nearest.  nearest: plain "
                   "round-to-nearest.  adaround/brecq: learned per layer/per residual block "
                   "(docs/quantization.md section 13).")
@click.option("--iters", type=click.IntRange(0), default=None,
              help="Reconstruction steps per layer/block  [default: 600 at 2 bits, else 500]")
@click.option("--recon-batch", type=click.IntRange(1), default=None,
              help=f"Images per reconstruction step  [default: {reconstruct.DEFAULTS['batch']}]")
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=None,
              help=f"Adam learning rate of the rounding variables  [default: {reconstruct.DEFAULTS['lr']}]")
@click.option("--reg", type=click.FloatRange(0), default=None,
              help=f"Weight of the rounding regularizer, eq. (19)  [default: {reconstruct.DEFAULTS['reg']}]")
@click.option("--qdrop", type=click.FloatRange(0, 1), default=None,
              help=f"QDrop probability of keeping an activation in float, eq. (20)  "
                   f"[default: {reconstruct.DEFAULTS['qdrop']}]")
@click.option("--act-lr", type=click.FloatRange(0), default=None,
              help="Adam learning rate of the activation step sizes (log s, eq. 21); 0 keeps the "
                   "min/max scales  [default: 0.03 with 4-bit activations, else 0.01 at 2 bits, 0.003 above]")
@click.option("--scale-lr", type=click.FloatRange(0), default=None,
              help="Adam learning rate of the per-channel weight scales (log s_w, eq. 22); 0 keeps the "
                   "MSE-clipped ones  [default: 0]")
@click.option("--budget", default=None, metavar="BYTES",
              help="Mixed precision: the most accurate file of at most this many bytes (100000, 100KB or "
                   "97.5KiB), each conv/linear layer at 2, 4 or 8 bits (at least --bits), chosen by "
                   "held-out sensitivity and an exact solve (docs/quantization.md section 14).")
@click.option("--sensitivity-images", type=click.IntRange(1, 5000), default=5000, show_default=True,
              help="With --budget: held-out training images for the per-layer sensitivity (eq. 23).")
@click.option("--qat-epochs", type=click.IntRange(1), default=None,
              help="Quantization-aware training: fine-tune this many epochs on the labelled training images, "
                   "starting from the PTQ file (docs/quantization.md section 15; about 3 min per epoch on 2 cores).")
@click.option("--qat-lr", type=click.FloatRange(0, min_open=True), default=None,
              help="QAT: SGD learning rate of the weights and biases, cosine to 0  [default: 0.03 at W2A2, "
                   "0.006 at W4A4, 0.003 at W2A8 (qat.default_lr)]")
@click.option("--qat-distill", type=click.FloatRange(0, 1), default=None,
              help="QAT: weight of distillation from the FP32 model (KL to its softmax, eq. 27), the rest on the "
                   f"labels  [default: {qat.DEFAULTS['distill']:g}]")
@click.option("--qat-ste", type=click.Choice(qat.LSQ.RULES), default=None,
              help="QAT: which activation values pass the gradient: lsq (-z <= x/s <= 2^a-1-z) or interior "
                   f"(codes strictly inside the clamp)  [default: {qat.DEFAULTS['ste']}]")
@click.option("--qat-levels", type=click.Choice(qat.LEVEL_RULES), default=None,
              help="QAT: the 2- and 4-bit weight levels: fixed (the PTQ file's level set) or learned (each "
                   f"layer's codebook trained with its scales)  [default: {qat.DEFAULTS['levels']}]")
@click.option("--qat-bn-epochs", type=click.IntRange(0), default=None,
              help="QAT: train the first N epochs through batch normalization on each batch's statistics, "
                   f"then fold it into the file's scales and biases  [default: {qat.DEFAULTS['bn_epochs']}]")
@click.option("--qat-batch", type=click.IntRange(1), default=None,
              help=f"QAT: images per step  [default: {qat.DEFAULTS['batch']}]")
@click.option("--qat-images", type=click.IntRange(1), default=None,
              help="QAT: train on a seeded subset of this many images  [default: all but the held-out 5,000]")
@click.option("--qat-checkpoint", default=None,
              help="QAT: the checkpoint written after every epoch  [default: --out with .pt for .npz]")
@click.option("--resume", is_flag=True, help="QAT: continue the run in --qat-checkpoint (same settings).")
@click.option("--out", default=None, help="Output file  [default: exports/resnet20_w{bits}a{act}.npz, "
                                          "exports/resnet20_w{bits}a{act}_qat.npz with --qat-epochs, "
                                          "or exports/resnet20_{budget}B_a{act}.npz]")
@click.option("--progress/--no-progress", default=True, show_default=True)
def cli(bits, checkpoint, program, mean, std, act_bits, first_last_bits, calib_images, seed, data_dir, weight_clip,
        weight_levels, bias_correction, params_from, rounding, iters, recon_batch, lr, reg, qdrop, act_lr,
        scale_lr, budget, sensitivity_images, qat_epochs, qat_lr, qat_distill, qat_ste, qat_levels, qat_bn_epochs, qat_batch, qat_images, qat_checkpoint,
        resume, out, progress):
    """Export a trained CNN to an integer model file for `python -m intengine`: a trainer
    checkpoint (--checkpoint, ResNet20 by default) or your own network (--model NET.pt2).

    With no options beyond --bits it gives the best file the tool knows: below 8 bits the
    weights' rounding and the activation step sizes are learned by block reconstruction
    (about a minute on 2 cores), at 8 and 16 bits round-to-nearest (seconds).  --qat-epochs
    adds quantization-aware training from that file."""
    recon = {"iters": iters, "batch": recon_batch, "lr": lr, "reg": reg, "qdrop": qdrop,
             "act_lr": act_lr, "scale_lr": scale_lr}
    if program and checkpoint:
        _fail("give --checkpoint or --model, not both")
    try:
        mean, std = (floats(v, o) for v, o in ((mean, "--mean"), (std, "--std")))
    except ValueError as e:
        _fail(str(e))
    checkpoint = None if program else checkpoint or str(DEFAULT_CHECKPOINT)
    cfg = pipeline.Config(checkpoint=checkpoint, program=program, mean=mean, std=std, bits=int(bits), act_bits=act_bits and int(act_bits),
                          first_last_bits=first_last_bits and int(first_last_bits), calib_images=calib_images,
                          seed=seed, data_dir=data_dir, clip=weight_clip, levels=weight_levels,
                          bias_correction=bias_correction, params_from=params_from, rounding=rounding, recon=recon,
                          resume=resume)
    qat_given = [o for o, v in (("--qat-lr", qat_lr), ("--qat-distill", qat_distill), ("--qat-ste", qat_ste), ("--qat-levels", qat_levels), ("--qat-bn-epochs", qat_bn_epochs), ("--qat-batch", qat_batch), ("--qat-images", qat_images),
                                ("--qat-checkpoint", qat_checkpoint), ("--resume", resume or None)) if v is not None]
    given = [f"--{k.replace('_', '-')}" for k, v in zip(RECON_OPTIONS, recon.values()) if v is not None]
    explicit = out is not None
    t0 = time.perf_counter()
    try:
        if budget is not None:
            budget = mixed.parse_budget(budget)
            full = dataclasses.replace(cfg, act_bits=cfg.act_bits or 8).resolved()
            default_out = "{name}_" + f"{budget}B_a{full.act_bits}.npz"
        else:
            if qat_epochs is None and qat_given:
                raise ValueError(f"{', '.join(qat_given)} set{'s' if len(qat_given) == 1 else ''} up QAT: "
                                 f"give --qat-epochs too")
            if qat_epochs is not None:
                cfg = dataclasses.replace(cfg, qat={"epochs": qat_epochs, "lr": qat_lr, "distill": qat_distill, "ste": qat_ste, "levels": qat_levels, "bn_epochs": qat_bn_epochs, "batch": qat_batch,
                                                    "images": qat_images}, qat_checkpoint="pending")
            full = cfg.resolved()                                 # export() says the rounding too
            suffix = "_torchao" if params_from == "torchao" else "_qat" if qat_epochs else ""
            default_out = "{name}_" + f"w{full.bits}a{full.act_bits}{suffix}.npz"
        if full.rounding == "nearest" and given:
            raise ValueError(f"{', '.join(given)} set{'s' if len(given) == 1 else ''} learned rounding, "
                             f"but the rounding is nearest ({full.why}); drop {'it' if len(given) == 1 else 'them'} "
                             f"or pass --rounding brecq")
        if budget is not None and (qat_epochs or qat_given):
            raise ValueError("--budget does not go with QAT (--qat-epochs)")
        if budget is not None and first_last_bits:
            raise mixed.BudgetError("--budget chooses every layer's width from 2, 4 and 8 bits: it does not "
                                    "go with --first-last-bits, --params-from torchao or 16 bits")
        src = pipeline.load_source(cfg)               # the options are sound: read the network
        out = Path(out) if out else Path("exports") / default_out.format(name=src.arch)
        if qat_epochs is not None:
            cfg = dataclasses.replace(cfg, qat_checkpoint=str(qat_checkpoint or out.with_suffix(".pt")))
        notes = check_out(out, explicit)
        if budget is not None:
            budget_export(cfg, budget, out, t0, src, progress=progress, heldout_images=sensitivity_images)
            for note in notes:
                click.echo(f"note: {note}", err=True)
            return
        path, size, _, _ = export(cfg, out, progress=progress, log=lambda m: click.echo(m, err=True), src=src)
    except (CheckpointError, SourceError, data.DataError, ExportError, ValueError, qat.QATError) as e:   # BudgetError too
        cleanup()
        _fail(str(e))
    except OSError as e:
        cleanup()
        _fail(f"cannot write {out}: {e.strerror or e}")
    except KeyboardInterrupt:
        cleanup()
        kept = f"; the QAT checkpoint {cfg.qat_checkpoint} holds the epochs done (--resume continues)" \
            if cfg.qat and Path(cfg.qat_checkpoint).is_file() else ""
        _fail(f"interrupted; no model file was written{kept}")
    meta = fileformat.read(path)[0]["meta"]                  # read back what was written
    extra = " + bias correction" if meta["bias_correction"] else ""
    if meta.get("rounding", "nearest") != "nearest":
        learned = reconstruct.recorded_config(meta).get("act_lr")
        extra += f", {meta['rounding']} rounding" + (" with learned step sizes" if learned else "")
    if "qat" in meta:
        h, q = meta["qat"]["history"], meta["qat"]["config"]
        bn = f", batch normalization for {q['bn_epochs']} epochs" if q.get("bn_epochs") else ""
        extra += (f", then {len(h) - 1} QAT epochs (lr {q['lr']:g}, distillation α={q['distill']:g}, "
                  f"{q['ste']} gradient rule{', learned levels' if q.get('levels') == 'learned' else ''}{bn}"
                  f"; held-out agreement {h[0]['heldout_agree']:.4f} -> "
                  f"{h[-1]['heldout_agree']:.4f}; checkpoint {cfg.qat_checkpoint})")
    source = "torch.ao int8 (full range)" if meta["params_from"] == "torchao" else f"weights {meta['weight_clip']}{extra}"
    click.echo(f"wrote {path}: {size:,} bytes, {_what(src)}, W{full.bits}A{full.act_bits} (first/last layer "
               f"W{full.first_last_bits}), {source}, {calib_images} calibration images, "
               f"{time.perf_counter() - t0:.1f} s")
    if "qat" not in meta and full.act_bits < 8:       # where training on gains the most (section 15)
        notes.append(f"post-training quantization only; --qat-epochs N trains on from this file (3-4 min an "
                     f"epoch on 2 CPU cores), which gains most below 8-bit activations (results/qat/README.md)")
    for note in notes:
        click.echo(f"note: {note}", err=True)


def _what(src):
    """The network and its normalization, for the export line."""
    where = f" ({src.path})" if src.path else ""
    return f"{src.arch}{where}, input normalization {src.norm_from}"


def budget_export(cfg, budget, out, t0, src, **kw):
    """--budget: allocate, export, and print the per-layer width table and the bytes."""
    log = lambda m: click.echo(m, err=True)
    path, size, alloc, rep = pipeline.export_budget(cfg, budget, out, log=log, src=src, **kw)
    act_bits, calib_images = cfg.act_bits or 8, cfg.calib_images
    sens = rep["sensitivity"]
    width = max(18, *(len(n) for n in alloc))
    click.echo(f"{'layer':{width}} {'W':>2} {'weight bytes':>12}  KL rise at this width (W2 / W4)")
    ops = {op["name"]: op for op in mixed.weighted(src.ops)}
    for name, b in alloc.items():
        rises = " / ".join(f"{sens[name][str(c)]:.4f}" if str(c) in sens[name] else "-" for c in (2, 4))
        click.echo(f"{name:{width}} {b:>2} {mixed.layer_bytes(ops[name], b):>12,}  {rises}")
    counts = ", ".join(f"{sum(v == c for v in alloc.values())} at W{c}" for c in mixed.CHOICES)
    click.echo(f"wrote {path}: {size:,} bytes (predicted {rep['predicted_bytes']:,}, budget {budget:,}), "
               f"mixed precision A{act_bits}: {counts}; {calib_images} calibration images, "
               f"{time.perf_counter() - t0:.1f} s")


def main():
    run_cli(cli)


if __name__ == "__main__":
    main()
