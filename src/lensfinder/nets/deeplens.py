"""L18: the CMU DeepLens pre-activation ResNet of papers II-IV (Lanusse et al. 2018), and its
shielded variant.
"""

from __future__ import annotations

from torch import nn

from lensfinder.errors import LensfinderError
from lensfinder.nets.layers import bn


class PreActBottleneck(nn.Module):
    """The pre-activation bottleneck block of CMU DeepLens (Lanusse et al. 2018)."""

    def __init__(self, in_ch, width, out_ch, stride=1, preactivated=False):
        super().__init__()
        self.pre = None if preactivated else nn.Sequential(bn(in_ch), nn.ELU())
        self.residual = nn.Sequential(
            nn.Conv2d(in_ch, width, 1, stride=stride, bias=False), bn(width), nn.ELU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False), bn(width), nn.ELU(),
            nn.Conv2d(width, out_ch, 1, bias=True),
        )
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=True) if (stride > 1 or in_ch != out_ch) else None

    def forward(self, x):
        x_pre = x if self.pre is None else self.pre(x)
        short = x if self.shortcut is None else self.shortcut(x_pre)
        return self.residual(x_pre) + short


class DeepLensResNet(nn.Module):
    """L18: 7x7 stem, stages of pre-activation bottlenecks, global average pool, dense.

    ``stages``: [(bottleneck width, output channels), ...]; each stage has ``blocks``
    blocks, the first with stride 2 except in stage 0. ``shields``: optional 1x1
    convolutions after each stage (paper II), output widths per stage (None = no shield).
    """

    def __init__(self, in_ch=3, stem=32, stages=((16, 32), (32, 64), (64, 128), (128, 256), (256, 512)), blocks=3,
                 shields=None):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, stem, 7, padding=3, bias=False), bn(stem), nn.ELU())
        layers = []
        ch = stem
        shields = list(shields) if shields else [None] * len(stages)
        if len(shields) != len(stages):
            raise LensfinderError(f"shields {shields} must give one width (or null) per stage ({len(stages)})")
        for i, ((width, out), shield) in enumerate(zip(stages, shields)):
            for b in range(blocks):
                first = b == 0
                layers.append(PreActBottleneck(ch, width, out, stride=2 if (first and i > 0) else 1,
                                               preactivated=(first and i == 0)))
                ch = out
            if shield:
                layers.append(nn.Conv2d(ch, shield, 1, bias=True))
                ch = shield
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(ch, 1)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.xavier_normal_(self.stem[0].weight)

    def forward(self, x):
        x = self.features(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))
