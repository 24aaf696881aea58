"""The export pipeline as a library call: checkpoint -> BN folding -> calibration ->
weights (nearest or learned rounding) -> integer network -> bit-packed model file
(docs/format.md).  `python -m exporter`, the scripts and the tests all call `export()`."""
import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from intengine.fileformat import ACT_BITS, WEIGHT_BITS
from trainer import data
from . import __version__, blocks, build, calibrate, mixed, reconstruct, source


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
            f"{'block' if method == 'brecq' else 'layer'} (about a minute on 2 cores at the defaults); "
            f"--rounding nearest rounds to nearest in seconds")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one export, in one validated object (README *Quantizing*).  None
    means the documented default; `resolved()` fills them in and refuses combinations that
    do not go together, so export() never sees one."""
    checkpoint: str                    # a trainer checkpoint (any --arch), or None with program
    bits: int                          # weight bits of the inner layers
    act_bits: int = None               # 8, or 16 with 16-bit weights
    first_last_bits: int = None        # the stem and the fc: 8 below 8 bits, else `bits`
    calib_images: int = 1024
    seed: int = 0                      # the calibration sample (and the reconstruction)
    data_dir: str = None
    clip: str = "mse"                  # the per-channel weight scales: mse or minmax
    levels: str = "midrise"            # the 2- and 4-bit level set
    bias_correction: bool = None       # on with nearest rounding at 4 bits and below
    params_from: str = "ours"          # or "torchao": a calibrated torch.ao W8A8 model's integers
    rounding: str = "auto"             # auto, nearest, adaround, brecq (resolve())
    recon: dict = None                 # reconstruction settings; None entries: the defaults
    layer_bits: dict = None            # {layer: bits}, a mixed-precision allocation (section 14)
    qat: dict = None                   # QAT settings (section 15; None entries: qat.DEFAULTS); None: no QAT
    qat_checkpoint: str = None         # where QAT keeps its per-epoch checkpoint
    resume: bool = False               # continue the QAT run in qat_checkpoint
    program: str = None                # a torch.export program (torch.export.save), in place of checkpoint
    mean: tuple = None                 # the input normalization (0..1 scale): --mean/--std, else the
    std: tuple = None                  # checkpoint's, else CIFAR-10's (source.load)
    why: str = None                    # set by resolved(): why this rounding

    def resolved(self):
        """-> a Config with every default filled in and the rounding chosen; ValueError
        (one line) for settings that do not go together."""
        if self.bits not in WEIGHT_BITS:
            raise ValueError(f"weight bits {self.bits} not in {WEIGHT_BITS}")
        act = self.act_bits or (16 if self.bits == 16 else 8)
        fl = self.first_last_bits or (8 if self.bits < 8 else self.bits)
        if act not in ACT_BITS or fl not in WEIGHT_BITS:
            raise ValueError(f"activation bits {act} / first-last bits {fl} not in {ACT_BITS} / {WEIGHT_BITS}")
        if self.params_from not in ("ours", "torchao"):
            raise ValueError(f"params_from {self.params_from!r}: expected ours or torchao")
        rounding, why = resolve(self.rounding, self.params_from, self.bits, act, fl)
        if rounding not in reconstruct.METHODS:
            raise ValueError(f"unknown rounding {rounding!r}; choose from {reconstruct.METHODS}")
        if self.params_from == "torchao":
            if (self.bits, act, fl) != (8, 8, 8) or self.layer_bits:
                raise ValueError("--params-from torchao reads a W8A8 torch.ao model: use --bits 8 "
                                 "with 8-bit activations and first/last layers")
            if rounding != "nearest":
                raise ValueError("--rounding needs --params-from ours")
        qat_cfg = None
        if self.qat is not None:
            from .qat import DEFAULTS as QAT_DEFAULTS
            qat_cfg = {**QAT_DEFAULTS, **{k: v for k, v in self.qat.items() if v is not None}}
            if qat_cfg["lr"] is None:
                from .qat import default_lr
                qat_cfg["lr"] = default_lr(self.bits, act)
            if self.params_from != "ours" or self.bits == 16 or act == 16:
                raise ValueError("QAT trains through the fake-quant of weights and activations of 8 bits "
                                 "or fewer, from our own PTQ: not with 16 bits or --params-from torchao")
            if not self.qat_checkpoint:
                raise ValueError("QAT needs a checkpoint path (qat_checkpoint)")
            if not 0 <= qat_cfg["distill"] <= 1:
                raise ValueError(f"--qat-distill must be within [0, 1], got {qat_cfg['distill']}")
            if qat_cfg["epochs"] < 1:
                raise ValueError(f"--qat-epochs must be at least 1, got {qat_cfg['epochs']}")
            if qat_cfg["bn_epochs"] < 0:
                raise ValueError(f"--qat-bn-epochs must be 0 or more, got {qat_cfg['bn_epochs']}")
        elif self.resume:
            raise ValueError("--resume continues a QAT run: give --qat-epochs too")
        bc = self.bias_correction
        if bc is None:
            bc = self.bits <= 4 and self.params_from == "ours" and rounding == "nearest"
        if self.params_from == "torchao":
            bc = False
        return dataclasses.replace(self, act_bits=act, first_last_bits=fl, rounding=rounding, why=why,
                                   bias_correction=bc, qat=qat_cfg)

    def ptq_record(self):
        """The settings that fix the PTQ start of a QAT run (a resumed run must match them)."""
        keys = ("checkpoint", "program", "mean", "std", "bits", "act_bits", "first_last_bits", "calib_images", "seed", "clip", "levels",
                "bias_correction", "rounding", "recon", "layer_bits")
        return {k: getattr(self, k) for k in keys}


def export_module(model, example, out, *, bits, mean=None, std=None, progress=False, log=None, **settings):
    """The Python API: export an nn.Module (float, eval mode, normalized NCHW input like
    `example`) as `python -m exporter --model` exports a saved program.  settings: any other
    Config field (act_bits, data_dir, rounding, qat, ...).  -> as export()."""
    src = source.from_module(model, example, mean=mean, std=std)
    return export(Config(checkpoint=None, bits=bits, **settings), out, progress=progress, log=log, src=src)


def graph_for(src, act_bits):
    """The float graph of a file with `act_bits` activations: below 8 bits with a requant in
    front of each block's first conv (blocks.split_stream, docs section 3)."""
    return blocks.split_stream(src.points, src.ops) if act_bits < 8 else (src.points, src.ops)


