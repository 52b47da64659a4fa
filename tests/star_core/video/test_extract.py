"""prepare_video (CPU stage) and I3DExtractor.embed (network stage) on tiny generated videos."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from star_core.video import I3DExtractor, PreparedVideo, TooShortVideoError, extract_video, prepare_video
from star_core.video.config import FeatureConfig
from star_core.video.extract import count_segments
from tests.star_core.video.videos import index_frame, moving_texture_frames, write_index_video, write_video

# Tiny geometry: short side 40, crop 32 (the 224 default costs seconds per segment on CPU).
TINY = FeatureConfig(resize_short_side=40, crop_size=32, flow="farneback", batch_segments=3)  # TV-L1 itself: test_flow.py


@pytest.fixture(scope="module")
def extractor():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # random weights: warned about, on purpose here
        return I3DExtractor(TINY, device="cpu")


def test_count_segments():
    assert count_segments(55, 16, "pad") == 4 and count_segments(55, 16, "drop") == 3
    assert count_segments(48, 16, "pad") == count_segments(48, 16, "drop") == 3
    with pytest.raises(ValueError):
        count_segments(10, 16, "keep")


def test_prepare_video_geometry_ranges_and_flow(tmp_path):
    # 2.2 s at 30 fps of a texture moving 3 px right per source frame; 64x48 -> short side 40 -> 53x40 -> crop 32.
    frames = moving_texture_frames(66, 48, 64, 3, 0, seed=2)
    path = write_video(tmp_path / "move.mp4", frames, fps=30)
    pv = prepare_video(path, FeatureConfig(resize_short_side=40, crop_size=32, flow="tvl1"))
    assert pv.n_frames == 55 and pv.duration_s == pytest.approx(2.2, abs=1e-3)
    assert pv.rgb_u8.shape == (55, 32, 32, 3) and pv.rgb_u8.dtype == np.uint8
    assert pv.flow_f16.shape == (55, 32, 32, 2) and pv.flow_f16.dtype == np.float16
    assert pv.n_segments == 4 and pv.source_uri == str(path)
    rgb = pv.rgb
    assert rgb.dtype == np.float32 and rgb.min() >= -1 and rgb.max() <= 1
    np.testing.assert_allclose(rgb[3], pv.rgb_u8[3] / 127.5 - 1, atol=1e-6)
    flow = pv.flow
    assert np.abs(flow).max() <= 1
    # Output frames are 1 or 2 source frames apart (30 -> 25 fps): 3 or 6 px at source scale, times 40/48 after resizing.
    dx_px = np.median(flow[:-1, 8:24, 8:24, 0].reshape(len(flow) - 1, -1), axis=1) * 20
    allowed = np.array([3, 6]) * 40 / 48
    assert np.all(np.min(np.abs(dx_px[:, None] - allowed[None]), axis=1) < 0.5), dx_px
    assert np.abs(np.median(flow[..., 1])) < 0.05
    np.testing.assert_array_equal(pv.flow_f16[-1], pv.flow_f16[-2])  # last frame repeats the last flow
    # Flows in 3 threads are the same flows.
    threaded = prepare_video(path, FeatureConfig(resize_short_side=40, crop_size=32, flow="tvl1"), flow_workers=3)
    np.testing.assert_array_equal(threaded.flow_f16, pv.flow_f16)
    np.testing.assert_array_equal(threaded.rgb_u8, pv.rgb_u8)
    # Tail padding repeats the last frame; "drop" leaves the partial segment out.
    idx = pv.frame_index(2, 4)
    assert idx.shape == (2, 16) and idx[1, -1] == 54 and list(idx[1, :8]) == [48, 49, 50, 51, 52, 53, 54, 54]


def test_repeated_source_frames_have_zero_flow(tmp_path):
    path = write_video(tmp_path / "v24.mp4", moving_texture_frames(48, 48, 64, 2, 0, seed=5), fps=24)
    pv = prepare_video(path, FeatureConfig(resize_short_side=40, crop_size=32, flow="farneback"))
    assert pv.n_frames == 50
    same = [k for k in range(49) if np.array_equal(pv.rgb_u8[k], pv.rgb_u8[k + 1])]
    assert len(same) == 2  # 24 -> 25 fps shows two of the 48 source frames twice
    for k in same:
        assert not pv.flow_f16[k].any()
    moving = [k for k in range(49) if k not in same]
    assert all(np.abs(pv.flow_f16[k]).max() > 0.02 for k in moving)


def test_too_short(tmp_path):
    path = write_index_video(tmp_path / "short.mp4", 12, fps=25)
    with pytest.raises(TooShortVideoError, match="fewer than one 16-frame segment") as info:
        prepare_video(path, TINY)
    assert info.value.source == str(path)


def test_embed_shapes_batching_and_record(tmp_path, extractor):
    frames = moving_texture_frames(40, 48, 64, 2, 1, seed=4)
    path = write_video(tmp_path / "clip.mkv", frames, fps=25)
    pv = prepare_video(path, TINY)
    assert pv.n_frames == 40 and pv.n_segments == 3
    feats = extractor.embed(pv, "clip")
    assert feats.video_id == "clip" and feats.rgb.shape == feats.flow.shape == (3, 1024)
    assert feats.rgb.dtype == np.float32 and np.isfinite(feats.rgb).all()
    assert feats.fps == 25.0 and feats.segment_frames == 16 and feats.source_uri == str(path)
    assert feats.duration_s == pytest.approx(1.6)
    starts, ends = feats.segment_bounds_s()
    np.testing.assert_allclose(starts, [0, 0.64, 1.28])
    assert ends[-1] == pytest.approx(1.6)  # padded tail segment clipped to the video
    assert not np.allclose(feats.rgb[0], feats.rgb[1])
    # One clip at a time gives the same features as batches of 3 (batching is only speed).
    one_rgb, one_flow = extractor.embed_segments(pv.rgb_u8[pv.frame_index(2, 3)], pv.flow_f16[pv.frame_index(2, 3)])
    np.testing.assert_allclose(one_rgb[0], feats.rgb[2], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(one_flow[0], feats.flow[2], rtol=1e-4, atol=1e-5)
    # The prepared video travels between processes (Ray) by pickle.
    back = pickle.loads(pickle.dumps(pv))
    assert isinstance(back, PreparedVideo) and back.n_segments == 3
    np.testing.assert_array_equal(back.flow_f16, pv.flow_f16)


def test_extract_video_and_config_checks(tmp_path, extractor):
    path = write_index_video(tmp_path / "v.mp4", 33, fps=25)
    feats = extract_video(path, "v", TINY, extractor)
    assert feats.n_segments == 3
    drop = FeatureConfig(resize_short_side=40, crop_size=32, flow="farneback", tail_policy="drop")
    with pytest.raises(ValueError, match="prepared with"):
        extractor.embed(prepare_video(path, drop), "v")
    assert extractor.weights_digest == "random-he"
    assert extractor.feature_set == TINY.feature_set("random-he") and "farneback" in extractor.feature_set
    assert FeatureConfig(flow="farneback").feature_set("x") != FeatureConfig(flow="tvl1").feature_set("x")
    with pytest.raises(ValueError, match="flow"):
        FeatureConfig(flow="raft")
    with pytest.raises(ValueError, match="crop_size"):
        FeatureConfig(resize_short_side=200, crop_size=224)


# ----- tvl1-torch: flow in the network stage, on the extractor's device ------------------------------------------------------
def test_tvl1_torch_decodes_on_cpu_and_computes_flow_with_the_network(tmp_path, one_torch_thread):
    """The CPU stage only decodes (whole resized frames); embed computes TV-L1 + crops on the device (here CPU), matching
    the OpenCV path's crops exactly and its flow to ~0.01 px, and giving nearly the same features."""
    import dataclasses

    import torch

    from star_core.video.extract import DecodedVideo
    from star_core.video.flow_torch import rgb_to_gray_u8

    path = write_video(tmp_path / "pan.mp4", moving_texture_frames(20, 48, 64, 2, 1, seed=3), fps=25)
    cfg = FeatureConfig(resize_short_side=40, crop_size=32, flow="tvl1-torch", segment_frames=8, batch_segments=2)
    decoded = prepare_video(path, cfg)
    prepared = prepare_video(path, dataclasses.replace(cfg, flow="tvl1"))
    assert isinstance(decoded, DecodedVideo) and decoded.frames_u8.shape == (20, 40, 53, 3) and not decoded.repeated.any()
    assert decoded.n_segments == prepared.n_segments == 3
    assert isinstance(pickle.loads(pickle.dumps(decoded)), DecodedVideo)  # goes through Ray's object store

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ex_torch, ex_cv = I3DExtractor(cfg, device="cpu"), I3DExtractor(dataclasses.replace(cfg, flow="tvl1"), device="cpu")
    frames = torch.from_numpy(decoded.frames_u8)
    rgb, flow = ex_torch._device_flow_segments(decoded, frames, rgb_to_gray_u8(frames), 0, 3)
    idx = prepared.frame_index(0, 3)
    np.testing.assert_array_equal(rgb.numpy(), prepared.rgb_u8[idx])
    epe_px = np.linalg.norm(flow.float().numpy() * 20 - prepared.flow_f16[idx].astype(np.float32) * 20, axis=-1).mean()
    assert epe_px < 0.05
    np.testing.assert_array_equal(flow[-1, -1].numpy(), flow[-1, -2].numpy())  # padded tail repeats the last frame

    feats = ex_torch.embed(decoded, "pan")
    ref = ex_cv.embed(prepared, "pan")
    assert feats.flow.shape == (3, 1024) and np.isfinite(feats.flow).all()  # 8 + 8 + 4 frames (padded tail)
    np.testing.assert_allclose(feats.rgb, ref.rgb, rtol=1e-5, atol=1e-6)  # same crops, same RGB features
    cos = (feats.flow * ref.flow).sum(1) / np.linalg.norm(feats.flow, axis=1) / np.linalg.norm(ref.flow, axis=1)
    assert (cos > 0.999).all()
    assert "tvl1-torch" in ex_torch.feature_set and ex_torch.feature_set != ex_cv.feature_set
    with pytest.raises(ValueError, match="configured for"):
        ex_cv.embed(decoded, "pan")


def test_tvl1_torch_repeated_source_frames_have_zero_flow(tmp_path, one_torch_thread):
    path = write_video(tmp_path / "slow.mp4", moving_texture_frames(12, 48, 64, 3, 0, seed=4), fps=15)  # 15 -> 25 fps repeats frames
    cfg = FeatureConfig(resize_short_side=40, crop_size=32, flow="tvl1-torch", batch_segments=2)
    decoded = prepare_video(path, cfg)
    assert decoded.repeated.any() and not decoded.repeated[0]
    import torch

    from star_core.video.flow_torch import rgb_to_gray_u8

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        ex = I3DExtractor(cfg, device="cpu")
    frames = torch.from_numpy(decoded.frames_u8)
    _, flow = ex._device_flow_segments(decoded, frames, rgb_to_gray_u8(frames), 0, decoded.n_segments)
    flow = flow.reshape(-1, 32, 32, 2)[: decoded.n_frames - 1].float().numpy()  # frame i -> i + 1
    for i in range(decoded.n_frames - 1):
        if decoded.repeated[i + 1]:
            assert not flow[i].any()
        else:
            assert np.abs(flow[i]).max() > 0.02
