"""Plain data records passed between the lake (``star_core.io``) and the pure core.

Times are in seconds (``_s``), segment positions are indices (``_idx``). The one helper that
maps segment indices to seconds is :func:`segment_bounds_s`; nothing else converts units.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def segment_bounds_s(n_segments: int, fps: float, segment_frames: int, duration_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Start and end time (s) of each non-overlapping segment of ``segment_frames`` frames at ``fps``.

    Segment i covers frames [i*F, (i+1)*F) of the resampled stream, so it starts at i*F/fps.
    The last segment's end is clipped to ``duration_s`` when given (a padded tail segment
    never reaches past the video).
    """
    if n_segments < 0 or fps <= 0 or segment_frames <= 0:
        raise ValueError(f"bad segment grid: n_segments={n_segments}, fps={fps}, segment_frames={segment_frames}")
    idx = np.arange(n_segments, dtype=np.float64)
    step_s = segment_frames / fps
    starts = idx * step_s
    ends = starts + step_s
    if duration_s is not None and n_segments > 0:
        ends = np.minimum(ends, max(float(duration_s), starts[-1]))
    return starts, ends


@dataclass(frozen=True)
class Instance:
    """One ground-truth action instance (evaluation only; training never reads it)."""

    label: str
    t_start_s: float
    t_end_s: float


@dataclass
class VideoFeatures:
    """Two-stream segment features of one video."""

    video_id: str
    rgb: np.ndarray  # (N, D) float32
    flow: np.ndarray  # (N, D) float32
    fps: float = 25.0  # rate of the resampled frame stream
    segment_frames: int = 16  # frames per segment
    duration_s: float | None = None  # true duration of the video
    source_uri: str | None = None

    def __post_init__(self) -> None:
        if self.rgb.ndim != 2 or self.flow.ndim != 2 or self.rgb.shape != self.flow.shape:
            raise ValueError(f"video {self.video_id!r}: rgb {self.rgb.shape} and flow {self.flow.shape} must both be (N, D)")
        if self.rgb.shape[0] == 0:
            raise ValueError(f"video {self.video_id!r}: has no segments")

    @property
    def n_segments(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def feat_dim(self) -> int:
        return int(self.rgb.shape[1])

    def segment_bounds_s(self) -> tuple[np.ndarray, np.ndarray]:
        return segment_bounds_s(self.n_segments, self.fps, self.segment_frames, self.duration_s)


# The dataset splits, and the one map from the names label files and annotation formats use for
# them (ActivityNet's "training"/"validation"/"testing", "valid", ...) to a split: "validation"
# always means the split "val". (THUMOS'14's *protocol* trains on its validation subset; that is a
# decision of its importer, ``star_core.io.wtalc_import.THUMOS14_PROTOCOL_SPLITS``, not a name.)
SPLIT_NAMES = ("train", "val", "test")
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


def split_of_name(name: str) -> str | None:
    """The split a subset name means (``SPLIT_ALIASES``, case-insensitive); None for an unknown name."""
    return SPLIT_ALIASES.get(str(name).strip().lower())


@dataclass
class VideoLabels:
    """Video-level weak labels (plus optional counts and evaluation-only ground truth)."""

    video_id: str
    split: str  # one of SPLIT_NAMES (imports may add others, e.g. "excluded")
    labels: tuple[str, ...]  # video-level classes, no duplicates
    counts: tuple[int, ...] | None = None  # instances per label, aligned with ``labels`` (RAM supervision)
    instances: tuple[Instance, ...] = ()  # ground-truth intervals, evaluation only
    ambiguous: tuple[tuple[float, float], ...] = ()  # THUMOS'14 "Ambiguous" segments (s), ignored in evaluation
    duration_s: float | None = None
    source_uri: str | None = None


@dataclass(frozen=True)
class Detection:
    """One detected action interval."""

    video_id: str
    label: str
    t_start_s: float
    t_end_s: float
    score: float


@dataclass
class Dataset:
    """A named, versioned set of labelled videos with a fixed class list."""

    name: str
    version: int
    classes: tuple[str, ...]  # fixed order; model outputs index into this
    videos: list[VideoLabels] = field(default_factory=list)

    def split(self, name: str) -> list[VideoLabels]:
        return [v for v in self.videos if v.split == name]
