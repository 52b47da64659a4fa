"""Decoding, resampling by presentation time, resize/crop geometry and the typed errors of bad input."""

from __future__ import annotations

import io
import math
import pickle
from fractions import Fraction

import numpy as np
import pytest

from star_core.video import decode
from star_core.video.errors import (
    CorruptVideoError,
    EmptyVideoError,
    MissingVideoError,
    NoVideoStreamError,
    TruncatedVideoError,
    UnsupportedVideoError,
    VideoError,
)
from tests.star_core.video.videos import index_frame, read_index, write_audio, write_index_video, write_video


def expected_indices(times_s, duration_s, fps=25.0):
    """The fps-filter rule written independently: output k shows the last source frame with t <= (k + 0.5) / fps."""
    n_out = int(math.floor(duration_s * fps + 0.5))
    out = []
    for k in range(n_out):
        t = (k + 0.5) / fps
        out.append(max(j for j, tj in enumerate(times_s) if tj <= t + 1e-9))
    return out


def test_index_codec_roundtrip():
    for i in (0, 1, 77, 200, 255):
        assert read_index(index_frame(i)) == i


@pytest.mark.parametrize("src_fps", [Fraction(24), Fraction(30000, 1001), Fraction(30), Fraction(25)])
def test_resample_to_25fps(tmp_path, src_fps):
    n_src = int(round(2 * float(src_fps)))  # ~2 s
    path = write_index_video(tmp_path / "v.mp4", n_src, fps=src_fps)
    frames, info = decode.decode_video(path, 25.0)
    duration_s = n_src / float(src_fps)
    assert info["n_source_frames"] == n_src
    assert info["duration_s"] == pytest.approx(duration_s, abs=1e-3)
    assert frames.shape == (round(duration_s * 25), 48, 64, 3) == (50, 48, 64, 3)
    got = [read_index(f) for f in frames]
    times = [j / float(src_fps) for j in range(n_src)]
    assert got == expected_indices(times, duration_s)
    if src_fps == 25:
        assert got == list(range(50))  # same rate: identity
    if src_fps == 24:
        assert len(set(got)) == 48  # up-conversion repeats frames, drops none
    if src_fps == 30:
        assert len(set(got)) == 50  # down-conversion drops 10 of 60


def test_resample_other_output_fps(tmp_path):
    path = write_index_video(tmp_path / "v.mp4", 60, fps=30)
    frames, info = decode.decode_video(path, 10.0)
    assert [read_index(f) for f in frames] == expected_indices([j / 30 for j in range(60)], 2.0, fps=10.0)
    assert len(frames) == 20


def test_variable_frame_rate(tmp_path):
    rng = np.random.default_rng(3)
    gaps_ms = rng.choice([10, 20, 40, 70, 100], size=39)
    times = np.concatenate([[0], np.cumsum(gaps_ms)]) / 1000.0  # 40 frames, irregular timing
    path = write_video(tmp_path / "vfr.mkv", [index_frame(i) for i in range(40)], times_s=list(times))
    frames, info = decode.decode_video(path, 25.0)
    got = [read_index(f) for f in frames]
    last_dur = info["duration_s"] - times[-1]
    assert 0 < last_dur < 0.2
    assert got == expected_indices(list(times), info["duration_s"])
    assert len(got) == round(info["duration_s"] * 25)


