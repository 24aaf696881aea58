"""`python -m intengine eval|predict|info MODEL.npz`: the integer engine's command line.

Torch-free: the test set comes from cifar10.npz (intengine/cifar10.py), images from
Pillow.  Expected failures end in one `error:` line and exit status 2.
"""
import json
import os
import time

import click
import numpy as np
from tqdm import tqdm

from . import cifar10
from .cli import fail as _fail, run as run_cli
from .fileformat import FormatError
from .model import load




def _guard(fn):
    try:
        fn()
    except (FormatError, cifar10.DataError, ValueError) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    except KeyboardInterrupt:
        _fail("interrupted")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Integer-only inference of an exported ResNet20 (see README)."""


def evaluate(model, images, labels, batch_size, progress=True):
    """-> dict with accuracy, n, images_per_s (after the first batch) and first_result_s (JIT)."""
    n, t_first, preds = len(labels), None, []
    t0 = time.perf_counter()
    with tqdm(total=n, unit="img", desc="intengine eval", disable=not progress, leave=False) as bar:
        for s in range(0, n, batch_size):
            logits = model.run(images[s:s + batch_size])
            preds.append(logits.argmax(1))           # ties: lowest class, section 9
            if t_first is None:
                t_first = time.perf_counter()
            bar.update(len(logits))
    t_end = time.perf_counter()
    pred = np.concatenate(preds)
    correct = int((pred == labels).sum())
    rest = n - min(batch_size, n)
    speed = rest / (t_end - t_first) if rest else n / (t_end - t0)
    return {"accuracy": correct / n, "correct": correct, "n": n, "images_per_s": speed,
            "first_result_s": t_first - t0, "total_s": t_end - t0}, pred


@cli.command("eval")
@click.argument("model_path", metavar="MODEL.npz")
@click.option("--data-dir", default=None, help="Folder with cifar10.npz  [default: $CIFAR10_DIR, else the cache]")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Seeded random subset of the test set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit subset.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line: accuracy, n, images_per_s, ...")
@click.option("--predictions", default=None, metavar="FILE.npy",
              help="Also save the predicted class of each evaluated image (int64, test-set order).")
def eval_cmd(model_path, data_dir, batch_size, limit, seed, progress, as_json, predictions):
    """Accuracy on the CIFAR-10 test set, images/s and the time to first result."""
    def run():
        model = load(model_path)
        images, labels = cifar10.load_test(data_dir)
        idx = cifar10.seeded_subset(len(labels), limit, seed)
        r, pred = evaluate(model, images[idx], labels[idx].astype(np.int64), batch_size, progress)
        if predictions:                              # atomically: no half-written file
            tmp = f"{predictions}.{os.getpid()}.tmp.npy"
            np.save(tmp, pred.astype(np.int64))
            os.replace(tmp, predictions)
        meta = model.header.get("meta", {})
        r.update(model=str(model_path), bits=meta.get("bits"), act_bits=meta.get("act_bits"),
                 batch_size=batch_size, limit=limit, seed=seed)
        click.echo(f"{model_path}: accuracy {r['accuracy']:.4f} ({r['correct']}/{r['n']}), "
                   f"{r['images_per_s']:.0f} images/s at batch {batch_size}, "
                   f"first result after {r['first_result_s']:.2f} s (JIT or cache load)")
        if as_json:
            click.echo(json.dumps(r))
    _guard(run)


def read_image(path, resize):
    """A PNG/JPEG/... file -> (32,32,3) uint8 RGB.  Other sizes: an error, or --resize."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as im:
            if resize:
                im = im.convert("RGB").resize((32, 32), Image.BILINEAR)
            elif im.size != (32, 32) or im.mode != "RGB":
                raise ValueError(f"{path}: {im.size[0]}x{im.size[1]} {im.mode}, expected 32x32 RGB "
                                 f"(pass --resize to convert and resize bilinearly)")
            return np.asarray(im, np.uint8)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not an image file") from None


@cli.command("predict")
@click.argument("model_path", metavar="MODEL.npz")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--resize", is_flag=True, help="Convert to RGB and resize to 32x32 (bilinear) instead of failing.")
def predict_cmd(model_path, images, resize):
    """Class and score of each image (32x32 RGB, e.g. PNG)."""
    def run():
        model = load(model_path)
        x = np.stack([read_image(p, resize) for p in images])
        q = model.predict(x)
        real = model.dequantize_logits(q)            # printing only: the one float step
        for p, qi, ri in zip(images, q, real):
            k = int(qi.argmax())
            click.echo(f"{p}: {model.classes[k]} (logit {ri[k]:.3f}, integer {int(qi[k])})")
    _guard(run)


@cli.command("info")
@click.argument("model_path", metavar="MODEL.npz")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with a `layers` list.")
def info_cmd(model_path, as_json):
    """Layers with their weight/activation bits, scales and sizes."""
    def run():
        model = load(model_path)
        layers = []
        for op in model.ops:
            spec, bits = op.spec, int(model.act_bits[op.out])
            row = {"name": op.name, "op": op.kind, "bits_a": bits, "out_scale": float(model.act_scale[op.out]),
                   "out_zero_point": int(model.zero_points[op.out]), "bits_w": spec.get("bits_w")}
            if op.kind in ("conv", "linear"):
                ws = model.weight_scale[spec["offset"]:spec["offset"] + spec["cout"]]
                row.update(shape=list(op.w.shape), weight_bytes=spec["w_nbytes"],
                           levels=spec.get("levels"), weight_scale_min=float(ws.min()),
                           weight_scale_max=float(ws.max()))
            layers.append(row)
        info = {"file": str(model_path), "size_bytes": os.path.getsize(model_path),
                "meta": model.header.get("meta", {}), "layers": layers}
        if as_json:
            click.echo(json.dumps(info))
            return
        m = info["meta"]
        click.echo(f"{model_path}: {info['size_bytes']:,} bytes, W{m.get('bits')}A{m.get('act_bits')}, "
                   f"exporter {m.get('exporter_version')}, checkpoint sha256 {str(m.get('checkpoint_sha256'))[:12]}")
        click.echo(f"{'layer':18} {'op':6} {'W':>3} {'A':>3} {'weight bytes':>12}  {'weight scale':>21}  out scale / zp")
        for r in layers:
            ws = f"{r['weight_scale_min']:.3g}..{r['weight_scale_max']:.3g}" if "shape" in r else ""
            click.echo(f"{r['name']:18} {r['op']:6} {r['bits_w'] or '':>3} {r['bits_a']:>3} "
                       f"{r.get('weight_bytes', ''):>12}  {ws:>21}  {r['out_scale']:.4g} / {r['out_zero_point']}")
    _guard(run)


def main():
    run_cli(cli)


if __name__ == "__main__":
    main()
