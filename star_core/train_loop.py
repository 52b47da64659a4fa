"""Single-process STAR training: both streams, Adam, 400-segment uniform sampling, seeds, resumable.

The Ray Train job wraps the same :class:`Trainer`: ``wrap_module`` is applied to each stream's
``StarNet`` (e.g. ``ray.train.torch.prepare_model`` to get DDP) and the training forward always
runs *through* the wrapped module, so gradient synchronisation hooks fire.

Label order (open point 1, ``model.label_order``):
  "frequency"        classes sorted by descending training-set frequency (ties: class-list order),
                     as in CNN-RNN multi-label work; every video's labels follow that order;
  "alphabetical"     class-name order;
  "first_occurrence" each video's ``VideoLabels.labels`` are taken in the order given, which the
                     importer fills by first occurrence when that weak information exists; the global
                     order (frequency) only breaks ties for label sets given unordered.
Segment sampling (STPN protocol): videos longer than ``train.sample_segments`` are cut into that
many equal bins and one segment is taken per bin (a random one with ``sample_jitter``, else the
first); shorter videos are used whole and padded in the batch with a mask.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import Counter
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from star_core.config import StarConfig
from star_core.data import VideoFeatures, VideoLabels
from star_core.detector import StarDetector, check_video, pad_batch
from star_core.diagnostics import attention_diagnostics  # noqa: F401 (re-exported: optional training diagnostic)
from star_core.losses import LossTerms, star_loss
from star_core.model.config import RefineConfig
from star_core.model.star import IGNORE_INDEX

log = logging.getLogger(__name__)

LABEL_ORDERS = ("frequency", "alphabetical", "first_occurrence")
STREAMS = ("rgb", "flow")


def label_order(labels: Sequence[VideoLabels], classes: Sequence[str], mode: str) -> tuple[str, ...]:
    """Global class order of the step sequence (open point 1)."""
    if mode not in LABEL_ORDERS:
        raise ValueError(f"model.label_order must be one of {LABEL_ORDERS}, got {mode!r}")
    classes = tuple(classes)
    known = set(classes)
    freq: Counter[str] = Counter()
    for v in labels:
        for lab in v.labels:
            if lab not in known:
                raise ValueError(f"video {v.video_id!r}: label {lab!r} is not in the class list")
            freq[lab] += 1
    if mode == "alphabetical":
        return tuple(sorted(classes))
    pos = {c: i for i, c in enumerate(classes)}
    return tuple(sorted(classes, key=lambda c: (-freq[c], pos[c])))


def label_sequence(video: VideoLabels, classes: Sequence[str], class_order: Sequence[str], mode: str) -> tuple[list[int], list[float]]:
    """A video's label sequence (class indices) and aligned counts (NaN where unknown)."""
    index = {c: i for i, c in enumerate(classes)}
    rank = {c: i for i, c in enumerate(class_order)}
    labs = list(video.labels)
    for lab in labs:
        if lab not in index:
            raise ValueError(f"video {video.video_id!r}: label {lab!r} is not in the class list")
    if len(set(labs)) != len(labs):
        raise ValueError(f"video {video.video_id!r}: labels repeat a class: {labs}")
    counts = list(video.counts) if video.counts is not None else [math.nan] * len(labs)
    if len(counts) != len(labs):
        raise ValueError(f"video {video.video_id!r}: {len(counts)} counts for {len(labs)} labels")
    pairs = list(zip(labs, counts))
    if mode != "first_occurrence":
        pairs.sort(key=lambda p: rank[p[0]])
    return [index[p[0]] for p in pairs], [float(p[1]) for p in pairs]


def sample_indices(n_segments: int, n_sample: int, generator: torch.Generator | None, jitter: bool) -> np.ndarray:
    """Uniform sampling of ``n_sample`` segments (one per equal bin); all segments if the video is shorter."""
    if n_sample <= 0 or n_segments <= n_sample:
        return np.arange(n_segments)
    edges = np.arange(n_sample + 1) * n_segments / n_sample  # bin edges (float)
    lo = np.floor(edges[:-1]).astype(np.int64)
    hi = np.maximum(np.floor(edges[1:]).astype(np.int64), lo + 1)  # exclusive
    if not jitter:
        return lo
    u = torch.rand(n_sample, generator=generator).numpy()
    return np.minimum(lo + np.floor(u * (hi - lo)).astype(np.int64), hi - 1)


