"""The peer row: AIMET's AdaRound (aimet-torch) on the shipped ResNet20, with the same 1,024
calibration images (exporter.calibrate.calibration_images, same seed) and the same
first/last-layer setting (stem conv and fc at 8 bits), per-channel weights, 8-bit activations.

    pip install -e ".[peers]"      # or a separate venv with aimet-torch, see README
    CIFAR10_DIR=../shared/data python scripts/aimet_adaround.py --bits 2 --iters 500 [--publish]

AIMET folds BN, learns the rounding layer by layer (its defaults: reg 0.01, beta 20->2,
warm start 0.2), then a QuantizationSimModel with those frozen weight encodings computes
min/max activation encodings (post_training_tf) on the same images, and its fake-quant
model is scored on all 10,000 test images (AIMET simulates; it has no integer engine).
With --write the figures go into results/aimet_adaround.json, keyed W{bits}A8_s{seed}.
"""
import datetime
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import click
import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bits", type=click.Choice(["2", "4"]), required=True)
@click.option("--iters", type=click.IntRange(1), default=500, show_default=True,
              help="AdaRound steps per layer (AIMET's default, 15,000, does not fit this CPU).")
@click.option("--seed", type=int, default=0, show_default=True, help="Calibration sample seed.")
@click.option("--calib-images", type=int, default=1024, show_default=True)
@click.option("--limit", type=int, default=None, help="Test images (default: all 10,000).")
@click.option("--data-dir", default=None)
@click.option("--publish", "--write", "write", is_flag=True, help="(--write is the old spelling.) Record into results/aimet_adaround.json.")
def main(bits, iters, seed, calib_images, limit, data_dir, write):
    """AIMET AdaRound on the shipped model, scored by AIMET's own simulation (the peer row)."""
    try:
        import aimet_torch
    except ImportError:
        raise click.ClickException("aimet-torch is not installed: pip install -e \".[peers]\" "
                                   "(or a separate venv with aimet-torch, see README)") from None
    from aimet_torch.adaround.adaround_weight import Adaround, AdaroundParameters
    from aimet_torch.batch_norm_fold import fold_all_batch_norms
    from aimet_torch.common.defs import QuantScheme
    from aimet_torch.model_preparer import prepare_model
    from aimet_torch.quantsim import QuantizationSimModel
    from exporter import calibrate, source
    from intengine.cifar10 import load_test
    from trainer import data

    torch.manual_seed(seed)
    bits = int(bits)
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    model = source.checkpoint_model(ROOT / "checkpoints" / "resnet20.pt").float()
    model = prepare_model(model)
    dummy = torch.zeros(1, 3, 32, 32)
    fold_all_batch_norms(model, input_shapes=(1, 3, 32, 32))
    train = data.load_arrays(data_dir)["x_train"]
    images, _, idx_hash = calibrate.calibration_images(train, calib_images, seed)
    x = calibrate.normalize64(images).float()
    batches = [x[s:s + 32] for s in range(0, len(x), 32)]
    config = Path(aimet_torch.__file__).parent / "common" / "quantsim_config" / "default_config_per_channel.json"
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    first, last = dict(model.named_modules())[names[0]], dict(model.named_modules())[names[-1]]
    params = AdaroundParameters(data_loader=batches, num_batches=len(batches), default_num_iterations=iters,
                                forward_fn=lambda m, b: m(b))
    with tempfile.TemporaryDirectory() as tmp:
        ada = Adaround.apply_adaround(model, dummy, params, path=tmp, filename_prefix="resnet20",
                                      default_param_bw=bits, param_bw_override_list=[(first, 8), (last, 8)],
                                      default_quant_scheme=QuantScheme.post_training_tf_enhanced,
                                      default_config_file=str(config))
        sim = QuantizationSimModel(ada, dummy_input=dummy, quant_scheme=QuantScheme.post_training_tf,
                                   default_output_bw=8, default_param_bw=bits, config_file=str(config))
        sim.set_and_freeze_param_encodings(os.path.join(tmp, "resnet20.encodings"))
        sim.compute_encodings(lambda m, _: [m(b) for b in batches], None)
    export_s = time.perf_counter() - t0
    test_x, test_y = load_test(data_dir)
    if limit:
        test_x, test_y = test_x[:limit], test_y[:limit]
    fp32 = source.checkpoint_model(ROOT / "checkpoints" / "resnet20.pt").float()
    with torch.no_grad():
        pred, ref = [], []
        for s in range(0, len(test_x), 500):
            t = calibrate.normalize64(test_x[s:s + 500]).float()
            pred.append(sim.model(t).argmax(1).numpy())
            ref.append(fp32(t).argmax(1).numpy())
    pred, ref, y = np.concatenate(pred), np.concatenate(ref), np.asarray(test_y).astype(np.int64)
    rec = {"top1": float((pred == y).mean()), "agree_fp32": float((pred == ref).mean()),
           "fp32_top1": float((ref == y).mean()), "test_images": len(y), "bits": bits, "act_bits": 8,
           "first_last_bits": 8, "iters_per_layer": iters, "seed": seed, "calib_images": calib_images,
           "calib_indices_sha256": idx_hash, "export_seconds": round(export_s, 1),
           "load1_before": round(load0, 2), "load1_after": round(os.getloadavg()[0], 2),
           "weights": "per channel, tf_enhanced (AIMET's AdaRound default), AdaRound reg 0.01, beta 20->2",
           "activations": "post_training_tf (min/max) on the calibration images, 8 bits",
           "command": f"python scripts/aimet_adaround.py --bits {bits} --iters {iters} --seed {seed} --publish",
           "aimet_torch": getattr(aimet_torch, "__version__", "?"), "torch": torch.__version__,
           "python": platform.python_version(),
           "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    click.echo(json.dumps(rec))
    if write:
        path = ROOT / "results" / "aimet_adaround.json"
        allr = json.loads(path.read_text()) if path.is_file() else {}
        allr[f"W{bits}A8_s{seed}" + (f"_it{iters}" if iters != 250 else "")] = rec
        path.write_text(json.dumps(allr, indent=1) + "\n")


if __name__ == "__main__":
    from intengine.cli import run as run_cli
    run_cli(main)
