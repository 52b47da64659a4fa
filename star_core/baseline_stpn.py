"""STPN-style reference baseline (Nguyen et al., CVPR 2018, "Weakly Supervised Action Localization
by Sparse Temporal Pooling Network"), trained and evaluated on the same data as STAR.

Per stream (RGB and flow trained separately, as in STPN):
* class-agnostic attention λ_i = σ(w_2 ReLU(W_1 s_i + b_1) + b_2) over the N segments;
* temporal class activation map (T-CAM) a^c_i = W_c[c] · s_i + b_c;
* video-level logit y_c = Σ_i λ_i a^c_i / Σ_i λ_i (``pooling="tcam"``, the default): the attention-
  weighted mean of the T-CAM, which equals STPN's W_c x̄ + b with x̄ the λ-weighted mean of the
  features. The first version pooled x̄ = (1/N) Σ λ_i s_i and classified that (``pooling="features"``):
  its logit is scaled by the mean λ, while the T-CAM used for localization is not, so σ(a^c_i)
  saturated on every segment and the maps did not localize (avg mAP 0.1:0.7 of 4-13 where an
  independently written attention-MIL reaches 29 on the same THUMOS'14-shaped features, issue 14);
* multi-label sigmoid, binary cross-entropy on the video-level labels, and the sparsity loss
  β ||λ||_1 (β = 1e-4, the sum over segments as in STPN).

Detection: video-level class probabilities of the two streams are averaged; classes with fused
probability >= ``min_class_prob`` are localized on the attention-weighted T-CAM fused over the
streams, ψ^c_i = θ λ_i,RGB σ(a^c_i,RGB) + (1 − θ) λ_i,flow σ(a^c_i,flow) with θ = 0.5 (STPN's
fusion), with the same proposal generation, scoring (mean over the interval × p(c)^w) and per-class
NMS as STAR (``star_core.localize`` with the ``LocalizeConfig`` given), so the comparison differs
only in the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from star_core.data import Detection, VideoFeatures, VideoLabels
from star_core.detector import pad_batch
from star_core.localize import Proposal, nms_per_class, proposals_from_score, score_interval
from star_core.model.config import LocalizeConfig


# The baseline's own proposal settings, chosen the way STAR's were (stand-in, standard setting, seed 0,
# D=256; avg mAP 0.1:0.7): log thresholds 0.4/0.5/0.6 mean 20.1, + contrast 22.9, rank 0.5..0.9 23.0,
# log 0.3..0.7 mean 25.9 (kept), + contrast 20.8 (docs/benchmark.md).
STPN_LOCALIZE = LocalizeConfig(thresholds=(0.3, 0.4, 0.5, 0.6, 0.7))


@dataclass(frozen=True)
class StpnConfig:
    attn_hidden: int = 256  # hidden units of the attention MLP
    dropout: float = 0.5  # drop probability on segment features during training
    beta_sparsity: float = 1e-4  # β of the L1 sparsity loss on λ (STPN)
    epochs: int = 60  # passes over the training videos
    batch_size: int = 16  # videos per step
    lr: float = 1e-3  # Adam learning rate (STPN's 1e-4 assumes far more iterations than 60 epochs x 13 steps)
    weight_decay: float = 5e-4  # Adam weight decay
    sample_segments: int = 400  # uniform sampling per training video (0 = all)
    fusion_theta: float = 0.5  # θ: RGB weight of the fused weighted T-CAM
    seed: int = 0  # seeds initialisation and sampling
    pooling: str = "tcam"  # "tcam": video logit = Σ λ a / Σ λ (map and logit on one scale) | "features": W(Σ λ s / N) (first version)


class StpnStream(nn.Module):
    """One STPN stream: attention MLP, weighted pooling, linear classifier (T-CAM weights)."""

    def __init__(self, *, feat_dim: int, num_classes: int, cfg: StpnConfig = StpnConfig()):
        super().__init__()
        self.attention = nn.Sequential(nn.Linear(feat_dim, cfg.attn_hidden), nn.ReLU(), nn.Linear(cfg.attn_hidden, 1))
        self.classifier = nn.Linear(feat_dim, num_classes)
        self.dropout = nn.Dropout(cfg.dropout)
        if cfg.pooling not in ("tcam", "features"):
            raise ValueError(f"stpn pooling must be 'tcam' or 'features', got {cfg.pooling!r}")
        self.pooling = cfg.pooling

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """feats (B, N, D), mask (B, N) -> logits (B, C), attention λ (B, N), T-CAM (B, N, C)."""
        x = self.dropout(feats)
        lam = torch.sigmoid(self.attention(x).squeeze(-1)) * mask  # (B, N), 0 on padding
        tcam = self.classifier(x)  # (B, N, C): a^c_i = W_c s_i + b_c
        if self.pooling == "tcam":
            # video logit = attention-weighted mean of the T-CAM: the logit and the map share one scale
            logits = (lam.unsqueeze(-1) * tcam).sum(1) / lam.sum(1, keepdim=True).clamp_min(1e-6)  # (B, C)
        else:  # "features" (the first version): classify the pooled features Σ λ s / N
            pooled = (lam.unsqueeze(-1) * x).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)  # (B, D)
            logits = self.classifier(pooled)
        return logits, lam, tcam


def _sample(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` sorted indices, one uniformly inside each of k equal bins (all indices when n <= k or k = 0)."""
    if k <= 0 or n <= k:
        return np.arange(n)
    edges = np.linspace(0, n, k + 1)
    return np.minimum((edges[:-1] + rng.random(k) * (edges[1:] - edges[:-1])).astype(np.int64), n - 1)


