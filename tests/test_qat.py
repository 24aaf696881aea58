"""Quantization-aware training (docs/quantization.md section 15, issue 17): the file it writes
runs on the engine and equals the exact simulation; a resumed run equals an uninterrupted one;
the README's QAT command runs end to end; bad settings end in one line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import intengine
from exporter import qat
from exporter.pipeline import Config, export
from exporter.simulate import run_exact
from intengine import fileformat

ROOT = Path(__file__).resolve().parent.parent
TINY = {"epochs": 2, "images": 256, "heldout": 200, "batch": 64}
FAST = dict(calib_images=64, recon={"iters": 4})


def _cfg(shipped, data_dir, tmp_path, **kw):
    return Config(shipped, 2, act_bits=2, data_dir=data_dir, qat=dict(TINY), qat_checkpoint=str(tmp_path / "q.pt"),
                  **FAST, **kw)


def _assert_engine_is_the_simulation(model, qnet, x):
    """The fast path equals the reference ops and the exact simulation at every point."""
    fast, ref, sim = model.run(x, keep=True), model.run(x, reference_ops=True, keep=True), run_exact(qnet, x)
    for name, a, b, c in zip(model.points, fast, ref, sim):
        assert np.array_equal(a, b), f"fast path != reference at {name}"
        assert np.array_equal(a, c.numpy()), f"engine != exact simulation at {name}"


def test_qat_file_runs_on_the_engine_and_equals_the_exact_simulation(data_dir, shipped, tmp_path, test_images):
    path, _, qnet, _ = export(_cfg(shipped, data_dir, tmp_path), tmp_path / "w2a2.npz", progress=False)
    meta = fileformat.read(path)[0]["meta"]
    assert meta["qat"]["epochs_run"] == 2 and meta["qat"]["start"]["rounding"] == "brecq"
    assert meta["qat"]["config"]["lr"] == qat.default_lr(2, 2) == 0.03
    assert qat.default_lr(4, 4) == pytest.approx(0.006) and qat.default_lr(2, 8) == pytest.approx(0.003)
    model = intengine.load(path)
    assert sorted(set(model.act_bits.tolist())) == [2, 8]
    x = test_images[0][:64]
    _assert_engine_is_the_simulation(model, qnet, x)


def test_learned_levels_train_the_codebook_and_the_file_equals_the_exact_simulation(data_dir, shipped, tmp_path,
                                                                                       test_images):
    """--qat-levels learned: each 2-bit layer's codebook moves off the midrise set, is written as
    ascending integers up to 127, and the engine still equals the exact simulation."""
    cfg = _cfg(shipped, data_dir, tmp_path)
    learned = Config(**{**cfg.__dict__, "act_bits": 8, "qat": {**TINY, "levels": "learned", "levels_lr": 0.02}})
    path, _, qnet, _ = export(learned, tmp_path / "learned.npz", progress=False)
    header = fileformat.read(path)[0]
    meta = header["meta"]
    assert meta["qat"]["config"]["levels"] == "learned" and meta["weight_levels"] == "learned (QAT, from midrise)"
    books = [q["L"] for q in qnet["ops"] if q.get("bits_w") == 2]
    assert len(books) == 18 and all(q["levels"] == "learned" for q in qnet["ops"] if q.get("bits_w") == 2)
    assert all(64 <= np.abs(L).max() <= 127 and (np.diff(L) >= 0).all() for L in books)
    moved = [L for L in books if not np.array_equal(L, [-126, -42, 42, 126])]      # midrise times 42
    assert len(moved) >= 9, books
    model = intengine.load(path)
    x = test_images[0][:32]
    _assert_engine_is_the_simulation(model, qnet, x)


def test_batch_norm_starts_at_the_ptq_file_folds_exactly_and_the_file_equals_the_exact_simulation(
        data_dir, shipped, tmp_path, test_images, monkeypatch):
    """--qat-bn-epochs: the start (init_bn) is the PTQ file bit for bit; an update of the running
    statistics changes the network, and the fold (fold_bn) then leaves it as it is, to float
    rounding; QAT goes on without batch normalization after the fold, and the engine equals the
    exact simulation on the file."""
    from trainer.data import normalize
    cfg = _cfg(shipped, data_dir, tmp_path)
    cfg = Config(**{**cfg.__dict__, "act_bits": 8, "qat": {**TINY, "epochs": 2, "bn_epochs": 1}})
    seen, train = {}, qat.train

    def spy(ops, qpoints, weights, train_x, *a, **kw):
        plain = qat.QATNet(ops, qpoints, weights).eval()
        net = qat.QATNet(ops, qpoints, weights, bn=True).eval()
        x = normalize(torch.from_numpy(test_images[0][:16].transpose(0, 3, 1, 2).copy()))
        with torch.no_grad():
            seen["ref"] = plain(x)
            net.init_bn([normalize(train_x[:64])])
            seen["start"] = net(x)
            net.train()
            net(x)                                               # one update of the running statistics
            seen["before"] = net.eval()(x)
            net.fold_bn()
            seen["after"], seen["bn_on"] = net(x), bool(net.bn_on)
        return train(ops, qpoints, weights, train_x, *a, **kw)
    monkeypatch.setattr(qat, "train", spy)
    logs = []
    path, _, qnet, _ = export(cfg, tmp_path / "bn.npz", progress=False, log=logs.append)
    assert torch.equal(seen["start"], seen["ref"])
    assert (seen["before"] - seen["ref"]).abs().max() > 1e-3
    # The fold is exact in real numbers; in float32 a value at a rounding edge of the fake-quant
    # can land on the other side (one activation code, seen on an AVX2 processor: one logit
    # moved by one step, 0.038).  So: nearly every logit stays to float rounding, and none
    # moves by more than a few logit steps.  A wrong fold moves them all.
    moved = (seen["after"] - seen["before"]).abs()
    assert (moved <= 1e-4).float().mean() >= 0.95 and moved.max() < 0.2, moved
    assert not seen["bn_on"]
    assert any("folded the batch normalization into the weights after epoch 1" in m for m in logs), logs
    meta = fileformat.read(path)[0]["meta"]
    assert meta["qat"]["config"]["bn_epochs"] == 1 and meta["qat"]["epochs_run"] == 2
    model = intengine.load(path)
    x = test_images[0][:32]
    _assert_engine_is_the_simulation(model, qnet, x)


def test_codebook_fit_script_finds_less_error_than_the_uniform_set():
    """scripts/codebook_fit.py, the figure behind --qat-levels learned (docs section 15)."""
    r = _run("scripts/codebook_fit.py", "--rounds", "5")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split()[1:3] for line in r.stdout.splitlines()[2:]}
    assert len(rows) == 19 and "conv1" not in rows                       # 18 block convs and the total
    uniform, fitted = map(float, rows["all"])
    assert 0 < fitted < uniform < 0.2


def test_a_learned_codebook_starts_at_the_level_set_and_its_gradient_is_the_sum_over_its_codes():
    """QATNet with levels="learned" rounds the start weights exactly as with the fixed level set
    (the PTQ weights), and the gradient of codebook entry k is the sum of s_w * g over the weights
    that take it."""
    from exporter.quantize import quantize_weights
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4, 3, 3))
    codes, L, s_w = quantize_weights(w, 2, "midrise", "mse")
    op = {"op": "conv", "name": "c", "in": 0, "out": 1, "weight": torch.as_tensor(w), "bias": torch.zeros(8, dtype=torch.float64),
          "kh": 3, "kw": 3, "stride": 1, "ph": 1, "pw": 1, "groups": 1, "relu": False}
    pts = [{"scale": 0.1, "zp": 0, "bits": 8}, {"scale": 0.1, "zp": 0, "bits": 8}]
    weights = {"c": (2, "midrise", codes, L, s_w)}
    fixed, learned = (qat.QATNet([op], pts, weights, levels=r) for r in qat.LEVEL_RULES)
    q = learned._weight(learned.ops[0])
    assert torch.equal(fixed._weight(fixed.ops[0]), q)
    g = torch.as_tensor(rng.standard_normal(q.shape)).float()
    (q * g).sum().backward()
    sw = torch.as_tensor(s_w).float().view(-1, 1, 1, 1).expand_as(g)
    want = torch.stack([(g * sw)[torch.as_tensor(codes) == k].sum() for k in range(4)])
    assert torch.allclose(learned.cb["c"].grad, want, rtol=1e-5, atol=1e-5)
    assert fixed.cb.keys() == set() and learned.cb["c"].grad.abs().min() > 0


@pytest.mark.parametrize("rule", qat.LSQ.RULES)
@pytest.mark.parametrize("zp,hi", [(0, 3), (2, 3), (130, 255)])
def test_activation_fake_quant_has_the_rules_gradients(zp, hi, rule):
    """qat.LSQ against each rule's gradients (section 15) computed here in float64 on every
    value, with values packed on the edge codes, where the bound test decides the gradient."""
    edges = torch.tensor([-zp - 0.5, -zp - 0.25, -zp, -zp + 0.25, hi - zp - 0.5, hi - zp - 0.25, hi - zp,
                          hi - zp + 0.25, hi - zp + 0.49], dtype=torch.float64)
    v = torch.cat([edges + torch.rand(len(edges), generator=torch.Generator().manual_seed(1)) * 1e-3,
                   torch.linspace(-zp - 3, hi - zp + 3, 2001, dtype=torch.float64)])
    s = 0.0371
    g = torch.randn(len(v), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    t = (v * s).float().requires_grad_()
    ls = torch.tensor(s).log().requires_grad_()
    y = qat.LSQ.apply(t, ls.exp(), torch.tensor(float(zp)), torch.tensor(float(hi)), rule)
    (y.double() * g).sum().backward()
    v = t.detach() / ls.detach().exp()                                 # float32, as the forward divides
    q = ((torch.floor(v + 0.5) + zp).clamp(0, hi) - zp).double()
    v = v.double()
    inside = (v >= -zp) & (v <= hi - zp) if rule == "lsq" else (q > -zp) & (q < hi - zp)
    assert torch.allclose(y.detach().double(), q * s, rtol=1e-6, atol=0)
    assert torch.equal(t.grad.double(), (g * inside).float().double())
    want = float((g * torch.where(inside, q - v, q)).sum() * s)      # d/d log s = s d/ds
    assert ls.grad.item() == pytest.approx(want, rel=1e-4, abs=1e-4)
    top = (v > hi - zp - 0.5) & (v <= hi - zp)                       # values that round to the top code
    assert top.any() and (v > hi - zp).any()                          # both sides of the top bound were tried
    assert bool(inside[top].all()) == (rule == "lsq")


@pytest.mark.parametrize("rule", qat.LSQ.RULES)
@pytest.mark.parametrize("zp,hi", [(0, 3), (2, 3), (130, 255), (0, 255), (32768, 65535)])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "strided"])
def test_fused_fake_quant_equals_the_reference_bit_for_bit(zp, hi, rule, layout):
    """qat.FusedLSQ (exporter/fakequant.py), which QAT trains with, against qat.LSQ, the spec:
    the output, the gradient to t and to log s have the same bits, signed zeros included, on
    values packed around both bounds and the rounding midpoints, in the dense layouts QAT meets
    (every activation is a conv, add or pool output).  A strided t is copied dense, so its
    sum for log s runs in another order than the reference's: equal to rounding there."""
    gen = torch.Generator().manual_seed(zp + hi)
    v = torch.cat([torch.arange(-zp - 3, hi - zp + 3, 0.25), torch.randn(4000, generator=gen) * hi])
    n = (len(v) // 48) * 48
    t = (v[:n] * 0.0371).float().reshape(-1, 3, 4, 4)
    g = torch.randn(t.shape, generator=gen)
    g.view(-1)[:7] = -0.0                                            # g * 0 keeps the sign: -0.0
    if layout == "channels_last":
        t, g = t.contiguous(memory_format=torch.channels_last), g.contiguous(memory_format=torch.channels_last)
    elif layout == "strided":
        t = t.transpose(1, 3)[:, ::2]
        g = g.transpose(1, 3)[:, ::2]
    got = []
    for fn in (qat.LSQ, qat.FusedLSQ):
        tt, ls = t.clone().requires_grad_(), torch.tensor(0.0371).log().requires_grad_()
        y = fn.apply(tt, ls.exp(), torch.tensor(float(zp)), torch.tensor(float(hi)), rule)
        y.backward(g)
        got.append([y.detach(), tt.grad, ls.grad])
    for name, a, b in zip(("output", "grad t", "grad log s"), *got):
        if name == "grad log s" and layout == "strided":                 # summed in another order
            assert a.item() == pytest.approx(b.item(), rel=1e-5)
            continue
        assert a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32)), name
    assert (got[0][1] == 0).any() and (got[0][1] != 0).any()        # both sides of the mask met


