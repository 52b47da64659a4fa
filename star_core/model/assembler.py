"""Action assembler of STAR (paper Sec. 3.1): sigmoid attention, permissive coverage, RAM.

Equations implemented here (numbers are the paper's):
  Eq. 1   x_t = Σ_i α_{t,i} s_i                       (scaled per ``assembly_norm``, open point 4)
  Eq. 2-3 e_{t,i} = v_α tanh(W_α h_{t-1} + U_α s_i),  α_{t,i} = σ(e_{t,i})   (sigmoid, NOT softmax)
  Eq. 6   COV_{t,i} = σ(Z (p_i − centroid_{t-1}) + W h_{t-1})               (open points 2, 3)
  Eq. 7   ê_{t,i} = v_α [COV_{t,i} ⊙ tanh(W_α h_{t-1} + U_α s_i)]
  Eq. 8   RAM_t = W_r Σ_i σ(ê_{t,i})

Decisions on the open points (see docs/model.md for the measurements):
- Positions (open point 2, ``position_norm``): "unit" uses p_i = i/(N_b−1) ∈ [0, 1] with N_b the
  video's own valid length (so padding never shifts positions) and the centroid Σ_k α k / Σ_k α
  (α is sigmoid-valued, so the raw sum is not a centroid). "index" is the literal form: p_i = i
  (0-based) and Σ_k α_{t-1,k} k without normalisation. At t = 1 there is no α_0:
  ``coverage_start`` "learned" uses a learned start centroid (init 0.5 · scale), "neutral" opens the
  gate fully (COV = 1, i.e. plain Eq. 2) for the first step.
- Gate shape (open point 3, ``coverage_gate``): "vector" makes Z and the hidden projection of
  Eq. 6 attention-sized (A), matching the ⊙ in Eq. 7; "scalar" uses one gate value per segment.
  ``coverage_shared_w`` reuses the W_α h_{t-1} term of Eq. 7 inside Eq. 6 (the literal symbol);
  the default gives Eq. 6 its own projection so the gate and the energy can disagree.
- v_α carries a bias (the paper's Eq. 2 has none): it sets the initial attention level.
- ``energy_temperature`` τ (beyond the paper, 1 = paper): α = σ(ê/τ).
- Padding: α is multiplied by the (B, N) mask, so padded segments get exactly zero weight, add
  nothing to x_t, to Σα (RAM, normalisation) or to the centroid.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from star_core.model.config import ModelConfig

_EPS = 1e-6


class AssemblyStep(NamedTuple):
    alpha: torch.Tensor  # (B, N) α_t, exactly 0 on padding
    pattern: torch.Tensor  # (B, D) x_t
    ram: torch.Tensor  # (B,) RAM_t (Eq. 8)
    centroid: torch.Tensor  # (B,) attention centroid of this step (input to the next step's gate)


def segment_positions(mask: torch.Tensor, position_norm: str) -> torch.Tensor:
    """Positions p_i of Eq. 6 per video: (B, N) float, 0 on padding."""
    B, N = mask.shape
    idx = torch.arange(N, device=mask.device, dtype=torch.float32).expand(B, N)  # (B, N)
    if position_norm == "index":
        return idx * mask
    if position_norm != "unit":
        raise ValueError(f"model.position_norm must be 'unit' or 'index', got {position_norm!r}")
    length = mask.sum(dim=1, keepdim=True).float()  # (B, 1)
    return idx / (length - 1).clamp(min=1.0) * mask


class Assembler(nn.Module):
    """Attention over segments with permissive coverage and the repetition alignment module."""

    def __init__(self, *, feat_dim: int, hidden_dim: int, cfg: ModelConfig):
        super().__init__()
        if cfg.coverage_gate not in ("vector", "scalar"):
            raise ValueError(f"model.coverage_gate must be 'vector' or 'scalar', got {cfg.coverage_gate!r}")
        if cfg.assembly_norm not in ("none", "sum", "count"):
            raise ValueError(f"model.assembly_norm must be 'none', 'sum' or 'count', got {cfg.assembly_norm!r}")
        if cfg.coverage_start not in ("learned", "neutral"):
            raise ValueError(f"model.coverage_start must be 'learned' or 'neutral', got {cfg.coverage_start!r}")
        if cfg.energy_temperature <= 0:
            raise ValueError(f"model.energy_temperature must be > 0, got {cfg.energy_temperature}")
        A = cfg.attn_dim
        self.cfg = cfg
        self.U = nn.Linear(feat_dim, A)  # U_α (Eq. 2), applied once per video
        self.W = nn.Linear(hidden_dim, A, bias=False)  # W_α h_{t-1}
        self.v = nn.Linear(A, 1)  # v_α (+ bias, see module docstring)
        gate = A if cfg.coverage_gate == "vector" else 1
        self.use_coverage = cfg.use_coverage
        if cfg.use_coverage:
            self.Z = nn.Parameter(torch.full((gate,), 1.0))  # Z of Eq. 6
            self.W_cov = None if cfg.coverage_shared_w else nn.Linear(hidden_dim, gate)
            # Start centroid for t = 1 (open point 2); in "index" mode it is scaled by the length.
            self.start_centroid = nn.Parameter(torch.tensor(0.5))
        # RAM (Eq. 8): scalar W_r and bias on the attention mass.
        self.ram_w = nn.Parameter(torch.tensor(float(cfg.ram_init_scale)))
        self.ram_b = nn.Parameter(torch.tensor(0.0))

    def keys(self, feats: torch.Tensor) -> torch.Tensor:
        """U_α s_i for all segments, computed once per video: (B, N, D) -> (B, N, A)."""
        return self.U(feats)

    def initial_centroid(self, mask: torch.Tensor) -> torch.Tensor:
        """Centroid fed to the gate at t = 1: (B,)."""
        B = mask.shape[0]
        if not self.use_coverage:
            return mask.new_zeros(B, dtype=torch.float32)
        c = self.start_centroid.expand(B)
        if self.cfg.position_norm == "index":
            c = c * (mask.sum(dim=1).float() - 1).clamp(min=0)
        return c

    def forward(
        self,
        keys: torch.Tensor,  # (B, N, A) U_α s
        feats: torch.Tensor,  # (B, N, D) s (after input dropout)
        mask: torch.Tensor,  # (B, N) bool, True = real segment
        positions: torch.Tensor,  # (B, N) p_i
        h_prev: torch.Tensor,  # (B, H) h_{t-1}
        centroid_prev: torch.Tensor,  # (B,) centroid of α_{t-1} (or the start centroid)
        first_step: bool,
    ) -> AssemblyStep:
        maskf = mask.to(feats.dtype)  # (B, N)
        wh = self.W(h_prev)  # (B, A)
        content = torch.tanh(keys + wh[:, None, :])  # (B, N, A)
        if self.use_coverage and not (first_step and self.cfg.coverage_start == "neutral"):
            hid = wh if self.W_cov is None else self.W_cov(h_prev)  # (B, A) or (B, 1)
            offset = positions - centroid_prev[:, None]  # (B, N)
            cov = torch.sigmoid(offset[:, :, None] * self.Z + hid[:, None, :])  # (B, N, A|1), Eq. 6
            content = cov * content  # Eq. 7
        energy = self.v(content).squeeze(-1) / self.cfg.energy_temperature  # (B, N) ê_t
        alpha = torch.sigmoid(energy) * maskf  # (B, N) Eq. 3, exactly 0 on padding
        mass = alpha.sum(dim=1)  # (B,) Σ_i σ(ê_{t,i})
        pattern = self.assemble(alpha, feats, mask)  # (B, D) Eq. 1
        ram = self.ram_w * mass + self.ram_b  # (B,) Eq. 8
        centroid = (alpha * positions).sum(dim=1)  # (B,)
        if self.cfg.position_norm == "unit":
            centroid = centroid / (mass + _EPS)
        return AssemblyStep(alpha=alpha, pattern=pattern, ram=ram, centroid=centroid)

    def assemble(self, weights: torch.Tensor, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 1 with the ``assembly_norm`` scaling: weights (B, N), feats (B, N, D) -> (B, D)."""
        pattern = torch.einsum("bn,bnd->bd", weights, feats)  # (B, D)
        if self.cfg.assembly_norm == "sum":
            return pattern / (weights.sum(dim=1, keepdim=True) + _EPS)
        if self.cfg.assembly_norm == "count":
            return pattern / mask.sum(dim=1, keepdim=True).clamp(min=1).to(pattern.dtype)
        return pattern

    def assembly_weights(self, alpha: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Effective weights ã with x_t = Σ_i ã_{t,i} s_i (α scaled per ``assembly_norm``): (B, T, N)."""
        if self.cfg.assembly_norm == "sum":
            return alpha / (alpha.sum(dim=-1, keepdim=True) + _EPS)
        if self.cfg.assembly_norm == "count":
            return alpha / mask.sum(dim=1).clamp(min=1).to(alpha.dtype)[:, None, None]
        return alpha