class StpnDetector(nn.Module):
    """Both STPN streams with their class list; ``detect_batch`` mirrors ``StarDetector``'s."""

    def __init__(self, *, classes: Sequence[str], feat_dim: int, cfg: StpnConfig = StpnConfig()):
        super().__init__()
        self.classes = tuple(classes)
        self.feat_dim = int(feat_dim)
        self.cfg = cfg
        self.rgb = StpnStream(feat_dim=feat_dim, num_classes=len(self.classes), cfg=cfg)
        self.flow = StpnStream(feat_dim=feat_dim, num_classes=len(self.classes), cfg=cfg)

    @property
    def classifier_device(self) -> torch.device:
        return next(self.parameters()).device

    def detect(self, video: VideoFeatures, cfg: LocalizeConfig | None = None) -> list[Detection]:
        return self.detect_batch([video], cfg)[0]

    @torch.no_grad()
    def detect_batch(self, videos: Sequence[VideoFeatures], cfg: LocalizeConfig | None = None) -> list[list[Detection]]:
        """Detections (seconds) of each video on all its segments, sorted by descending score."""
        cfg = cfg or LocalizeConfig()
        for v in videos:
            if v.feat_dim != self.feat_dim:
                raise ValueError(f"video {v.video_id!r}: feature dim {v.feat_dim} != model feature dim {self.feat_dim}")
            if not (np.isfinite(v.rgb).all() and np.isfinite(v.flow).all()):
                raise ValueError(f"video {v.video_id!r}: features contain NaN or inf")
        was_training = self.training
        self.eval()
        try:
            out = []
            for video in videos:
                per_stream = []
                for net, arr in ((self.rgb, video.rgb), (self.flow, video.flow)):
                    feats, mask = pad_batch([arr], self.classifier_device)
                    logits, lam, tcam = net(feats, mask)
                    per_stream.append((torch.sigmoid(logits[0]).cpu().numpy(), lam[0].cpu().numpy(), torch.sigmoid(tcam[0]).cpu().numpy()))
                (p_rgb, l_rgb, c_rgb), (p_flow, l_flow, c_flow) = per_stream
                probs = 0.5 * (p_rgb + p_flow)  # (C,) video-level scores fused 1:1
                theta = self.cfg.fusion_theta
                props: list[Proposal] = []
                weight_exp = cfg.class_score_weight
                for c in np.flatnonzero(probs >= cfg.min_class_prob):
                    psi = theta * l_rgb * c_rgb[:, c] + (1 - theta) * l_flow * c_flow[:, c]  # (N,) weighted T-CAM
                    weight = float(probs[c]) ** weight_exp if weight_exp else 1.0
                    for s, e in proposals_from_score(psi, cfg.thresholds, cfg.threshold_space, cfg.min_length_segments):
                        props.append(Proposal(int(c), s, e, score_interval(psi, s, e, cfg.proposal_score) * weight))
                kept = nms_per_class(props, cfg.nms_tiou, cfg.max_detections_per_video)
                starts_s, ends_s = video.segment_bounds_s()
                out.append(
                    [
                        Detection(
                            video.video_id,
                            self.classes[p.class_idx],
                            float(starts_s[p.start_idx]),
                            float(ends_s[p.end_idx]),
                            float(p.score),
                        )
                        for p in kept
                    ]
                )
            return out
        finally:
            self.train(was_training)


