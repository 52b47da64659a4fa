"""StarDetector: detection in seconds, batching, checkpoints, bad input; overfitting a tiny set."""

from __future__ import annotations

import dataclasses
import io
import time

import numpy as np
import pytest
import torch

from star_core.config import StarConfig, replace
from star_core.data import VideoFeatures
from star_core.detector import StarDetector, resample_indices
from star_core.metrics import evaluate_detections
from star_core.model.config import LocalizeConfig, ModelConfig
from star_core.train_loop import fit
from tests.star_core.synthetic import make_videos

SMALL = ModelConfig(hidden_dim=16, attn_dim=8, label_embed_dim=4, dropout=0.0, max_steps=3)


def _detector(localizer="attended_gradcam", **loc):
    torch.manual_seed(0)
    return StarDetector(
        classes=("a", "b", "c"), feat_dim=6, model_cfg=SMALL, localize_cfg=LocalizeConfig(localizer=localizer, min_class_prob=0.0, **loc)
    )


def _video(vid="v", n=30, fps=30.0, seed=0, duration_s=None):
    rng = np.random.default_rng(seed)
    return VideoFeatures(
        vid,
        rng.normal(size=(n, 6)).astype(np.float32),
        rng.normal(size=(n, 6)).astype(np.float32),
        fps=fps,
        segment_frames=16,
        duration_s=duration_s,
    )


@pytest.mark.parametrize("localizer", ["attention", "gradcam", "attended_gradcam"])
def test_detections_are_on_the_segment_grid_in_seconds(localizer):
    det = _detector(localizer)
    video = _video(fps=30.0, duration_s=15.9)  # 30 segments of 16/30 s; the last one clipped at 15.9 s
    dets = det.detect(video)
    assert dets, "an untrained detector with min_class_prob=0 still proposes"
    starts_s, ends_s = video.segment_bounds_s()
    for d in dets:
        assert d.video_id == "v" and d.label in det.classes
        assert np.isclose(starts_s, d.t_start_s).any() and np.isclose(ends_s, d.t_end_s).any()
        assert 0 <= d.t_start_s < d.t_end_s <= 15.9 + 1e-9
    assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
    assert len({(d.label, d.t_start_s, d.t_end_s) for d in dets}) == len(dets)


def test_detect_batch_equals_single_videos():
    det = _detector()
    videos = [_video("v1", n=12, seed=1), _video("v2", n=31, seed=2), _video("v3", n=5, seed=3)]
    batched = det.detect_batch(videos)
    for v, dets in zip(videos, batched):
        single = det.detect(v)
        assert [(d.label, d.t_start_s, d.t_end_s) for d in dets] == [(d.label, d.t_start_s, d.t_end_s) for d in single]
        np.testing.assert_allclose([d.score for d in dets], [d.score for d in single], rtol=1e-4)
    assert det.detect_batch([]) == []


def test_test_time_resampling_maps_back_to_original_segments():
    assert resample_indices(10, 0).tolist() == list(range(10))
    assert resample_indices(10, 20).tolist() == list(range(10))
    assert resample_indices(10, 4).tolist() == [0, 2, 5, 7]
    det = _detector(test_segments=8)
    video = _video(n=40, fps=25.0)
    dets = det.detect(video)
    starts_s, ends_s = video.segment_bounds_s()
    assert dets and max(d.t_end_s for d in dets) <= ends_s[-1] + 1e-9
    for d in dets:
        assert np.isclose(starts_s, d.t_start_s).any() and np.isclose(ends_s, d.t_end_s).any()


def test_checkpoint_round_trip_weights_only():
    det = _detector(localizer="gradcam", thresholds=(0.2, 0.6))
    buf = io.BytesIO()
    torch.save(det.to_checkpoint(), buf)
    buf.seek(0)
    loaded = StarDetector.from_checkpoint(torch.load(buf, weights_only=True))
    assert loaded.classes == det.classes and loaded.class_order == det.class_order
    assert loaded.model_cfg == det.model_cfg and loaded.localize_cfg == det.localize_cfg
    for k, v in det.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    video = _video()
    assert det.detect(video) == loaded.detect(video)
    with pytest.raises(ValueError, match="not a STAR detector checkpoint"):
        StarDetector.from_checkpoint({"format": "other"})


def test_bad_input_names_the_video():
    det = _detector()
    with pytest.raises(ValueError, match="video 'wide'.*feature dim 7"):
        det.detect(VideoFeatures("wide", np.zeros((4, 7), np.float32), np.zeros((4, 7), np.float32)))
    bad = _video("nan_video")
    bad.flow[2, 3] = np.nan
    with pytest.raises(ValueError, match="video 'nan_video'.*NaN"):
        det.detect(bad)
    empty = _video("empty")
    object.__setattr__(empty, "rgb", np.zeros((0, 6), np.float32))
    object.__setattr__(empty, "flow", np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="video 'empty'.*empty"):
        det.detect(empty)
    with pytest.raises(ValueError, match="video 'flat'"):
        VideoFeatures("flat", np.zeros((0, 6), np.float32), np.zeros((0, 6), np.float32))
    with pytest.raises(ValueError, match="duplicates"):
        StarDetector(classes=("a", "a"), feat_dim=4)


OVERFIT = {
    "model.hidden_dim": 16,
    "model.attn_dim": 16,
    "model.label_embed_dim": 8,
    "model.dropout": 0.0,
    "train.lr": 3e-3,
    "train.weight_decay": 0.0,
    "train.batch_size": 6,
    "train.epochs": 40,
    "refine.rounds": 0,  # STAR's own localization (stage 1); the self-trained head: tests/star_core/test_refine.py
}


def test_overfits_a_tiny_synthetic_set_to_high_localization_map():
    """60 short videos, 4 classes, background resembling absent classes (see tests/star_core/synthetic.py).

    Small model and many videos on purpose: with a dozen videos and a large LSTM, video-level labels
    are memorised from nearly uniform attention and nothing localizes (docs/model.md, "Measured").
    """
    classes, pairs = make_videos(n_videos=60, n_classes=4, feat_dim=16, noise=0.2, distractor=0.7, seed=0)
    cfg = replace(StarConfig(), **OVERFIT)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest, and CI runners are shared
    try:
        t0 = time.monotonic()
        detector = fit(pairs, classes, cfg)
        train_s = time.monotonic() - t0
    finally:
        torch.set_num_threads(threads)
    dets = [d for ds in detector.detect_batch([f for f, _ in pairs]) for d in ds]
    result = evaluate_detections(dets, [lab for _, lab in pairs], classes)
    print(
        f"overfit: {train_s:.1f} s training, mAP@0.5 {result.map['0.5']:.1f}, avg0.1:0.7 {result.avg_0_1_0_7:.1f}, {len(dets)} detections"
    )
    assert result.map["0.5"] >= 85.0, result.table()


def test_pad_batch_takes_read_only_arrays_of_any_float_dtype_without_warning():
    import warnings

    from star_core.detector import pad_batch

    a = np.arange(12, dtype=np.float64).reshape(4, 3)
    a.setflags(write=False)  # as numpy views of Arrow buffers read from Parquet are
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        feats, mask = pad_batch([a, np.ones((2, 3), np.float32)])
    assert feats.dtype == torch.float32 and tuple(feats.shape) == (2, 4, 3)
    assert feats[0, 3].tolist() == [9.0, 10.0, 11.0] and feats[1, 2:].abs().sum().item() == 0.0
    assert mask.tolist() == [[True] * 4, [True, True, False, False]]
