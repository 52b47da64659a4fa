"""Per-dimension standardisation of segment features (beyond the paper; ``ModelConfig.feature_norm``).

I3D features are post-ReLU averages whose per-dimension offsets and scales vary by orders of
magnitude between extractors (and random-weight features are dominated by a per-dimension
constant). Standardising each dimension with statistics of the training segments makes the
attention energies (Eq. 2/7) well conditioned without changing the model otherwise. Statistics are
running buffers updated from the valid (unpadded) segments in training mode only, so they travel
inside every checkpoint and are identical at test time; with ``feature_norm="none"`` (the paper's
literal input) this module is the identity.
"""

from __future__ import annotations

import torch
from torch import nn


class FeatureStandardizer(nn.Module):
    """(B, N, D) features -> (x - mean) / std per dimension, with masked running statistics."""

    def __init__(self, feat_dim: int, enabled: bool, momentum: float = 0.01, eps: float = 1e-5):
        super().__init__()
        self.enabled = enabled
        self.momentum = momentum
        self.eps = eps
        self.register_buffer("mean", torch.zeros(feat_dim))
        self.register_buffer("var", torch.ones(feat_dim))
        self.register_buffer("batches", torch.zeros((), dtype=torch.long))

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return feats
        if self.training:
            with torch.no_grad():
                valid = feats[mask]  # (M, D) unpadded segments only
                if valid.shape[0] > 1:
                    # Exact running average over the first 1/momentum batches, then an EMA.
                    self.batches += 1
                    w = max(self.momentum, 1.0 / float(self.batches))
                    self.mean.lerp_(valid.mean(0), w)
                    self.var.lerp_(valid.var(0, unbiased=False), w)
        return (feats - self.mean) * torch.rsqrt(self.var + self.eps)
