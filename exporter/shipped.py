"""The shipped networks beside the study's ResNet20: a trainer checkpoint in checkpoints/
whose training ran to its last epoch, with its default exports committed in models/ and
listed in results/networks/<arch>/files.json.

    python scripts/compare.py --checkpoint checkpoints/resnet56.pt --publish    # makes them
    python scripts/compare.py                       # the main job measures each one again

The main job runs each listed file through the engine (its evaluation cached by file digest,
report.EvalCache) and the peers on the float checkpoint; it leaves out, with the reason, a
network whose checkpoint or files are not the ones listed.
"""
import json
import os
import shutil
from pathlib import Path

from trainer.checkpoint import read_file
from .source import file_sha256

FOLDER = Path("results") / "networks"


def training(path):
    """-> (epochs done, epochs planned, arch) of a trainer checkpoint; None where it does not say."""
    state = read_file(Path(path))
    if not isinstance(state, dict):
        return None, None, None
    cfg = state.get("config") or {}
    return state.get("epoch"), cfg.get("epochs"), cfg.get("model")


def unfinished(path):
    """Why a checkpoint is not yet a shipped network (its training has not run to its last
    epoch), or None."""
    done, planned, arch = training(path)
    if done is None or planned is None:
        return f"{path} does not record its training (a bare state_dict); ship a trainer checkpoint"
    if done < planned:
        return f"{path} is at epoch {done} of {planned}; finish it with `python -m trainer --arch {arch} --resume`"
    return None


def manifest_path(root, arch):
    return Path(root) / FOLDER / arch / "files.json"


def publish(root, rep, exports, calib_default, checkpoint):
    """Copy a network report's default exports into root/models/<arch>_wBaA.npz and list them
    in files.json -> its path.  rep: the report (compare.py's), whose `ours` rows are the
    default exports; exports: {(bits, act_bits): the exported file}; checkpoint: the trainer
    checkpoint, inside root."""
    root, arch = Path(root), rep["network"]
    ckpt = Path(checkpoint).resolve().relative_to(root.resolve())
    files = []
    for row in rep["rows"]:
        if row["kind"] != "ours":
            continue
        b, a = row["bits_w"], row["bits_a"]
        rel = Path("models") / f"{arch}_w{b}a{a}.npz"
        tmp = root / rel.with_name(rel.name + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(exports[(b, a)], tmp)
        os.replace(tmp, root / rel)
        opts = (f" --act-bits {a}" if a != 8 else "") + \
            (f" --calib-images {rep['calibration_images']}" if rep["calibration_images"] != calib_default else "") + \
            (f" --seed {rep['seed']}" if rep["seed"] else "") + \
            (f" --iters {rep['recon_iters']}" if rep["recon_iters"] and b < 8 else "")
        files.append({"bits": b, "act_bits": a, "file": str(rel), "sha256": file_sha256(root / rel),
                      "command": f"python -m exporter --checkpoint {ckpt} --bits {b}{opts} --out {rel}",
                      "export_s": row.get("export_s"), "note": row["note"]})
    manifest = {"arch": arch, "checkpoint": str(ckpt), "checkpoint_sha256": rep["checkpoint_sha256"],
                "published": rep["date"], "n_test": rep["n_test"], "files": files}
    path = manifest_path(root, arch)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def networks(root):
    """-> [(manifest, why)] for every listed network, in name order: why is None where its
    checkpoint and every file are the ones listed (same sha256), else the reason it is left out.
    Each manifest's "root" is `root`, which its paths are relative to."""
    out = []
    for path in sorted((Path(root) / FOLDER).glob("*/files.json")):
        m = {**json.loads(path.read_text()), "root": str(root)}
        ckpt = Path(root) / m["checkpoint"]
        why = None
        if not ckpt.is_file() or file_sha256(ckpt) != m["checkpoint_sha256"]:
            why = f"{m['checkpoint']} is not the checkpoint its files were made from"
        else:
            bad = [f["file"] for f in m["files"]
                   if not (Path(root) / f["file"]).is_file() or file_sha256(Path(root) / f["file"]) != f["sha256"]]
            if bad:
                why = f"{bad[0]} is missing or not the file listed in {path.relative_to(root)}"
        out.append((m, why))
    return out
