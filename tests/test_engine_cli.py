"""`python -m intengine eval|predict|info` and the embedding API."""
import json
import re

import numpy as np
import pytest
from PIL import Image

import intengine
from conftest import one_line_error, run_cli


def test_eval_json(exported, data_dir, tmp_path):
    pred = tmp_path / "pred.npy"
    r = run_cli("intengine", "eval", exported[8][0], "--limit", "300", "--json", "--no-progress",
                "--predictions", pred, env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["n"] == 300 and res["accuracy"] > 0.6 and res["images_per_s"] > 0
    assert res["first_result_s"] > 0 and "accuracy" in r.stdout.splitlines()[0]
    p = np.load(pred)
    assert p.shape == (300,) and round(res["accuracy"] * 300) == res["correct"]


def test_eval_limit_is_a_seeded_random_subset(exported, data_dir, tmp_path):
    runs = []
    for seed in (0, 0, 1):
        out = tmp_path / f"p{len(runs)}.npy"
        r = run_cli("intengine", "eval", exported[4][0], "--limit", "50", "--seed", seed, "--no-progress",
                    "--predictions", out, env={"CIFAR10_DIR": data_dir})
        assert r.returncode == 0, r.stderr
        runs.append(np.load(out))
    assert np.array_equal(runs[0], runs[1]) and not np.array_equal(runs[0], runs[2])


def test_eval_without_dataset(exported, tmp_path):
    r = run_cli("intengine", "eval", exported[4][0], "--data-dir", tmp_path / "nowhere")
    one_line_error(r, "no cifar10.npz")


def test_info_json(exported):
    r = run_cli("intengine", "info", exported[4][0], "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout.strip().splitlines()[-1])
    layers = info["layers"]
    weighted = [l for l in layers if l["op"] in ("conv", "linear")]
    assert len(weighted) == 20 and all({"name", "bits_w", "bits_a"} <= set(l) for l in layers)
    assert [l["bits_w"] for l in weighted] == [8] + [4] * 18 + [8]
    assert {l["bits_a"] for l in layers} == {8}
    r = run_cli("intengine", "info", exported[16][0])
    assert r.returncode == 0 and "W16A16" in r.stdout and "layer3.2.conv2" in r.stdout


def test_predict(exported, test_images, tmp_path):
    x, y = test_images
    files = []
    for i in range(3):
        files.append(tmp_path / f"img{i}.png")
        Image.fromarray(x[i]).save(files[-1])
    r = run_cli("intengine", "predict", exported[8][0], *files)
    assert r.returncode == 0, r.stderr
    model = intengine.load(exported[8][0])
    want = model.predict(x[:3]).argmax(1)
    lines = r.stdout.strip().splitlines()
    assert [l.split(": ")[1].split(" p ")[0] for l in lines] == [model.classes[k] for k in want]
    assert all(re.match(r"^\S+: \w+ p [01]\.\d{3} \(logit -?\d+\.\d{3}, integer -?\d+\)$", l) for l in lines), lines
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(big)
    one_line_error(run_cli("intengine", "predict", exported[8][0], big), "expected 32x32 (pass --resize")
    r = run_cli("intengine", "predict", exported[8][0], big, "--resize")
    assert r.returncode == 0 and r.stdout.startswith(str(big))
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    one_line_error(run_cli("intengine", "predict", exported[8][0], text), "not an image")


def test_api(exported, test_images):
    model = intengine.load(exported[2][0])
    x = test_images[0]
    logits = model.predict(x, batch_size=20)
    assert logits.dtype == np.int32 and logits.shape == (64, 10)
    assert np.array_equal(logits, model.run(x))
    with pytest.raises(ValueError, match="uint8"):
        model.predict(x.astype(np.float32))
    with pytest.raises(ValueError, match="32, 32, 3"):
        model.predict(x[:, :16])


def test_eval_refuses_a_bad_predictions_path_before_evaluating(exported, data_dir, tmp_path):
    """Issue 15 item 7: a --predictions path that cannot be written fails at once, naming the
    option and the path, not an internal temporary file after the whole evaluation."""
    env = {"CIFAR10_DIR": data_dir}
    for bad, match in [(tmp_path / "nowhere" / "p.npy", "does not exist"), (tmp_path / "p.txt", "must end in .npy"),
                       (tmp_path, "is a folder")]:
        r = run_cli("intengine", "eval", exported[8][0], "--limit", 10, "--no-progress", "--predictions", bad, env=env)
        one_line_error(r, match)
        assert "--predictions" in r.stderr and ".tmp" not in r.stderr and "accuracy" not in r.stdout


def test_caps_are_announced(exported, data_dir, tmp_path, test_images):
    r = run_cli("intengine", "eval", exported[8][0], "--limit", 20000, "--no-progress", "--json",
                env={"CIFAR10_DIR": data_dir})
    assert r.returncode == 0, r.stderr
    assert "note: --limit 20000 is more than the 10,000 test images" in r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["n"] == 10000
    img = tmp_path / "a.png"
    Image.fromarray(test_images[0][0]).save(img)
    r = run_cli("intengine", "predict", exported[8][0], img, "--top-k", 20)
    assert r.returncode == 0 and "note: --top-k 20 is more than the 10 classes" in r.stderr
    assert r.stdout.split("; top 10: ")[1].count(", ") == 9   # all ten classes listed


def test_missing_dataset_message_names_the_source(exported, tmp_path, data_dir):
    """--data-dir DIR without the file does not tell the user to pass --data-dir."""
    r = run_cli("intengine", "eval", exported[4][0], "--data-dir", tmp_path)
    one_line_error(r, f"no cifar10.npz in {tmp_path} (the folder given by --data-dir)")
    assert "pass --data-dir" not in r.stderr
    r = run_cli("intengine", "eval", exported[4][0], env={"CIFAR10_DIR": str(tmp_path)})
    one_line_error(r, "(the folder $CIFAR10_DIR names)")
