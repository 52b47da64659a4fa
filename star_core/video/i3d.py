"""Inception-v1 I3D (Carreira & Zisserman, CVPR 2017) in PyTorch, state-dict compatible with piergiaj/pytorch-i3d.

Module and parameter names follow piergiaj/pytorch-i3d (``Conv3d_1a_7x7.conv3d.weight``,
``Mixed_3b.b1b.bn.running_var``, ``logits.conv3d.bias``) so its ``rgb_imagenet.pt`` /
``flow_imagenet.pt`` load with ``strict=True``; other layouts are mapped in ``weights.py``.
Numerics follow DeepMind's Sonnet/TF model:

- TF "SAME" padding computed from the input size at run time (total padding
  max((ceil(s / stride) - 1) * stride + k - s, 0), the smaller half in front), so odd sizes and
  any clip length behave as in TF;
- SAME max pooling ignores the padding (padded with -inf, as TF does);
- BatchNorm with eps 1e-3 in inference mode (running statistics); Sonnet's BN has no scale,
  converted weights carry gamma = 1.

Shapes: input (B, C, T, H, W) with C = 3 (RGB) or 2 (flow), values in [-1, 1]. For a
16-frame 224x224 clip, Mixed_5c is (B, 1024, 2, 7, 7) and the feature is its mean over
(T, H, W): (B, 1024), the field's "avg-pooled Mixed_5c" segment feature.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

BN_EPS = 1e-3
FEATURE_DIM = 1024


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF SAME padding (front, back) of one dimension of length ``size``."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int], value: float) -> torch.Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (same_padding(s, k, st) for s, k, st in zip((t, h, w), kernel, stride))
    if not any(pt + ph + pw):
        return x
    return F.pad(x, (*pw, *ph, *pt), value=value)


class Unit3D(nn.Module):
    """Conv3d (SAME padding) -> BatchNorm (eps 1e-3) -> ReLU; names ``conv3d``, ``bn`` as piergiaj."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        activation: Callable[[torch.Tensor], torch.Tensor] | None = F.relu,
        use_bn: bool = True,
        use_bias: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel, self.stride, padding=0, bias=use_bias)
        self.bn = nn.BatchNorm3d(out_channels, eps=BN_EPS, momentum=0.01) if use_bn else None
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride, 0.0))
        if self.bn is not None:
            x = self.bn(x)
        return self.activation(x) if self.activation is not None else x


class MaxPool3dSame(nn.Module):
    """Max pooling with TF SAME padding (padding never wins the max)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(_pad_same(x, self.kernel, self.stride, float("-inf")), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches (1x1; 1x1->3x3; 1x1->3x3; pool->1x1) concatenated on channels. out = (b0, b1a, b1b, b2a, b2b, b3b)."""

    def __init__(self, in_channels: int, out: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        self.b0 = Unit3D(in_channels, out[0])
        self.b1a = Unit3D(in_channels, out[1])
        self.b1b = Unit3D(out[1], out[2], (3, 3, 3))
        self.b2a = Unit3D(in_channels, out[3])
        self.b2b = Unit3D(out[3], out[4], (3, 3, 3))
        self.b3a = MaxPool3dSame((3, 3, 3), (1, 1, 1))
        self.b3b = Unit3D(in_channels, out[5])
        self.out_channels = out[0] + out[2] + out[4] + out[5]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], dim=1)


# (name, in_channels, branch widths) of the Inception modules, in order (Table 1 of GoogLeNet).
_MIXED = {
    "Mixed_3b": (192, (64, 96, 128, 16, 32, 32)),
    "Mixed_3c": (256, (128, 128, 192, 32, 96, 64)),
    "Mixed_4b": (480, (192, 96, 208, 16, 48, 64)),
    "Mixed_4c": (512, (160, 112, 224, 24, 64, 64)),
    "Mixed_4d": (512, (128, 128, 256, 24, 64, 64)),
    "Mixed_4e": (512, (112, 144, 288, 32, 64, 64)),
    "Mixed_4f": (528, (256, 160, 320, 32, 128, 128)),
    "Mixed_5b": (832, (256, 160, 320, 32, 128, 128)),
    "Mixed_5c": (832, (384, 192, 384, 48, 128, 128)),
}


class InceptionI3d(nn.Module):
    """I3D up to Mixed_5c plus the Kinetics logits head (``logits``: 1x1x1 conv with bias)."""

    ENDPOINTS = (
        "Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
        "Mixed_3b", "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f",
        "MaxPool3d_5a_2x2", "Mixed_5b", "Mixed_5c",
    )

    def __init__(self, *, in_channels: int = 3, num_classes: int = 400) -> None:
        super().__init__()
        self.in_channels, self.num_classes = in_channels, num_classes
        self.Conv3d_1a_7x7 = Unit3D(in_channels, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.Mixed_3b = InceptionModule(*_MIXED["Mixed_3b"])
        self.Mixed_3c = InceptionModule(*_MIXED["Mixed_3c"])
        self.MaxPool3d_4a_3x3 = MaxPool3dSame((3, 3, 3), (2, 2, 2))
        self.Mixed_4b = InceptionModule(*_MIXED["Mixed_4b"])
        self.Mixed_4c = InceptionModule(*_MIXED["Mixed_4c"])
        self.Mixed_4d = InceptionModule(*_MIXED["Mixed_4d"])
        self.Mixed_4e = InceptionModule(*_MIXED["Mixed_4e"])
        self.Mixed_4f = InceptionModule(*_MIXED["Mixed_4f"])
        self.MaxPool3d_5a_2x2 = MaxPool3dSame((2, 2, 2), (2, 2, 2))
        self.Mixed_5b = InceptionModule(*_MIXED["Mixed_5b"])
        self.Mixed_5c = InceptionModule(*_MIXED["Mixed_5c"])
        self.logits = Unit3D(FEATURE_DIM, num_classes, activation=None, use_bn=False, use_bias=True)

    def mixed_5c(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, T, H, W) -> Mixed_5c activations (B, 1024, T', H', W'), T' = ceil(T / 8), H' = ceil(H / 32)."""
        if x.ndim != 5 or x.shape[1] != self.in_channels:
            raise ValueError(f"I3D expects (B, {self.in_channels}, T, H, W), got {tuple(x.shape)}")
        for name in self.ENDPOINTS:
            x = getattr(self, name)(x)
        return x

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Segment features: Mixed_5c averaged over time and space. (B, C, T, H, W) -> (B, 1024)."""
        return self.mixed_5c(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Kinetics logits as DeepMind computes them: 2x7x7 VALID average pool, 1x1x1 conv, mean over time. -> (B, num_classes)."""
        h = self.mixed_5c(x)  # (B, 1024, T', H', W')
        kernel = (min(2, h.shape[2]), min(7, h.shape[3]), min(7, h.shape[4]))
        h = F.avg_pool3d(h, kernel, stride=1)  # (B, 1024, T'-1, H'-6, W'-6)
        logits = self.logits(h)  # (B, num_classes, T'', 1, 1) for 224 input
        return logits.mean(dim=(2, 3, 4))
