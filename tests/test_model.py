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