def test_qat_moves_the_weights_from_the_ptq_start(data_dir, shipped, tmp_path):
    """Two epochs at a large learning rate change codes and step sizes: the training reaches the file."""
    cfg = _cfg(shipped, data_dir, tmp_path)
    ptq = export(Config(shipped, 2, act_bits=2, data_dir=data_dir, **FAST), tmp_path / "ptq.npz", progress=False)[2]
    big = Config(**{**cfg.__dict__, "qat": {**TINY, "lr": 0.1, "scale_lr": 1e-2}})
    trained = export(big, tmp_path / "qat.npz", progress=False)[2]
    changed = sum(int((a["codes"] != b["codes"]).sum()) for a, b in zip(ptq["ops"], trained["ops"]) if "codes" in a)
    assert changed > 100
    assert any(p["scale"] != q["scale"] for p, q in zip(ptq["points"][1:], trained["points"][1:]))
    assert ptq["points"][0]["scale"] == trained["points"][0]["scale"]          # the input LUT stays


def test_qat_that_diverges_stops_with_one_line_and_keeps_the_last_good_checkpoint(data_dir, shipped, tmp_path):
    """A learning rate far too large: the first epoch's held-out agreement collapses, QAT says so
    and names the option, and the checkpoint still holds the PTQ start, not the collapsed epoch."""
    cfg = _cfg(shipped, data_dir, tmp_path)
    wild = Config(**{**cfg.__dict__, "qat": {**TINY, "lr": 1e3}})
    with pytest.raises(qat.QATError, match=r"diverged in epoch 1: .* smaller --qat-lr \(now 1000\)"):
        export(wild, tmp_path / "wild.npz", progress=False)
    assert qat.load(tmp_path / "q.pt")["epoch"] == 0
    assert not (tmp_path / "wild.npz").exists()


