"""The shipped networks beside the study's ResNet20 (exporter/shipped.py): published once from a
finished checkpoint, then measured by the main job from their committed files, and the
report's table across networks (scripts/compare.py)."""
import json
import re
import subprocess
import sys

import torch

from exporter import shipped, source
from trainer import checkpoint
from trainer.model import build

from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))


def _checkpoint(path, epoch, epochs):
    torch.manual_seed(0)
    model = build("resnet20")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint.save(path, model=model, optimizer=opt, scheduler=torch.optim.lr_scheduler.StepLR(opt, 1),
                    epoch=epoch, config={"model": "resnet20", "epochs": epochs}, metrics=[])
    return path


def test_only_a_finished_checkpoint_in_checkpoints_is_published(tmp_path):
    part = _checkpoint(tmp_path / "part.pt", 3, 120)
    assert "at epoch 3 of 120; finish it with `python -m trainer --arch resnet20 --resume`" in shipped.unfinished(part)
    assert shipped.unfinished(_checkpoint(tmp_path / "done.pt", 120, 120)) is None
    r = subprocess.run([sys.executable, "scripts/compare.py", "--checkpoint", str(part), "--publish", "--out",
                        str(tmp_path / "no")], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "a trainer checkpoint in checkpoints/" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "no").exists()


def test_a_published_network_is_measured_again_from_its_committed_files(data_dir, tmp_path, monkeypatch, capsys):
    """Publish (the default exports copied into models/, listed with their commands), then the
    main job's pass over it: the engine runs the listed files, their predictions come from the
    cache and equal the fresh ones, every stage line reads on one clock, and a file that
    changed leaves the network out."""
    import compare
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "repo"
    ckpt = _checkpoint(root / "checkpoints" / "net.pt", 1, 1)
    rep = compare.measure(source.load(ckpt), data_dir, 96, 32, 0, tmp_path / "exports", iters=2, quick=True)
    fresh = {r["name"]: r for r in rep["rows"] if r["kind"] == "ours"}
    assert len(fresh) == 4
    exports = {(r["bits_w"], r["bits_a"]): r["file"] for r in fresh.values()}
    listed = shipped.publish(root, rep, exports, 1024, ckpt)
    man = json.loads(listed.read_text())
    assert man["checkpoint"] == "checkpoints/net.pt" and len(man["files"]) == 4
    w4a4 = next(f for f in man["files"] if (f["bits"], f["act_bits"]) == (4, 4))
    assert w4a4["command"] == ("python -m exporter --checkpoint checkpoints/net.pt --bits 4 --act-bits 4 "
                               "--calib-images 32 --iters 2 --out models/resnet20_w4a4.npz")
    [(m, why)] = shipped.networks(root)
    assert why is None and m["root"] == str(root)

    net = compare.measure(source.load(ckpt), data_dir, 96, 32, 0, tmp_path / "unused", iters=2, quick=True,
                          committed=m)
    times = [float(t) for t in re.findall(r"^\[\s*(\d+\.\d) s\]", capsys.readouterr().err, re.M)]
    assert len(times) > 20 and times == sorted(times), times      # both networks' stages, one clock
    again = {r["name"]: r for r in net["rows"] if r["kind"] == "ours"}
    assert sorted(again) == sorted(fresh) and not (tmp_path / "unused" / "resnet20_w8a8.npz").exists()
    for name, r in again.items():
        assert r["accuracy"] == fresh[name]["accuracy"] and r["evaluation"].startswith("cached evaluation")
        assert r["cli"].startswith("python -m exporter --checkpoint checkpoints/net.pt") and r["images_per_s"] > 0

    study = json.loads((ROOT / "results" / "results.json").read_text())
    study["networks"] = [net]
    md = compare.markdown(study, "accuracy_vs_size.png")
    table = md.split("\n| network | method | FP32 | W8A8 | W4A8 | W2A8 | W4A4 |\n", 1)[1].split("\n\n", 1)[0]
    rows = table.splitlines()[1:]
    assert sum("**intengine, the defaults**" in r for r in rows) == 2, rows
    assert sum("torch.ao int8 (x86 default qconfig)" in r for r in rows) == 2, rows
    assert "## ResNet20 / CIFAR-10: all runs" in md and md.count("| row | W | A | top-1 |") == 2
    verdict = md.split("\n\n")[1]                  # the network's sentence closes the verdict
    assert verdict.count(" On ResNet20 / CIFAR-10 (FP32 ") == 1
    assert "; torch.ao int8 (x86 default qconfig) " in verdict.split(" On ResNet20 / CIFAR-10 (FP32 ")[1]
    assert "(`--checkpoint checkpoints/net.pt --publish`)" in md
    assert compare.summary(study).splitlines()[-1].startswith("  ResNet20 / CIFAR-10 (FP32 ")

    (root / man["files"][0]["file"]).write_bytes(b"changed")
    [(m, why)] = shipped.networks(root)
    assert why == f"{man['files'][0]['file']} is missing or not the file listed in results/networks/resnet20/files.json"
