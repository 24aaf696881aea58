"""`python -m exporter --bits {2,4,8,16}`: checkpoint -> BN folding -> calibration ->
integer network -> bit-packed model file (docs/format.md).  Floats are allowed here; the
file holds only what the integer engine needs, plus scales for printing."""
import time
from pathlib import Path

import click

from intengine.cli import fail as _fail, run as run_cli
from intengine import fileformat
from intengine.fileformat import ACT_BITS, WEIGHT_BITS
from trainer import data
from trainer.__main__ import DEFAULT_CHECKPOINT
from trainer.checkpoint import CheckpointError
from . import __version__, build, calibrate, fold, reconstruct
from .quantize import LEVEL_SETS, ExportError




def export(checkpoint, bits, act_bits, first_last_bits, calib_images, seed, data_dir, out,
           clip="mse", levels="midrise", bias_correction=None, progress=True, params_from="ours",
           rounding="nearest", recon=None, log=None):
    """The whole export; returns (out path, size in bytes, qnet, float ops).

    rounding: 'nearest', or 'adaround'/'brecq' with `recon` {iters, batch, lr, reg, qdrop,
    act_lr, scale_lr}; a missing or None entry takes reconstruct.defaults(bits, act_bits)
    (exporter/reconstruct.py, docs section 13)."""
    model = fold.load_resnet20(checkpoint)
    points, ops = fold.graph(model)
    train = data.load_arrays(data_dir)["x_train"]
    images, _, idx_hash = calibrate.calibration_images(train, calib_images, seed)
    if rounding not in reconstruct.METHODS:
        raise ValueError(f"unknown rounding {rounding!r}; choose from {reconstruct.METHODS}")
    if bias_correction is None:
        bias_correction = bits <= 4 and params_from == "ours" and rounding == "nearest"
    recon_report = None
    if params_from == "torchao":          # a calibrated full-range torch.ao int8 model, rewritten
        if (bits, act_bits, first_last_bits) != (8, 8, 8):
            raise ValueError("--params-from torchao reads a W8A8 torch.ao model: use --bits 8 "
                             "with 8-bit activations and first/last layers")
        from . import torchao
        qnet = torchao.to_qnet(torchao.static_int8(model, images, "full"), points, ops)
        clip, levels, bias_correction = "torchao PerChannelMinMaxObserver", "twos", False
    else:
        lo, hi = calibrate.minmax(ops, len(points), images, progress=progress)
        weights = build.quantize_weights_all(ops, bits=bits, first_last_bits=first_last_bits,
                                             levels=levels, clip=clip)
        if rounding != "nearest":
            if params_from != "ours":
                raise ValueError("--rounding needs --params-from ours")
            qpts = build.act_points(points, lo, hi, act_bits)
            cfg = {**reconstruct.defaults(bits, act_bits),
                   **{k: v for k, v in (recon or {}).items() if v is not None}}
            weights, recon_report = reconstruct.reconstruct(ops, qpts, images, weights, method=rounding,
                                                            seed=seed, progress=progress, log=log, **cfg)
        shift = calibrate.bias_shift(ops, images, build.dequantized(weights)) if bias_correction else None
        qnet = build.quantize_graph(points, ops, lo, hi, weights, act_bits=act_bits, bias_shift=shift,
                                    scales=recon_report and recon_report.get("act_scales"))
    meta = {"exporter_version": __version__, "checkpoint_sha256": fold.file_sha256(checkpoint),
            "bits": bits, "act_bits": act_bits, "first_last_bits": first_last_bits,
            "weight_clip": clip, "weight_levels": levels, "bias_correction": bias_correction,
            "params_from": params_from, "rounding": rounding,
            "calibration": {"method": "minmax" if params_from == "ours" else "torchao HistogramObserver",
                            "images": calib_images, "seed": seed,
                            "source": "train", "indices_sha256": idx_hash}}
    if recon_report is not None:
        meta["reconstruction"] = {k: recon_report[k] for k in ("method", "seed", "config")}
    out = Path(out)
    build.to_file(qnet, out, meta)
    return out, out.stat().st_size, qnet, ops


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), required=True,
              help="Weight bits of the inner layers.")
@click.option("--checkpoint", default=str(DEFAULT_CHECKPOINT), show_default=True,
              help="Trainer checkpoint or bare ResNet20 state_dict.")