@pytest.mark.parametrize("bn_epochs", [0, 1])
def test_resumed_qat_equals_an_uninterrupted_run(data_dir, shipped, tmp_path, monkeypatch, bn_epochs):
    """Killed after epoch 1 and resumed: the same file; with --qat-bn-epochs 1 the checkpoint holds
    the fold made after epoch 1."""
    torch.set_num_threads(2)

    def cfg_of(path):
        c = _cfg(shipped, data_dir, path)
        return Config(**{**c.__dict__, "qat": {**c.qat, "bn_epochs": bn_epochs}})
    whole, _, _, _ = export(cfg_of(tmp_path / "a"), tmp_path / "a.npz", progress=False)
    (tmp_path / "b").mkdir()
    save = qat.save

    def save_then_die(path, state):
        save(path, state)
        if state["epoch"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(qat, "save", save_then_die)
    cfg = cfg_of(tmp_path / "b")
    with pytest.raises(KeyboardInterrupt):
        export(cfg, tmp_path / "b.npz", progress=False)
    assert not (tmp_path / "b.npz").exists() and qat.load(tmp_path / "b" / "q.pt")["epoch"] == 1
    monkeypatch.setattr(qat, "save", save)
    logs = []
    resumed, _, _, _ = export(Config(**{**cfg.__dict__, "resume": True}), tmp_path / "b.npz", progress=False,
                              log=logs.append)
    assert any("resumed QAT" in m and "after epoch 1 of 2" in m for m in logs), logs
    (ha, a), (hb, b) = fileformat.read(whole), fileformat.read(resumed)
    assert set(a) == set(b)
    for k in set(a) - {"header"}:                      # the header holds the run's timings
        assert np.array_equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in r.items() if k != "seconds"} for r in h["meta"]["qat"]["history"]]
    assert strip(ha) == strip(hb)


