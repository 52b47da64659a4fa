"""Video to two-stream I3D features: decode, resample, crop, optical flow, I3D.

The CPU stage :func:`prepare_video` and the network stage :class:`I3DExtractor` are separate so a
cluster can run them on different machines; :func:`extract_video` runs both here. Heavy imports
(torch, av, cv2) happen when these names are first used.
"""

from __future__ import annotations

from star_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingVideoError,
    NoVideoStreamError,
    TooShortVideoError,
    TruncatedVideoError,
    UnsupportedVideoError,
    VideoError,
)

_LAZY = {
    "prepare_video": "star_core.video.extract",
    "PreparedVideo": "star_core.video.extract",
    "DecodedVideo": "star_core.video.extract",
    "I3DExtractor": "star_core.video.extract",
    "extract_video": "star_core.video.extract",
    "count_segments": "star_core.video.extract",
    "WeightsError": "star_core.video.weights",
    "load_i3d": "star_core.video.weights",
    "InceptionI3d": "star_core.video.i3d",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'star_core.video' has no attribute {name!r}")


__all__ = [
    "VideoError", "MissingVideoError", "EmptyVideoError", "CorruptVideoError", "TruncatedVideoError",
    "NoVideoStreamError", "UnsupportedVideoError", "TooShortVideoError", *_LAZY,
]
