"""The ready-made peer of our QAT: torch.ao's own quantization-aware training of the shipped
ResNet20 (FX mode: `prepare_qat_fx`, train, `convert_fx`), run on torch's own int8 kernels and
scored on all 10,000 test images.

    CIFAR10_DIR=../shared/data python scripts/torchao_qat.py --bits 8 --epochs 3 [--resume] [--publish]

- `--bits 8` is torch.ao's x86 default QAT qconfig (`get_default_qat_qconfig("x86")`: per-channel
  symmetric int8 weights, moving-average activation ranges with reduce_range).  `--bits 4` and
  `--bits 2` restrict the weight fake-quant to [-2^(b-1), 2^(b-1)-1] (`quant_min/quant_max`),
  the original work's way of asking torch.ao for fewer bits; the converted model still runs
  int8 kernels, with weight values of b bits (labelled simulated in the report).  Below 8 bits
  convert_fx's model is not the one that trained (trained_weights says why), so the script puts
  the trained weights back and records both figures: `top1_int8` (the trained b-bit weights in
  torch's int8 kernels) and `top1_int8_as_converted` (convert_fx's model as it comes).
- The recipe is PyTorch's QAT tutorial's, scaled to the epochs given: SGD (momentum 0.9) at
  --lr with a cosine decay, BN statistics frozen after half the epochs and the observers after
  all but the last.  Observers are off whenever the model is scored: in eval() mode torch.ao's
  fused fake-quant still moves its ranges, so scoring would change the model it scores.  It
  trains on the training images minus the 5,000 held-out ones, with the trainer's augmentation
  and data order, and reports held-out accuracy after every epoch.
- A checkpoint after every epoch (reports/qat/torchao_w{b}.pt); --resume continues it.
  --publish records into results/qat/torchao.json, keyed W{b}A8_e{epochs}.
"""
import datetime
import json
import math
import os
import sys
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from exporter.report import Progress, machine, versions, write_atomic  # noqa: E402


def qat_qconfig(bits):
    from torch.ao import quantization as tq
    if bits == 8:
        return tq.get_default_qat_qconfig("x86")
    base = tq.get_default_qat_qconfig("x86")
    weight = tq.FusedMovingAvgObsFakeQuantize.with_args(
        observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-(1 << (bits - 1)),
        quant_max=(1 << (bits - 1)) - 1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
    return tq.QConfig(activation=base.activation, weight=weight)


def build(bits, example):
    """The shipped FP32 model, prepared for QAT by torch.ao's FX mode (conv+BN(+ReLU) fused into
    its QAT modules, fake-quant observers everywhere)."""
    import copy
    from torch.ao.quantization import QConfigMapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx
    from exporter import source
    torch.backends.quantized.engine = "x86"
    model = copy.deepcopy(source.checkpoint_model(ROOT / "checkpoints" / "resnet20.pt")).train()
    mapping = QConfigMapping().set_global(qat_qconfig(bits))
    return prepare_qat_fx(model, mapping, (example,))


def trained_weights(prepared, q):
    """Give every lowered conv/linear of the converted model `q` the weights its fake-quant trained
    with: the BN-folded float weight of the same module in `prepared`, quantized with that
    fake-quant's own scale and zero point and clamped to its [quant_min, quant_max].  Returns
    {"codes": n, "codes_changed": m, "scale_ratio": [lo, hi]} over all those weights (the trained
    scale over convert_fx's, per channel).

    Why: the fake-quant trains with its fused op's scale, convert_fx quantizes with the
    observer's other one and without the clamp (docs/quantization.md section 12, "torch.ao's QAT
    below 8 bits"); at W2A8 convert_fx's model scored 0.1000 against 0.6233 for its fake-quant."""
    import copy
    changed = total = 0
    ratios = []
    sources = dict(prepared.named_modules())
    for name, mod in q.named_modules():
        src = sources.get(name)
        if not (hasattr(mod, "set_weight_bias") and hasattr(src, "weight_fake_quant")):
            continue
        fq = src.weight_fake_quant
        floated = copy.deepcopy(src).to_float()          # folds BN with its running statistics
        w = next(p for n, p in floated.named_parameters() if n.endswith("weight")).detach().float()
        old, b = mod._weight_bias()
        scale, zp = fq.scale.detach(), fq.zero_point.detach()
        trained = torch.fake_quantize_per_channel_affine(w, scale, zp, fq.ch_axis, fq.quant_min, fq.quant_max)
        new = torch.quantize_per_channel(trained, scale.double(), zp.long(), fq.ch_axis, torch.qint8)
        changed += int((new.int_repr() != old.int_repr()).sum())
        ratios.append(scale.double() / old.q_per_channel_scales())
        total += w.numel()
        mod.set_weight_bias(new, b)
    ratios = torch.cat(ratios)
    return {"codes": total, "codes_changed": changed, "scale_ratio": [float(ratios.min()), float(ratios.max())]}


def evaluate(model, images_nchw_u8, labels, bs=500):
    from trainer import data
    with torch.no_grad():
        pred = torch.cat([model(data.normalize(images_nchw_u8[s:s + bs])).argmax(1)
                          for s in range(0, len(labels), bs)])
    return float((pred == labels).float().mean())


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", type=click.Choice(["2", "4", "8"]), default="8", show_default=True,
              help="Weight bits (8: torch.ao's default QAT; 4 and 2: quant_min/quant_max, simulated).")
