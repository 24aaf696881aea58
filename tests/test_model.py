import torch
import torch.nn as nn

from trainer.model import BasicBlock, ResNet20, ShortcutA, build


def test_parameter_count():
    assert sum(p.numel() for p in build().parameters()) == 269_722


def test_layout_is_resnet20():
    m = ResNet20()
    convs = [x for x in m.modules() if isinstance(x, nn.Conv2d)]
    assert len(convs) == 19                                   # 1 + 3 stages x 3 blocks x 2
    assert all(c.kernel_size == (3, 3) and c.bias is None for c in convs)  # no 1x1 projections
    widths = [c.out_channels for c in convs]
    assert widths == [16] * 7 + [32] * 6 + [64] * 6
    strides = [c.stride[0] for c in convs]
    assert strides.count(2) == 2 and strides[7] == 2 and strides[13] == 2


def test_output_shape():
    m = build().eval()
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_shortcut_a_subsamples_and_zero_pads():
    x = torch.randn(2, 16, 8, 8)
    y = ShortcutA(16, 32)(x)
    assert y.shape == (2, 32, 4, 4)
    assert torch.equal(y[:, 8:24], x[:, :, ::2, ::2])
    assert torch.count_nonzero(y[:, :8]) == 0 and torch.count_nonzero(y[:, 24:]) == 0


def test_stride2_block_has_parameter_free_shortcut():
    block = BasicBlock(16, 32, stride=2)
    assert isinstance(block.shortcut, ShortcutA)
    assert sum(p.numel() for p in block.shortcut.parameters()) == 0
    # With the residual branch zeroed, the block is relu(shortcut(x)).
    nn.init.zeros_(block.bn2.weight)
    block.eval()
    x = torch.randn(1, 16, 8, 8)
    expected = torch.relu(ShortcutA(16, 32)(x))
    assert torch.equal(block(x), expected)


def test_the_family_sizes():
    """The architectures the trainer builds, with the parameter and MAC counts that
    trainer/model.py's docstring states."""
    from trainer.model import ARCHS, MobileNetV2, macs
    assert set(ARCHS) == {"resnet20", "resnet32", "resnet44", "resnet56", "resnet110", "mobilenetv2"}
    count = {a: sum(p.numel() for p in build(a).parameters()) for a in ("resnet20", "resnet56", "mobilenetv2")}
    assert count == {"resnet20": 269_722, "resnet56": 853_018, "mobilenetv2": 2_236_682}
    assert macs(build("resnet20")) == 40_551_040 and macs(build("resnet56")) == 125_485_696
    assert macs(build("mobilenetv2")) == 87_976_448
    m = MobileNetV2().eval()
    dw = [c for c in m.modules() if isinstance(c, nn.Conv2d) and c.groups > 1]
    assert len(dw) == 17 and all(c.groups == c.in_channels == c.out_channels for c in dw)
    assert sum(isinstance(x, nn.ReLU6) for x in m.modules()) == 1 + 16 * 2 + 1 + 1   # no ReLU after a bottleneck
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert m.features(torch.randn(1, 3, 32, 32)).shape == (1, 1280, 4, 4)     # stem and stage 2 at stride 1


def test_unknown_architecture_is_one_line():
    import pytest
    with pytest.raises(ValueError, match="unknown architecture 'vgg'.*resnet56, resnet110, mobilenetv2"):
        build("vgg")
