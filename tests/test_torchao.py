"""torch.ao baselines and the op-by-op cross-check of the engine against torch.ao int8."""
import numpy as np
import pytest
import torch

import intengine
from conftest import CALIB
from intengine import cpu
from exporter import calibrate, crosscheck, source, torchao
from exporter.pipeline import Config, export
from trainer import data


@pytest.fixture(scope="module")
def torchao_pair(shipped, data_dir, tmp_path_factory):
    """(torch.ao full-range int8 model, our file read from it), same calibration images."""
    path, _, _, _ = export(Config(shipped, 8, calib_images=CALIB, data_dir=data_dir, params_from="torchao"),
                           tmp_path_factory.mktemp("tao") / "t.npz", progress=False)
    train = data.load_arrays(data_dir)["x_train"]
    images, _, _ = calibrate.calibration_images(train, CALIB, 0)
    model = torchao.static_int8(source.checkpoint_model(shipped), images, "full")
    return model, intengine.load(path)


def test_teacher_forced_ops_match_torchao(torchao_pair, test_images):
    """Within 1 LSB op by op, where torch's int8 convs run on AVX512-VNNI (brg_conv_fwd:avx512_core_vnni).
    Without VNNI oneDNN runs brg_conv_fwd:avx2, whose u8 x s8 pair sums saturate at int16 for
    full-range (8-bit) activations, so torch.ao itself is off there (up to 142 LSB on znver3)."""
    if not cpu.HAS_VNNI:
        pytest.skip(f"this processor ({cpu.llvm_cpu_name()}) has no AVX512-VNNI: torch's full-range int8 "
                    "convs saturate their pair sums at int16 there")
    qmodel, ours = torchao_pair
    pts = torchao.capture(qmodel, test_images[0])
    rows = crosscheck.teacher_forced(ours, pts)
    assert len(rows) == 30
    for r in rows:
        assert r["max_abs_diff"] <= 1, r
        assert r["identical_active"] >= 0.99, r
        assert r["n_active"] > 0


def test_input_lut_is_torchs_quantstub(torchao_pair, test_images):
    qmodel, ours = torchao_pair
    pts = torchao.capture(qmodel, test_images[0])
    free = crosscheck.free_running(ours, test_images[0], pts)
    assert free[0]["point"] == "input" and free[0]["max_abs_diff"] == 0
    assert np.array_equal(ours.lut, torchao.torch_lut(qmodel))


def test_file_holds_torchaos_weights(torchao_pair):
    qmodel, ours = torchao_pair
    stem = next(op for op in ours.ops if op.name == "conv1")
    w = qmodel.conv1.weight().int_repr().numpy()                     # (Co,Ci,3,3)
    assert np.array_equal(stem.w, w.transpose(2, 3, 1, 0))          # engine layout (3,3,Ci,Co)
    assert ours.header["meta"]["params_from"] == "torchao"


def test_best_practice_reduces_the_range_to_7_bits():
    obs = torchao.qconfig("best").activation()
    assert obs.reduce_range and obs.quant_max - obs.quant_min == 127
    full = torchao.qconfig("full").activation()
    assert not full.reduce_range


def test_original_settings_clamp_weights(shipped, test_images):
    q = torchao.static_int8(source.checkpoint_model(shipped), test_images[0][:10], "original", bits=2)
    w = q.layer2[0].conv1.weight().int_repr()
    assert w.min() >= -2 and w.max() <= 1
    out = q(torchao.normalize(test_images[0][:4]))
    assert out.shape == (4, 10) and torch.isfinite(out).all()


def test_dynamic_only_touches_the_linear_layer(shipped):
    q = torchao.dynamic_int8(source.checkpoint_model(shipped))
    assert type(q.fc).__module__.startswith("torch.ao.nn.quantized.dynamic")
    assert type(q.conv1) is torch.nn.Conv2d


def test_int16_simulation_is_close_to_fp32(shipped, test_images):
    model = source.checkpoint_model(shipped)
    sim = torchao.int16_simulated(model, test_images[0][:32])
    x = torchao.normalize(test_images[0])
    with torch.no_grad():
        a, b = sim(x), model(x)
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.98
    assert not torch.equal(a, b)                                      # it does round


def test_onnxruntime_in_a_shared_process_keeps_its_threads_from_spinning(tmp_path):
    """compare.py times every contender in one process: there onnxruntime's idle threads must
    not spin (measured: they took the engine from 8,506 to 6,092 images/s in the same block);
    alone (bench.py's own process) it runs at its defaults."""
    from exporter import onnxrt
    if onnxrt.missing():
        pytest.skip(f"onnxruntime: {onnxrt.missing()}")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 10)).eval()
    path = onnxrt.export_fp32(model, tmp_path / "m.onnx")
    key = "session.intra_op.allow_spinning"
    assert onnxrt.session(path, 2, shared=True).get_session_options().get_session_config_entry(key) == "0"
    with pytest.raises(RuntimeError, match="does not have configuration"):      # its default: spinning
        onnxrt.session(path, 2).get_session_options().get_session_config_entry(key)