def test_resume_with_other_settings_is_refused(data_dir, shipped, tmp_path):
    cfg = _cfg(shipped, data_dir, tmp_path, )
    cfg = Config(**{**cfg.__dict__, "qat": {**TINY, "epochs": 1}})
    export(cfg, tmp_path / "a.npz", progress=False)
    other = Config(**{**cfg.__dict__, "qat": {**TINY, "epochs": 3}, "resume": True})
    with pytest.raises(qat.QATError, match="other settings.*epochs"):
        export(other, tmp_path / "b.npz", progress=False)


def _run(*args, env_dir=None, timeout=900):
    import os
    env = {**os.environ, "CIFAR10_DIR": env_dir} if env_dir else None
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def test_readme_qat_command_end_to_end(data_dir, tmp_path):
    """The README's `python -m exporter --bits 2 --act-bits 2 --qat-epochs N`, at a tiny size,
    as a subprocess: it writes the file and the checkpoint, says what it did, and the
    engine runs the file."""
    out = tmp_path / "m" / "w2a2_qat.npz"
    r = _run("-m", "exporter", "--bits", "2", "--act-bits", "2", "--qat-epochs", "1", "--qat-images", "256",
             "--qat-batch", "64", "--iters", "3", "--calib-images", "64", "--no-progress", "--out", out,
             env_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "QAT: 1 epochs on 256 labelled training images (the 5,000 held-out ones excluded)" in r.stderr
    assert "QAT epoch 1/1" in r.stderr and "then 1 QAT epochs" in r.stdout
    assert "post-training quantization only" not in r.stderr
    assert out.is_file() and out.with_suffix(".pt").is_file()
    r = _run("-m", "intengine", "eval", out, "--limit", "256", env_dir=data_dir)
    assert r.returncode == 0 and "accuracy" in r.stdout, r.stderr
    r = _run("-m", "intengine", "info", out)
    assert r.returncode == 0 and "W2A2, QAT 1 epochs" in r.stdout and " requant " in r.stdout, r.stdout
    r = _run("-m", "exporter", "--bits", "2", "--act-bits", "2", "--qat-epochs", "1", "--qat-images", "256",
             "--qat-batch", "64", "--iters", "3", "--calib-images", "64", "--no-progress", "--out", out,
             "--resume", env_dir=data_dir)
    assert r.returncode == 0 and "resumed QAT" in r.stderr and "after epoch 1 of 1" in r.stderr, r.stderr


@pytest.mark.parametrize("args,message", [
    (["--bits", "2", "--qat-lr", "0.1"], "--qat-lr sets up QAT: give --qat-epochs too"),
    (["--bits", "2", "--resume"], "--resume sets up QAT: give --qat-epochs too"),
    (["--bits", "16", "--qat-epochs", "1"], "not with 16 bits"),
    (["--bits", "2", "--qat-epochs", "0"], "--qat-epochs"),
    (["--bits", "2", "--qat-epochs", "1", "--budget", "100KB"], "--budget does not go with QAT"),
])
def test_bad_qat_options_fail_in_one_line(args, message, tmp_path):
    r = _run("-m", "exporter", *args, "--out", tmp_path / "x.npz")
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "x.npz").exists()


