"""Loss terms Eq. 15-18 against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from star_core.losses import star_loss
from star_core.model.config import LossConfig
from star_core.model.star import IGNORE_INDEX, StarOutput


def _out(logits, attention, ram):
    B, T, _ = logits.shape
    return StarOutput(logits, attention, ram, torch.zeros(B, T, 1), torch.zeros(B, T, dtype=torch.long))


def test_terms_hand_computed():
    # B=2, T=3 (labels + EOS), C=2 (EOS = 2), N=3
    logits = torch.tensor(
        [
            [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]],
            [[0.0, 0.0, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0]],
        ]
    )
    targets = torch.tensor([[0, 1, 2], [1, 2, IGNORE_INDEX]])
    att = torch.tensor(
        [
            [[0.5, 0.5, 0.0], [0.0, 0.5, 1.0], [1.0, 0.0, 0.0]],
            [[0.2, 0.4, 0.9], [0.9, 0.1, 0.0], [1.0, 1.0, 1.0]],  # last step is padding (ignored)
        ]
    )
    mask = torch.ones(2, 3, dtype=torch.bool)
    ram = torch.tensor([[1.5, 3.0, 9.0], [2.0, 7.0, 7.0]])
    counts = torch.tensor([[2.0, float("nan"), 0.0], [1.0, 5.0, 5.0]])

    def nll(row, k):
        return -(row[k] - torch.logsumexp(row, 0)).item()

    cls = (nll(logits[0, 0], 0) + nll(logits[0, 1], 1) + nll(logits[0, 2], 2) + nll(logits[1, 0], 1) + nll(logits[1, 1], 2)) / 2
    sparsity = ((1.0 + 1.5 + 1.0) + (1.5 + 1.0)) / 2
    # coverage: video 0, t=1: cum(step1)=[0,.5,1.5], cum(step0)=[.5,1,1] -> diff sum = -.5-.5+.5 = -.5 -> 0
    #           t=2: cum(step2)=[1,1,1] vs [0,.5,1.5] -> 1+.5-.5 = 1 -> 1
    # video 1, t=1: cum(step1)=[.9,1,1] vs cum(step0)=[.2,.6,1.5] -> .7+.4-.5 = .6 ; t=2 invalid (padding)
    coverage = (1.0 + 0.6) / 2
    # RAM: video 0 has one known label-step count (t=0: (2-1.5)^2=.25; t=1 NaN; t=2 is EOS) -> .25/(2*1)
    #      video 1: t=0 (1-2)^2 = 1 -> 1/2 ; t=1 is EOS, not a label step
    ram_loss = (0.125 + 0.5) / 2
    cfg = LossConfig(beta_sparsity=0.1, gamma_coverage=0.01, delta_ram=0.5)
    terms = star_loss(_out(logits, att, ram), targets, counts, mask, cfg)
    assert terms.classification.item() == pytest.approx(cls, rel=1e-6)
    assert terms.sparsity.item() == pytest.approx(sparsity, rel=1e-6)
    assert terms.coverage.item() == pytest.approx(coverage, rel=1e-6)
    assert terms.ram.item() == pytest.approx(ram_loss, rel=1e-6)
    assert terms.total.item() == pytest.approx(cls + 0.1 * sparsity + 0.01 * coverage + 0.5 * ram_loss, rel=1e-6)


def test_padding_segments_do_not_count():
    logits = torch.zeros(1, 2, 3)
    targets = torch.tensor([[0, 2]])
    att = torch.tensor([[[0.5, 0.0, 0.0], [0.2, 0.0, 0.0]]])
    mask = torch.tensor([[True, False, False]])
    padded = star_loss(_out(logits, att, torch.zeros(1, 2)), targets, None, mask, LossConfig())
    att_short = att[..., :1]
    short = star_loss(_out(logits, att_short, torch.zeros(1, 2)), targets, None, mask[:, :1], LossConfig())
    for a, b in zip(padded, short):
        assert a.item() == pytest.approx(b.item())
    # second step holds less mass: no coverage penalty
    assert padded.coverage.item() == 0.0
    assert padded.sparsity.item() == pytest.approx(0.7)


def test_training_without_counts():
    logits = torch.randn(2, 2, 4, requires_grad=True)
    att = torch.rand(2, 2, 5)
    ram = torch.randn(2, 2, requires_grad=True)
    targets = torch.tensor([[1, 3], [0, 3]])
    mask = torch.ones(2, 5, dtype=torch.bool)
    for counts in (None, torch.full((2, 2), float("nan")), torch.full((2, 2), -1.0)):
        terms = star_loss(_out(logits, att, ram), targets, counts, mask, LossConfig(delta_ram=0.0))
        assert terms.ram.item() == 0.0
        terms.total.backward()
        assert torch.isfinite(logits.grad).all()


def test_weights_zero_make_the_stem_loss():
    logits = torch.randn(1, 2, 3)
    att = torch.rand(1, 2, 4)
    targets = torch.tensor([[1, 2]])
    terms = star_loss(
        _out(logits, att, torch.ones(1, 2)),
        targets,
        torch.tensor([[3.0, 0.0]]),
        torch.ones(1, 4, dtype=torch.bool),
        LossConfig(0.0, 0.0, 0.0),
    )
    assert terms.total.item() == pytest.approx(terms.classification.item())
    assert terms.ram.item() == pytest.approx(2.0)  # (3 - 1)^2 / (2*1)
    assert math.isfinite(terms.sparsity.item()) and terms.sparsity.item() > 0


def test_shape_errors():
    out = _out(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="targets"):
        star_loss(out, torch.zeros(1, 3, dtype=torch.long), None, torch.ones(1, 4, dtype=torch.bool), LossConfig())
    with pytest.raises(ValueError, match="counts"):
        star_loss(out, torch.zeros(1, 2, dtype=torch.long), torch.zeros(2, 2), torch.ones(1, 4, dtype=torch.bool), LossConfig())


def test_background_contrast_term_hand_computed():
    logits = torch.zeros(1, 2, 3)
    bg = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 5.0]]])  # step 0 class 0; step 1 is EOS (no term)
    out = StarOutput(logits, torch.zeros(1, 2, 2), torch.zeros(1, 2), torch.zeros(1, 2, 1), torch.zeros(1, 2, dtype=torch.long), bg)
    targets = torch.tensor([[0, 2]])
    p0 = math.exp(1) / (math.exp(1) + 2)
    terms = star_loss(out, targets, None, torch.ones(1, 2, dtype=torch.bool), LossConfig(0, 0, 0, background_weight=0.5))
    assert terms.background.item() == pytest.approx(-math.log(1 - p0), rel=1e-6)
    assert terms.total.item() == pytest.approx(terms.classification.item() + 0.5 * terms.background.item(), rel=1e-6)
    no_bg = out._replace(background_logits=None)
    with pytest.raises(ValueError, match="background"):
        star_loss(no_bg, targets, None, torch.ones(1, 2, dtype=torch.bool), LossConfig(background_weight=1.0))
