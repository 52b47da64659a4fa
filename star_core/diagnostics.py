"""Attention diagnostics (docs/model.md, "Pitfalls": attention collapse).

With sigmoid attention the classification loss can look excellent while α collapses onto a few
segments. On a validation split with ground-truth instances, :func:`attention_diagnostics`
teacher-forces each video's true label sequence and compares, for every (video, label step):
- mean α over the video's segments against the true action fraction of that class;
- the segment-level ROC AUC of α against the ground-truth segment mask of that class.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from star_core.data import VideoFeatures, VideoLabels


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC (Mann-Whitney, ties averaged); NaN when one class is empty."""
    positive = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    uniq, inv = np.unique(scores, return_inverse=True)
    if len(uniq) < len(scores):
        ranks = (np.bincount(inv, weights=ranks) / np.bincount(inv))[inv]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def segment_mask(video: VideoFeatures, labels: VideoLabels, label: str) -> np.ndarray:
    """(N,) bool: segments overlapping a ground-truth instance of ``label``."""
    starts_s, ends_s = video.segment_bounds_s()
    out = np.zeros(video.n_segments, dtype=bool)
    for inst in labels.instances:
        if inst.label == label:
            out |= (ends_s > inst.t_start_s) & (starts_s < inst.t_end_s)
    return out


def attention_diagnostics(detector, pairs: Sequence[tuple[VideoFeatures, VideoLabels]], mode: str | None = None) -> dict[str, float]:
    """Mean α, true action fraction and α-AUC per stream (keys ``rgb/mean_alpha``, ``rgb/action_fraction``, ``rgb/alpha_auc``, ...)."""
    from star_core.detector import pad_batch
    from star_core.model.star import make_targets
    from star_core.train_loop import label_sequence

    mode = mode or detector.model_cfg.label_order
    pairs = [(f, lab) for f, lab in pairs if lab.instances and lab.labels]
    if not pairs:
        raise ValueError("attention_diagnostics needs videos with labels and ground-truth instances")
    seqs = [label_sequence(lab, detector.classes, detector.class_order, mode)[0] for _, lab in pairs]
    targets = make_targets(seqs, len(detector.classes), detector.device)
    out: dict[str, float] = {}
    was_training = detector.training
    detector.eval()
    try:
        for name, net in detector.streams.items():
            feats, mask = pad_batch([getattr(f, name) for f, _ in pairs], detector.device)
            with torch.no_grad():
                alpha = net(feats, mask, targets).attention.cpu().numpy()  # (B, T, N)
            means, fracs, aucs = [], [], []
            for b, ((f, lab), seq) in enumerate(zip(pairs, seqs)):
                for t, c in enumerate(seq):
                    gt = segment_mask(f, lab, detector.classes[c])
                    a = alpha[b, t, : f.n_segments]
                    means.append(float(a.mean()))
                    fracs.append(float(gt.mean()))
                    auc = roc_auc(a, gt)
                    if np.isfinite(auc):
                        aucs.append(auc)
            out[f"{name}/mean_alpha"] = float(np.mean(means))
            out[f"{name}/action_fraction"] = float(np.mean(fracs))
            out[f"{name}/alpha_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    finally:
        detector.train(was_training)
    return out
