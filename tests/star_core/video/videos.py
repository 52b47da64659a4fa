"""Tiny test videos written with PyAV: each frame carries its index as 8 black/white column blocks."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Sequence

import av
import numpy as np

BITS = 8


def index_frame(i: int, width: int = 64, height: int = 48) -> np.ndarray:
    """(H, W, 3) uint8 frame whose 8 vertical blocks spell ``i`` in binary (MSB left); lossy codecs keep it."""
    img = np.zeros((height, width, 3), np.uint8)
    block = width // BITS
    for b in range(BITS):
        if (i >> (BITS - 1 - b)) & 1:
            img[:, b * block:(b + 1) * block] = 255
    return img


def read_index(frame: np.ndarray) -> int:
    """Inverse of :func:`index_frame` on a decoded (H, W, 3) frame at its original size."""
    w = frame.shape[1]
    block = w // BITS
    value = 0
    for b in range(BITS):
        bit = frame[:, b * block + block // 4:(b + 1) * block - block // 4].mean() > 127
        value = (value << 1) | int(bit)
    return value


def write_video(path: str | Path, frames: Sequence[np.ndarray], fps: float | Fraction = 25, times_s: Sequence[float] | None = None,
                codec: str = "mpeg4", options: dict | None = None) -> Path:
    """Encode ``frames`` ((H, W, 3) uint8); constant ``fps`` unless ``times_s`` gives each frame's time (VFR, ms precision)."""
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=rate if times_s is None else 1000)
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "mpeg4":
            stream.codec_context.options = {"qscale": "2"}
        if times_s is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i, img in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
            if times_s is not None:
                frame.pts = int(round(times_s[i] * 1000))
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_index_video(path: str | Path, n_frames: int, fps: float | Fraction = 25, width: int = 64, height: int = 48, **kw) -> Path:
    return write_video(path, [index_frame(i, width, height) for i in range(n_frames)], fps=fps, **kw)


def write_audio(path: str | Path, seconds: float = 1.0, rate: int = 16000) -> Path:
    """An audio-only file (AAC in .m4a)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        n = int(seconds * rate) // 1024
        for i in range(n):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return Path(path)


def texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random grayscale texture (H, W) float in [0, 255]: something flow can track."""
    import cv2

    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (height, width)).astype(np.float32)
    img = cv2.GaussianBlur(img, (0, 0), 2.0)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img


def moving_texture_frames(n: int, height: int, width: int, dx_px: int, dy_px: int, seed: int = 0) -> list[np.ndarray]:
    """Frames of a texture translating by (dx, dy) pixels per frame (positive = right / down)."""
    pad = (n + 1) * max(abs(dx_px), abs(dy_px)) + 8
    big = texture(height + 2 * pad, width + 2 * pad, seed)
    frames = []
    for i in range(n):
        y0, x0 = pad - i * dy_px, pad - i * dx_px
        g = big[y0:y0 + height, x0:x0 + width].astype(np.uint8)
        frames.append(np.repeat(g[:, :, None], 3, axis=2))
    return frames
