"""Trainer: label order, sampling, collate/masks, wrap_module, resumable state, attention diagnostics."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
import torch
from torch import nn

from star_core.config import StarConfig, replace
from star_core.data import VideoLabels
from star_core.diagnostics import roc_auc
from star_core.train_loop import Trainer, attention_diagnostics, collate, label_order, label_sequence, sample_indices
from tests.star_core.synthetic import make_videos

TINY = {
    "model.hidden_dim": 16,
    "model.attn_dim": 8,
    "model.label_embed_dim": 4,
    "train.batch_size": 3,
    "train.lr": 1e-3,
    "train.sample_segments": 20,
}


def _cfg(**extra) -> StarConfig:
    return replace(StarConfig(), **{**TINY, **extra})


def _labels(vid, *labs, counts=None):
    return VideoLabels(vid, "train", tuple(labs), counts)


def test_label_order_modes_and_sequences():
    classes = ("c", "a", "b")
    vids = [_labels("1", "a", "b"), _labels("2", "b"), _labels("3", "b", "c", counts=(4, 1)), _labels("4", "a")]
    assert label_order(vids, classes, "frequency") == ("b", "a", "c")  # b:3, a:2, c:1
    assert label_order(vids, classes, "alphabetical") == ("a", "b", "c")
    order = label_order(vids, classes, "first_occurrence")
    assert sorted(order) == sorted(classes)
    seq, cnt = label_sequence(vids[2], classes, ("b", "a", "c"), "frequency")
    assert seq == [2, 0] and cnt == [4.0, 1.0]
    seq, cnt = label_sequence(_labels("5", "c", "b", counts=(1, 4)), classes, ("b", "a", "c"), "first_occurrence")
    assert seq == [0, 2] and cnt == [1.0, 4.0]
    seq, cnt = label_sequence(vids[0], classes, ("b", "a", "c"), "frequency")
    assert seq == [2, 1] and all(math.isnan(c) for c in cnt)
    with pytest.raises(ValueError, match="video 'x': label 'z' is not in the class list"):
        label_order([_labels("x", "z")], classes, "frequency")
    with pytest.raises(ValueError, match="video 'x'"):
        label_sequence(_labels("x", "a", "a"), classes, classes, "frequency")
    with pytest.raises(ValueError, match="label_order"):
        label_order(vids, classes, "random")


def test_sample_indices_uniform():
    assert sample_indices(10, 400, None, True).tolist() == list(range(10))
    assert sample_indices(1000, 0, None, True).shape == (1000,)
    idx = sample_indices(1000, 400, None, False)
    assert idx.shape == (400,) and idx[0] == 0 and np.all(np.diff(idx) >= 2)
    g = torch.Generator().manual_seed(0)
    j = sample_indices(1000, 400, g, True)
    assert j.shape == (400,) and np.all(np.diff(j) > 0) and j.max() < 1000
    bins = np.floor(np.arange(400) * 1000 / 400)
    assert np.all(j >= bins) and np.all(j < np.append(bins[1:], 1000))  # one per bin
    assert sample_indices(401, 400, g, True).max() <= 400


def test_collate_pads_with_masks():
    a = (np.ones((3, 2), np.float32), np.ones((3, 2), np.float32), [1, 0], [2.0, math.nan])
    b = (np.full((5, 2), 2, np.float32), np.full((5, 2), 2, np.float32), [2], [1.0])
    batch = collate([a, b], num_classes=3)
    assert batch["rgb"].shape == (2, 5, 2) and batch["mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert (batch["rgb"][0, 3:] == 0).all()
    assert batch["targets"].tolist() == [[1, 0, 3], [2, 3, -100]]
    assert batch["counts"][0, 0] == 2.0 and torch.isnan(batch["counts"][0, 1]) and batch["counts"][1, 0] == 1.0


class CountingWrapper(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, *args, **kwargs):
        self.calls += 1
        return self.inner(*args, **kwargs)


def test_train_epoch_goes_through_wrapped_module_and_reports_terms():
    classes, pairs = make_videos(n_videos=5, n_classes=3, feat_dim=8, seed=1)
    wrappers = []

    def wrap(m):
        wrappers.append(CountingWrapper(m))
        return wrappers[-1]

    cfg = _cfg()
    trainer = Trainer(classes, 8, cfg, label_order([l for _, l in pairs], classes, "frequency"), wrap_module=wrap)
    before = {k: v.clone() for k, v in trainer.detector.state_dict().items()}
    m = trainer.train_epoch(pairs, 0)
    assert [w.calls for w in wrappers] == [2, 2]  # 5 videos, batch 3 -> 2 batches per stream
    for s in ("rgb", "flow"):
        for term in ("total", "classification", "sparsity", "coverage", "ram"):
            assert math.isfinite(m[f"{s}/{term}"])
        assert m[f"{s}/ram"] > 0  # synthetic videos carry counts
    assert any(not torch.equal(before[k], v) for k, v in trainer.detector.state_dict().items())
    assert trainer.epoch == 1
    bad = [(pairs[0][0], pairs[1][1])]
    with pytest.raises(ValueError, match="paired with labels"):
        trainer.train_epoch(bad, 1)


def test_resume_from_state_dict_is_exact():
    classes, pairs = make_videos(n_videos=4, n_classes=3, feat_dim=8, n_segments=(30, 40), seed=2)
    cfg = _cfg(**{"model.dropout": 0.3})
    order = label_order([l for _, l in pairs], classes, "frequency")
    straight = Trainer(classes, 8, cfg, order)
    for e in range(3):
        last = straight.train_epoch(pairs, e)

    first = Trainer(classes, 8, cfg, order)
    for e in range(2):
        first.train_epoch(pairs, e)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    torch.manual_seed(123)  # the global RNG is restored from the state
    resumed = Trainer(classes, 8, cfg, order)
    resumed.load_state_dict(state)
    assert resumed.epoch == 2
    again = resumed.train_epoch(pairs, 2)
    assert again == pytest.approx(last, rel=1e-5)
    for k, v in straight.detector.state_dict().items():
        torch.testing.assert_close(resumed.detector.state_dict()[k], v)


def test_roc_auc_and_attention_diagnostics():
    assert roc_auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert math.isnan(roc_auc(np.array([0.5]), np.array([1])))
    classes, pairs = make_videos(n_videos=3, n_classes=3, feat_dim=8, seed=3)
    trainer = Trainer(classes, 8, _cfg(), classes)
    d = attention_diagnostics(trainer.detector, pairs)
    assert set(d) == {f"{s}/{k}" for s in ("rgb", "flow") for k in ("mean_alpha", "action_fraction", "alpha_auc")}
    assert 0 < d["rgb/mean_alpha"] < 1 and 0 < d["rgb/action_fraction"] < 1
