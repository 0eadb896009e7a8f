"""PyTorch versions of registered models that neither timm nor torchvision provides.

They exist so that such models can be compared with PyTorch like every other one: the
benchmark times them with ``--compare torch``, and ``jaxvision.convert.from_torch`` converts
their state dicts (tests check that both frameworks compute the same function).  Module
names mirror the Flax variable paths (``block1_0.conv1`` <-> ``block1_0/conv1``).

    from jaxvision.reference_torch import create_torch_model
    model = create_torch_model("wrn28_10")      # a torch.nn.Module in train mode

torch is imported only when a model is built.
"""
from __future__ import annotations

import fnmatch

from jaxvision.registry import create_model

# Registered names (fnmatch patterns) with a PyTorch version here.
TORCH_PATTERNS = ("wrn*", "test_wrn*")


def has_torch_model(name: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in TORCH_PATTERNS)


def create_torch_model(name: str, **kwargs):
    """The PyTorch version of ``create_model(name, **kwargs)``, with the same architecture
    hyper-parameters (read from the Flax module)."""
    if not has_torch_model(name):
        raise ValueError(f"no PyTorch version of {name!r} in jaxvision.reference_torch; "
                         f"available for {', '.join(TORCH_PATTERNS)}")
    return wide_resnet_torch(create_model(name, **kwargs))


def wide_resnet_torch(flax_model):
    """A ``torch.nn.Module`` computing the same function as a Flax ``WideResNet``: the
    pre-activation blocks of Zagoruyko & Komodakis (2016) as in the authors' code."""
    import torch
    from torch import nn

    from jaxvision.models.wide_resnet import block_layout

    m = flax_model
    if m.drop_path_rate:
        raise ValueError("the PyTorch WRN has no stochastic depth; use drop_path_rate=0")

    class Block(nn.Module):
        def __init__(self, cin, width, stride, ks, dropout):
            super().__init__()
            self.ks, self.stride_at = ks, ks.index(3) if 3 in ks else 0
            for i, k in enumerate(ks):
                c = cin if i == 0 else width
                setattr(self, f"bn{i + 1}", nn.BatchNorm2d(c, eps=1e-5, momentum=0.1))
                setattr(self, f"conv{i + 1}", nn.Conv2d(
                    c, width, k, stride=stride if i == self.stride_at else 1,
                    padding=(k - 1) // 2, bias=False))
            self.drop = nn.Dropout(dropout)
            self.shortcut = (nn.Conv2d(cin, width, 1, stride=stride, bias=False)
                             if stride != 1 or cin != width else None)

        def forward(self, x):
            y, preact = x, None
            for i in range(len(self.ks)):
                y = torch.relu(getattr(self, f"bn{i + 1}")(y))
                if i == 0:
                    preact = y
                else:
                    y = self.drop(y)
                y = getattr(self, f"conv{i + 1}")(y)
            return y + (self.shortcut(preact) if self.shortcut is not None else x)

    class WideResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, m.stem_width, 3, padding=1, bias=False)
            layout = list(block_layout(m))
            for name, cin, w, stride in layout:
                setattr(self, name, Block(cin, w, stride, tuple(m.block_type), m.dropout_rate))
            self.names = [name for name, *_ in layout]
            width = layout[-1][2]
            self.bn = nn.BatchNorm2d(width, eps=1e-5, momentum=0.1)
            self.fc = nn.Linear(width, m.num_classes) if m.num_classes else None

        def forward(self, x):
            x = self.conv1(x)
            for name in self.names:
                x = getattr(self, name)(x)
            x = torch.relu(self.bn(x)).mean(dim=(2, 3))
            return self.fc(x) if self.fc is not None else x

    return WideResNet()