@click.option("--act-bits", type=click.Choice([str(b) for b in ACT_BITS]), default=None,
              help="Activation bits  [default: 8, or 16 with --bits 16]")
@click.option("--first-last-bits", type=click.Choice([str(b) for b in WEIGHT_BITS]), default=None,
              help="Weight bits of the stem conv and the fc layer  [default: 8 below 8 bits, else --bits]")
@click.option("--calib-images", type=int, default=1024, show_default=True,
              help="Unlabeled training images for the activation ranges (seeded sample).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the calibration sample.")
@click.option("--data-dir", default=None, help="Folder with cifar10.npz  [default: $CIFAR10_DIR, else the cache]")
@click.option("--weight-clip", type=click.Choice(["mse", "minmax"]), default="mse", show_default=True,
              help="Per-channel scale: MSE search, or plain min-max round-to-nearest.")
@click.option("--weight-levels", type=click.Choice(LEVEL_SETS), default="midrise", show_default=True,
              help="Level set at 2 and 4 bits (docs/quantization.md section 2).")
@click.option("--bias-correction/--no-bias-correction", default=None,
              help="Empirical bias correction from the calibration images  [default: on at 4 bits and below]")
@click.option("--params-from", type=click.Choice(["ours", "torchao"]), default="ours", show_default=True,
              help="torchao: take every scale, zero point and weight from a calibrated full-range "
                   "torch.ao int8 model (the cross-check; --bits 8 only).")
@click.option("--rounding", type=click.Choice(reconstruct.METHODS), default="nearest", show_default=True,
              help="Weight rounding: nearest, or learned by reconstruction per layer (adaround) "
                   "or per residual block (brecq), docs/quantization.md section 13.")
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
@click.option("--out", default=None, help="Output file  [default: exports/resnet20_w{bits}a{act}.npz]")
@click.option("--progress/--no-progress", default=True, show_default=True)
def cli(bits, checkpoint, act_bits, first_last_bits, calib_images, seed, data_dir, weight_clip,
        weight_levels, bias_correction, params_from, rounding, iters, recon_batch, lr, reg, qdrop, act_lr,
        scale_lr, out, progress):
    """Export a trained ResNet20 to an integer model file for `python -m intengine`."""
    bits = int(bits)
    act_bits = int(act_bits) if act_bits else (16 if bits == 16 else 8)
    fl = int(first_last_bits) if first_last_bits else (8 if bits < 8 else bits)
    suffix = "_torchao" if params_from == "torchao" else ""
    out = Path(out) if out else Path("exports") / f"resnet20_w{bits}a{act_bits}{suffix}.npz"
    t0 = time.perf_counter()
    try:
        if out.is_dir():
            raise ValueError(f"--out {out} is a folder; give a file name")
        out.parent.mkdir(parents=True, exist_ok=True)
        path, size, _, _ = export(checkpoint, bits, act_bits, fl, calib_images, seed, data_dir, out,
                                  clip=weight_clip, levels=weight_levels,
                                  bias_correction=bias_correction, progress=progress,
                                  params_from=params_from, rounding=rounding,
                                  recon={"iters": iters, "batch": recon_batch, "lr": lr, "reg": reg,
                                         "qdrop": qdrop, "act_lr": act_lr,
                                         "scale_lr": scale_lr},
                                  log=lambda m: click.echo(m, err=True))
    except (CheckpointError, data.DataError, ExportError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"cannot write {out}: {e.strerror or e}")
    except KeyboardInterrupt:
        _fail("interrupted; no file was written")
    meta = fileformat.read(path)[0]["meta"]                  # read back what was written
    extra = " + bias correction" if meta["bias_correction"] else ""
    if meta.get("rounding", "nearest") != "nearest":
        extra += f", {meta['rounding']} rounding"
    source = "torch.ao int8 (full range)" if meta["params_from"] == "torchao" else f"weights {meta['weight_clip']}{extra}"
    click.echo(f"wrote {path}: {size:,} bytes, W{bits}A{act_bits} (first/last layer W{fl}), {source}, "
               f"{calib_images} calibration images, {time.perf_counter() - t0:.1f} s")


def main():
    run_cli(cli)


if __name__ == "__main__":
    main()