def test_damaged_qat_checkpoint_is_refused_in_one_line(data_dir, tmp_path):
    ck = tmp_path / "q.pt"
    ck.write_bytes(b"PK\x03\x04 not a zip")
    r = _run("-m", "exporter", "--bits", "2", "--qat-epochs", "1", "--qat-checkpoint", ck, "--resume",
             "--calib-images", "64", "--out", tmp_path / "x.npz", env_dir=data_dir)
    assert r.returncode == 2 and str(ck) in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_torchao_qat_peer_tiny(data_dir, tmp_path):
    """scripts/torchao_qat.py end to end on a tiny subset: it trains, converts, and reports
    both the int8 and the fake-quant top-1."""
    import json
    r = _run("scripts/torchao_qat.py", "--bits", "8", "--epochs", "1", "--images", "256", "--limit", "200",
             "--checkpoint-dir", tmp_path, env_dir=data_dir)
    assert r.returncode == 0, r.stderr
    rec = json.loads(r.stdout)
    assert 0.5 < rec["top1_int8"] <= 1 and rec["history"][0]["epoch"] == 1 and rec["test_images"] == 200
    assert (tmp_path / "torchao_w8.pt").is_file()


@pytest.mark.parametrize("bits", [2, 4])
def test_torchao_low_bit_row_runs_the_weights_its_fake_quant_trained(test_images, bits):
    """scripts/torchao_qat.trained_weights: after convert_fx, every lowered weight is the
    fake-quant of the BN-folded weight (its scale, its clamp), and the int8 model then agrees
    with the fake-quant model it came from."""
    import copy
    import importlib.util
    from torch.ao import quantization as tq
    from torch.ao.quantization.quantize_fx import convert_fx
    from trainer import data
    spec = importlib.util.spec_from_file_location("torchao_qat", ROOT / "scripts" / "torchao_qat.py")
    tao = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tao)
    x = data.normalize(torch.from_numpy(np.ascontiguousarray(test_images[0].transpose(0, 3, 1, 2))))
    torch.manual_seed(0)
    model = tao.build(bits, x[:2])
    with torch.no_grad():
        model(x)                                # train mode: the observers see one batch
    model.eval()
    model.apply(tq.disable_observer)
    q = convert_fx(copy.deepcopy(model))
    fixed = tao.trained_weights(model, q)
    assert fixed["codes"] > 250_000
    prepared = dict(model.named_modules())
    checked = 0
    for name, mod in q.named_modules():
        src = prepared.get(name)
        if not hasattr(src, "weight_fake_quant"):
            continue
        w = next(p for n, p in copy.deepcopy(src).to_float().named_parameters() if n.endswith("weight"))
        want = src.weight_fake_quant(w.detach())
        got = mod.weight()
        assert int(got.int_repr().min()) >= -(1 << (bits - 1)) and int(got.int_repr().max()) < 1 << (bits - 1)
        torch.testing.assert_close(got.dequantize(), want, rtol=0, atol=1e-6)
        checked += 1
    assert checked == 20                        # the stem, the 18 block convs and the fc
    if bits == 4:              # untrained at 2 bits, the network is near chance and its argmax is noise
        with torch.no_grad():
            agree = (model(x).argmax(1) == q(x).argmax(1)).float().mean()
        assert agree >= 0.9, agree


