"""Typed config of the feature extractor (DeepMind's I3D preprocessing by default)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal, get_args

FlowMethod = Literal["tvl1", "farneback", "tvl1-torch"]  # optical flow methods; each names its own feature set
FLOW_METHODS = get_args(FlowMethod)


@dataclass(frozen=True)
class FeatureConfig:
    fps: float = 25.0  # frames are resampled to this rate by presentation time
    segment_frames: int = 16  # frames per non-overlapping segment (one feature step)
    resize_short_side: int = 256  # bilinear resize of the short side before the crop
    crop_size: int = 224  # centre crop
    # "tvl1" (DeepMind's, OpenCV) | "tvl1-torch" (the same in PyTorch, batched, GPU) | "farneback" (fast, quick runs)
    flow: FlowMethod = "tvl1"
    tail_policy: Literal["pad", "drop"] = "pad"  # trailing partial segment: "pad" (repeat last frame) | "drop"
    feat_dim: int = 1024  # per stream
    batch_segments: int = 8  # segments per I3D forward pass
    rgb_weights: str | None = None  # path of the RGB I3D weight file (None: random, with a warning)
    flow_weights: str | None = None  # path of the flow I3D weight file
    flow_compile: bool = False  # tvl1-torch: fuse its step and warp with torch.compile (same values; for GPU speed, not in the feature set)

    def __post_init__(self) -> None:
        if self.flow not in FLOW_METHODS:
            raise ValueError(f"features.flow must be one of {', '.join(FLOW_METHODS)}, got {self.flow!r}")
        if self.tail_policy not in ("pad", "drop"):
            raise ValueError(f"features.tail_policy must be 'pad' or 'drop', got {self.tail_policy!r}")
        if self.fps <= 0 or self.segment_frames <= 0 or self.batch_segments <= 0:
            raise ValueError(
                "features: fps, segment_frames and batch_segments must be positive "
                f"(got {self.fps}, {self.segment_frames}, {self.batch_segments})"
            )
        if self.crop_size <= 0 or self.resize_short_side < self.crop_size:
            raise ValueError(
                "features: need 0 < crop_size <= resize_short_side, "
                f"got crop_size={self.crop_size}, resize_short_side={self.resize_short_side}"
            )

    def feature_set(self, weights_digest: str = "random") -> str:
        """Name of the feature set; features of different extractor settings never mix."""
        key = (
            f"{self.fps:g}|{self.segment_frames}|{self.resize_short_side}|{self.crop_size}|{self.flow}|{self.tail_policy}|{weights_digest}"
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:8]
        return f"i3d-{self.flow}-{self.fps:g}fps-{self.segment_frames}f-{digest}"
