"""`python -m intengine eval|predict|info|verify MODEL.npz`: the integer engine's command line.

Torch-free: the test set comes from cifar10.npz (intengine/cifar10.py), images from
Pillow.  Expected failures end in one `error:` line and exit status 2.
"""
import json
import os
import time
import warnings
from pathlib import Path

import click
import numpy as np
from tqdm import tqdm

from . import cifar10
from .cli import fail as _fail, run as run_cli
from .fileformat import FormatError
from . import cpu
from .model import load

MAX_PIXELS = 4096 * 4096            # an image declaring more is refused before it is decoded
IMAGE_FORMATS = ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM"]   # no plugin that runs tools


def _guard(fn):
    try:
        fn()
    except (FormatError, cifar10.DataError, ValueError) as e:
        _fail(str(e))
    except MemoryError:
        _fail("out of memory; try a smaller --batch-size")
    except OSError as e:
        _fail(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    except KeyboardInterrupt:
        _fail("interrupted")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli():
    """Integer-only inference of an exported model file (see README)."""


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


@cli.command("eval", short_help="Accuracy and speed on the test set (CIFAR-10 or --data-dir).")
@click.argument("model_path", metavar="MODEL.npz")
@click.option("--data-dir", default=None, help="Folder with cifar10.npz, or a dataset .npz in its layout  [default: $CIFAR10_DIR, else the cache]")
@click.option("--batch-size", type=click.IntRange(1), default=256, show_default=True)
@click.option("--limit", type=click.IntRange(1), default=None, help="Seeded random subset of the test set.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the --limit subset.")
@click.option("--progress/--no-progress", default=True, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="End with one JSON line: accuracy, n, images_per_s, ...")
@click.option("--predictions", default=None, metavar="FILE.npy",
              help="Also save the predicted class of each evaluated image (int64, test-set order).")
def eval_cmd(model_path, data_dir, batch_size, limit, seed, progress, as_json, predictions):
    """Accuracy on the test set (CIFAR-10, or the dataset --data-dir names), images/s and the time to first result."""
    def run():
        if predictions:
            check_writable(predictions, ".npy", "--predictions")
        model = load(model_path)
        images, labels = cifar10.load_test(data_dir)
        if images.shape[1:] != model.input_shape:
            raise ValueError(f"{model_path} takes {'x'.join(map(str, model.input_shape))} images; the test set "
                             f"holds {'x'.join(map(str, images.shape[1:]))}")
        if labels.max() >= len(model.classes):
            raise ValueError(f"{model_path} has {len(model.classes)} classes; the test set's labels go up to "
                             f"{labels.max()}")
        if limit and limit > len(labels):
            click.echo(f"note: --limit {limit} is more than the {len(labels):,} test images; "
                       f"evaluating all of them", err=True)
        idx = cifar10.seeded_subset(len(labels), limit, seed)
        r, pred = evaluate(model, images[idx], labels[idx].astype(np.int64), batch_size, progress)
        if predictions:                              # atomically: no half-written file
            tmp = f"{predictions}.{os.getpid()}.tmp.npy"
            try:
                np.save(tmp, pred.astype(np.int64))
                os.replace(tmp, predictions)
            except OSError as e:
                Path(tmp).unlink(missing_ok=True)
                raise ValueError(f"cannot write --predictions {predictions}: {e.strerror or e}") from None
        meta = model.header.get("meta", {})
        r.update(model=str(model_path), bits=meta.get("bits"), act_bits=meta.get("act_bits"),
                 batch_size=batch_size, limit=limit, seed=seed, kernel=model.kernel,
                 content_sha256=model.header["content_sha256"])
        click.echo(f"{model_path}: accuracy {r['accuracy']:.4f} ({r['correct']}/{r['n']}), "
                   f"{r['images_per_s']:.0f} images/s at batch {batch_size} ({model.kernel} kernel), "
                   f"first result after {r['first_result_s']:.2f} s (JIT or cache load)")
        if as_json:
            click.echo(json.dumps(r))
    _guard(run)


def check_writable(path, suffix, option):
    """Refuse, before any work, an output path that cannot be written: a wrong suffix, a
    folder, or a parent folder that is missing or not writable (ValueError, one line)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(f"{option} {path} is a folder; give a file name")
    if p.suffix != suffix:
        raise ValueError(f"{option} {path}: the file name must end in {suffix}")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise ValueError(f"{option} {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ValueError(f"{option} {path}: not writable")


class ImageError(ValueError):
    """An image that cannot be used; the message names the file and the reason."""


def _to_rgb(im):
    """A decoded Pillow image -> (RGB image, what was converted or None).  The conversions
    are listed in docs/reliability.md, section 7."""
    from PIL import Image
    mode = im.mode
    if mode == "RGB":
        return im, None
    if mode.startswith("I"):                       # 16-bit (or 32-bit) grayscale: keep the top 8 bits
        g = (np.clip(np.asarray(im).astype(np.int64), 0, 65535) >> 8).astype(np.uint8)
        return Image.fromarray(np.stack([g] * 3, axis=-1)), f"{mode} (16-bit grayscale) scaled to 8 bits and converted to RGB"
    if mode == "F":
        raise ImageError(f"{getattr(im, 'filename', '')}: floating-point pixels; save it as 8-bit RGB")
    if mode in ("P", "PA"):                        # palette: through RGBA so transparency is read
        return im.convert("RGBA").convert("RGB"), f"palette ({mode}) converted to RGB, alpha dropped"
    what = {"L": "grayscale", "1": "black-and-white", "LA": "grayscale with alpha", "RGBA": "RGBA",
            "CMYK": "CMYK (Pillow's formula, no colour profile)"}.get(mode, mode)
    return im.convert("RGB"), f"{what} converted to RGB" + (", alpha dropped" if "A" in mode else "")


def read_image(path, resize, shape=(32, 32, 3)):
    """An image file -> ((H,W,C) uint8 for the model's input `shape`, a note on what was
    converted, or None).

    Any colour mode is converted to RGB (and said so), or to grayscale (C = 1) or RGBA (C = 4)
    for a model that takes those.  Other sizes are an error unless `resize` (bilinear).  Sizes
    are checked from the file header before decoding."""
    H, W, C = shape
    from PIL import Image, UnidentifiedImageError
    p = Path(path)
    if p.is_dir():
        raise ImageError(f"{path}: is a folder, not an image")
    if not p.is_file():
        raise ImageError(f"{path}: no such file")
    if p.stat().st_size == 0:
        raise ImageError(f"{path}: empty file, not an image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(p, formats=IMAGE_FORMATS) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(f"{path}: declares {w}x{h} pixels, more than {MAX_PIXELS:,}; "
                                     f"refused before decoding")
                if (w, h) != (W, H) and not resize:
                    raise ImageError(f"{path}: {w}x{h} {im.mode}, expected {W}x{H} (pass --resize "
                                     f"to resize bilinearly)")
                im.load()
                if C == 3:
                    rgb, note = _to_rgb(im)
                else:
                    mode = "L" if C == 1 else "RGBA"
                    rgb, note = im.convert(mode), None if im.mode == mode else f"{im.mode} converted to {mode}"
                if (w, h) != (W, H):
                    rgb = rgb.resize((W, H), Image.BILINEAR)
                    note = ", ".join(filter(None, [note, f"resized {w}x{h} to {W}x{H}"]))
                return np.asarray(rgb, np.uint8).reshape(H, W, C), note
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (or not one of {', '.join(IMAGE_FORMATS)})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(f"{path}: declares too many pixels (decompression bomb); refused") from None
    except Exception as e:  # Pillow raises OSError, SyntaxError, ... for damaged data
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ImageError(f"{path}: truncated or damaged image ({msg})") from None


@cli.command("predict", short_help="Class and probability of each image file.")
@click.argument("model_path", metavar="MODEL.npz")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option("--resize", is_flag=True, help="Resize other sizes to the model's input (bilinear) instead of failing.")
@click.option("--top-k", type=click.IntRange(1), default=1, show_default=True,
              help="Also list the K most probable classes.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: per image the class, logit, integer logit, probability, top-k.")
def predict_cmd(model_path, images, resize, top_k, as_json):
    """Class and probability of each image.  Images of the model's input size (32x32 RGB for
    CIFAR-10) in any colour mode are converted (a note on stderr says so); other sizes need
    --resize."""
    def run():
        model = load(model_path)
        read = [read_image(p, resize, model.input_shape) for p in images]
        for p, (_, note) in zip(images, read):
            if note:
                click.echo(f"note: {p}: {note}", err=True)
        x = np.stack([a for a, _ in read])
        q = model.predict(x)
        real = model.dequantize_logits(q)            # after the integer network: the float steps
        proba = model.softmax(real)
        k = min(top_k, len(model.classes))
        if k < top_k:
            click.echo(f"note: --top-k {top_k} is more than the {k} classes; listing all {k}", err=True)
        rows = []
        for p, qi, ri, pi, best, (_, note) in zip(images, q, real, proba, model.rank(proba, k), read):
            c = int(best[0])
            rows.append({"file": str(p), "class": model.classes[c], "index": c, "logit": float(ri[c]),
                         "integer": int(qi[c]), "probability": float(pi[c]), "converted": note,
                         "top_k": [{"class": model.classes[j], "index": int(j),
                                    "probability": float(pi[j]), "logit": float(ri[j])} for j in best]})
        if as_json:
            click.echo(json.dumps({"model": str(model_path), "top_k": k, "predictions": rows}))
            return
        for r in rows:
            top = "" if k == 1 else f"; top {k}: " + ", ".join(f"{t['class']} {t['probability']:.3f}"
                                                             for t in r["top_k"])
            click.echo(f"{r['file']}: {r['class']} p {r['probability']:.3f} (logit {r['logit']:.3f}, "
                       f"integer {r['integer']}){top}")
    _guard(run)


@cli.command("verify", short_help="Check model files: digest and every format rule.")
@click.argument("model_paths", nargs=-1, required=True, metavar="MODEL.npz...")
def verify_cmd(model_paths):
    """Check each file's sha256 content digest and every rule of docs/format.md, and unpack
    it, without running it.  One line per file, every file checked; exit status 2 if any
    file is bad, after a last line that counts them."""
    def run():
        bad = []
        for p in model_paths:
            try:
                m = load(p)
            except (FormatError, ValueError, OSError) as e:
                msg = f"{e.strerror or e}" if isinstance(e, OSError) else str(e)
                click.echo(f"{p}: bad: {msg}")
                bad.append(msg if msg.startswith(str(p)) else f"{p}: {msg}")
                continue
            meta = m.header.get("meta", {})
            n = sum(op.impl.WEIGHTED for op in m.ops)
            click.echo(f"{p}: ok, format version {m.format_version}, W{meta.get('bits')}A{meta.get('act_bits')}, "
                       f"{n} weighted layers, {os.path.getsize(p):,} bytes, content sha256 "
                       f"{m.header['content_sha256'][:16]}")
        if bad:
            _fail(bad[0] if len(model_paths) == 1 else
                  f"{len(bad)} of {len(model_paths)} files failed verification; the first: {bad[0]}")
    _guard(run)


@cli.command("info", short_help="Layers, bits, scales and sizes of a model file.")
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
            if op.impl.WEIGHTED:
                ws = model.weight_scale[spec["offset"]:spec["offset"] + spec["cout"]]
                row.update(shape=list(op.w.shape), weight_bytes=spec["w_nbytes"],
                           levels=spec.get("levels"), weight_scale_min=float(ws.min()),
                           weight_scale_max=float(ws.max()))
            layers.append(row)
        info = {"file": str(model_path), "size_bytes": os.path.getsize(model_path), "format_version": model.format_version,
                "content_sha256": model.header["content_sha256"],
                "meta": model.header.get("meta", {}), "kernel": model.kernel,
                "cpu": kernel_cpu(), "layers": layers}
        if as_json:
            click.echo(json.dumps(info))
            return
        m = info["meta"]
        widths = sorted({r["bits_w"] for r in layers if r["bits_w"]})
        inner = sorted({r["bits_w"] for r in layers[1:-1] if r["bits_w"]})
        label = (f"mixed {'/'.join(f'W{b}' for b in widths)} A{m.get('act_bits')}" if len(inner) > 1
                 else f"W{m.get('bits')}A{m.get('act_bits')}")
        q = m.get("qat") if isinstance(m.get("qat"), dict) else None
        if q and isinstance(q.get("history"), list):
            label += f", QAT {len(q['history']) - 1} epochs"
        click.echo(f"{model_path}: {info['size_bytes']:,} bytes, {label}, "
                   f"exporter {m.get('exporter_version')}, checkpoint sha256 {str(m.get('checkpoint_sha256'))[:12]}, "
                   f"format {info['format_version']}, content sha256 {info['content_sha256'][:12]} (checked)")
        click.echo(f"kernel: {info['kernel']} (processor {info['cpu']['name']}, avx512vnni "
                   f"{info['cpu']['avx512vnni']}, amx-int8 {info['cpu']['amx-int8']}; "
                   f"{cpu.ENV}=vnni|avxvnni|avx2|portable|scalar forces another path)")
        click.echo(f"{'layer':18} {'op':7} {'W':>3} {'A':>3} {'weight bytes':>12}  {'weight scale':>21}  out scale / zp")
        for r in layers:
            ws = f"{r['weight_scale_min']:.3g}..{r['weight_scale_max']:.3g}" if "shape" in r else ""
            click.echo(f"{r['name']:18} {r['op']:7} {r['bits_w'] or '':>3} {r['bits_a']:>3} "
                       f"{r.get('weight_bytes', ''):>12}  {ws:>21}  {r['out_scale']:.4g} / {r['out_zero_point']}")
    _guard(run)


def kernel_cpu():
    """The processor facts behind the kernel choice (cpu.py)."""
    f = cpu.host_features()
    return {"name": cpu.llvm_cpu_name(), "avx512vnni": f.get("avx512vnni", False),
            "amx-int8": f.get("amx-int8", False)}


def main():
    run_cli(cli)


if __name__ == "__main__":
    main()