def test_sources_path_bytes_filelike(tmp_path):
    path = write_index_video(tmp_path / "v.mkv", 30, fps=25)
    a, _ = decode.decode_video(str(path), 25)
    b, _ = decode.decode_video(path.read_bytes(), 25)
    with open(path, "rb") as f:
        c, _ = decode.decode_video(f, 25)
    assert a.shape == (30, 48, 64, 3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_resize_short_side_and_center_crop_geometry():
    landscape = np.zeros((240, 320, 3), np.uint8)
    assert decode.resize_short_side(landscape, 256).shape == (256, 341, 3)
    portrait = np.zeros((320, 240, 3), np.uint8)
    assert decode.resize_short_side(portrait, 256).shape == (341, 256, 3)
    # Bilinear: a horizontal ramp stays a ramp (values interpolate, no nearest-neighbour steps).
    ramp = np.tile(np.linspace(0, 255, 320, dtype=np.float32)[None, :, None], (240, 1, 3))
    r = decode.resize_short_side(ramp, 256)
    assert np.all(np.diff(r[0, :, 0]) > 0)
    # Crop: the central window, odd margins give the extra pixel to the bottom/right.
    grid = np.arange(256 * 341).reshape(256, 341)
    crop = decode.center_crop(grid, 224)
    top, left = (256 - 224) // 2, (341 - 224) // 2
    assert (top, left) == (16, 58)
    np.testing.assert_array_equal(crop, grid[16:240, 58:282])
    with pytest.raises(ValueError):
        decode.center_crop(np.zeros((100, 300)), 224)


def test_decode_resize_crop_keeps_the_centre(tmp_path):
    # A 320x240 video with a white square centred on the frame: after resize+crop it is centred too.
    img = np.zeros((240, 320, 3), np.uint8)
    img[100:140, 140:180] = 255
    path = write_video(tmp_path / "sq.mp4", [img] * 20, fps=25)
    frames, _ = decode.decode_video(path, 25, short_side=256, crop=224)
    assert frames.shape == (20, 224, 224, 3)
    ys, xs = np.nonzero(frames[5, :, :, 0] > 128)
    # square spans 40 px * 256/240 = 42.7 px around the centre (111.5, 111.5) of the crop
    assert abs(ys.mean() - 111.5) < 1.5 and abs(xs.mean() - 111.5) < 1.5
    assert 40 <= ys.max() - ys.min() + 1 <= 45


# ----- bad input -------------------------------------------------------------------------------
def _first_error(source) -> VideoError:
    with pytest.raises(VideoError) as info:
        decode.decode_video(source, 25)
    return info.value


def test_zero_length(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    err = _first_error(empty)
    assert isinstance(err, EmptyVideoError) and err.source == str(empty) and "0 bytes" in err.reason
    assert isinstance(_first_error(b""), EmptyVideoError)


def test_missing(tmp_path):
    err = _first_error(tmp_path / "nope.mp4")
    assert isinstance(err, MissingVideoError) and "no such file" in err.reason


def test_corrupt(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    err = _first_error(junk)
    assert type(err) is CorruptVideoError and "junk.mp4" in str(err)


@pytest.mark.parametrize("name,options", [("t.mp4", None), ("t.avi", None), ("fs.mp4", {"movflags": "faststart"}), ("t.mkv", None)])
def test_truncated(tmp_path, name, options):
    full = write_index_video(tmp_path / f"full_{name}", 60, fps=30, options=options)
    data = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    err = _first_error(cut)
    assert type(err) is TruncatedVideoError, err
    assert "truncated" in err.reason or "declares" in err.reason


def test_audio_only(tmp_path):
    err = _first_error(write_audio(tmp_path / "a.m4a"))
    assert type(err) is NoVideoStreamError and "audio" in err.reason


def test_unsupported_codec(tmp_path):
    # An AVI whose video FOURCC names no codec this FFmpeg knows.
    avi = write_index_video(tmp_path / "v.avi", 20, fps=25)
    data = avi.read_bytes()
    assert b"FMP4" in data
    bad = tmp_path / "unknown_codec.avi"
    bad.write_bytes(data.replace(b"FMP4", b"ZQZQ"))
    err = _first_error(bad)
    assert type(err) is UnsupportedVideoError and "decoder" in err.reason
    assert type(_first_error(12345)) is UnsupportedVideoError  # not a readable source type


def test_errors_pickle_with_source_and_reason():
    err = TruncatedVideoError("s3://b/v.mp4", "cut short")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is TruncatedVideoError and back.source == "s3://b/v.mp4" and back.reason == "cut short"
    assert str(back) == "s3://b/v.mp4: cut short"


def test_filelike_without_name_named_in_errors():
    err = _first_error(io.BytesIO(b"not a video at all" * 100))
    assert isinstance(err, CorruptVideoError) and err.source == "<BytesIO>"
