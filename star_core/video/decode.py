"""Decode a video with PyAV and resample it to a fixed frame rate by presentation time.

DeepMind's I3D preprocessing (kinetics-i3d README): 25 fps, resize so the short side is 256
(bilinear), centre crop 224, RGB scaled to [-1, 1]. Resampling follows FFmpeg's ``fps`` filter
with ``round=near`` (what ``ffmpeg -r 25`` extraction pipelines do): with times measured from
the first frame, output frame k shows the latest source frame whose timestamp is at most
(k + 0.5) / fps, and a video whose frames end at ``duration_s`` gives round(duration_s * fps)
output frames. Timestamps come from the stream (``frame.time``), so variable frame rate works.

Sources: a local path, ``bytes``, or a seekable binary file object (what fsspec opens), so the
same code reads local files and object-store blobs. Each failure raises a typed
:class:`~star_core.video.errors.VideoError`.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO, Callable, Iterator, Union

import av
import cv2
import numpy as np

from star_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedVideoError,
    VideoError,
)

VideoSource = Union[str, os.PathLike, bytes, bytearray, memoryview, BinaryIO]

# Decoded video shorter than this fraction of the duration its header declares is truncated.
_TRUNCATED_FRACTION = 0.9


@dataclass(frozen=True)
class StreamInfo:
    """What the container says about the video stream (before decoding)."""

    codec: str
    width: int
    height: int
    declared_duration_s: float | None  # from the stream (or the container when it has only video)
    average_fps: float | None


def source_name(source: VideoSource) -> str:
    """A printable name of a source for errors and manifests."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return str(getattr(source, "path", None) or getattr(source, "name", None) or f"<{type(source).__name__}>")


