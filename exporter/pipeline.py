"""The export pipeline as a library call: checkpoint -> BN folding -> calibration ->
weights (nearest or learned rounding) -> integer network -> bit-packed model file
(docs/format.md).  `python -m exporter`, the scripts and the tests all call `export()`."""
from pathlib import Path

from trainer import data
from . import __version__, build, calibrate, fold, mixed, reconstruct


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
           rounding="auto", recon=None, log=None, layer_bits=None, extra_meta=None):
    """The whole export; returns (out path, size in bytes, qnet, float ops).

    rounding: 'auto' (the default: reconstruct.choose, i.e. 'brecq' with learned step sizes
    when any width is below 8 bits, else 'nearest'), 'nearest', or 'adaround'/'brecq' with
    `recon` {iters, batch, lr, reg, qdrop, act_lr, scale_lr}; a missing or None entry takes
    reconstruct.defaults(bits, act_bits) (exporter/reconstruct.py, docs section 13).
    layer_bits {name: bits}: a per-layer allocation (section 14; export_budget makes one);
    then `bits` and `first_last_bits` should be its inner and outer minimum."""
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
                                             levels=levels, clip=clip, layer_bits=layer_bits)
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
    if layer_bits:
        meta["layer_bits"] = dict(layer_bits)
    meta.update(extra_meta or {})
    out = Path(out)
    build.to_file(qnet, out, meta)
    return out, out.stat().st_size, qnet, ops


def export_budget(checkpoint, budget, act_bits, min_bits, calib_images, seed, data_dir, out, *, log=None,
                  sens=None, solver="dp", clip="mse", levels="midrise", recon=None, progress=True,
                  rounding="auto", heldout_images=5000):
    """The most accurate file that fits `budget` bytes (docs section 14): measure each layer's
    sensitivity on the held-out images (or take `sens`), choose every conv/linear width from
    {2, 4, 8} (at least `min_bits`) by the exact solve, then export under that allocation with
    the default rounding (reconstruction below 8 bits).  Returns (path, size, allocation,
    report); the report holds the sensitivities and the predicted and actual bytes.  Nothing
    is written at `out` unless the file fits."""
    import os
    import tempfile
    say = log or (lambda m: None)
    choices = tuple(b for b in mixed.CHOICES if b >= min_bits)
    model = fold.load_resnet20(checkpoint)
    points, ops = fold.graph(model)
    names = [op["name"] for op in mixed.weighted(ops)]
    pick = mixed.solve if solver == "dp" else mixed.greedy
    costs = mixed.layer_costs(ops, choices, levels, clip)
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        probe = Path(tmp) / "probe.npz"        # a round-to-nearest file: the bytes beside the weights

        def overhead(alloc):
            export(checkpoint, min(alloc.values()), act_bits, min(alloc.values()), calib_images, seed, data_dir,
                   probe, progress=False, rounding="nearest", bias_correction=False, layer_bits=alloc,
                   clip=clip, levels=levels)
            return mixed.non_weight_bytes(probe) + mixed.META_SLACK

        smallest = {n: min(choices) for n in names}
        base = overhead(smallest)
        minimum = mixed.predicted_bytes(smallest, costs, base)
        if budget < minimum:
            raise mixed.BudgetError(f"--budget {budget:,} bytes is below the smallest possible file, "
                                    f"{minimum:,} bytes predicted (every layer at {min(choices)} bits)")
        base_kl = None
        if sens is None:
            train = data.load_arrays(data_dir)["x_train"]
            images, _, _ = calibrate.calibration_images(train, calib_images, seed)
            lo, hi = calibrate.minmax(ops, len(points), images, progress=False)
            held = calibrate.heldout_indices(len(train), calib_images=max(1024, calib_images),
                                             calib_seeds=tuple(sorted({0, 1, 2, seed})))[:heldout_images]
            say(f"measuring each layer's sensitivity on {len(held):,} held-out training images (eq. 23)")
            sens, base_kl = mixed.sensitivity(ops, build.act_points(points, lo, hi, act_bits), train[held],
                                              choices=choices, log=say)
        cap = budget - base
        for _ in range(3):                     # the other members move a little with the mix
            alloc = pick(ops, sens, cap, choices, costs)
            predicted = alloc and mixed.predicted_bytes(alloc, costs, overhead(alloc))
            if alloc is None or predicted <= budget:
                break
            cap -= predicted - budget
        if alloc is None or predicted > budget:
            raise mixed.BudgetError(f"no allocation's predicted size fits {budget:,} bytes")
        say(f"allocation for {budget:,} bytes: predicted {predicted:,} bytes; "
            + ", ".join(f"{sum(b == c for b in alloc.values())} layers at W{c}" for c in choices))
        staged = Path(tmp) / "final.npz"
        for attempt in range(2):               # solve again if the learned codes came out larger
            meta = {"budget": {"budget_bytes": budget, "predicted_bytes": predicted, "solver": solver,
                               "choices": list(choices),
                               "measure": f"rise of KL(FP32 || Q) on {heldout_images:,} held-out "
                                          f"training images, eq. (23)"}}
            path, size, _, _ = export(checkpoint, min(alloc[n] for n in names[1:-1]), act_bits,
                                      min(alloc[names[0]], alloc[names[-1]]), calib_images, seed, data_dir,
                                      staged, log=log, layer_bits=alloc, extra_meta=meta, clip=clip,
                                      levels=levels, recon=recon, progress=progress, rounding=rounding)
            if size <= budget or attempt:
                break
            say(f"the file is {size - budget:,} bytes over the budget; solving again with that much less")
            cap -= size - budget
            alloc = pick(ops, sens, cap, choices, costs)
            if alloc is None:
                break
            predicted = mixed.predicted_bytes(alloc, costs, overhead(alloc))
        if alloc is None or size > budget:
            raise mixed.BudgetError(f"the written file is {size:,} bytes, over the budget of {budget:,} "
                                    f"(predicted {predicted:,}); nothing was written")
        os.replace(staged, out)
    report = {"budget_bytes": budget, "predicted_bytes": predicted, "actual_bytes": size, "solver": solver,
              "choices": list(choices), "sensitivity": {n: {str(b): v for b, v in sens[n].items()} for n in names},
              "kl_all_8bit": base_kl}
    return out, size, alloc, report
