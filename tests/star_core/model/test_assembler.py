"""Assembler (Eq. 1-3, 6-8): positions, coverage gate, centroid, RAM, padding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from star_core.model.assembler import Assembler, segment_positions
from star_core.model.config import ModelConfig

CFG = ModelConfig(hidden_dim=6, attn_dim=4, dropout=0.0)


def _run(asm, feats, mask, h=None, centroid=None, first=False):
    B = feats.shape[0]
    h = torch.randn(B, 6) if h is None else h
    centroid = asm.initial_centroid(mask) if centroid is None else centroid
    pos = segment_positions(mask, asm.cfg.position_norm)
    return asm(asm.keys(feats), feats, mask, pos, h, centroid, first_step=first)


def test_positions_unit_and_index():
    mask = torch.tensor([[True, True, True, False, False], [True] * 5])
    torch.testing.assert_close(segment_positions(mask, "unit"), torch.tensor([[0.0, 0.5, 1.0, 0.0, 0.0], [0.0, 0.25, 0.5, 0.75, 1.0]]))
    torch.testing.assert_close(segment_positions(mask, "index"), torch.tensor([[0.0, 1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]]))
    assert segment_positions(torch.tensor([[True]]), "unit").item() == 0.0
    with pytest.raises(ValueError):
        segment_positions(mask, "percent")


def test_centroid_is_attention_weighted_mean_position():
    torch.manual_seed(0)
    asm = Assembler(feat_dim=3, hidden_dim=6, cfg=CFG)
    feats = torch.randn(2, 7, 3)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    step = _run(asm, feats, mask)
    pos = segment_positions(mask, "unit")
    expected = (step.alpha * pos).sum(1) / step.alpha.sum(1)
    torch.testing.assert_close(step.centroid, expected, rtol=1e-5, atol=1e-6)
    assert (step.alpha[0, 4:] == 0).all()


def test_coverage_gate_depends_on_previous_centroid_and_neutral_start():
    torch.manual_seed(0)
    asm = Assembler(feat_dim=3, hidden_dim=6, cfg=CFG)
    feats = torch.randn(1, 9, 3)
    mask = torch.ones(1, 9, dtype=torch.bool)
    h = torch.randn(1, 6)
    a = _run(asm, feats, mask, h, torch.tensor([0.0])).alpha
    b = _run(asm, feats, mask, h, torch.tensor([1.0])).alpha
    assert not torch.allclose(a, b)  # the gate sees i - centroid (Eq. 6)
    off = Assembler(feat_dim=3, hidden_dim=6, cfg=dataclasses.replace(CFG, use_coverage=False))
    off.load_state_dict({k: v for k, v in asm.state_dict().items() if k in off.state_dict()})
    c = _run(off, feats, mask, h, torch.tensor([0.0])).alpha
    d = _run(off, feats, mask, h, torch.tensor([1.0])).alpha
    torch.testing.assert_close(c, d)  # no coverage: plain Eq. 2-3
    neutral = Assembler(feat_dim=3, hidden_dim=6, cfg=dataclasses.replace(CFG, coverage_start="neutral"))
    neutral.load_state_dict(asm.state_dict())
    first = _run(neutral, feats, mask, h, torch.tensor([0.3]), first=True).alpha
    torch.testing.assert_close(first, c)  # neutral start: the gate is open at t = 1


def test_scalar_gate_and_shared_w_have_the_documented_shapes():
    scalar = Assembler(feat_dim=3, hidden_dim=6, cfg=dataclasses.replace(CFG, coverage_gate="scalar"))
    assert scalar.Z.shape == (1,) and scalar.W_cov.out_features == 1
    vector = Assembler(feat_dim=3, hidden_dim=6, cfg=CFG)
    assert vector.Z.shape == (4,) and vector.W_cov.out_features == 4
    shared = Assembler(feat_dim=3, hidden_dim=6, cfg=dataclasses.replace(CFG, coverage_shared_w=True))
    assert shared.W_cov is None


def test_temperature_sharpens_attention():
    torch.manual_seed(0)
    asm = Assembler(feat_dim=3, hidden_dim=6, cfg=CFG)
    cold = Assembler(feat_dim=3, hidden_dim=6, cfg=dataclasses.replace(CFG, energy_temperature=0.25))
    cold.load_state_dict(asm.state_dict())
    feats = torch.randn(1, 9, 3)
    mask = torch.ones(1, 9, dtype=torch.bool)
    h = torch.randn(1, 6)
    a = _run(asm, feats, mask, h).alpha
    b = _run(cold, feats, mask, h).alpha
    torch.testing.assert_close(torch.logit(b), 4 * torch.logit(a), rtol=1e-4, atol=1e-4)
