"""The CIFAR-10 networks the trainer trains: `build(arch)` for every name in ARCHS.

resnet20/32/44/56/110: He et al. 2016 ("Deep Residual Learning"), section 4.2.  A 3x3 conv
with 16 filters, then 3 stages of n basic blocks with 16, 32, 64 filters (the first block of
stages 2 and 3 has stride 2), global average pooling and a 10-way linear layer: 6n+2
weighted layers.  ResNet20 (n=3) has 269,722 parameters and about 41 M multiply-accumulates
per image; ResNet-56 (n=9) 853,018 and about 125 M.

Shortcuts are "option A" (parameter-free): at a stride-2 block the input is subsampled
by taking every second pixel, and the new channels are zeros, split evenly before and
after the old ones.  There are no projection convolutions.

mobilenetv2: Sandler et al. 2018, the usual CIFAR variant at width 1.0: a 3x3 stem of 32
filters at stride 1, 17 inverted residuals (1x1 expansion by t, ReLU6, depthwise 3x3, ReLU6,
1x1 linear bottleneck; a residual add where stride is 1 and the widths agree), a 1x1 conv to
1280 with ReLU6, global average pooling, dropout and a linear layer.  Against ImageNet's
net, the stem and the second stage run at stride 1, so a 32x32 image reaches 4x4.  It has
2,236,682 parameters and about 88 M multiply-accumulates per image (`macs` counts them).
"""
import torch
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


class ResNet(nn.Module):
    """The CIFAR ResNet of depth 6n+2 (n = blocks_per_stage)."""

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


class ResNet20(ResNet):
    def __init__(self, num_classes=10):
        super().__init__(num_classes, blocks_per_stage=3)


def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU6(inplace=True)) if act else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, stride, expand):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden),
                   conv_bn(hidden, cout, 1, act=False)]          # the linear bottleneck
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


# (expansion t, output channels c, repeats n, stride of the first repeat s); CIFAR strides.
MOBILENETV2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
                      (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


class MobileNetV2(nn.Module):
    def __init__(self, num_classes=10, dropout=0.2):
        super().__init__()
        layers, cin = [conv_bn(3, 32, 3)], 32
        for t, c, n, s in MOBILENETV2_STAGES:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(1280, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.features(x).mean((2, 3))
        return self.fc(self.dropout(x))


ARCHS = {"resnet20": lambda: ResNet20(), "resnet32": lambda: ResNet(blocks_per_stage=5),
         "resnet44": lambda: ResNet(blocks_per_stage=7), "resnet56": lambda: ResNet(blocks_per_stage=9),
         "resnet110": lambda: ResNet(blocks_per_stage=18), "mobilenetv2": lambda: MobileNetV2()}


def build(name="resnet20"):
    if name not in ARCHS:
        raise ValueError(f"unknown architecture {name!r}; the trainer builds {', '.join(ARCHS)}")
    return ARCHS[name]()


def macs(model, shape=(1, 3, 32, 32)):
    """Multiply-accumulates of one forward pass, counted on the convs and linear layers."""
    total = 0

    def hook(m, inp, out):
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += m.in_features * m.out_features
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(shape))
    finally:
        for h in hooks:
            h.remove()
    return total
