"""ResNet32 for CIFAR and the weighting network of Meta-Weight-Net.

ResNet32 follows He et al. (2016), section 4.2: a 3x3 stem with 16 channels, then
three stages of five basic blocks with 16, 32 and 64 channels, global average pooling
and a linear classifier. Shortcuts that change shape use option A (stride-2
subsampling and zero padding of the new channels), so they add no parameters and the
network has about 0.46 M parameters for 10 classes.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class PadShortcut(nn.Module):
    """Option-A shortcut: subsample by 2 and pad the missing channels with zeros."""

    def __init__(self, extra_channels):
        super().__init__()
        self.extra_channels = extra_channels

    def forward(self, x):
        x = x[:, :, ::2, ::2]
        half = self.extra_channels // 2
        return F.pad(x, (0, 0, 0, 0, half, self.extra_channels - half))


class BasicBlock(nn.Module):
    def __init__(self, in_channels, out_channels, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = PadShortcut(out_channels - in_channels)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet32(nn.Module):
    def __init__(self, num_classes=10, blocks_per_stage=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(16)

        layers = []
        in_channels = 16
        for stage, channels in enumerate((16, 32, 64)):
            for block in range(blocks_per_stage):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(BasicBlock(in_channels, channels, stride))
                in_channels = channels
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(64, num_classes)

        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def forward(self, x):
        # x: (B, 3, 32, 32) -> logits: (B, num_classes)
        out = F.relu(self.bn(self.conv(x)))
        out = self.layers(out)
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.fc(out)


class WeightingNet(nn.Module):
    """The MLP V(loss; theta) that maps a per-sample loss to a weight in (0, 1).

    With num_layers=1 it is the network of the Meta-Weight-Net paper:
    1 -> hidden_size -> ReLU -> 1 -> sigmoid.
    """

    def __init__(self, hidden_size=100, num_layers=1):
        super().__init__()
        layers = [nn.Linear(1, hidden_size), nn.ReLU(inplace=True)]
        for _ in range(num_layers - 1):
            layers += [nn.Linear(hidden_size, hidden_size), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(hidden_size, 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, per_sample_loss):
        # per_sample_loss: (B, 1) -> weights: (B, 1)
        return torch.sigmoid(self.mlp(per_sample_loss))
