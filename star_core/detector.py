"""StarDetector: the two STAR streams plus everything needed to turn features into detections.

Inference (paper Sec. 3.2 and 4.1):
1. Both streams decode jointly and greedily: each step's class distribution is the 1:1 mean of
   the RGB and flow softmax, the emitted class is fed to both LSTMs, classes never repeat, EOS stops.
2. ST-GradCAM (Eq. 10-13) of each stream for the emitted classes.
3. Per decoded class with fused probability >= ``min_class_prob``: score maps of the chosen
   localizer, proposals (Eq. 14), per-class NMS (``star_core.localize``).
4. Segment indices -> seconds through ``VideoFeatures.segment_bounds_s()`` only.
Test-time length (open point 6): ``localize.test_segments`` = 0 runs on all segments (default);
> 0 resamples long videos uniformly to that many segments and maps proposals back to the
original segment grid before converting to seconds.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from star_core.data import Detection, VideoFeatures
from star_core.gradcam import st_gradcam
from star_core.localize import localize_step, nms_per_class, score_maps
from star_core.model.config import LocalizeConfig, ModelConfig, RefineConfig
from star_core.model.star import StarNet, greedy_decode

CHECKPOINT_FORMAT = "star-detector/2"  # /2 adds the optional refinement head; /1 files still load
READABLE_FORMATS = ("star-detector/1", CHECKPOINT_FORMAT)


def check_video(video: VideoFeatures, feat_dim: int) -> None:
    """Raise ValueError naming the video on wrong feature dim, empty input or non-finite values."""
    for name in ("rgb", "flow"):
        arr = getattr(video, name)
        if arr.ndim != 2:
            raise ValueError(f"video {video.video_id!r}: {name} features must be (N, D), got shape {arr.shape}")
        if arr.shape[0] == 0:
            raise ValueError(f"video {video.video_id!r}: {name} features are empty (0 segments)")
        if arr.shape[1] != feat_dim:
            raise ValueError(f"video {video.video_id!r}: {name} feature dim {arr.shape[1]} != model feature dim {feat_dim}")
        if not np.isfinite(arr).all():
            raise ValueError(f"video {video.video_id!r}: {name} features contain NaN or inf")


def resample_indices(n_segments: int, target: int) -> np.ndarray:
    """Uniform (deterministic) subset of ``target`` segment indices when the video is longer, else all."""
    if target <= 0 or n_segments <= target:
        return np.arange(n_segments)
    return np.floor(np.arange(target) * n_segments / target).astype(np.int64)


def pad_batch(arrays: Sequence[np.ndarray], device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """List of (N_b, D) arrays -> features (B, N_max, D) float32 and mask (B, N_max) bool."""
    B, D = len(arrays), arrays[0].shape[1]
    N = max(a.shape[0] for a in arrays)
    feats = torch.zeros(B, N, D, dtype=torch.float32)
    mask = torch.zeros(B, N, dtype=torch.bool)
    view = feats.numpy()  # shares memory: one copy per video, also from read-only (Arrow-backed) arrays
    for b, a in enumerate(arrays):
        view[b, : a.shape[0]] = a
        mask[b, : a.shape[0]] = True
    return feats.to(device), mask.to(device)


class StarDetector(nn.Module):
    """Two STAR streams (RGB, flow) with their class list, configs and label order."""

    def __init__(
        self,
        *,
        classes: Sequence[str],
        feat_dim: int,
        model_cfg: ModelConfig | None = None,
        localize_cfg: LocalizeConfig | None = None,
        class_order: Sequence[str] | None = None,
    ):
        super().__init__()
        self.classes = tuple(classes)
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes must be a non-empty list without duplicates, got {list(classes)}")
        self.feat_dim = int(feat_dim)
        self.model_cfg = model_cfg or ModelConfig()
        self.localize_cfg = localize_cfg or LocalizeConfig()
        self.class_order = tuple(class_order) if class_order is not None else self.classes
        if sorted(self.class_order) != sorted(self.classes):
            raise ValueError("class_order must be a permutation of classes")
        self.rgb = StarNet(feat_dim=self.feat_dim, num_classes=len(self.classes), cfg=self.model_cfg)
        self.flow = StarNet(feat_dim=self.feat_dim, num_classes=len(self.classes), cfg=self.model_cfg)
        self.refiner: nn.Module | None = None  # star_core.refine.SegmentHead after self-training (stage 2)
        self.refine_cfg: RefineConfig | None = None

    def attach_refiner(self, head: nn.Module, cfg: RefineConfig) -> None:
        """Localize with a self-trained segment head from now on (``localize.use_refiner``)."""
        self.refiner = head.to(self.device)
        self.refine_cfg = cfg

    @property
    def streams(self) -> dict[str, StarNet]:
        return {"rgb": self.rgb, "flow": self.flow}

    # -- checkpoints --
    def to_checkpoint(self) -> dict[str, Any]:
        """Plain dict (tensors, str, numbers, lists): loadable with ``torch.load(weights_only=True)``."""

        def plain(cfg: Any) -> dict[str, Any]:
            return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}

        def tensors(module: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

        ckpt = {
            "format": CHECKPOINT_FORMAT,
            "classes": list(self.classes),
            "class_order": list(self.class_order),
            "feat_dim": self.feat_dim,
            "model_cfg": plain(self.model_cfg),
            "localize_cfg": plain(self.localize_cfg),
            "rgb": tensors(self.rgb),
            "flow": tensors(self.flow),
        }
        if self.refiner is not None and self.refine_cfg is not None:
            ckpt["refine_cfg"] = plain(self.refine_cfg)
            ckpt["refiner"] = tensors(self.refiner)
        return ckpt

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> "StarDetector":
        from star_core.config import from_dict

        if not isinstance(ckpt, dict) or ckpt.get("format") not in READABLE_FORMATS:
            raise ValueError(f"not a STAR detector checkpoint (format {ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt)!r})")
        det = cls(
            classes=ckpt["classes"],
            feat_dim=int(ckpt["feat_dim"]),
            model_cfg=from_dict(ckpt["model_cfg"], ModelConfig),
            localize_cfg=from_dict(ckpt["localize_cfg"], LocalizeConfig),
            class_order=ckpt["class_order"],
        )
        det.rgb.load_state_dict(ckpt["rgb"])
        det.flow.load_state_dict(ckpt["flow"])
        if "refiner" in ckpt:
            from star_core.refine import SegmentHead

            rcfg = from_dict(ckpt["refine_cfg"], RefineConfig)
            head = SegmentHead(feat_dim=det.feat_dim, num_classes=len(det.classes), cfg=rcfg)
            head.load_state_dict(ckpt["refiner"])
            head.eval()
            det.attach_refiner(head, rcfg)
        return det

    # -- inference --
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def detect(self, video: VideoFeatures, cfg: LocalizeConfig | None = None) -> list[Detection]:
        return self.detect_batch([video], cfg)[0]

    def detect_batch(self, videos: Sequence[VideoFeatures], cfg: LocalizeConfig | None = None) -> list[list[Detection]]:
        """Detections (seconds) of each video, sorted by descending score."""
        if not videos:
            return []
        cfg = cfg or self.localize_cfg
        if self.refiner is not None and cfg.use_refiner:
            from star_core.refine import refined_detections

            stage1 = self.class_probabilities(videos, cfg) if self.refine_cfg.video_score_fusion > 0 else None
            return refined_detections(self.refiner, self.refine_cfg, self.classes, videos, cfg, stage1)
        keep_idx, feats_rgb, feats_flow, mask = self._inputs(videos, cfg)
        was_training = self.training
        self.eval()
        try:
            dec = self._decode(feats_rgb, feats_flow, mask, cfg)
            labels = dec.labels.clone()  # (B, T)
            labels[labels >= len(self.classes)] = -1  # EOS steps are not localized
            need_cam = cfg.localizer != "attention"
            cams = [st_gradcam(net, f, mask, labels) for net, f in ((self.rgb, feats_rgb), (self.flow, feats_flow))] if need_cam else None
        finally:
            self.train(was_training)
        a_rgb = dec.outputs[0].attention.cpu().numpy()  # (B, T, N)
        a_flow = dec.outputs[1].attention.cpu().numpy()
        xi = [c.xi.cpu().numpy() for c in cams] if cams else [None, None]
        probs = dec.probs.cpu().numpy()
        lab = labels.cpu().numpy()
        results: list[list[Detection]] = []
        for b, video in enumerate(videos):
            n = len(keep_idx[b])
            props = []
            for t in range(lab.shape[1]):
                c = int(lab[b, t])
                if c < 0 or probs[b, t] < cfg.min_class_prob:
                    continue
                maps = score_maps(
                    cfg.localizer,
                    cfg.fusion_lambda,
                    a_rgb[b, t, :n],
                    a_flow[b, t, :n],
                    None if xi[0] is None else xi[0][b, t, :n],
                    None if xi[1] is None else xi[1][b, t, :n],
                    cfg.attention_scale,
                )
                props.extend(localize_step(maps, c, float(probs[b, t]), cfg))
            kept = nms_per_class(props, cfg.nms_tiou, cfg.max_detections_per_video)
            results.append(self._to_seconds(video, keep_idx[b], kept))
        return results

    def _inputs(self, videos: Sequence[VideoFeatures], cfg: LocalizeConfig):
        """Checked, resampled (``test_segments``) and padded inputs: (kept indices, rgb, flow, mask)."""
        for v in videos:
            check_video(v, self.feat_dim)
        keep_idx = [resample_indices(v.n_segments, cfg.test_segments) for v in videos]
        feats_rgb, mask = pad_batch([v.rgb[i] for v, i in zip(videos, keep_idx)], self.device)
        feats_flow, _ = pad_batch([v.flow[i] for v, i in zip(videos, keep_idx)], self.device)
        return keep_idx, feats_rgb, feats_flow, mask

    def _decode(self, feats_rgb: torch.Tensor, feats_flow: torch.Tensor, mask: torch.Tensor, cfg: LocalizeConfig):
        with torch.no_grad():
            return greedy_decode([self.rgb, self.flow], [feats_rgb, feats_flow], mask, max_steps=cfg.max_steps or self.model_cfg.max_steps)

    def class_probabilities(self, videos: Sequence[VideoFeatures], cfg: LocalizeConfig | None = None) -> np.ndarray:
        """(B, C) fused probability of each class decoded for each video (0 for classes not decoded)."""
        cfg = cfg or self.localize_cfg
        _, feats_rgb, feats_flow, mask = self._inputs(videos, cfg)
        was_training = self.training
        self.eval()
        try:
            dec = self._decode(feats_rgb, feats_flow, mask, cfg)
        finally:
            self.train(was_training)
        C = len(self.classes)
        out = np.zeros((len(videos), C), dtype=np.float64)
        lab, probs = dec.labels.cpu().numpy(), dec.probs.cpu().numpy()
        for b, t in zip(*np.nonzero((lab >= 0) & (lab < C))):
            out[b, lab[b, t]] = max(out[b, lab[b, t]], probs[b, t])
        return out

    def known_class_maps(
        self, videos: Sequence[VideoFeatures], labels: Sequence[Sequence[str]], cfg: LocalizeConfig | None = None
    ) -> list[dict[int, np.ndarray]]:
        """Score map (N,) of each *given* class of each video (teacher-forced; per-stream maps averaged).

        The input of pseudo-labelling (``star_core.refine``): the classes are the video's known
        labels, fed to both streams in the model's class order instead of being decoded.
        """
        cfg = cfg or self.localize_cfg
        index = {c: i for i, c in enumerate(self.classes)}
        rank = {c: i for i, c in enumerate(self.class_order)}
        seqs = [[index[c] for c in sorted(set(labs), key=lambda c: rank[c])] for labs in labels]
        T = max((len(s) for s in seqs), default=0)
        if T == 0:
            return [{} for _ in videos]
        lab = torch.full((len(videos), T), -1, dtype=torch.long)
        for b, seq in enumerate(seqs):
            lab[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        feats_rgb, mask = pad_batch([v.rgb for v in videos], self.device)
        feats_flow, _ = pad_batch([v.flow for v in videos], self.device)
        was_training = self.training
        self.eval()
        try:
            cams = [st_gradcam(net, f, mask, lab.to(self.device)) for net, f in ((self.rgb, feats_rgb), (self.flow, feats_flow))]
        finally:
            self.train(was_training)
        a = [c.attention.detach().cpu().numpy() for c in cams]
        xi = [c.xi.detach().cpu().numpy() for c in cams]
        out = []
        for b, (v, seq) in enumerate(zip(videos, seqs)):
            n = v.n_segments
            maps = {}
            for t, c in enumerate(seq):
                per_stream = score_maps(
                    cfg.localizer, cfg.fusion_lambda, a[0][b, t, :n], a[1][b, t, :n], xi[0][b, t, :n], xi[1][b, t, :n], cfg.attention_scale
                )
                maps[c] = np.mean(per_stream, axis=0)
            out.append(maps)
        return out

    def _to_seconds(self, video: VideoFeatures, idx: np.ndarray, proposals) -> list[Detection]:
        starts_s, ends_s = video.segment_bounds_s()  # (N,) each, the one index->seconds mapping
        out = []
        for p in proposals:
            first = int(idx[p.start_idx])
            # a resampled index stands for the original segments up to the next sampled one
            last = int(idx[p.end_idx + 1]) - 1 if p.end_idx + 1 < len(idx) else video.n_segments - 1
            out.append(Detection(video.video_id, self.classes[p.class_idx], float(starts_s[first]), float(ends_s[last]), float(p.score)))
        return out
