"""ResNet20 for CIFAR-10, as in He et al. 2016 ("Deep Residual Learning"), section 4.2.

A 3x3 conv with 16 filters, then 3 stages of n=3 basic blocks with 16, 32, 64 filters
(the first block of stages 2 and 3 has stride 2), global average pooling and a
10-way linear layer: 6n+2 = 20 weighted layers, 269,722 parameters.

Shortcuts are "option A" (parameter-free): at a stride-2 block the input is subsampled
by taking every second pixel, and the new channels are zeros, split evenly before and
after the old ones.  There are no projection convolutions.
"""
import torch.nn as nn
import torch.nn.functional as F


class ShortcutA(nn.Module):
    """x (N,C,H,W) -> (N,C+2p,H/2,W/2): x[:, :, ::2, ::2] with p zero channels each side."""

    def __init__(self, in_planes, planes):
        super().__init__()
        self.pad = (planes - in_planes) // 2

    def forward(self, x):
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = ShortcutA(in_planes, planes) if stride != 1 else nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(nn.Module):
    def __init__(self, num_classes=10, blocks_per_stage=3, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers, in_planes = [], widths[0]
        for i, planes in enumerate(widths):
            blocks = []
            for j in range(blocks_per_stage):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.fc = nn.Linear(in_planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):                       # x is (N,3,32,32), normalized
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        x = x.mean((2, 3))                      # global average pool (deterministic backward on CUDA)
        return self.fc(x)


def build(name="resnet20"):
    if name != "resnet20":
        raise ValueError(f"unknown model {name!r}; only 'resnet20' is defined")
    return ResNet20()