def stpn_loss(
    logits: torch.Tensor, lam: torch.Tensor, targets: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, classification, sparsity): multi-label BCE + β Σ_i λ_i (mean over videos)."""
    cls = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").sum(1).mean()
    sparsity = lam.sum(1).mean()
    return cls + beta * sparsity, cls, sparsity


def fit_stpn(
    pairs: Sequence[tuple[VideoFeatures, VideoLabels]],
    classes: Sequence[str],
    cfg: StpnConfig = StpnConfig(),
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: str | torch.device = "cpu",
) -> StpnDetector:
    """Train both streams (separately, same sampled segments) on video-level labels on ``device``; returns the detector."""
    if not pairs:
        raise ValueError("fit_stpn: no training videos")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    index = {c: i for i, c in enumerate(classes)}
    det = StpnDetector(classes=classes, feat_dim=pairs[0][0].feat_dim, cfg=cfg).to(device)
    targets = np.zeros((len(pairs), len(classes)), dtype=np.float32)  # (V, C) multi-hot video labels
    for v, (_, lab) in enumerate(pairs):
        for name in lab.labels:
            if name not in index:
                raise ValueError(f"video {lab.video_id!r}: label {name!r} is not in the class list")
            targets[v, index[name]] = 1.0
    # Classifier bias at the log-odds of each class's training frequency (prior init): with a zero
    # bias every class starts at p = 0.5, and Adam's bounded step (~lr) needs thousands of steps to
    # reach the prior (~-3 for 20 classes), so the BCE would sit above the prior for most of training.
    prior = np.clip(targets.mean(0), 1.0 / (2 * len(pairs)), 1.0 - 1.0 / (2 * len(pairs)))
    with torch.no_grad():
        for stream in (det.rgb, det.flow):
            stream.classifier.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior)).astype(np.float32)).to(device))
    optims = {s: torch.optim.Adam(getattr(det, s).parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay) for s in ("rgb", "flow")}
    det.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(pairs))
        sums: dict[str, float] = {}
        n_batches = 0
        for b0 in range(0, len(order), cfg.batch_size):
            batch = order[b0 : b0 + cfg.batch_size]
            picks = [_sample(pairs[v][0].n_segments, cfg.sample_segments, rng) for v in batch]
            y = torch.from_numpy(targets[batch]).to(device)
            for stream in ("rgb", "flow"):
                feats, mask = pad_batch([getattr(pairs[v][0], stream)[i] for v, i in zip(batch, picks)], device)
                logits, lam, _ = getattr(det, stream)(feats, mask)
                total, cls, sparsity = stpn_loss(logits, lam, y, cfg.beta_sparsity)
                optims[stream].zero_grad()
                total.backward()
                optims[stream].step()
                for key, val in (("total", total), ("classification", cls), ("sparsity", sparsity)):
                    sums[f"{stream}/{key}"] = sums.get(f"{stream}/{key}", 0.0) + float(val.detach())
            n_batches += 1
        if on_epoch:
            on_epoch(epoch, {k: v / max(n_batches, 1) for k, v in sums.items()})
    det.eval()
    return det
