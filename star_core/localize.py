"""Score maps -> temporal proposals -> per-class NMS (paper Sec. 3.2, Eq. 14; Table 2 localizers).

Localizers (``localize.localizer``, Table 2), per decoded step t with class c:
  "attention":         m_i = λ α_{t,i,RGB} + (1−λ) α_{t,i,flow}            (one map)
  "gradcam":           m_i = σ(ξ^c_{t,i,s})  for s ∈ {RGB, flow}            (one map per stream)
  "attended_gradcam":  m_i = [λ α_{t,i,RGB} + (1−λ) α_{t,i,flow}] · σ(ξ^c_{t,i,s})  (Eq. 14; one per stream)
As in the paper, the attention of the two streams is fused with λ first and proposals are then
generated from each stream's map separately; all proposals of a class meet in one NMS.

Proposal generation (open point 7): the map is normalised per video and thresholded at each
value of ``thresholds``; every maximal run of segments above a threshold is a proposal (runs
shorter than ``min_length_segments`` are dropped, duplicates merged). ``threshold_space``:
  "rank"   percentile rank of m_i in the video (robust to peaked maps: a threshold θ always keeps
           the top (1−θ) of the segments, so proposals are never all one segment long);
  "log"    min-max of log m_i (peaks compressed);
  "logit"  min-max of log(m/(1−m)): undoes the saturation of σ(ξ) (for the gradcam map it is
           min-max of ξ itself), and behaves like "log" where m is small;
  "linear" min-max of m_i (classic; breaks on peaked maps, see docs/model.md, "Pitfalls").
Scoring: "mean" is Eq. 14, the mean of m over the proposal; "contrast" (beyond the paper) is
(1 + mean inside − mean of the two flanks of length max(1, L/4)) / 2. Either is multiplied by
p(c)^``class_score_weight`` (p = fused video-level class probability of the decoded step).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from star_core.metrics import tiou_matrix
from star_core.model.config import LocalizeConfig

LOCALIZERS = ("attention", "gradcam", "attended_gradcam")


class Proposal(NamedTuple):
    class_idx: int
    start_idx: int  # first segment (inclusive)
    end_idx: int  # last segment (inclusive)
    score: float


def normalise_score(score: np.ndarray, space: str) -> np.ndarray:
    """Map a (N,) score to [0, 1] for thresholding, per ``threshold_space``."""
    score = np.asarray(score, dtype=np.float64)
    n = score.shape[0]
    if n == 0:
        return score
    if space == "rank":
        order = np.argsort(score, kind="mergesort")
        ranks = np.empty(n, dtype=np.float64)
        ranks[order] = np.arange(n, dtype=np.float64)
        # ties share their mean rank, so equal scores are always on the same side of a threshold
        uniq, inv = np.unique(score, return_inverse=True)
        if uniq.shape[0] < n:
            sums = np.bincount(inv, weights=ranks)
            ranks = (sums / np.bincount(inv))[inv]
        return ranks / max(n - 1, 1)
    if space == "log":
        score = np.log(np.clip(score, 1e-12, None))
    elif space == "logit":
        p = np.clip(score, 1e-12, 1 - 1e-12)
        score = np.log(p) - np.log1p(-p)
    elif space != "linear":
        raise ValueError(f"localize.threshold_space must be 'rank', 'log', 'logit' or 'linear', got {space!r}")
    lo, hi = score.min(), score.max()
    if hi - lo <= 1e-12:
        return np.ones(n)
    return (score - lo) / (hi - lo)


def runs_above(flags: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs of True in a (N,) bool array as inclusive (start_idx, end_idx)."""
    f = np.concatenate([[False], np.asarray(flags, dtype=bool), [False]])
    d = np.diff(f.astype(np.int8))
    starts = np.flatnonzero(d == 1)
    ends = np.flatnonzero(d == -1) - 1
    return list(zip(starts.tolist(), ends.tolist()))


def proposals_from_score(score: np.ndarray, thresholds: Sequence[float], space: str = "rank", min_length: int = 1) -> list[tuple[int, int]]:
    """Candidate intervals (inclusive segment indices) from thresholding a normalised score map."""
    norm = normalise_score(score, space)
    seen: set[tuple[int, int]] = set()
    out: list[tuple[int, int]] = []
    for thr in thresholds:
        for s, e in runs_above(norm >= thr):
            if e - s + 1 >= min_length and (s, e) not in seen:
                seen.add((s, e))
                out.append((s, e))
    return out


