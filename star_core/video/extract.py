"""Video -> two-stream I3D segment features, in two stages that can run on different machines.

1. :func:`prepare_video` (CPU): decode, resample to ``cfg.fps``, resize/crop, optical flow.
   Returns a compact :class:`PreparedVideo` (RGB as uint8, flow as float16), so shipping it from
   a CPU worker to a GPU worker costs ~1.5x the raw crop bytes rather than 4x.
2. :meth:`I3DExtractor.embed` (GPU when present): non-overlapping ``cfg.segment_frames``-frame
   segments, batched ``cfg.batch_segments`` at a time, through the RGB and flow networks; one
   1024-d avg-pooled Mixed_5c vector per stream per segment.

With ``cfg.flow == "tvl1-torch"`` the flow moves to the network stage: :func:`prepare_video` only
decodes and resizes (a :class:`DecodedVideo`: whole resized frames, uint8), and :meth:`I3DExtractor.embed`
uploads those frames to its device once, computes grayscale, batched TV-L1 (``flow_torch.py``), the
crops, and both I3D streams there, with no round trip to the CPU. On a GPU actor the CPU tasks then only
decode, and they overlap with the GPU work.

A trailing partial segment follows ``cfg.tail_policy``: "pad" repeats the last frame to fill
it (every frame is covered; the segment's end time is clipped to the video's duration by
``segment_bounds_s``), "drop" leaves it out. A video shorter than one segment is an error
(:class:`TooShortVideoError`) under both policies.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
import logging
import math
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from star_core.data import VideoFeatures
from star_core.video.config import FeatureConfig
from star_core.video.decode import VideoSource, center_crop, iter_resampled_frames, resize_short_side, source_name
from star_core.video.errors import TooShortVideoError
from star_core.video.flow import FLOW_BOUND_PX, FlowEstimator, scale_flow, to_gray
from star_core.video.flow_torch import TorchTVL1, rgb_to_gray_u8
from star_core.video.i3d import FEATURE_DIM
from star_core.video.weights import load_i3d, weights_digest

log = logging.getLogger("star.video")

TORCH_FLOW = "tvl1-torch"  # the flow method computed by the network stage, on its device


def count_segments(n_frames: int, segment_frames: int, tail_policy: str) -> int:
    """Segments of ``segment_frames`` frames in ``n_frames`` frames under ``tail_policy`` ("pad" | "drop")."""
    if tail_policy == "pad":
        return math.ceil(n_frames / segment_frames)
    if tail_policy == "drop":
        return n_frames // segment_frames
    raise ValueError(f"unknown tail_policy {tail_policy!r}; use 'pad' or 'drop'")


@dataclass
class _Frames(ABC):
    """What both CPU-stage outputs share: settings they were made with and the segment bookkeeping."""

    source_uri: str
    fps: float  # rate of the resampled frames
    segment_frames: int
    tail_policy: str
    flow_method: str
    crop_size: int
    duration_s: float  # true duration of the video (end of its last frame)

    @property
    @abstractmethod
    def n_frames(self) -> int:
        """Frames held by this output (each subclass counts its own arrays)."""

    @property
    def n_segments(self) -> int:
        return count_segments(self.n_frames, self.segment_frames, self.tail_policy)

    def frame_index(self, start_seg: int, stop_seg: int) -> np.ndarray:
        """Frame indices of segments [start_seg, stop_seg): (n, segment_frames); a padded tail repeats the last frame."""
        idx = np.arange(start_seg * self.segment_frames, stop_seg * self.segment_frames)
        return np.minimum(idx, self.n_frames - 1).reshape(stop_seg - start_seg, self.segment_frames)


@dataclass
class DecodedVideo(_Frames):
    """CPU stage output when the flow is computed with the network (``tvl1-torch``): resized frames, no flow yet."""

    frames_u8: np.ndarray = None  # (F, H', W', 3) uint8 RGB, min(H', W') = resize_short_side (flow needs the whole frame)
    repeated: np.ndarray = None  # (F,) bool: frame i shows the same source frame as frame i - 1 (its flow is zero)

    @property
    def n_frames(self) -> int:
        return int(self.frames_u8.shape[0])

    @property
    def nbytes(self) -> int:
        return int(self.frames_u8.nbytes + self.repeated.nbytes)


@dataclass
class PreparedVideo(_Frames):
    """Output of the CPU stage: resampled, cropped frames and their flow, ready for I3D."""

    rgb_u8: np.ndarray = None  # (F, S, S, 3) uint8, S = crop_size
    flow_f16: np.ndarray = None  # (F, S, S, 2) float16 in [-1, 1]; frame i holds the flow i -> i+1 (the last repeats)

    @property
    def n_frames(self) -> int:
        return int(self.rgb_u8.shape[0])

    @property
    def rgb(self) -> np.ndarray:
        """(F, S, S, 3) float32 in [-1, 1] (materialised on access)."""
        return self.rgb_u8.astype(np.float32) / 127.5 - 1.0

    @property
    def flow(self) -> np.ndarray:
        """(F, S, S, 2) float32 in [-1, 1] (materialised on access)."""
        return self.flow_f16.astype(np.float32)

    @property
    def nbytes(self) -> int:
        return int(self.rgb_u8.nbytes + self.flow_f16.nbytes)


def prepare_video(
    source: VideoSource, cfg: FeatureConfig, *, source_uri: str | None = None, flow_workers: int = 1
) -> PreparedVideo | DecodedVideo:
    """CPU stage: decode ``source`` and compute its cropped RGB frames and optical flow.

    For ``cfg.flow == "tvl1-torch"`` it only decodes: a :class:`DecodedVideo` (the network stage computes the flow).

    ``flow_workers`` > 1 computes flows in that many threads (OpenCV releases the GIL; TV-L1 is
    nearly single-threaded, so this is how one process uses a many-core machine). Keep 1 where a
    scheduler gives the task one CPU (Ray). Results do not depend on it.

    Raises a :class:`~star_core.video.errors.VideoError` subclass for unreadable input and
    :class:`TooShortVideoError` when fewer than ``cfg.segment_frames`` frames result.
    """
    name = source_uri or source_name(source)
    if cfg.flow == TORCH_FLOW:
        return decode_for_device_flow(source, cfg, name)
    size = cfg.crop_size
    FlowEstimator(cfg.flow)  # fail fast on a bad method / missing OpenCV contrib
    local = threading.local()  # one estimator per thread (OpenCV's TV-L1 object is not thread-safe)

    def flow_of(prev_gray: np.ndarray, gray: np.ndarray) -> np.ndarray:
        est = getattr(local, "estimator", None)
        if est is None:
            est = local.estimator = FlowEstimator(cfg.flow)
        # Flow on the whole resized frame, then the RGB stream's crop: borders see real context.
        return center_crop(scale_flow(est(prev_gray, gray)), size).astype(np.float16)  # (S, S, 2) in [-1, 1]

    def transform(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        resized = resize_short_side(rgb, cfg.resize_short_side)  # (H', W', 3), min(H', W') = resize_short_side
        return np.ascontiguousarray(center_crop(resized, size)), to_gray(resized)

    pool = ThreadPoolExecutor(flow_workers, thread_name_prefix="flow") if flow_workers > 1 else None
    rgb_frames: list[np.ndarray] = []
    flow_frames: list = []  # (S, S, 2) float16 arrays, or futures of them
    unresolved = 0  # index of the oldest flow that may still be a future
    prev = None
    info: dict = {}
    try:
        for item in iter_resampled_frames(source, cfg.fps, transform, info):
            crop, gray = item
            if prev is not None:
                if item is prev:  # the same source frame shown twice (frame-rate up-conversion): no motion
                    flow_frames.append(np.zeros((size, size, 2), np.float16))
                elif pool is not None:
                    flow_frames.append(pool.submit(flow_of, prev[1], gray))
                    while len(flow_frames) - unresolved > 2 * flow_workers:  # bound the grayscale frames held by queued work
                        f = flow_frames[unresolved]
                        flow_frames[unresolved] = f.result() if isinstance(f, Future) else f
                        unresolved += 1
                else:
                    flow_frames.append(flow_of(prev[1], gray))
            rgb_frames.append(crop)
            prev = item
        flow_frames = [f.result() if isinstance(f, Future) else f for f in flow_frames]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    n = len(rgb_frames)
    if n < cfg.segment_frames:
        raise TooShortVideoError(
            name, f"{n} frames at {cfg.fps:g} fps ({info.get('duration_s', 0):.2f} s): fewer than one {cfg.segment_frames}-frame segment"
        )
    flow_frames.append(flow_frames[-1] if flow_frames else np.zeros((size, size, 2), np.float16))
    return PreparedVideo(
        source_uri=name,
        fps=float(cfg.fps),
        segment_frames=cfg.segment_frames,
        tail_policy=cfg.tail_policy,
        flow_method=cfg.flow,
        crop_size=size,
        duration_s=float(info["duration_s"]),
        rgb_u8=np.stack(rgb_frames),
        flow_f16=np.stack(flow_frames),
    )


def decode_for_device_flow(source: VideoSource, cfg: FeatureConfig, name: str) -> DecodedVideo:
    """Decode, resample and resize (no crop, no flow): the CPU part of ``tvl1-torch`` extraction."""
    frames: list[np.ndarray] = []
    repeated: list[bool] = []
    prev = None
    info: dict = {}
    def resize(rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(resize_short_side(rgb, cfg.resize_short_side))

    for item in iter_resampled_frames(source, cfg.fps, resize, info):
        repeated.append(item is prev)  # the same source frame shown twice: no motion
        frames.append(item)
        prev = item
    n = len(frames)
    if n < cfg.segment_frames:
        raise TooShortVideoError(
            name, f"{n} frames at {cfg.fps:g} fps ({info.get('duration_s', 0):.2f} s): fewer than one {cfg.segment_frames}-frame segment")
    if min(frames[0].shape[:2]) < cfg.crop_size:
        raise ValueError(f"{name}: resized frames {frames[0].shape[:2]} are smaller than the {cfg.crop_size}-pixel crop")
    return DecodedVideo(
        source_uri=name, fps=float(cfg.fps), segment_frames=cfg.segment_frames, tail_policy=cfg.tail_policy, flow_method=cfg.flow,
        crop_size=cfg.crop_size, duration_s=float(info["duration_s"]), frames_u8=np.stack(frames), repeated=np.array(repeated, bool),
    )


class I3DExtractor:
    """Both I3D streams, loaded once (per process or Ray actor); :meth:`embed` turns prepared videos into features.

    Weights come from ``cfg.rgb_weights`` / ``cfg.flow_weights`` (random with a loud warning when
    unset). ``weights_digest`` and ``feature_set`` name what these weights produce.
    """

    def __init__(self, cfg: FeatureConfig, device: str | torch.device | None = None) -> None:
        if cfg.feat_dim != FEATURE_DIM:
            raise ValueError(f"FeatureConfig.feat_dim must be {FEATURE_DIM} for I3D Mixed_5c features, got {cfg.feat_dim}")
        self.cfg = cfg
        self.device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.rgb_net, rgb_digest = load_i3d(cfg.rgb_weights, "rgb")
        self.flow_net, flow_digest = load_i3d(cfg.flow_weights, "flow")
        self.rgb_net.to(self.device)
        self.flow_net.to(self.device)
        self.weights_digest = weights_digest(rgb_digest, flow_digest)
        self.feature_set = cfg.feature_set(self.weights_digest)
        # batch size from the device's free memory
        self.flow_solver = TorchTVL1(device=self.device, compile=cfg.flow_compile) if cfg.flow == TORCH_FLOW else None

    def _check(self, prepared: PreparedVideo | DecodedVideo) -> None:
        cfg = self.cfg
        got = (prepared.fps, prepared.segment_frames, prepared.tail_policy, prepared.flow_method, prepared.crop_size)
        want = (float(cfg.fps), cfg.segment_frames, cfg.tail_policy, cfg.flow, cfg.crop_size)
        if got != want:
            raise ValueError(
                f"{prepared.source_uri}: prepared with (fps, segment_frames, tail_policy, flow, crop) = {got}, but this extractor is "
                f"configured for {want}"
            )

    @torch.inference_mode()
    def embed_segments(self, rgb_u8: np.ndarray | torch.Tensor, flow_f16: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Features of a batch of clips: rgb (B, T, S, S, 3) uint8, flow (B, T, S, S, 2) float16 -> two (B, 1024) float32.

        Tensors already on the extractor's device stay there (the ``tvl1-torch`` path)."""
        rgb = _to_device(rgb_u8, self.device).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)  # (B, 3, T, S, S) in [-1, 1]
        flow = _to_device(flow_f16, self.device).permute(0, 4, 1, 2, 3).float()  # (B, 2, T, S, S)
        return self.rgb_net.features(rgb).cpu().numpy(), self.flow_net.features(flow).cpu().numpy()

    @torch.inference_mode()
    def _device_flow_segments(self, video: DecodedVideo, frames: torch.Tensor, gray: torch.Tensor, start: int, stop: int):
        """RGB crops (b, T, S, S, 3) uint8 and scaled flow crops (b, T, S, S, 2) float16 of segments [start, stop), on the device.

        Flow of frame i is TV-L1 of the whole resized frames (i, i + 1), then the crop (as ``prepare_video``);
        the last frame repeats the flow before it; a repeated source frame has zero flow.
        """
        n, s = video.n_frames, video.crop_size
        h, w = gray.shape[-2:]
        top, left = (h - s) // 2, (w - s) // 2  # = decode.center_crop
        idx = video.frame_index(start, stop)  # (b, T)
        if n < 2:
            flow = torch.zeros((*idx.shape, s, s, 2), dtype=torch.float16, device=self.device)
        else:
            pair_of_frame = np.minimum(idx, n - 2)  # flow i = pair (i, i + 1)
            pairs, slot = np.unique(pair_of_frame, return_inverse=True)
            moving = pairs[~video.repeated[pairs + 1]]
            flows = torch.zeros((len(pairs), 2, s, s), dtype=torch.float32, device=self.device)
            if len(moving):
                full = self.flow_solver.flow_pairs(gray[moving], gray[moving + 1])  # (m, 2, H', W') pixels
                pos = torch.from_numpy(np.searchsorted(pairs, moving)).to(self.device)
                flows[pos] = full[:, :, top:top + s, left:left + s]
            scaled = (flows.clamp(-FLOW_BOUND_PX, FLOW_BOUND_PX) / FLOW_BOUND_PX).half()  # as PreparedVideo stores it
            flow = scaled.permute(0, 2, 3, 1)[torch.from_numpy(slot.reshape(idx.shape)).to(self.device)]  # (b, T, S, S, 2)
        rgb = frames[torch.from_numpy(idx).to(self.device), top:top + s, left:left + s]  # (b, T, S, S, 3)
        return rgb, flow

    def embed(self, prepared: PreparedVideo | DecodedVideo, video_id: str) -> VideoFeatures:
        """Segment features of one prepared video: (N, 1024) per stream, N = ``prepared.n_segments``."""
        self._check(prepared)
        n = prepared.n_segments
        rgb_out = np.empty((n, FEATURE_DIM), np.float32)
        flow_out = np.empty((n, FEATURE_DIM), np.float32)
        step = max(1, self.cfg.batch_segments)
        device_flow = isinstance(prepared, DecodedVideo)
        if device_flow:  # _check made sure this extractor's flow is tvl1-torch
            frames = torch.from_numpy(prepared.frames_u8).to(self.device)  # uploaded once: (F, H', W', 3) uint8
            gray = rgb_to_gray_u8(frames)  # = cv2 RGB2GRAY, on the device
        for start in range(0, n, step):
            stop = min(start + step, n)
            if device_flow:
                clips = self._device_flow_segments(prepared, frames, gray, start, stop)
                rgb_out[start:stop], flow_out[start:stop] = self.embed_segments(*clips)
                continue
            idx = prepared.frame_index(start, stop)  # (b, T)
            rgb_out[start:stop], flow_out[start:stop] = self.embed_segments(prepared.rgb_u8[idx], prepared.flow_f16[idx])
        if not (np.isfinite(rgb_out).all() and np.isfinite(flow_out).all()):
            raise ValueError(f"{prepared.source_uri}: I3D produced NaN/Inf features")
        return VideoFeatures(
            video_id=video_id,
            rgb=rgb_out,
            flow=flow_out,
            fps=prepared.fps,
            segment_frames=prepared.segment_frames,
            duration_s=prepared.duration_s,
            source_uri=prepared.source_uri,
        )


def _to_device(x: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    return torch.from_numpy(np.ascontiguousarray(x)).to(device, non_blocking=True)


def extract_video(
    source: VideoSource, video_id: str, cfg: FeatureConfig, extractor: I3DExtractor, *, source_uri: str | None = None, flow_workers: int = 1
) -> VideoFeatures:
    """Both stages for one video on this machine."""
    return extractor.embed(prepare_video(source, cfg, source_uri=source_uri, flow_workers=flow_workers), video_id)
