"""`intengine predict` on hostile images, colour-mode conversion, --json/--top-k, and the
Python API's predict / predict_logits / predict_proba / top_k (issue 10, issue 8 items 7-9)."""
import json
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

import intengine
from conftest import one_line_error, run_cli
from intengine.__main__ import ImageError, read_image


def png_declaring(width, height):
    """A PNG whose header declares width x height 8-bit RGB pixels, with almost no data."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def rgb():
    return (np.arange(32 * 32 * 3) * 7 % 256).astype(np.uint8).reshape(32, 32, 3)


def save(path, array_or_image, **kw):
    im = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image)
    im.save(path, **kw)
    return path


def test_hostile_images_get_one_clear_reason(tmp_path, rgb):
    good = save(tmp_path / "good.png", rgb).read_bytes()
    save(tmp_path / "good.jpg", rgb, quality=95)
    (tmp_path / "trunc.png").write_bytes(good[:len(good) // 2])
    (tmp_path / "trunc.jpg").write_bytes((tmp_path / "good.jpg").read_bytes()[:300])
    (tmp_path / "bomb.png").write_bytes(png_declaring(100_000, 100_000))
    (tmp_path / "big.png").write_bytes(png_declaring(5000, 5000))
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "text.png").write_text("not an image")
    save(tmp_path / "float.tiff", np.zeros((32, 32), np.float32))
    cases = {"trunc.png": "truncated or damaged", "trunc.jpg": "truncated or damaged",
             "bomb.png": "pixels", "big.png": "refused before decoding", "empty.png": "empty file",
             "folder.png": "folder", "text.png": "not an image", "float.tiff": "floating-point",
             "missing.png": "no such file"}
    for name, match in cases.items():
        for resize in (False, True):
            with pytest.raises(ImageError, match=match) as e:
                read_image(tmp_path / name, resize)
            assert name in str(e.value) and "\n" not in str(e.value)


def test_colour_modes_are_converted_and_said(tmp_path, rgb):
    gray = rgb[..., 0]
    g16 = (gray.astype(np.uint16) << 8) | 0x5A
    rgba = np.dstack([rgb, np.full((32, 32), 7, np.uint8)])
    files = {"L": save(tmp_path / "gray.png", gray), "I;16": save(tmp_path / "g16.png", g16),
             "RGBA": save(tmp_path / "rgba.png", rgba),
             "P": save(tmp_path / "pal.png", Image.fromarray(rgb).quantize(16)),
             "CMYK": save(tmp_path / "cmyk.jpg", Image.fromarray(rgb).convert("CMYK"), quality=100)}
    for mode, path in files.items():
        with Image.open(path) as im:
            assert im.mode == mode
        x, note = read_image(path, resize=False)            # 32x32: no --resize needed (item 8)
        assert x.shape == (32, 32, 3) and x.dtype == np.uint8 and note and "RGB" in note
        if mode in ("L", "I;16"):                           # gray replicated; 16 bits keep the top 8
            assert np.array_equal(x, np.dstack([gray] * 3)), mode
        if mode == "RGBA":
            assert np.array_equal(x, rgb) and "alpha dropped" in note
    x, note = read_image(save(tmp_path / "rgb.png", rgb), resize=False)
    assert note is None and np.array_equal(x, rgb)
    with pytest.raises(ImageError, match="expected 32x32"):
        read_image(save(tmp_path / "small.png", rgb[:16]), resize=False)
    x, note = read_image(tmp_path / "small.png", resize=True)
    assert x.shape == (32, 32, 3) and "resized 32x16 to 32x32" in note


def test_predict_json_top_k_and_notes(exported, tmp_path, test_images):
    x = test_images[0][:3]
    files = [save(tmp_path / f"img{i}.png", x[i]) for i in range(2)]
    files.append(save(tmp_path / "gray.png", x[2][..., 1]))
    r = run_cli("intengine", "predict", exported[8][0], *files, "--json", "--top-k", "3")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    model = intengine.load(exported[8][0])
    batch = np.stack([x[0], x[1], np.dstack([x[2][..., 1]] * 3)])
    q = model.predict(batch)
    proba = model.predict_proba(batch)
    assert out["top_k"] == 3 and [p["file"] for p in out["predictions"]] == list(map(str, files))
    for p, qi, pi in zip(out["predictions"], q, proba):
        k = int(qi.argmax())
        assert (p["index"], p["class"], p["integer"]) == (k, model.classes[k], int(qi[k]))
        assert p["probability"] == pytest.approx(pi[k]) and len(p["top_k"]) == 3
        probs = [t["probability"] for t in p["top_k"]]
        assert probs == sorted(probs, reverse=True) and p["top_k"][0]["index"] == k
    assert out["predictions"][2]["converted"].startswith("grayscale")
    assert r.stderr.strip() == f"note: {files[2]}: grayscale converted to RGB"
    r = run_cli("intengine", "predict", exported[8][0], files[0], "--top-k", "2")
    assert r.returncode == 0 and "; top 2: " in r.stdout and " p 0." in r.stdout
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_declaring(100_000, 100_000))
    one_line_error(run_cli("intengine", "predict", exported[8][0], files[0], bomb, "--resize"), "pixels")


def test_api_single_image_probabilities_and_refusals(exported, test_images):
    model = intengine.load(exported[4][0])
    x = test_images[0][:5]
    q = model.predict(x)
    assert np.array_equal(model.predict(x[0]), q[:1])       # (32,32,3) is a batch of one
    real = model.predict_logits(x)
    s, z = model.act_scale[-1], model.zero_points[-1]
    assert np.allclose(real, s * (q.astype(np.int64) - z)) and np.array_equal(real, model.dequantize_logits(q))
    p = model.predict_proba(x)
    assert p.shape == (5, 10) and np.allclose(p.sum(1), 1) and np.array_equal(p.argmax(1), q.argmax(1))
    idx, top = model.top_k(x, k=3)
    assert idx.shape == top.shape == (5, 3) and np.array_equal(idx[:, 0], q.argmax(1))
    assert (np.diff(top, axis=1) <= 0).all()
    for bad, match in [(x.astype(np.float32), "uint8"), (x[:, :16], r"\(N, 32, 32, 3\)"),
                       (x[0, :, :, 0], r"\(N, 32, 32, 3\)"), (x.astype(np.int64), "uint8")]:
        with pytest.raises(ValueError, match=match):
            model.predict(bad)


def test_help_lists_every_command_in_full():
    r = run_cli("intengine", "--help")
    assert r.returncode == 0
    rows = r.stdout.split("Commands:")[1].strip().splitlines()
    assert [row.split()[0] for row in rows] == ["eval", "info", "predict", "verify"]
    assert all(row.rstrip().endswith(".") and "..." not in row for row in rows), rows