def test_qat_sweep_tiny(data_dir, tmp_path):
    """`scripts/qat_sweep.py sweep` end to end at a tiny size: both level rules from one PTQ
    solution (the second run does not reconstruct again), each scored on the held-out images."""
    import json
    r = _run("scripts/qat_sweep.py", "sweep", "--width", "w2a2", "--lrs", "1e-2", "--levels", "fixed,learned",
             "--images", "256", "--iters", "3", "--calib-images", "64", "--out", tmp_path, env_dir=data_dir)
    assert r.returncode == 0, r.stderr
    recs = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    assert [(x["lr"], x["levels"]) for x in recs] == [(1e-2, "fixed"), (1e-2, "learned")]
    assert [x["ste"] for x in recs] == ["interior"] * 2                          # the default rule
    assert sorted(p.name for p in tmp_path.glob("*.npz")) == ["w2a2_e1_lr0.01_interior.npz",
                                                              "w2a2_e1_lr0.01_interior_learned.npz"]
    assert all(0 <= x["heldout_agree"] <= 1 for x in recs)
    assert r.stderr.count("output MSE") == 11                 # one reconstruction of the 11 units
    bad = _run("scripts/qat_sweep.py", "sweep", "--width", "w2a2", "--stes", "interior,nope", "--out", tmp_path,
               env_dir=data_dir)
    assert bad.returncode != 0 and "unknown gradient rule 'nope'" in bad.stderr and "Traceback" not in bad.stderr


def test_qat_sweep_names_each_files_gradient_rule():
    """results/qat/README.md's rule column: the file's setting, else from the commit that made it
    (qat.LSQ from LSQ_COMMIT on, the straight-through form before it); and its time budget's
    split at FUSED_COMMIT."""
    import importlib.util
    spec = importlib.util.spec_from_file_location("qat_sweep", ROOT / "scripts" / "qat_sweep.py")
    sweep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sweep)
    assert sweep._rule({"ste": "lsq"}, None) == "lsq" and sweep._rule({"ste": "interior"}, "4997c4f") == "interior"
    assert sweep._rule({}, None) == "straight-through"
    known = subprocess.run(["git", "cat-file", "-e", "4997c4f^{commit}"], cwd=ROOT, capture_output=True)
    if known.returncode != 0:
        pytest.skip("this checkout has no git history")
    assert sweep._rule({}, "4997c4f") == "straight-through"             # before qat.LSQ
    assert sweep._rule({}, sweep.LSQ_COMMIT) == sweep._rule({}, "f99c1b7") == "lsq"
    # the time budget counts the files made with the fused fake-quant apart from the older ones
    assert sweep._has(sweep.FUSED_COMMIT, sweep.FUSED_COMMIT) and not sweep._has(sweep.FUSED_COMMIT, "014abc6")
    assert not sweep._has(sweep.FUSED_COMMIT, None)


def test_a_low_bit_ptq_export_says_qat_is_there(data_dir, tmp_path):
    """Without --qat-epochs, an export below 8-bit activations says that QAT can go further."""
    r = _run("-m", "exporter", "--bits", "4", "--act-bits", "4", "--rounding", "nearest", "--calib-images", "64",
             "--out", tmp_path / "w4a4.npz", env_dir=data_dir)
    assert r.returncode == 0, r.stderr
    assert "note: post-training quantization only; --qat-epochs N trains on from this file" in r.stderr