@click.option("--epochs", type=click.IntRange(1), default=3, show_default=True)
@click.option("--lr", type=click.FloatRange(0, min_open=True), default=1e-3, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--images", type=click.IntRange(1), default=None, help="Train on a seeded subset (smoke tests).")
@click.option("--limit", type=click.IntRange(1, 10000), default=None, help="Test images (default: all 10,000).")
@click.option("--data-dir", default=None)
@click.option("--checkpoint-dir", default=str(ROOT / "reports" / "qat"), show_default=True)
@click.option("--resume", is_flag=True, help="Continue from the checkpoint of the same settings.")
@click.option("--publish", is_flag=True, help="Record into results/qat/torchao.json.")
def main(bits, epochs, lr, batch, seed, images, limit, data_dir, checkpoint_dir, resume, publish):
    """torch.ao's QAT (prepare_qat_fx, convert_fx) on the shipped model: the peer row of the kinds section."""
    from torch.ao import quantization as tq
    from exporter import calibrate
    from intengine.cifar10 import DataError, load_test, seeded_subset
    from trainer import data
    from trainer.train import epoch_generator
    say = Progress()
    bits = int(bits)
    t_start, load0 = time.perf_counter(), os.getloadavg()[0]
    try:
        arrays = data.load_arrays(data_dir)
        test_x, test_y = load_test(data_dir)
    except DataError as e:
        raise click.ClickException(str(e)) from None
    if limit:
        pick = seeded_subset(len(test_y), limit, seed)
        test_x, test_y = test_x[pick], test_y[pick]
    train = arrays["x_train"]
    held = calibrate.heldout_indices(len(train))
    keep = np.flatnonzero(~np.isin(np.arange(len(train)), held))
    if images:
        keep = np.sort(keep[seeded_subset(len(keep), images, seed)])
    nchw = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    tx, ty = nchw(train[keep]), torch.from_numpy(arrays["y_train"][keep].astype(np.int64))
    hx, hy = nchw(train[held]), torch.from_numpy(arrays["y_train"][held].astype(np.int64))
    torch.manual_seed(seed)
    model = build(bits, data.normalize(tx[:2]))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    steps = len(ty) // batch
    if steps == 0:
        raise click.ClickException(f"{len(ty)} training images are fewer than one batch of {batch}")
    total = epochs * steps
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    ckpt = Path(checkpoint_dir) / f"torchao_w{bits}.pt"
    settings = {"bits": bits, "epochs": epochs, "lr": lr, "batch": batch, "seed": seed, "images": images}
    start, history = 0, []
    if resume and ckpt.is_file():
        state = torch.load(ckpt, weights_only=True)
        if state["settings"] != settings:
            raise click.ClickException(f"{ckpt} was made with {state['settings']}; rerun with those or without --resume")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, history = state["epoch"], state["history"]
        say(f"resumed from {ckpt} after epoch {start}")
    crit = torch.nn.CrossEntropyLoss()
    for e in range(start, epochs):
        t0 = time.perf_counter()
        model.train()
        if e >= max(1, epochs // 2):
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)
        model.apply(tq.disable_observer if e >= max(1, epochs - 1) else tq.enable_observer)
        g = epoch_generator(seed, e)
        perm = torch.randperm(len(ty), generator=g)
        ex, ey = data.augment(tx[perm], g), ty[perm]
        loss_sum = 0.0
        for t in range(steps):
            rows = slice(t * batch, (t + 1) * batch)
            loss = crit(model(data.normalize(ex[rows])), ey[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss.detach())
            if t % 50 == 49:
                say(f"epoch {e + 1}/{epochs} step {t + 1}/{steps}: loss {loss_sum / (t + 1):.4f}")
        model.eval()
        model.apply(tq.disable_observer)     # scoring must not move the ranges (eval() alone does not stop them)
        acc = evaluate(model, hx, hy)
        history.append({"epoch": e + 1, "train_loss": loss_sum / steps, "heldout_acc_fakequant": acc,
                        "seconds": round(time.perf_counter() - t0, 1)})
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        torch.save({"settings": settings, "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(), "epoch": e + 1, "history": history}, tmp)
        os.replace(tmp, ckpt)
        say(f"epoch {e + 1}/{epochs}: held-out top-1 (fake-quant) {acc:.4f}, {history[-1]['seconds']:.0f} s")
    model.eval()
    model.apply(tq.disable_observer)
    from exporter import source
    tx_, ty_ = nchw(test_x), torch.from_numpy(test_y.astype(np.int64))
    fq_acc = evaluate(model, tx_, ty_)
    from torch.ao.quantization.quantize_fx import convert_fx
    import copy
    q = convert_fx(copy.deepcopy(model).eval())
    converted_acc = evaluate(q, tx_, ty_)               # convert_fx's model as it comes
    fixed = trained_weights(model, q) if bits < 8 else None   # ... and with the weights it trained
    int8_acc = evaluate(q, tx_, ty_) if fixed else converted_acc
    fp = source.checkpoint_model(ROOT / "checkpoints" / "resnet20.pt")
    with torch.no_grad():
        fp_pred = torch.cat([fp(data.normalize(tx_[s:s + 500])).argmax(1) for s in range(0, len(ty_), 500)])
    agree = evaluate(q, tx_, fp_pred)                    # top-1 agreement with FP32
    engine = torch.backends.quantized.engine
    rec = {"bits_w": bits, "bits_a": 8, "top1_int8": int8_acc, "top1_fakequant": fq_acc, "agree_fp32": agree,
           "top1_int8_as_converted": converted_acc, "trained_weights": fixed,
           "test_images": len(test_y), "epochs": epochs, "history": history, "settings": settings,
           "train_images": int(len(ty)), "heldout_images": int(len(hy)),
           "seconds": round(time.perf_counter() - t_start, 1), "load1_start": round(load0, 2),
           "load1_end": round(os.getloadavg()[0], 2), "quantized_engine": engine,
           "api": "prepare_qat_fx + convert_fx",
           "qconfig": "get_default_qat_qconfig('x86')" if bits == 8 else
           f"x86 default activations; weights FusedMovingAvgObsFakeQuantize per-channel [{-(1 << (bits - 1))}, "
           f"{(1 << (bits - 1)) - 1}] (simulated {bits}-bit values in int8 kernels)",
           "command": "python scripts/torchao_qat.py " + " ".join(sys.argv[1:]),
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "machine": machine(), "versions": versions("torch", "numpy")}
    say(f"torch.ao QAT W{bits}A8, {epochs} epochs: int8 top-1 {int8_acc:.4f} (fake-quant {fq_acc:.4f}) "
        f"on {len(test_y):,} test images, {rec['seconds']:.0f} s")
    if fixed:
        say(f"convert_fx's model scores {converted_acc:.4f}; with the weights its fake-quant trained "
            f"({fixed['codes_changed']:,} of {fixed['codes']:,} codes and every scale, by "
            f"{fixed['scale_ratio'][0]:.2f}-{fixed['scale_ratio'][1]:.2f}x) {int8_acc:.4f}, the recorded figure")
    if publish:
        path = ROOT / "results" / "qat" / "torchao.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[f"W{bits}A8_e{epochs}"] = rec
        write_atomic(path, json.dumps(records, indent=1) + "\n")
        say(f"recorded in {path.relative_to(ROOT)}")
    else:
        click.echo(json.dumps({k: v for k, v in rec.items() if k not in ("machine",)}, indent=1))


if __name__ == "__main__":
    main()
