"""Snippet-level refinement by pseudo-label self-training (beyond the paper; RefineLoc, TSCN, ASM-Loc, FuSTAL).

STAR localizes through its attention and ST-GradCAM. Those maps are good at *where* a class is most
visible and poor at *how far* it extends (attention collapse, docs/model.md "Pitfalls"). The field's
strongest lever after STAR is to let a weak model label the training snippets and train a
snippet-level model on those labels:

1. Stage 1 (a trained STAR) scores every segment of every *training* video for each of that video's
   known classes only (:func:`stage1_targets`, map ``pseudo_localizer``: ST-GradCAM by default, whose
   segment AUC on training videos was 0.87 against 0.68 for the attended map). :func:`pseudo_labels`:
   the per-video normalised score (``threshold_space``) at or above ``fg_threshold`` makes a segment
   foreground of the class (the higher-scoring class on a tie), below ``bg_threshold`` for every
   known class background, anything else is ignored.
2. A small temporal conv net over both streams (:class:`SegmentHead`, C classes + background) learns
   those labels (cross-entropy, foreground and background terms balanced), plus a video-level MIL
   loss on the top-k mean of each class's segment logits against the video labels, so segments the
   pseudo-labels ignore still get weak supervision. Videos without labels are never used.
3. ``rounds`` > 1 re-labels the training videos with the head itself (:func:`relabel`) and trains a
   fresh head (measured worse on the stand-in; 1 round by default).

Only video-level labels are used at any point: the pseudo-labels come from the model, restricted
to classes the user gave for the video. The same head trained on ground-truth segment labels is
the benchmark's supervised upper bound (:func:`gt_segment_labels`); it is an evaluation aid only.

Localization with the head (:func:`refined_detections`): video-level class probability = the head's
top-k MIL score (optionally fused with STAR's decoded class probability, ``video_score_fusion``);
for each class above ``localize.min_class_prob``, proposals come from thresholding the head's class
probability at several thresholds (``proposal_thresholds``), are scored by the outer-inner contrast
times p(c)^``class_score_weight`` and meet in per-class NMS (``nms_tiou``). The measurements behind
every default: docs/benchmark.md, "The default recipe".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from star_core.data import Detection, VideoFeatures, VideoLabels
from star_core.detector import pad_batch
from star_core.localize import Proposal, nms_per_class, normalise_score, proposals_from_score, score_interval
from star_core.model.config import LocalizeConfig, RefineConfig
from star_core.model.star import IGNORE_INDEX

log = logging.getLogger(__name__)

IGNORE = IGNORE_INDEX  # ignored segment target (the same sentinel as STAR's step targets)


class SegmentHead(nn.Module):
    """Temporal conv net over concatenated RGB+flow segment features: (B, N, 2D) -> (B, N, C+1) logits; index C is background."""

    def __init__(self, *, feat_dim: int, num_classes: int, cfg: RefineConfig):
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(cfg.dropout)]
        width = 2 * feat_dim
        for _ in range(cfg.layers):
            layers += [nn.Conv1d(width, cfg.hidden_dim, cfg.kernel_size, padding=cfg.kernel_size // 2), nn.ReLU(), nn.Dropout(cfg.dropout)]
            width = cfg.hidden_dim
        self.body = nn.Sequential(*layers)
        self.classifier = nn.Conv1d(width, num_classes + 1, 1)

    def forward(self, feats: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = feats.transpose(1, 2)  # (B, 2D, N)
        x = self.body(x) * mask[:, None, :].to(x.dtype)  # padding stays zero between layers
        return self.classifier(x).transpose(1, 2)  # (B, N, C+1)


def _joint(video: VideoFeatures) -> np.ndarray:
    return np.concatenate([video.rgb, video.flow], axis=1)  # (N, 2D)


def topk_scores(logits: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """Video-level class logits: mean of the top-k segment logits per foreground class, k = ceil(N·fraction). (B, C)."""
    fg = logits[..., :-1].masked_fill(~mask[..., None], float("-inf"))  # (B, N, C)
    n = mask.sum(1)  # (B,)
    k_max = int(math.ceil(int(n.max()) * fraction))
    top = fg.topk(max(k_max, 1), dim=1).values  # (B, k_max, C), sorted descending
    k = torch.clamp(torch.ceil(n.float() * fraction), min=1).long()  # (B,)
    keep = torch.arange(top.shape[1], device=logits.device)[None, :] < k[:, None]  # (B, k_max)
    top = torch.where(keep[..., None], top, torch.zeros_like(top))
    return top.sum(1) / k[:, None].to(top.dtype)


def multi_hot(labels: Sequence[VideoLabels], classes: Sequence[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.zeros((len(labels), len(classes)), dtype=np.float32)
    for v, lab in enumerate(labels):
        for name in lab.labels:
            if name not in index:
                raise ValueError(f"video {lab.video_id!r}: label {name!r} is not in the class list")
            out[v, index[name]] = 1.0
    return out


def pseudo_labels(maps: dict[int, np.ndarray], n_segments: int, num_classes: int, cfg: RefineConfig) -> np.ndarray:
    """Segment targets of one training video from its known classes' score maps: (N,) in {0..C, IGNORE}.

    ``maps``: class index -> (N,) stage-1 score (any scale; normalised here per ``threshold_space``).
    """
    target = np.full(n_segments, IGNORE, dtype=np.int64)
    if not maps:
        return target
    norm = np.stack([normalise_score(m, cfg.threshold_space) for m in maps.values()])  # (K, N)
    cls = np.array(list(maps), dtype=np.int64)
    best = norm.argmax(0)  # (N,)
    top = norm.max(0)
    target[top >= cfg.fg_threshold] = cls[best[top >= cfg.fg_threshold]]
    target[top < cfg.bg_threshold] = num_classes  # background
    return target


def relabel(probs: np.ndarray, known: Sequence[int], confidence: float) -> np.ndarray:
    """Targets (N,) from a head's segment probabilities (N, C+1): argmax over the known classes and background.

    The probabilities are renormalised over those candidates; a segment whose winner holds less
    than ``confidence`` of their mass is ignored.
    """
    keep = np.array(list(known) + [probs.shape[1] - 1], dtype=np.int64)
    sub = probs[:, keep]  # (N, K+1)
    share = sub.max(1) / np.maximum(sub.sum(1), 1e-12)
    target = keep[sub.argmax(1)]
    target[share < confidence] = IGNORE
    return target


def gt_segment_labels(video: VideoFeatures, labels: VideoLabels, classes: Sequence[str]) -> np.ndarray:
    """Ground-truth segment targets (N,): the class covering most of the segment if >= half, else background.

    Evaluation aid only (the supervised upper bound); weak training never calls this.
    """
    index = {c: i for i, c in enumerate(classes)}
    starts_s, ends_s = video.segment_bounds_s()
    cover = np.zeros((video.n_segments, len(classes)))
    for inst in labels.instances:
        if inst.label in index:
            inter = np.clip(np.minimum(ends_s, inst.t_end_s) - np.maximum(starts_s, inst.t_start_s), 0.0, None)
            cover[:, index[inst.label]] += inter / np.maximum(ends_s - starts_s, 1e-9)
    target = np.full(video.n_segments, len(classes), dtype=np.int64)
    fg = cover.max(1) >= 0.5
    target[fg] = cover.argmax(1)[fg]
    return target


def round_epochs(cfg: RefineConfig, n_videos: int) -> int:
    """Epochs of one head training: ``cfg.epochs``, or more when that gives fewer than ``cfg.min_steps`` steps."""
    return max(cfg.epochs, math.ceil(cfg.min_steps / max(1, math.ceil(n_videos / cfg.batch_size))))


def fit_head(
    videos: Sequence[VideoFeatures],
    targets: Sequence[np.ndarray],
    video_labels: np.ndarray,
    num_classes: int,
    cfg: RefineConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: torch.device | str = "cpu",
) -> SegmentHead:
    """Train a :class:`SegmentHead` on segment targets (pseudo or ground truth) plus the video-level MIL loss."""
    if not videos:
        raise ValueError("fit_head needs at least one training video")
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    head = SegmentHead(feat_dim=videos[0].feat_dim, num_classes=num_classes, cfg=cfg).to(device)
    opt = torch.optim.Adam(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(videos) / cfg.batch_size)
    epochs = round_epochs(cfg, len(videos))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    head.train()
    t0 = time.monotonic()
    for epoch in range(epochs):
        sums = {"total": 0.0, "segment": 0.0, "mil": 0.0}
        n_batches = 0
        for batch in _length_batches(videos, cfg.batch_size, rng):
            feats, mask = pad_batch([_joint(videos[i]) for i in batch], device)
            tgt = torch.full(mask.shape, IGNORE, dtype=torch.long)
            for row, i in enumerate(batch):
                tgt[row, : len(targets[i])] = torch.from_numpy(targets[i])
            logits = head(feats, mask)  # (B, N, C+1)
            seg = _balanced_ce(logits, tgt.to(device), num_classes)
            video_logits = topk_scores(logits, mask, cfg.topk_fraction)  # (B, C)
            mil = F.binary_cross_entropy_with_logits(video_logits, torch.from_numpy(video_labels[batch]).to(device))
            total = seg + cfg.mil_weight * mil
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            sched.step()
            for k, v in (("total", total), ("segment", seg), ("mil", mil)):
                sums[k] += float(v.detach())
            n_batches += 1
        metrics = {k: v / n_batches for k, v in sums.items()}
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        log.debug("refine epoch %d/%d  total %.4f  (%.1f s)", epoch + 1, epochs, metrics["total"], time.monotonic() - t0)
    head.eval()
    return head


def _length_batches(videos: Sequence[VideoFeatures], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Batches of videos of similar length (little padding), in random order; membership jitters per epoch."""
    lengths = np.array([v.n_segments for v in videos], dtype=np.float64)
    order = np.argsort(lengths * rng.uniform(0.8, 1.25, len(videos)), kind="mergesort")
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def _balanced_ce(logits: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean of the foreground and the background cross-entropy (each averaged over its own segments)."""
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE, reduction="none")  # (B*N,)
    t = target.reshape(-1)
    parts = [ce[(t >= 0) & (t < num_classes)], ce[t == num_classes]]
    parts = [p.mean() for p in parts if p.numel()]
    return torch.stack(parts).mean() if parts else logits.sum() * 0.0


@torch.no_grad()
def head_outputs(
    head: SegmentHead, videos: Sequence[VideoFeatures], cfg: RefineConfig, batch: int = 8
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per video: segment probabilities (N, C+1) (softmax) and video-level class probabilities (C,) (sigmoid of top-k)."""
    head.eval()
    device = next(head.parameters()).device
    out = []
    for b0 in range(0, len(videos), batch):
        part = videos[b0 : b0 + batch]
        feats, mask = pad_batch([_joint(v) for v in part], device)
        logits = head(feats, mask)
        probs = torch.softmax(logits, -1).cpu().numpy()
        video = torch.sigmoid(topk_scores(logits, mask, cfg.topk_fraction)).cpu().numpy()
        for row, v in enumerate(part):
            out.append((probs[row, : v.n_segments], video[row]))
    return out


def refined_detections(
    head: SegmentHead,
    cfg: RefineConfig,
    classes: Sequence[str],
    videos: Sequence[VideoFeatures],
    localize: LocalizeConfig,
    stage1_probs: np.ndarray | None = None,
) -> list[list[Detection]]:
    """Detections (seconds, by descending score) of each video from the head's segment probabilities.

    Proposal thresholds, their space, the interval score, the class-probability weight and the NMS
    tIoU come from ``cfg``; class gating, minimum length and the detection cap from ``localize``.

    ``stage1_probs`` (B, C): the stage-1 video-level class probabilities, fused with the head's own
    top-k score with weight ``cfg.video_score_fusion``.
    """
    localize = dataclasses.replace(
        localize,
        thresholds=tuple(cfg.proposal_thresholds),
        threshold_space=cfg.proposal_space,
        proposal_score=cfg.proposal_score,
        class_score_weight=cfg.class_score_weight,
        nms_tiou=cfg.nms_tiou,
    )
    outs = head_outputs(head, videos, cfg)
    p_video = np.stack([o[1] for o in outs])  # (B, C)
    if stage1_probs is not None and cfg.video_score_fusion > 0:
        p_video = (1 - cfg.video_score_fusion) * p_video + cfg.video_score_fusion * stage1_probs
    results = []
    for v, (probs, _), p in zip(videos, outs, p_video):
        props: list[Proposal] = []
        for c in np.flatnonzero(p >= localize.min_class_prob):
            m = probs[:, c]  # (N,) foreground probability of class c
            weight = float(p[c]) ** localize.class_score_weight if localize.class_score_weight else 1.0
            for s, e in proposals_from_score(m, localize.thresholds, localize.threshold_space, localize.min_length_segments):
                props.append(Proposal(int(c), s, e, score_interval(m, s, e, localize.proposal_score) * weight))
        kept = nms_per_class(props, localize.nms_tiou, localize.max_detections_per_video)
        starts_s, ends_s = v.segment_bounds_s()
        results.append([
            Detection(v.video_id, classes[p.class_idx], float(starts_s[p.start_idx]), float(ends_s[p.end_idx]), float(p.score))
            for p in kept
        ])
    return results


class HeadDetector:
    """A :class:`SegmentHead` on its own (the supervised upper bound): ``detect_batch`` like the other detectors."""

    def __init__(self, head: SegmentHead, classes: Sequence[str], cfg: RefineConfig):
        self.head, self.classes, self.cfg = head, tuple(classes), cfg

    def detect_batch(self, videos: Sequence[VideoFeatures], localize: LocalizeConfig | None = None) -> list[list[Detection]]:
        return refined_detections(self.head, self.cfg, self.classes, videos, localize or LocalizeConfig())


def stage1_targets(detector, pairs: Sequence[tuple[VideoFeatures, VideoLabels]], cfg: RefineConfig, batch: int = 8) -> list[np.ndarray]:
    """Pseudo segment labels of the training videos from a trained STAR detector (known classes only)."""
    out: list[np.ndarray] = []
    C = len(detector.classes)
    localize = dataclasses.replace(detector.localize_cfg, localizer=cfg.pseudo_localizer)
    for b0 in range(0, len(pairs), batch):
        part = pairs[b0 : b0 + batch]
        maps = detector.known_class_maps([f for f, _ in part], [lab.labels for _, lab in part], localize)
        out.extend(pseudo_labels(m, f.n_segments, C, cfg) for m, (f, _) in zip(maps, part))
    return out


def self_train(
    detector,
    pairs: Sequence[tuple[VideoFeatures, VideoLabels]],
    cfg: RefineConfig,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> SegmentHead:
    """Stage 2: ``cfg.rounds`` rounds of pseudo-labelling + head training on the training videos; returns the last head."""
    if cfg.rounds < 1:
        raise ValueError("self_train needs refine.rounds >= 1")
    pairs = [(f, lab) for f, lab in pairs if lab.labels]
    if not pairs:
        raise ValueError("self_train: no training video has a label")
    classes = detector.classes
    index = {c: i for i, c in enumerate(classes)}
    videos = [f for f, _ in pairs]
    video_labels = multi_hot([lab for _, lab in pairs], classes)
    targets = stage1_targets(detector, pairs, cfg)
    head = None
    for r in range(cfg.rounds):
        if head is not None:  # re-label with the previous round's head, known classes only
            outs = head_outputs(head, videos, cfg)
            targets = [relabel(probs, [index[c] for c in lab.labels], cfg.relabel_confidence) for (probs, _), (_, lab) in zip(outs, pairs)]
        callback = None if on_epoch is None else (lambda e, m, r=r: on_epoch(r, e, m))
        head = fit_head(videos, targets, video_labels, len(classes), cfg, on_epoch=callback, device=detector.device)
    return head
