"""Feature standardisation: masked running statistics, used unchanged at test time and in checkpoints."""

import dataclasses

import numpy as np
import pytest
import torch

from star_core.config import StarConfig, replace
from star_core.model.config import ModelConfig
from star_core.model.normalize import FeatureStandardizer
from star_core.model.star import StarNet


def test_running_statistics_ignore_padding_and_apply_in_eval():
    torch.manual_seed(0)
    std = FeatureStandardizer(4, enabled=True)
    feats = torch.randn(2, 5, 4) * 3 + 7
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    feats[~mask] = 1e6  # padding must never reach the statistics
    std.train()
    std(feats, mask)
    valid = feats[mask]
    assert torch.allclose(std.mean, valid.mean(0), atol=1e-4)
    assert torch.allclose(std.var, valid.var(0, unbiased=False), rtol=1e-4)
    std.eval()
    out = std(feats, mask)[mask]
    assert torch.allclose(out.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(out.std(0, unbiased=False), torch.ones(4), atol=1e-3)
    before = std.mean.clone()
    std(feats * 2, mask)  # eval: statistics frozen
    assert torch.equal(before, std.mean)


def test_disabled_is_identity_and_bad_value_rejected():
    std = FeatureStandardizer(3, enabled=False)
    x = torch.randn(1, 4, 3)
    assert torch.equal(std(x, torch.ones(1, 4, dtype=torch.bool)), x)
    with pytest.raises(ValueError, match="feature_norm"):
        StarNet(feat_dim=3, num_classes=2, cfg=dataclasses.replace(ModelConfig(), feature_norm="zscore"))


def test_statistics_travel_in_the_detector_checkpoint():
    from star_core.detector import StarDetector
    from star_core.train_loop import Trainer

    cfg = replace(
        StarConfig(),
        **{"model.feature_norm": "standardize", "model.hidden_dim": 16, "model.attn_dim": 8, "train.epochs": 1, "train.batch_size": 2},
    )
    from star_core.data import VideoFeatures, VideoLabels

    rng = np.random.default_rng(0)
    pairs = [
        (
            VideoFeatures(f"v{i}", (rng.normal(5, 2, (12, 6))).astype(np.float32), rng.normal(-3, 0.5, (12, 6)).astype(np.float32)),
            VideoLabels(f"v{i}", "train", ("A",)),
        )
        for i in range(4)
    ]
    trainer = Trainer(("A", "B"), 6, cfg, ("A", "B"))
    trainer.train_epoch(pairs, 0)
    det = trainer.detector
    assert float(det.rgb.standardize.mean.mean()) == pytest.approx(5.0, abs=0.6)
    restored = StarDetector.from_checkpoint(det.to_checkpoint())
    assert torch.equal(restored.rgb.standardize.mean, det.rgb.standardize.mean)
    assert torch.equal(restored.flow.standardize.var, det.flow.standardize.var)