def check_data(src, arrays):
    """The dataset fits the network: the same image shape, a class name per output."""
    shape, outputs = tuple(arrays["x_train"].shape[1:]), src.points[-1]["shape"][0]
    if shape != src.input_shape:
        raise ValueError(f"the network takes {'x'.join(map(str, src.input_shape))} images (H x W x C) and the "
                         f"dataset holds {'x'.join(map(str, shape))}; give --data-dir a dataset of its input shape")
    if outputs != len(arrays["classes"]):
        raise ValueError(f"the network gives {outputs} outputs and the dataset names {len(arrays['classes'])} "
                         f"classes; give --data-dir the dataset it was trained on")


def load_source(cfg):
    """The network cfg names (source.load): its float graph, module and normalization."""
    return source.load(checkpoint=cfg.checkpoint, program=cfg.program, mean=cfg.mean, std=cfg.std)


def export(cfg, out, *, progress=True, log=None, extra_meta=None, ranges=None, ptq_start=None, src=None):
    """The whole export of `cfg` (a Config) into the model file `out`; returns (out path,
    size in bytes, qnet, float ops).  Reconstruction settings missing from cfg.recon take
    reconstruct.defaults(bits, act_bits) (exporter/reconstruct.py, docs section 13).
    ranges: a dict that keeps the calibrated activation ranges between exports of the same
    checkpoint, calibration sample and data (export_budget makes several).
    ptq_start: with QAT, the PTQ start record of another QAT checkpoint made with the same
    PTQ settings (scripts/qat_sweep.py tries several QAT settings from one PTQ solution).
    src: the Source to export (source.from_module, the Python API), else cfg's (load_source)."""
    cfg = cfg.resolved()
    src = src or load_source(cfg)
    model, norm = src.module, src.norm
    points, ops = graph_for(src, cfg.act_bits)
    arrays = data.load_arrays(cfg.data_dir)
    train = arrays["x_train"]
    check_data(src, arrays)
    images, _, idx_hash = calibrate.calibration_images(train, cfg.calib_images, cfg.seed)
    resumed = _qat_resume(cfg, log) if cfg.qat else None
    if ptq_start is not None and resumed is None:
        if not cfg.qat or ptq_start["meta"]["ptq"] != _plain(cfg.ptq_record()):
            raise ValueError("ptq_start was made with other PTQ settings")
        resumed = {"start": ptq_start}
    if log is not None and resumed is None:
        log(describe(cfg.rounding, cfg.why, cfg.bits, cfg.act_bits, cfg.recon))
    recon_report = qat_report = None
    weights_from = {"weight_clip": cfg.clip, "weight_levels": cfg.levels}
    if cfg.params_from == "torchao":          # a calibrated full-range torch.ao int8 model, rewritten
        from . import torchao
        if not src.arch.startswith("resnet") or src.norm["mean"] != list(torchao.MEAN):
            raise ValueError("--params-from torchao rewires the trainer's ResNets for eager torch.ao, with "
                             "CIFAR-10's normalization; it does not take this network")
        qnet = torchao.to_qnet(torchao.static_int8(model, images, "full"), points, ops)
        weights_from = {"weight_clip": None, "weight_levels": "twos",
                        "weights_source": "torch.ao PerChannelMinMaxObserver (full range)"}
    else:
        if resumed is not None:
            from . import qat
            weights, lo, hi, recon_report, _ = qat.start_from(resumed["start"])
        else:
            ranges = {} if ranges is None else ranges
            if "minmax" not in ranges:
                ranges["minmax"] = calibrate.minmax(ops, len(points), images, progress=progress, norm=norm)
            lo, hi = ranges["minmax"]
            if cfg.act_bits < 8:                         # section 3: MSE-clipped below 8 bits
                key = ("mse", cfg.act_bits)
                if key not in ranges:
                    ranges[key] = calibrate.mse_ranges(ops, build.point_bits(ops, len(points), cfg.act_bits),
                                                       images, lo, hi, seed=cfg.seed, norm=norm)
                lo, hi = ranges[key]
            weights = build.quantize_weights_all(ops, bits=cfg.bits, first_last_bits=cfg.first_last_bits,
                                                 levels=cfg.levels, clip=cfg.clip, layer_bits=cfg.layer_bits)
            if cfg.rounding != "nearest":
                qpts = build.act_points(points, ops, lo, hi, cfg.act_bits)
                rc = {**reconstruct.defaults(cfg.bits, cfg.act_bits),
                      **{k: v for k, v in (cfg.recon or {}).items() if v is not None}}
                weights, recon_report = reconstruct.reconstruct(ops, qpts, images, weights, method=cfg.rounding,
                                                                seed=cfg.seed, progress=progress, log=log, norm=norm, **rc)
        shift = calibrate.bias_shift(ops, images, build.dequantized(weights), norm=norm) \
            if cfg.bias_correction else None
        scales = recon_report and recon_report.get("act_scales")
        if cfg.qat:
            weights, scales, qat_report, ops = _qat(cfg, model, points, ops, lo, hi, weights, scales, shift,
                                                    recon_report, arrays, resumed, progress, log, norm)
            shift = None                                     # trained into the biases
            if cfg.qat["levels"] == "learned":
                weights_from["weight_levels"] = f"learned (QAT, from {cfg.levels})"
        qnet = build.quantize_graph(points, ops, lo, hi, weights, act_bits=cfg.act_bits, bias_shift=shift,
                                    scales=scales, norm=norm)
    kind = "checkpoint" if cfg.checkpoint else "program" if cfg.program else "module"
    meta = {"exporter_version": __version__, **({f"{kind}_sha256": src.sha256} if src.sha256 else {}),
            "source": {"kind": kind, "arch": src.arch, "file": src.path and src.path.name,
                       "normalization": src.norm_from},
            "bits": cfg.bits, "act_bits": cfg.act_bits, "first_last_bits": cfg.first_last_bits,
            **weights_from, "bias_correction": cfg.bias_correction,
            "params_from": cfg.params_from, "rounding": cfg.rounding,
            "calibration": {"method": ("minmax" + (", MSE-clipped below 8 bits" if cfg.act_bits < 8 else ""))
                            if cfg.params_from == "ours" else "torchao HistogramObserver",
                            "images": cfg.calib_images, "seed": cfg.seed,
                            "source": "train", "indices_sha256": idx_hash}}
    if recon_report is not None:
        meta["reconstruction"] = {k: recon_report[k] for k in ("method", "seed", "config")}
    if cfg.layer_bits:
        meta["layer_bits"] = dict(cfg.layer_bits)
    if qnet.get("widened"):
        meta["widened_points"] = qnet["widened"]           # build.widen_outputs
    if qat_report is not None:
        meta["qat"] = qat_report
    meta.update(extra_meta or {})
    out = Path(out)
    build.to_file(qnet, out, meta, classes=arrays["classes"], normalization=norm, arch=src.arch)
    return out, out.stat().st_size, qnet, ops


