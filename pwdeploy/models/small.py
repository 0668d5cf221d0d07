"""pwdeploy's own small models: fast enough for the CPU demo and the test suite."""

from __future__ import annotations

from torch import nn

from . import register_model


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four conv blocks (two downsampling) and a linear head; prunable channel by channel.

    Width 8 (8-16-32-32 channels) keeps the CPU demo fast and makes a 75%-pruned net capacity-limited, which
    is where the fairness harm shows (benchmarks/results/findings.md).
    """

    def __init__(self, num_classes: int = 2, width: int = 8, in_channels: int = 3):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            *_block(in_channels, w), nn.MaxPool2d(2),
            *_block(w, 2 * w), nn.MaxPool2d(2),
            *_block(2 * w, 4 * w),
            *_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class TinyResNet(nn.Module):
    """A two-stage residual net: exercises coupled channels (residual adds) in fast tests."""

    def __init__(self, num_classes: int = 2, width: int = 16, in_channels: int = 3):
        super().__init__()
        self.stem = nn.Sequential(*_block(in_channels, width))
        self.body1 = nn.Sequential(*_block(width, width), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width))
        self.body2 = nn.Sequential(*_block(width, width), nn.Conv2d(width, width, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(width))
        self.relu = nn.ReLU()
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    def forward(self, x):
        x = self.stem(x)
        x = self.relu(x + self.body1(x))
        x = self.relu(x + self.body2(x))
        return self.head(x)


register_model("smallcnn")(SmallCNN)
register_model("tinyresnet")(TinyResNet)
