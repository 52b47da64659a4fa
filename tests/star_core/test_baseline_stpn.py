"""STPN-style baseline: shapes, loss, and that it learns to localize on an easy weakly-labelled toy set."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from star_core.baseline_stpn import StpnConfig, StpnDetector, StpnStream, fit_stpn, stpn_loss
from star_core.data import Instance, VideoFeatures, VideoLabels
from star_core.metrics import evaluate_detections
from star_core.model.config import LocalizeConfig

CLASSES = ("Jump", "Swing", "Throw")


def _toy(n_videos: int, seed: int, d: int = 64):
    """Each video: background noise plus 1-2 instances of one class, whose segments carry the class direction."""
    rng = np.random.default_rng(seed)
    dirs = np.zeros((len(CLASSES), d))  # each class lights up its own block of dimensions
    for c in range(len(CLASSES)):
        dirs[c, c * (d // len(CLASSES)) : (c + 1) * (d // len(CLASSES))] = 1.0
    pairs = []
    for v in range(n_videos):
        n = int(rng.integers(50, 90))
        c = v % len(CLASSES)
        rgb = np.abs(rng.normal(0.1, 0.1, (n, d))).astype(np.float32)
        flow = np.abs(rng.normal(0.1, 0.1, (n, d))).astype(np.float32)
        instances = []
        for start in rng.choice(np.arange(5, n - 15, 20), size=min(2, (n - 20) // 20), replace=False):
            length = int(rng.integers(4, 10))
            rgb[start : start + length] += 2 * np.abs(dirs[c]).astype(np.float32)
            flow[start : start + length] += 2 * np.abs(dirs[c][::-1]).astype(np.float32)
            instances.append(Instance(CLASSES[c], start * 0.64, (start + length) * 0.64))
        vid = f"toy_{seed}_{v:03d}"
        feats = VideoFeatures(vid, rgb, flow, 25.0, 16, n * 0.64)
        labels = VideoLabels(vid, "train", (CLASSES[c],), (len(instances),), tuple(instances), duration_s=n * 0.64)
        pairs.append((feats, labels))
    return pairs


def test_stream_shapes_and_padding():
    net = StpnStream(feat_dim=8, num_classes=3)
    feats = torch.rand(2, 10, 8)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    logits, lam, tcam = net(feats, mask)
    assert logits.shape == (2, 3) and lam.shape == (2, 10) and tcam.shape == (2, 10, 3)
    assert torch.all(lam[1, 6:] == 0) and torch.all((lam[0] > 0) & (lam[0] < 1))


def test_loss_terms():
    logits = torch.tensor([[3.0, -3.0]])
    lam = torch.full((1, 4), 0.5)
    total, cls, sparsity = stpn_loss(logits, lam, torch.tensor([[1.0, 0.0]]), beta=0.1)
    assert float(sparsity) == pytest.approx(2.0)
    assert float(cls) == pytest.approx(2 * np.log1p(np.exp(-3.0)), rel=1e-4)
    assert float(total) == pytest.approx(float(cls) + 0.2)


def test_learns_to_localize_toy_actions():
    torch.set_num_threads(1)
    train, test = _toy(12, seed=0), _toy(9, seed=1)
    losses = []
    det = fit_stpn(
        train,
        CLASSES,
        StpnConfig(epochs=30, batch_size=4, lr=1e-2, sample_segments=0),
        on_epoch=lambda e, m: losses.append(m["rgb/classification"]),
    )
    assert losses[-1] < 0.5 * losses[0]
    loc = LocalizeConfig(min_class_prob=0.3)
    dets = [d for f, _ in test for d in det.detect(f, loc)]
    result = evaluate_detections(dets, [lab for _, lab in test], CLASSES)
    assert result.map["0.5"] > 40.0, result.table()
    one = det.detect(test[0][0], loc)
    assert one and all(d.label in CLASSES and 0 <= d.t_start_s < d.t_end_s <= test[0][0].duration_s + 1e-6 for d in one)
    assert [d.score for d in one] == sorted((d.score for d in one), reverse=True)


def test_bad_input_names_the_video():
    det = StpnDetector(classes=CLASSES, feat_dim=16)
    bad = VideoFeatures("video_bad", np.zeros((5, 8), np.float32), np.zeros((5, 8), np.float32))
    with pytest.raises(ValueError, match="video_bad.*feature dim 8"):
        det.detect(bad)
    nan = VideoFeatures("video_nan", np.full((5, 16), np.nan, np.float32), np.zeros((5, 16), np.float32))
    with pytest.raises(ValueError, match="video_nan.*NaN"):
        det.detect(nan)
    with pytest.raises(ValueError, match="not in the class list"):
        fit_stpn([(_toy(1, 0)[0][0], VideoLabels("x", "train", ("Dance",)))], CLASSES, StpnConfig(epochs=1))