class Batch(dict):
    """Collated batch: ``rgb``/``flow`` (B, N, D), ``mask`` (B, N), ``targets`` (B, T), ``counts`` (B, T)."""


def collate(
    items: Sequence[tuple[np.ndarray, np.ndarray, list[int], list[float]]], num_classes: int, device: torch.device | str = "cpu"
) -> Batch:
    """(rgb (N_b, D), flow (N_b, D), sequence, counts) per video -> padded tensors with masks."""
    rgb, mask = pad_batch([it[0] for it in items], device)
    flow, _ = pad_batch([it[1] for it in items], device)
    T = max(len(it[2]) for it in items) + 1
    targets = torch.full((len(items), T), IGNORE_INDEX, dtype=torch.long)
    counts = torch.full((len(items), T), math.nan)
    for b, (_, _, seq, cnt) in enumerate(items):
        targets[b, : len(seq)] = torch.tensor(seq, dtype=torch.long)
        targets[b, len(seq)] = num_classes  # EOS
        counts[b, : len(cnt)] = torch.tensor(cnt, dtype=torch.float32)
    return Batch(rgb=rgb, flow=flow, mask=mask, targets=targets.to(device), counts=counts.to(device))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


class Trainer:
    """Trains both STAR streams; ``train_epoch`` is the step function the Ray Train job reuses."""

    def __init__(
        self,
        classes: Sequence[str],
        feat_dim: int,
        cfg: StarConfig,
        class_order: Sequence[str],
        device: str | torch.device = "cpu",
        wrap_module: Callable[[nn.Module], nn.Module] = lambda m: m,
    ):
        self.cfg = cfg
        self.classes = tuple(classes)
        self.device = torch.device(device)
        seed_everything(cfg.train.seed)
        self.detector = StarDetector(
            classes=self.classes, feat_dim=feat_dim, model_cfg=cfg.model, localize_cfg=cfg.localize, class_order=class_order
        ).to(self.device)
        self.modules = {s: wrap_module(self.detector.streams[s]) for s in STREAMS}  # forward goes through these
        self.optimizers = {
            s: torch.optim.Adam(self.detector.streams[s].parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
            for s in STREAMS
        }
        self.generator = torch.Generator().manual_seed(cfg.train.seed)  # sampling and shuffling
        self.epoch = 0  # epochs completed

    def _items(self, pairs: Sequence[tuple[VideoFeatures, VideoLabels]]) -> list[tuple[VideoFeatures, list[int], list[float]]]:
        out = []
        mode = self.cfg.model.label_order
        for feats, labels in pairs:
            if feats.video_id != labels.video_id:
                raise ValueError(f"features of video {feats.video_id!r} paired with labels of video {labels.video_id!r}")
            check_video(feats, self.detector.feat_dim)
            seq, cnt = label_sequence(labels, self.classes, self.detector.class_order, mode)
            out.append((feats, seq, cnt))
        return out

    def train_epoch(self, pairs: Sequence[tuple[VideoFeatures, VideoLabels]], epoch: int) -> dict[str, float]:
        """One pass over ``pairs`` (shuffled); mean loss terms per stream (``rgb/total``, ``flow/ram``, ...)."""
        if not pairs:
            raise ValueError("train_epoch needs at least one (features, labels) pair")
        tc = self.cfg.train
        items = self._items(pairs)
        order = torch.randperm(len(items), generator=self.generator).tolist()
        sums: dict[str, float] = {}
        n_videos = 0
        self.detector.train()
        t0 = time.monotonic()
        for start in range(0, len(order), tc.batch_size):
            chunk = [items[i] for i in order[start : start + tc.batch_size]]
            batch_items = []
            for feats, seq, cnt in chunk:
                idx = sample_indices(feats.n_segments, tc.sample_segments, self.generator, tc.sample_jitter)
                batch_items.append((feats.rgb[idx], feats.flow[idx], seq, cnt))
            batch = collate(batch_items, len(self.classes), self.device)
            B = len(chunk)
            for s in STREAMS:
                terms = self._step(s, batch)
                for name, value in terms._asdict().items():
                    sums[f"{s}/{name}"] = sums.get(f"{s}/{name}", 0.0) + float(value.detach()) * B
            n_videos += B
        self.epoch = epoch + 1
        metrics = {k: v / n_videos for k, v in sums.items()}
        log.debug("epoch %d: %d videos in %.1f s, rgb/total %.4f", epoch, n_videos, time.monotonic() - t0, metrics["rgb/total"])
        return metrics

    def _step(self, stream: str, batch: Batch) -> LossTerms:
        module = self.modules[stream]
        opt = self.optimizers[stream]
        out = module(batch[stream], batch["mask"], batch["targets"])  # through the (possibly DDP-) wrapped module
        terms = star_loss(out, batch["targets"], batch["counts"], batch["mask"], self.cfg.loss)
        opt.zero_grad(set_to_none=True)
        terms.total.backward()
        if self.cfg.train.grad_clip_norm > 0:
            nn.utils.clip_grad_norm_(self.detector.streams[stream].parameters(), self.cfg.train.grad_clip_norm)
        opt.step()
        return terms

    # -- resumable state --
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "detector": self.detector.to_checkpoint(),
            "optimizers": {s: o.state_dict() for s, o in self.optimizers.items()},
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ckpt = state["detector"]
        if list(ckpt["classes"]) != list(self.classes):
            raise ValueError("checkpoint classes differ from the trainer's classes")
        self.detector.rgb.load_state_dict(ckpt["rgb"])
        self.detector.flow.load_state_dict(ckpt["flow"])
        for s, o in self.optimizers.items():
            o.load_state_dict(state["optimizers"][s])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.epoch = int(state["epoch"])


def fit(
    pairs: Sequence[tuple[VideoFeatures, VideoLabels]],
    classes: Sequence[str],
    cfg: StarConfig,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    device: str | torch.device = "cpu",
) -> StarDetector:
    """Train both streams for ``cfg.train.epochs`` epochs in this process on ``device``; returns the detector (eval mode)."""
    if not pairs:
        raise ValueError("fit needs at least one training video")
    order = label_order([lab for _, lab in pairs], classes, cfg.model.label_order)
    trainer = Trainer(classes, pairs[0][0].feat_dim, cfg, order, device=device)
    t0 = time.monotonic()
    for epoch in range(cfg.train.epochs):
        metrics = trainer.train_epoch(pairs, epoch)
        if on_epoch is not None:
            on_epoch(epoch, metrics)
        done = epoch + 1
        if done == cfg.train.epochs or done % max(1, cfg.train.epochs // 10) == 0:
            rate = done / max(time.monotonic() - t0, 1e-9)
            log.info(
                "epoch %d/%d  rgb/total %.4f  flow/total %.4f  (%.2f epochs/s, ETA %.0f s)",
                done,
                cfg.train.epochs,
                metrics["rgb/total"],
                metrics["flow/total"],
                rate,
                (cfg.train.epochs - done) / rate,
            )
    detector = trainer.detector
    if cfg.refine.rounds > 0:
        refine_detector(detector, pairs, cfg.refine)
    detector.eval()
    return detector


def refine_detector(detector: StarDetector, pairs: Sequence[tuple[VideoFeatures, VideoLabels]], cfg: RefineConfig) -> StarDetector:
    """Stage 2: self-train a segment head on the detector's pseudo-labels of ``pairs`` and attach it."""
    from star_core.refine import round_epochs, self_train

    t0 = time.monotonic()
    epochs = round_epochs(cfg, sum(1 for _, lab in pairs if lab.labels))
    total = cfg.rounds * epochs

    def progress(round_idx: int, epoch: int, metrics: dict[str, float]) -> None:
        done = round_idx * epochs + epoch + 1
        if done == total or done % max(1, total // 5) == 0:
            rate = done / max(time.monotonic() - t0, 1e-9)
            eta_s = (total - done) / rate
            log.info(
                "refine round %d/%d epoch %d/%d  loss %.4f  (ETA %.0f s)",
                round_idx + 1,
                cfg.rounds,
                epoch + 1,
                epochs,
                metrics["total"],
                eta_s,
            )

    was_training = detector.training
    detector.eval()
    try:
        head = self_train(detector, pairs, cfg, on_epoch=progress)
    finally:
        detector.train(was_training)
    detector.attach_refiner(head, cfg)
    return detector
