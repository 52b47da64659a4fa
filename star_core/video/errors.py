"""Typed errors of the video stage: one subclass per cause, each naming the source and the reason.

A batch (``star extract``, the Ray extract job) catches :class:`VideoError`, records
``type(err).__name__`` and ``err.reason`` in the manifest and goes on with the other videos.
The errors pickle (Ray ships them from worker to driver).
"""

from __future__ import annotations


class VideoError(Exception):
    """A video that cannot be turned into features; ``source`` names it, ``reason`` says why."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = str(source)
        self.reason = str(reason)

    def __reduce__(self):  # rebuild from (source, reason), not from the formatted message
        return (type(self), (self.source, self.reason))


class MissingVideoError(VideoError):
    """The path does not exist or is not a readable file."""


class EmptyVideoError(VideoError):
    """Zero bytes, or a video stream without a single decodable frame."""


class CorruptVideoError(VideoError):
    """Not a container FFmpeg can parse, or the data do not decode."""


class TruncatedVideoError(VideoError):
    """The file ends before its header says it should (interrupted copy or upload)."""


class NoVideoStreamError(VideoError):
    """The container holds no video stream (audio-only, subtitles, data)."""


class UnsupportedVideoError(VideoError):
    """A video stream FFmpeg cannot decode here (no decoder for its codec), or a source type we cannot read."""


class TooShortVideoError(VideoError):
    """Fewer resampled frames than one segment."""
