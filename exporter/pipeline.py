"""The export pipeline as a library call: checkpoint -> BN folding -> calibration ->
weights (nearest or learned rounding) -> integer network -> bit-packed model file
(docs/format.md).  `python -m exporter`, the scripts and the tests all call `export()`."""
from pathlib import Path

from trainer import data
from . import __version__, build, calibrate, fold, reconstruct


def resolve(rounding, params_from, bits, act_bits, first_last_bits):
    """The rounding that will run, and why: 'auto' is reconstruct.choose's pick."""
    if rounding != "auto":
        return rounding, "--rounding " + rounding
    if params_from == "torchao":
        return "nearest", "--params-from torchao takes torch.ao's rounded weights"
    method, why = reconstruct.choose(bits, act_bits, first_last_bits)
    return method, f"the default for {why}"


def describe(method, why, bits, act_bits, recon=None):
    """The line that says which rounding runs, why, and what it costs."""
    if method == "nearest":
        return f"rounding: nearest ({why})"
    cfg = {**reconstruct.defaults(bits, act_bits), **{k: v for k, v in (recon or {}).items() if v is not None}}
    steps = "learned step sizes" if cfg["act_lr"] else "min/max step sizes (--act-lr 0)"
    return (f"rounding: {method} ({why}): learned rounding with {steps}, {cfg['iters']} steps per "
            f"{'block' if method == 'brecq' else 'layer'} (about 2 minutes on 2 cores at the defaults); "
            f"--rounding nearest rounds to nearest in seconds")


def export(checkpoint, bits, act_bits, first_last_bits, calib_images, seed, data_dir, out,
           clip="mse", levels="midrise", bias_correction=None, progress=True, params_from="ours",
           rounding="auto", recon=None, log=None):
    """The whole export; returns (out path, size in bytes, qnet, float ops).

    rounding: 'auto' (the default: reconstruct.choose, i.e. 'brecq' with learned step sizes
    when any width is below 8 bits, else 'nearest'), 'nearest', or 'adaround'/'brecq' with
    `recon` {iters, batch, lr, reg, qdrop, act_lr, scale_lr}; a missing or None entry takes
    reconstruct.defaults(bits, act_bits) (exporter/reconstruct.py, docs section 13)."""
    model = fold.load_resnet20(checkpoint)
    points, ops = fold.graph(model)
    train = data.load_arrays(data_dir)["x_train"]
    images, _, idx_hash = calibrate.calibration_images(train, calib_images, seed)
    rounding, why = resolve(rounding, params_from, bits, act_bits, first_last_bits)
    if rounding not in reconstruct.METHODS:
        raise ValueError(f"unknown rounding {rounding!r}; choose from {reconstruct.METHODS}")
    if log is not None:
        log(describe(rounding, why, bits, act_bits, recon))
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