def score_interval(score: np.ndarray, start: int, end: int, mode: str = "mean") -> float:
    """Score of one interval of a map: Eq. 14 mean, or the inner-outer contrast."""
    inner = float(score[start : end + 1].mean())
    if mode == "mean":
        return inner
    if mode != "contrast":
        raise ValueError(f"localize.proposal_score must be 'mean' or 'contrast', got {mode!r}")
    flank = max(1, (end - start + 1) // 4)
    outer = np.concatenate([score[max(0, start - flank) : start], score[end + 1 : end + 1 + flank]])
    outer_mean = float(outer.mean()) if outer.size else 0.0
    return (1.0 + inner - outer_mean) / 2.0


def nms_1d(starts: np.ndarray, ends: np.ndarray, scores: np.ndarray, tiou: float) -> list[int]:
    """Greedy NMS: indices kept, by descending score; drops any interval with tIoU > ``tiou`` to a kept one.

    Inclusive segment indices should be passed as [start, end + 1) so one-segment proposals have length 1.
    """
    starts, ends, scores = (np.asarray(a, dtype=np.float64) for a in (starts, ends, scores))
    order = np.argsort(-scores, kind="mergesort")
    keep: list[int] = []
    suppressed = np.zeros(len(order), dtype=bool)
    for pos, i in enumerate(order):
        if suppressed[pos]:
            continue
        keep.append(int(i))
        rest = order[pos + 1 :]
        ov = tiou_matrix(np.array([[starts[i], ends[i]]]), np.stack([starts[rest], ends[rest]], axis=1))[0]
        suppressed[pos + 1 :] |= ov > tiou
    return keep


def score_maps(
    localizer: str,
    fusion_lambda: float,
    alpha_rgb: np.ndarray,  # (N,)
    alpha_flow: np.ndarray,  # (N,)
    xi_rgb: np.ndarray | None = None,  # (N,)
    xi_flow: np.ndarray | None = None,  # (N,)
    attention_scale: str = "none",
) -> list[np.ndarray]:
    """The per-stream score maps of one decoded step for the chosen Table 2 localizer.

    ``attention_scale`` "max" divides each stream's α by its maximum over the video before the
    λ-fusion (with ``assembly_norm="sum"`` the scale of α is not used by the model, only its
    shape, so this makes the streams and videos comparable); "none" fuses the raw α (paper).
    """
    if localizer not in LOCALIZERS:
        raise ValueError(f"localize.localizer must be one of {LOCALIZERS}, got {localizer!r}")
    if attention_scale == "max":
        alpha_rgb = alpha_rgb / max(float(alpha_rgb.max()), 1e-12)
        alpha_flow = alpha_flow / max(float(alpha_flow.max()), 1e-12)
    elif attention_scale != "none":
        raise ValueError(f"localize.attention_scale must be 'max' or 'none', got {attention_scale!r}")
    fused = fusion_lambda * alpha_rgb + (1.0 - fusion_lambda) * alpha_flow  # Eq. 14 numerator
    if localizer == "attention":
        return [fused]
    sig = [1.0 / (1.0 + np.exp(-np.clip(x, -60, 60))) for x in (xi_rgb, xi_flow)]
    if localizer == "gradcam":
        return sig
    return [fused * s for s in sig]


def localize_step(maps: Sequence[np.ndarray], class_idx: int, class_prob: float, cfg: LocalizeConfig) -> list[Proposal]:
    """Proposals of one (video, decoded class) from its score maps, before NMS."""
    out: list[Proposal] = []
    weight = class_prob**cfg.class_score_weight if cfg.class_score_weight else 1.0
    for m in maps:
        for s, e in proposals_from_score(m, cfg.thresholds, cfg.threshold_space, cfg.min_length_segments):
            out.append(Proposal(class_idx, s, e, score_interval(m, s, e, cfg.proposal_score) * weight))
    return out


def nms_per_class(proposals: Sequence[Proposal], tiou: float, max_keep: int) -> list[Proposal]:
    """Per-class NMS over one video's proposals, then the top ``max_keep`` by score."""
    kept: list[Proposal] = []
    by_class: dict[int, list[Proposal]] = {}
    for p in proposals:
        by_class.setdefault(p.class_idx, []).append(p)
    for props in by_class.values():
        st = np.array([p.start_idx for p in props], dtype=np.float64)
        en = np.array([p.end_idx + 1 for p in props], dtype=np.float64)
        sc = np.array([p.score for p in props], dtype=np.float64)
        kept.extend(props[i] for i in nms_1d(st, en, sc, tiou))
    kept.sort(key=lambda p: -p.score)
    return kept[:max_keep] if max_keep > 0 else kept
