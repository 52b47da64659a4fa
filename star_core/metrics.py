"""Detection mAP at temporal IoU thresholds (ActivityNet-style, with the THUMOS'14 protocol options).

Per class c and threshold θ:
- detections of c (all videos) are sorted by descending score (stable: ties keep input order);
- each detection is matched to the unmatched ground-truth instance of the same video and class
  with the highest tIoU, if that tIoU >= θ (true positive); otherwise it is a false positive;
- THUMOS'14 protocol (``ignore_ambiguous``): a detection that would be a false positive and
  overlaps (positive intersection) an "Ambiguous" segment of its video is dropped from the list
  (neither TP nor FP), as in the official evalkit;
- AP is the all-point interpolated area under the precision envelope:
  AP = Σ_k (r_k − r_{k−1}) · max_{j ≥ k} p_j.
mAP averages AP over classes with at least one ground-truth instance (classes without ground truth
have AP NaN in ``per_class`` and are not averaged). Videos in ``exclude_videos`` are removed from
ground truth and detections (THUMOS'14: video_test_0000270, video_test_0001496). Detections of
videos absent from the ground truth are ignored and counted in ``MapResult.unknown_video_detections``.
tIoU of two intervals with zero-length union is 0. Values are percent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from star_core.data import Detection, Instance, VideoFeatures, VideoLabels, split_of_name

TIOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
THUMOS14_EXCLUDED = ("video_test_0000270", "video_test_0001496")  # mis-annotated; the common protocol drops them


def tiou_matrix(det: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(P, 2) x (G, 2) ``[start, end]`` intervals -> (P, G) temporal IoU (0 where the union has zero length).

    The one tIoU of the code base: evaluation (matching) and NMS (``star_core.localize``) both use it.
    """
    inter = np.clip(np.minimum(det[:, None, 1], gt[None, :, 1]) - np.maximum(det[:, None, 0], gt[None, :, 0]), 0.0, None)
    union = (det[:, None, 1] - det[:, None, 0]) + (gt[None, :, 1] - gt[None, :, 0]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def tiou(a_start: float, a_end: float, b_start: float, b_end: float) -> float:
    """Temporal IoU of two intervals (:func:`tiou_matrix` of one pair)."""
    return float(tiou_matrix(np.array([[a_start, a_end]], dtype=np.float64), np.array([[b_start, b_end]], dtype=np.float64))[0, 0])


def interpolated_ap(tp: np.ndarray, fp: np.ndarray, n_positive: int) -> float:
    """All-point interpolated AP from TP/FP flags in descending-score order (fraction in [0, 1])."""
    if n_positive <= 0:
        return float("nan")
    if tp.size == 0:
        return 0.0
    tp_cum = np.cumsum(tp, dtype=np.float64)
    fp_cum = np.cumsum(fp, dtype=np.float64)
    recall = tp_cum / n_positive
    precision = tp_cum / np.maximum(tp_cum + fp_cum, 1e-12)
    mprec = np.concatenate([[0.0], precision, [0.0]])
    mrec = np.concatenate([[0.0], recall, [1.0]])
    for i in range(len(mprec) - 2, -1, -1):
        mprec[i] = max(mprec[i], mprec[i + 1])
    idx = np.flatnonzero(mrec[1:] != mrec[:-1]) + 1
    return float(np.sum((mrec[idx] - mrec[idx - 1]) * mprec[idx]))


@dataclass
class MapResult:
    """mAP (percent) per tIoU threshold, both averages, per-class AP."""

    map: dict[str, float]  # "0.1" .. "0.7" -> mAP %
    per_class: dict[str, dict[str, float]] = field(default_factory=dict)  # class -> threshold -> AP % (NaN: no GT)
    n_detections: int = 0
    n_ground_truth: int = 0
    unknown_video_detections: int = 0

    def _avg(self, hi: float) -> float:
        vals = [v for k, v in self.map.items() if float(k) <= hi + 1e-9]
        return float(np.mean(vals)) if vals else float("nan")

    @property
    def avg_0_1_0_5(self) -> float:
        return self._avg(0.5)

    @property
    def avg_0_1_0_7(self) -> float:
        return self._avg(0.7)

    def to_json(self) -> dict[str, object]:
        """The ``star evaluate`` JSON: {"map": {"0.1": ...}, "avg_0.1_0.5": ..., "avg_0.1_0.7": ...}."""
        return {"map": dict(self.map), "avg_0.1_0.5": self.avg_0_1_0_5, "avg_0.1_0.7": self.avg_0_1_0_7}

    def table(self) -> str:
        keys = list(self.map)
        head = "tIoU      " + " ".join(f"{k:>6}" for k in keys) + "  avg0.1:0.5  avg0.1:0.7"
        row = "mAP (%)   " + " ".join(f"{self.map[k]:6.2f}" for k in keys) + f"  {self.avg_0_1_0_5:10.2f}  {self.avg_0_1_0_7:10.2f}"
        return f"{head}\n{row}"


def _key(thr: float) -> str:
    return f"{thr:.1f}" if abs(thr * 10 - round(thr * 10)) < 1e-9 else f"{thr:g}"


def evaluate_detections(
    detections: Iterable[Detection],
    ground_truth: Sequence[VideoLabels],
    classes: Sequence[str],
    tiou_thresholds: Sequence[float] = TIOU_THRESHOLDS,
    exclude_videos: Iterable[str] = (),
    ignore_ambiguous: bool = True,
) -> MapResult:
    """Detection mAP@tIoU of ``detections`` against the instances in ``ground_truth`` (see module doc)."""
    excluded = set(exclude_videos)
    classes = list(classes)
    class_set = set(classes)
    gt_videos = {v.video_id: v for v in ground_truth if v.video_id not in excluded}
    # ground truth per class: video -> (G, 2) array
    gt: dict[str, dict[str, np.ndarray]] = {c: {} for c in classes}
    n_gt_total = 0
    for v in gt_videos.values():
        per: dict[str, list[tuple[float, float]]] = {}
        for inst in v.instances:
            if inst.label not in class_set:
                raise ValueError(f"ground truth of video {v.video_id!r}: label {inst.label!r} is not in the class list")
            per.setdefault(inst.label, []).append((inst.t_start_s, inst.t_end_s))
        for c, segs in per.items():
            gt[c][v.video_id] = np.asarray(segs, dtype=np.float64).reshape(-1, 2)
            n_gt_total += len(segs)
    ambiguous = {vid: np.asarray(v.ambiguous, dtype=np.float64).reshape(-1, 2) for vid, v in gt_videos.items() if v.ambiguous}

    dets: dict[str, list[Detection]] = {c: [] for c in classes}
    n_det = unknown = 0
    for d in detections:
        if d.video_id in excluded:
            continue
        if d.video_id not in gt_videos:
            unknown += 1
            continue
        if d.label not in class_set:
            raise ValueError(f"detection in video {d.video_id!r}: label {d.label!r} is not in the class list")
        if not (np.isfinite(d.score) and np.isfinite(d.t_start_s) and np.isfinite(d.t_end_s)):
            raise ValueError(f"detection in video {d.video_id!r}: non-finite score or time ({d})")
        dets[d.label].append(d)
        n_det += 1

    thresholds = [float(t) for t in tiou_thresholds]
    per_class: dict[str, dict[str, float]] = {}
    for c in classes:
        n_pos = sum(len(a) for a in gt[c].values())
        ds = dets[c]
        order = np.argsort(-np.array([d.score for d in ds], dtype=np.float64), kind="mergesort")
        ds = [ds[i] for i in order]
        P = len(ds)
        tp = np.zeros((len(thresholds), P))
        fp = np.zeros((len(thresholds), P))
        keep = np.ones((len(thresholds), P), dtype=bool)
        used = {vid: np.zeros((len(thresholds), len(a)), dtype=bool) for vid, a in gt[c].items()}
        for j, d in enumerate(ds):
            g = gt[c].get(d.video_id)
            ov = tiou_matrix(np.array([[d.t_start_s, d.t_end_s]]), g)[0] if g is not None and len(g) else np.zeros(0)
            by_ov = np.argsort(-ov, kind="mergesort")
            amb = ambiguous.get(d.video_id) if ignore_ambiguous else None
            overlaps_amb = amb is not None and bool(np.any(np.minimum(amb[:, 1], d.t_end_s) - np.maximum(amb[:, 0], d.t_start_s) > 0))
            for k, thr in enumerate(thresholds):
                matched = False
                for gi in by_ov:
                    if ov[gi] < thr:
                        break
                    if not used[d.video_id][k, gi]:
                        used[d.video_id][k, gi] = True
                        matched = True
                        break
                if matched:
                    tp[k, j] = 1
                elif overlaps_amb:
                    keep[k, j] = False
                else:
                    fp[k, j] = 1
        per_class[c] = {_key(thr): 100.0 * interpolated_ap(tp[k][keep[k]], fp[k][keep[k]], n_pos) for k, thr in enumerate(thresholds)}
    with_gt = [c for c in classes if sum(len(a) for a in gt[c].values()) > 0]
    if not with_gt:
        raise ValueError("ground truth has no instances of any class in the class list (nothing to evaluate)")
    mean = {_key(thr): float(np.mean([per_class[c][_key(thr)] for c in with_gt])) for thr in thresholds}
    return MapResult(map=mean, per_class=per_class, n_detections=n_det, n_ground_truth=n_gt_total, unknown_video_detections=unknown)


@dataclass
class DetectorEvaluation:
    """A detector's detections on a split and their mAP."""

    result: MapResult
    detections_by_video: dict[str, list[Detection]]
    detect_s: float  # seconds spent in the detector (reading features and scoring excluded)

    @property
    def n_detections(self) -> int:
        return sum(len(d) for d in self.detections_by_video.values())


def evaluate_detector(
    detector: Any,
    videos: Iterable[VideoFeatures],
    ground_truth: Sequence[VideoLabels],
    classes: Sequence[str],
    exclude_videos: Iterable[str] = (),
    localize: Any = None,
    batch_videos: int = 8,
) -> DetectorEvaluation:
    """Detect on ``videos`` in batches of ``batch_videos`` and score against ``ground_truth``.

    The one "evaluate a detector on a split" of the code base (training's periodic test
    evaluation, the benchmarks). ``videos`` may be a stream (features are held one batch at a
    time); ``detector`` is anything with ``detect_batch(videos, localize_config)`` (StarDetector,
    the STPN baseline); ``localize`` None means the detector's own localization settings.
    """
    by_video: dict[str, list[Detection]] = {}
    batch: list[VideoFeatures] = []
    detect_s = 0.0

    def flush() -> None:
        nonlocal detect_s
        t0 = time.monotonic()
        per_video = detector.detect_batch(batch, localize)
        detect_s += time.monotonic() - t0
        for video, dets in zip(batch, per_video):
            by_video[video.video_id] = list(dets)
        batch.clear()

    for video in videos:
        batch.append(video)
        if len(batch) >= batch_videos:
            flush()
    if batch:
        flush()
    detections = [d for dets in by_video.values() for d in dets]
    result = evaluate_detections(detections, ground_truth, classes, exclude_videos=tuple(exclude_videos), ignore_ambiguous=True)
    return DetectorEvaluation(result, by_video, detect_s)


def load_activitynet_gt(path: str | Path) -> list[VideoLabels]:
    """ActivityNet-style ground truth JSON -> VideoLabels with instances, labels (first occurrence order) and counts."""
    try:
        doc = json.loads(Path(path).read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"ground truth {path}: not valid JSON ({exc})") from None
    db = doc.get("database") if isinstance(doc, dict) else None
    if not isinstance(db, dict):
        raise ValueError(f"ground truth {path}: expected an ActivityNet-style object with a 'database' mapping")
    out = []
    for vid, entry in db.items():
        try:
            anns = sorted(entry.get("annotations", []), key=lambda a: float(a["segment"][0]))
            instances = tuple(Instance(str(a["label"]), float(a["segment"][0]), float(a["segment"][1])) for a in anns)
        except (KeyError, TypeError, IndexError, ValueError) as exc:
            raise ValueError(f"ground truth {path}: video {vid!r} has a malformed annotation ({exc!r})") from None
        labels: list[str] = []
        for inst in instances:
            if inst.label not in labels:
                labels.append(inst.label)
        counts = tuple(sum(1 for i in instances if i.label == lab) for lab in labels)
        subset = str(entry.get("subset", "test")).lower()
        duration = entry.get("duration")
        out.append(
            VideoLabels(
                video_id=vid,
                split=split_of_name(subset) or subset,
                labels=tuple(labels),
                counts=counts,
                instances=instances,
                duration_s=float(duration) if duration is not None else None,
            )
        )
    return out


def parse_ambiguous(text: str, where: str) -> dict[str, list[tuple[float, float]]]:
    """THUMOS'14 ``Ambiguous_*.txt`` text (lines ``video start end``, seconds) -> video -> segments.

    Args:
        text: the file's text.
        where: the file's name for error messages (``<where>:<line>: ...``).
    """
    out: dict[str, list[tuple[float, float]]] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 3:
            raise ValueError(f"{where}:{n}: expected 'video start end', got {line!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise ValueError(f"{where}:{n}: start and end must be numbers, got {line!r}") from None
        out.setdefault(parts[0], []).append((start, end))
    return out


def load_ambiguous(path: str | Path) -> dict[str, list[tuple[float, float]]]:
    """A local THUMOS'14 ``Ambiguous_*.txt`` file -> video -> segments (:func:`parse_ambiguous`)."""
    return parse_ambiguous(Path(path).read_text(), f"ambiguous file {path}")
