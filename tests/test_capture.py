"""The torch.export front end (exporter/capture.py): the captured graph's float walk
(exporter/simulate.forward, float64) equals the PyTorch module, for the trainer's family and
for a plain CNN of every op the front end reads; each op's capture, and one line for
anything else."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from exporter import capture
from exporter.simulate import forward
from trainer.model import build


def _randomize_bn(model, seed=0):
    """Batch statistics that are not the identity, so that the fold is really tested."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model.eval()


def _same(model, shape=(4, 3, 32, 32), tol=1e-4):
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    points, ops = capture.graph(capture.export(model, x[:1]))
    got = forward(ops, x.double())
    want = model(x).double()
    assert got.shape == want.shape and (got - want).abs().max() < tol * want.abs().max(), (got - want).abs().max()
    return points, ops


@pytest.mark.parametrize("arch", ["resnet20", "resnet56", "mobilenetv2"])
def test_the_trainer_family_captures_exactly(arch):
    points, ops = _same(_randomize_bn(build(arch)))
    kinds = [op["op"] for op in ops]
    if arch == "mobilenetv2":
        dw = [op for op in ops if op["op"] == "conv" and op["groups"] > 1]
        assert len(dw) == 17 and all(op["groups"] == op["cin"] == op["cout"] for op in dw)
        assert sum(op.get("act") == "relu6" for op in ops) == 35
        assert sum(k == "add" for k in kinds) == 10 and not any(op.get("act") for op in ops if op["op"] == "add")
        bottlenecks = [op for op in ops if op["op"] == "conv" and op["kh"] == 1 and not op.get("act")]
        assert len(bottlenecks) == 17                     # linear bottlenecks: no clamp at zero
    else:
        adds = [op for op in ops if op["op"] == "add"]
        assert [(op["stride"], op["pad"]) for op in adds if op["stride"] > 1] == [(2, 8), (2, 16)]
        assert all(op["act"] == "relu" for op in adds)
    assert kinds[-2:] == ["gap", "linear"] and points[0]["shape"] == [32, 32, 3]


class Plain(nn.Module):
    """Every other op the front end reads: a 5x5 conv with bias and no BN, 1x1 and grouped
    convs, max and average pools with padding, an activation after each pool, flatten,
    dropout, two linear layers."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 5, padding=2)
        self.c2 = nn.Conv2d(8, 12, 3, stride=2, padding=(1, 0), groups=4, bias=False)
        self.bn2 = nn.BatchNorm2d(12)
        self.c3 = nn.Conv2d(12, 6, 1)
        self.fc1, self.fc2 = nn.Linear(6 * 4 * 3, 20), nn.Linear(20, 7)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.c1(x), 3, 2, 1))
        x = F.relu6(self.bn2(self.c2(x)))
        x = F.relu(F.avg_pool2d(self.c3(x), 2))
        x = nn.functional.dropout(x.flatten(1), 0.5, training=False)
        return self.fc2(F.relu(self.fc1(x)))


def test_a_plain_cnn_with_pools_flatten_and_two_linear_layers():
    points, ops = _same(_randomize_bn(Plain()), shape=(4, 3, 32, 28))
    assert [op["op"] for op in ops] == ["conv", "maxpool", "requant", "conv", "conv", "avgpool", "flatten",
                                        "linear", "linear"]
    assert ops[3]["groups"] == 4 and (ops[3]["ph"], ops[3]["pw"]) == (1, 0) and points[0]["shape"] == [32, 28, 3]
    assert [op.get("act") for op in ops] == [None, None, "relu", "relu6", None, "relu", None, "relu", None]


def test_adaptive_pool_then_flatten_is_one_global_pool():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    _, ops = _same(model.eval())
    assert [op["op"] for op in ops] == ["conv", "gap", "linear"]


@pytest.mark.parametrize("model,what", [
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sigmoid(), nn.Flatten(), nn.LazyLinear(2)), "aten.sigmoid"),
    (nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2), nn.Flatten(), nn.LazyLinear(2)), "dilation"),
    (nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2)),
     "batch_norm that does not follow a conv"),
    (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardtanh(-1, 1), nn.Flatten(), nn.LazyLinear(2)), "hardtanh"),
])
def test_anything_else_is_one_line_naming_the_op_and_the_supported_set(model, what):
    x = torch.randn(1, 3, 16, 16)
    model(x)                                               # the lazy layers take their shapes
    with pytest.raises(capture.CaptureError, match=what) as e:
        capture.graph(capture.export(model, x))
    assert "\n" not in str(e.value) and "at node" in str(e.value) and "the integer engine runs conv2d" in str(e.value)


def test_a_saved_program_loads_and_captures(tmp_path):
    model = _randomize_bn(build("resnet20"))
    torch.export.save(capture.export(model, torch.randn(1, 3, 32, 32)), tmp_path / "net.pt2")
    points, ops = capture.graph(torch.export.load(tmp_path / "net.pt2"))
    x = torch.randn(2, 3, 32, 32)
    assert (forward(ops, x.double()) - model(x).double()).abs().max() < 1e-4


@pytest.mark.parametrize("arch,bits", [("mobilenetv2", 8), ("plain", 4)])
def test_a_captured_graph_exports_and_the_engine_equals_the_exact_simulation(arch, bits, tmp_path):
    """Round to nearest through the exporter's own calibration, quantization and file on a
    captured graph (depthwise convs, ReLU6, linear bottlenecks and their adds; or pools,
    flatten and two linear layers): every point of the engine's fast path equals the exact
    simulation of exporter/simulate.py, and the file loads as format version 3."""
    import numpy as np
    import intengine
    from exporter import calibrate
    from exporter.build import quantize_graph, quantize_weights_all, to_file
    from exporter.simulate import run_exact
    model, shape = (_randomize_bn(build(arch)), (32, 32)) if arch != "plain" else (_randomize_bn(Plain()), (32, 28))
    points, ops = capture.graph(capture.export(model, torch.randn(1, 3, *shape)))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (48, *shape, 3)).astype(np.uint8)
    lo, hi = calibrate.minmax(ops, len(points), images[:32], progress=False)
    weights = quantize_weights_all(ops, bits=bits, first_last_bits=8, levels="midrise", clip="mse")
    qnet = quantize_graph(points, ops, lo, hi, weights, act_bits=8)
    classes = [f"c{k}" for k in range(points[-1]["shape"][0])]
    to_file(qnet, tmp_path / "m.npz", {"bits": bits}, arch=arch, classes=classes)
    m = intengine.load(tmp_path / "m.npz")
    assert m.format_version == 3 and m.kernel != "scalar"
    x = images[32:]
    exact = [t.numpy() for t in run_exact(qnet, x)]
    got = m.run(x, keep=True)
    assert all(g is None or np.array_equal(g, e) for g, e in zip(got, exact))
    assert np.array_equal(m.predict(x), exact[-1])


def test_a_one_by_one_map_flattens_through_a_flatten_op():
    """A conv whose output is 1x1xC, then flatten: a flatten op, so that the linear layer reads
    a flat point as the engine requires."""
    model = nn.Sequential(nn.Conv2d(3, 5, 4), nn.ReLU(), nn.Flatten(), nn.Linear(5, 3)).eval()
    points, ops = _same(model, shape=(2, 3, 4, 4))
    assert [op["op"] for op in ops] == ["conv", "flatten", "linear"] and points[-2]["shape"] == [5]