def _qat_resume(cfg, log):
    """The QAT checkpoint to continue (cfg.resume), checked against cfg; None to start afresh."""
    from . import qat
    path = Path(cfg.qat_checkpoint)
    if not cfg.resume:
        return None
    if not path.is_file():
        if log is not None:
            log(f"no QAT checkpoint at {path}; starting from the PTQ solution")
        return None
    state = qat.load(path)
    want = {"qat": cfg.qat, "ptq": _plain(cfg.ptq_record())}
    have = {"qat": state["config"], "ptq": state["start"]["meta"]["ptq"]}
    diff = [f"{part}.{k}: {have[part].get(k)!r} there, {want[part][k]!r} here"
            for part in want for k in want[part] if have[part].get(k) != want[part][k]]
    if diff:
        raise qat.QATError(f"{path} was made with other settings ({'; '.join(diff[:3])}); rerun with those, "
                           f"or without --resume to start afresh")
    if log is not None:
        log(f"resumed QAT from {path} after epoch {state['epoch']} of {cfg.qat['epochs']}")
    return state


def _plain(d):
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


def _qat(cfg, model, points, ops, lo, hi, weights, scales, shift, recon_report, arrays, resumed, progress, log, norm):
    """QAT from the PTQ solution (section 15) -> (weights, act scales, report, ops with the trained biases)."""
    import torch
    from . import qat
    ops = [dict(op) for op in ops]
    if shift is not None:                                   # bias correction, folded into the start
        for op in ops:
            if op["name"] in shift:
                op["bias"] = op["bias"] + torch.as_tensor(shift[op["name"]])
    qpts = build.act_points(points, ops, lo, hi, cfg.act_bits, scales)
    train = arrays["x_train"]
    held = calibrate.heldout_indices(len(train), calib_images=max(1024, cfg.calib_images),
                                     calib_seeds=tuple(sorted({0, 1, 2, cfg.seed})))
    keep = qat.split(len(train), held)
    if cfg.qat["images"]:
        keep = np.sort(keep[data.seeded_subset(len(keep), cfg.qat["images"], cfg.seed)])
    held = held[:cfg.qat["heldout"]]
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    labels = lambda y: torch.from_numpy(arrays["y_train"][y].astype(np.int64))
    start = qat.start_record(weights, lo, hi, recon_report, {"ptq": _plain(cfg.ptq_record())})
    if log is not None and (resumed is None or "net" not in resumed):
        log(f"QAT: {cfg.qat['epochs']} epochs on {len(keep):,} labelled training images (the {len(held):,} "
            f"held-out ones excluded), checkpoint {cfg.qat_checkpoint} after every epoch")
    w, s, biases, report = qat.train(ops, qpts, weights, nchw(train[keep]), labels(keep), nchw(train[held]),
                                     labels(held), model, cfg=cfg.qat, seed=cfg.seed, ckpt=cfg.qat_checkpoint,
                                     start=start, resumed=resumed if resumed and "net" in resumed else None,
                                     progress=progress, log=log, norm=norm)
    for op in ops:
        if op["name"] in biases:
            op["bias"] = biases[op["name"]]
    report["start"] = {"rounding": cfg.rounding, "reconstruction": recon_report and
                       {k: recon_report[k] for k in ("method", "seed", "config")},
                       "bias_correction": cfg.bias_correction}
    return w, s, report, ops