def _open_source(source: VideoSource, name: str) -> tuple[BinaryIO | str, int | None]:
    """(what av.open takes, size in bytes when known); raises the typed error for missing/empty input."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if "://" in path and not path.startswith("file://"):
            raise UnsupportedVideoError(name, "remote URIs are opened by the job layer; pass a local path, bytes or a file object")
        path = path[len("file://"):] if path.startswith("file://") else path
        if not os.path.isfile(path):
            raise MissingVideoError(name, "no such file")
        size = os.path.getsize(path)
        if size == 0:
            raise EmptyVideoError(name, "the file is empty (0 bytes)")
        return path, size
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise EmptyVideoError(name, "no data (0 bytes)")
        return io.BytesIO(bytes(source)), len(source)
    if hasattr(source, "read") and hasattr(source, "seek"):
        try:
            pos = source.tell()
            size = source.seek(0, io.SEEK_END) - pos
            source.seek(pos)
        except (OSError, ValueError):
            size = None
        if size == 0:
            raise EmptyVideoError(name, "no data (0 bytes)")
        return source, size
    raise UnsupportedVideoError(name, f"cannot read a video from a {type(source).__name__}; pass a path, bytes or a seekable binary file")


def _read_at(f: BinaryIO | str, offset: int, n: int) -> bytes:
    if isinstance(f, str):
        with open(f, "rb") as fh:
            fh.seek(offset)
            return fh.read(n)
    pos = f.tell()
    try:
        f.seek(offset)
        return f.read(n)
    finally:
        f.seek(pos)


def _looks_truncated(f: BinaryIO | str, size: int | None) -> str | None:
    """Why an unparseable file looks cut short (RIFF/AVI or ISO-BMFF/MP4 sizes past the end), else None."""
    if size is None:
        return None
    head = _read_at(f, 0, 12)
    if head[:4] == b"RIFF" and len(head) >= 8:
        declared = struct.unpack("<I", head[4:8])[0] + 8
        if declared > size:
            return f"the RIFF header declares {declared} bytes but the file has {size}: truncated"
        return None
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        offset, boxes = 0, []
        while offset < size and len(boxes) < 64:
            box = _read_at(f, offset, 16)
            if len(box) < 8:
                return f"an MP4 box header at byte {offset} is cut off: truncated"
            box_size, kind = struct.unpack(">I", box[:4])[0], box[4:8]
            if box_size == 1 and len(box) >= 16:
                box_size = struct.unpack(">Q", box[8:16])[0]
            elif box_size == 0:
                box_size = size - offset
            if box_size < 8:
                return None
            boxes.append(kind)
            if offset + box_size > size:
                return f"MP4 box {kind.decode('latin-1')!r} at byte {offset} runs past the end of the file ({size} bytes): truncated"
            offset += box_size
        if b"moov" not in boxes:
            return "the MP4 index (moov box) is missing: the file is probably truncated (interrupted write or copy)"
    return None


def probe(container: av.container.InputContainer, name: str) -> tuple[av.video.stream.VideoStream, StreamInfo]:
    """The first video stream and what its header declares; typed errors for no/undecodable video."""
    if not container.streams.video:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise NoVideoStreamError(name, f"no video stream (the container holds: {', '.join(kinds)})")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    codec = getattr(ctx, "name", None) if ctx is not None else None
    if not codec:
        tag = getattr(stream, "codec_tag", None) or "unknown"
        raise UnsupportedVideoError(name, f"no decoder for the video codec (tag {tag!r}) in this FFmpeg build")
    declared = None
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        declared = float(stream.duration * stream.time_base)
    elif container.duration and len(container.streams) == 1:
        declared = container.duration / 1e6  # only video in the container: its duration is the video's
    rate = float(stream.average_rate) if stream.average_rate else None
    return stream, StreamInfo(codec=codec, width=ctx.width, height=ctx.height, declared_duration_s=declared, average_fps=rate)


def resize_short_side(img: np.ndarray, short_side: int) -> np.ndarray:
    """Bilinear resize so that min(H, W) == short_side, keeping the aspect ratio. (H, W, C) -> (H', W', C)."""
    h, w = img.shape[:2]
    if min(h, w) == short_side:
        return img
    if h <= w:
        new_h, new_w = short_side, max(short_side, int(round(w * short_side / h)))
    else:
        new_h, new_w = max(short_side, int(round(h * short_side / w))), short_side
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """Central (size, size) window of an (H, W, ...) image; the extra pixel of an odd margin goes to the bottom/right."""
    h, w = img.shape[:2]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from a {h}x{w} frame")
    top, left = (h - size) // 2, (w - size) // 2
    return img[top:top + size, left:left + size]


def iter_resampled_frames(
    source: VideoSource,
    fps: float,
    transform: Callable[[np.ndarray], object] = lambda rgb: rgb,
    info_out: dict | None = None,
) -> Iterator[object]:
    """Yield ``transform(rgb)`` for each output frame at ``fps`` (rgb: (H, W, 3) uint8, source resolution).

    A source frame shown by several output frames is converted and transformed once (its result
    is repeated); a dropped frame is never converted. After the last frame, ``info_out`` (when
    given) holds ``duration_s``, ``n_frames``, ``n_source_frames``, ``stream`` (:class:`StreamInfo`).
    """
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    name = source_name(source)
    handle, size = _open_source(source, name)
    try:
        container = av.open(handle, mode="r")
    except av.error.FFmpegError as exc:
        why = _looks_truncated(handle, size)
        if why:
            raise TruncatedVideoError(name, why) from None
        raise CorruptVideoError(name, f"not a video container FFmpeg can read ({exc.strerror or exc})") from None
    with container:
        stream, info = probe(container, name)
        stream.thread_type = "AUTO"  # frame/slice threads: decoding is often the cheap stage
        step_s = 1.0 / fps
        t0 = None
        prev_t = None
        default_dur_s = 1.0 / info.average_fps if info.average_fps else step_s
        current = None  # (raw frame, cached transform result or None)
        k = 0  # next output frame index
        n_src = 0
        last_dur_s = default_dur_s

        def emit_until(limit_s: float) -> Iterator[object]:
            # Output frames k whose sampling time (k + 0.5) / fps falls before limit_s show `current`.
            nonlocal k, current
            while (k + 0.5) * step_s < limit_s - 1e-9:
                if current[1] is None:
                    current = (current[0], transform(current[0].to_ndarray(format="rgb24")))
                yield current[1]
                k += 1

        try:
            for frame in container.decode(stream):
                t = frame.time
                if t is None:  # no timestamp: continue at the nominal rate
                    t = (prev_t + default_dur_s) if prev_t is not None else 0.0
                if t0 is None:
                    t0 = t
                rel_s = t - t0
                if prev_t is not None and rel_s <= prev_t:
                    rel_s = prev_t + 1e-6  # duplicate/backwards timestamp: the later frame wins
                if current is not None:
                    last_dur_s = max(rel_s - prev_t, 1e-6)
                    yield from emit_until(rel_s)
                current = (frame, None)
                prev_t = rel_s
                n_src += 1
        except av.error.FFmpegError as exc:
            end_s = (prev_t or 0.0) + last_dur_s
            if n_src and info.declared_duration_s and end_s < _TRUNCATED_FRACTION * info.declared_duration_s:
                raise TruncatedVideoError(
                    name, f"decoding stopped at {end_s:.2f} s of a declared {info.declared_duration_s:.2f} s ({exc.strerror or exc})"
                ) from None
            raise CorruptVideoError(name, f"decoding failed after {n_src} frames ({exc.strerror or exc})") from None
        if current is None:
            raise EmptyVideoError(name, "the video stream has no decodable frames")
        # The last frame is shown for its own duration when the container says so (bounded by twice
        # the previous gap against odd trailing durations), else for the previous gap.
        dur = getattr(current[0], "duration", None)
        if dur and current[0].time_base is not None:
            own_s = float(dur * current[0].time_base)
            last_dur_s = own_s if n_src == 1 else min(own_s, 2 * last_dur_s)
        elif n_src == 1:
            last_dur_s = default_dur_s
        duration_s = prev_t + last_dur_s
        declared = info.declared_duration_s
        if declared and duration_s < _TRUNCATED_FRACTION * declared and declared - duration_s > 2 * default_dur_s:
            raise TruncatedVideoError(name, f"only {duration_s:.2f} s of video decode out of the {declared:.2f} s its header declares")
        n_out = max(1, int(math.floor(duration_s * fps + 0.5)))
        yield from emit_until((n_out - 0.5) * step_s + step_s)  # flush: the last frame fills the rest
        if info_out is not None:
            info_out.update(duration_s=duration_s, n_frames=k, n_source_frames=n_src, stream=info)


def decode_video(source: VideoSource, fps: float, short_side: int | None = None, crop: int | None = None) -> tuple[np.ndarray, dict]:
    """All output frames at ``fps`` as (F, H, W, 3) uint8 (resized/cropped when asked) and the info dict."""

    def transform(rgb: np.ndarray) -> np.ndarray:
        if short_side:
            rgb = resize_short_side(rgb, short_side)
        if crop:
            rgb = center_crop(rgb, crop)
        return np.ascontiguousarray(rgb)

    info: dict = {}
    frames = list(iter_resampled_frames(source, fps, transform, info))
    return np.stack(frames), info


__all__ = [
    "VideoSource",
    "VideoError",
    "StreamInfo",
    "source_name",
    "probe",
    "resize_short_side",
    "center_crop",
    "iter_resampled_frames",
    "decode_video",
]
