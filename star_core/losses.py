"""STAR training losses (paper Sec. 3.3, Eq. 15-18).

  L = L_class + β L_sparsity + γ L_cov + δ L_ram                                   (Eq. 15)
  L_class    = −(1/M) Σ_videos Σ_t log P(ŷ_t)      over label steps and the EOS step (Eq. 16)
  L_sparsity = (1/M) Σ_videos Σ_t ||α_t||_1        over the same steps (real segments only)
  L_cov      = (1/M) Σ_videos Σ_{t≥2} max(0, Σ_i (Σ_{k≤i} α_{t,k} − Σ_{k≤i} α_{t−1,k}))   (Eq. 17)
  L_ram      = (1/M') Σ_videos 1/(2T) Σ_t (c_t − RAM_t)²  over label steps with a known count (Eq. 18)

Beyond the paper (``loss.background_weight``, 0 = the paper's loss): background contrast
  L_bg = (1/M) Σ_videos Σ_{label steps t} −log(1 − P(ŷ_t | x̄_t)),  x̄_t = Σ_i (1 − α_{t,i}) s_i
the complement of the step's attention, run through the same LSTM step, must not look like the
step's class. Classification alone is satisfied by a few discriminative segments (or by almost
uniform attention when background is uninformative); this term makes α cover *every* segment of
the class, which is what localization needs (docs/model.md, "Pitfalls": attention collapse). It is the
foreground/background idea of BaS-Net / hide-and-seek put on STAR's assembly weights.

Every term is returned separately and *unweighted*; ``total`` applies β, γ, δ.

What Eq. 17 encourages (open point 5): Σ_i Σ_{k≤i} α_{t,k} = Σ_k α_{t,k} (N_b − k), i.e. the attention
mass weighted by "how early" it sits. The hinge penalises step t for holding more early-weighted
mass than step t−1, so successive steps are pushed to attend later in the video and/or less in
total. Under the default "frequency" label order (frequent classes first) this nudges later,
rarer classes away from the segments already used; it is a soft, order-dependent prior, and it
reaches zero as soon as attention mass decreases step over step (log it: docs/model.md, "Pitfalls").

M is the number of videos in the batch; for L_ram M' counts videos with at least one known count.
Counts unknown for a step are given as NaN or a negative number; ``counts=None`` (or δ = 0)
trains without counts.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from star_core.model.config import LossConfig
from star_core.model.star import IGNORE_INDEX, StarOutput


class LossTerms(NamedTuple):
    total: torch.Tensor  # scalar, Eq. 15
    classification: torch.Tensor  # Eq. 16 (unweighted)
    sparsity: torch.Tensor  # ||α||_1 (unweighted)
    coverage: torch.Tensor  # Eq. 17 (unweighted)
    ram: torch.Tensor  # Eq. 18 (unweighted; 0 without counts)
    background: torch.Tensor | None = None  # background contrast (unweighted; beyond the paper)


def star_loss(out: StarOutput, targets: torch.Tensor, counts: torch.Tensor | None, mask: torch.Tensor, cfg: LossConfig) -> LossTerms:
    """Loss terms of one stream.

    out: teacher-forced output; targets (B, T) class indices, EOS = C, -100 padding;
    counts (B, T) float instance counts aligned with targets (NaN / <0 = unknown) or None;
    mask (B, N) bool, True = real segment.
    """
    logits = out.step_logits  # (B, T, C+1)
    B, T, K = logits.shape
    if targets.shape != (B, T):
        raise ValueError(f"targets {tuple(targets.shape)} do not match step logits {(B, T)}")
    C = K - 1
    step_valid = targets != IGNORE_INDEX  # (B, T)
    ce = F.cross_entropy(logits.reshape(B * T, K), targets.reshape(B * T), ignore_index=IGNORE_INDEX, reduction="sum")
    classification = ce / B

    alpha = out.attention * mask[:, None, :].to(out.attention.dtype)  # (B, T, N), defensive re-mask
    sparsity = (alpha.abs().sum(dim=-1) * step_valid).sum() / B

    if T > 1:
        cum = torch.cumsum(alpha, dim=-1)  # (B, T, N) Σ_{k≤i} α_{t,k}
        diff = ((cum[:, 1:] - cum[:, :-1]) * mask[:, None, :]).sum(dim=-1)  # (B, T-1), real segments only
        pair_valid = step_valid[:, 1:] & step_valid[:, :-1]
        coverage = (torch.relu(diff) * pair_valid).sum() / B
    else:
        coverage = logits.new_zeros(())

    ram = logits.new_zeros(())
    if counts is not None:
        if counts.shape != (B, T):
            raise ValueError(f"counts {tuple(counts.shape)} do not match targets {(B, T)}")
        counts = counts.to(logits.dtype)
        known = step_valid & (targets < C) & torch.isfinite(counts) & (counts >= 0)  # (B, T) label steps with a count
        per_video_steps = known.sum(dim=1)  # (B,)
        has = per_video_steps > 0
        if bool(has.any()):
            sq = torch.where(known, (counts.nan_to_num(0.0) - out.ram) ** 2, torch.zeros_like(out.ram))  # (B, T)
            per_video = sq.sum(dim=1) / (2 * per_video_steps.clamp(min=1))
            ram = per_video[has].mean()

    background = logits.new_zeros(())
    if out.background_logits is not None:
        bg = out.background_logits  # (B, T, C+1)
        label_step = step_valid & (targets < C)  # (B, T)
        cls = targets.clamp(min=0, max=C - 1)
        own = torch.zeros_like(bg, dtype=torch.bool).scatter_(-1, cls[..., None], True)
        # −log(1 − p_c) = logsumexp(all) − logsumexp(all but c), numerically stable
        nll = torch.logsumexp(bg, -1) - torch.logsumexp(bg.masked_fill(own, float("-inf")), -1)  # (B, T)
        background = (nll * label_step).sum() / B
    elif cfg.background_weight > 0:
        raise ValueError("loss.background_weight > 0 needs background logits (a teacher-forced forward)")

    total = (
        classification
        + cfg.beta_sparsity * sparsity
        + cfg.gamma_coverage * coverage
        + cfg.delta_ram * ram
        + cfg.background_weight * background
    )
    return LossTerms(total=total, classification=classification, sparsity=sparsity, coverage=coverage, ram=ram, background=background)