def export_budget(cfg, budget, out, *, log=None, sens=None, solver="dp", progress=True, heldout_images=5000,
                  src=None):
    """The most accurate file that fits `budget` bytes (docs section 14): measure each layer's
    sensitivity on the held-out images (or take `sens`), choose every conv/linear width from
    {2, 4, 8} (at least cfg.bits) by the exact solve, then export cfg under that allocation
    (its rounding: by default reconstruction below 8 bits).  Returns (path, size, allocation,
    report); the report holds the sensitivities and the predicted and actual bytes.  Nothing
    is written at `out` unless the file fits."""
    say = log or (lambda m: None)
    if cfg.first_last_bits or cfg.params_from != "ours" or cfg.bits == 16 or (cfg.act_bits or 8) == 16:
        raise mixed.BudgetError("--budget chooses every layer's width from 2, 4 and 8 bits: it does not go "
                                "with --first-last-bits, --params-from torchao or 16 bits")
    act_bits, clip, levels = cfg.act_bits or 8, cfg.clip, cfg.levels
    calib_images, seed, data_dir = cfg.calib_images, cfg.seed, cfg.data_dir
    choices = tuple(b for b in mixed.CHOICES if b >= cfg.bits)
    src = src or load_source(cfg)
    points, ops = graph_for(src, act_bits)
    names = [op["name"] for op in mixed.weighted(ops)]
    pick = mixed.solve if solver == "dp" else mixed.greedy
    costs = mixed.layer_costs(ops, choices, levels, clip)
    out = Path(out)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        probe = Path(tmp) / "probe.npz"        # a round-to-nearest file: the bytes beside the weights

        def with_alloc(alloc, **kw):
            names_ = list(alloc)
            return dataclasses.replace(cfg, bits=min(alloc[n] for n in names_[1:-1]), act_bits=act_bits,
                                       first_last_bits=min(alloc[names_[0]], alloc[names_[-1]]),
                                       layer_bits=alloc, **kw)

        def overhead(alloc):
            export(with_alloc(alloc, rounding="nearest", bias_correction=False, recon=None), probe, progress=False,
                   ranges=ranges, src=src)
            return mixed.non_weight_bytes(probe) + mixed.META_SLACK

        ranges = {}                            # calibrated once, for every export below
        smallest = {n: min(choices) for n in names}
        base = overhead(smallest)
        minimum = mixed.predicted_bytes(smallest, costs, base)
        if budget < minimum:
            raise mixed.BudgetError(f"--budget {budget:,} bytes is below the smallest possible file, "
                                    f"{minimum:,} bytes predicted (every layer at {min(choices)} bits)")
        base_kl = None
        if sens is None:
            train = data.load_arrays(data_dir)["x_train"]
            lo, hi = ranges["minmax"]
            held = calibrate.heldout_indices(len(train), calib_images=max(1024, calib_images),
                                             calib_seeds=tuple(sorted({0, 1, 2, seed})))[:heldout_images]
            say(f"measuring each layer's sensitivity on {len(held):,} held-out training images (eq. 23)")
            sens, base_kl = mixed.sensitivity(ops, build.act_points(points, ops, lo, hi, act_bits), train[held],
                                              choices=choices, log=say, norm=src.norm)
        cap = budget - base
        for _ in range(4):                     # the other members move a little with the mix
            alloc = pick(ops, sens, cap, choices, costs)
            ovh = alloc and overhead(alloc)
            predicted = alloc and mixed.predicted_bytes(alloc, costs, ovh)
            if alloc is None or predicted <= budget:
                break
            cap = min(cap, budget - ovh)       # below this allocation's bytes: the next one is smaller
        if alloc is None or predicted > budget:
            raise mixed.BudgetError(f"no allocation's predicted size fits {budget:,} bytes")
        say(f"allocation for {budget:,} bytes: predicted {predicted:,} bytes; "
            + ", ".join(f"{sum(b == c for b in alloc.values())} layers at W{c}" for c in choices))
        staged = Path(tmp) / "final.npz"
        for attempt in range(3):               # solve again if the learned codes came out larger
            meta = {"budget": {"budget_bytes": budget, "predicted_bytes": predicted, "solver": solver,
                               "choices": list(choices),
                               "measure": f"rise of KL(FP32 || Q) on {heldout_images:,} held-out "
                                          f"training images, eq. (23)"}}
            path, size, _, _ = export(with_alloc(alloc), staged, log=log, extra_meta=meta, progress=progress,
                                      ranges=ranges, src=src)
            if size <= budget or attempt == 2:
                break
            say(f"the file is {size - budget:,} bytes over the budget; solving again with that much less")
            cap = mixed.predicted_bytes(alloc, costs, 0) - (size - budget) - 256
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
