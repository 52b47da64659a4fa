"""StarNet and assembler: shapes over a grid, masks, teacher forcing, greedy decoding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from star_core.model.config import ModelConfig
from star_core.model.star import IGNORE_INDEX, StarNet, greedy_decode, make_targets

SMALL = ModelConfig(hidden_dim=16, attn_dim=8, label_embed_dim=4, dropout=0.0, max_steps=3)


def _net(cfg: ModelConfig = SMALL, D: int = 6, C: int = 4, seed: int = 0) -> StarNet:
    torch.manual_seed(seed)
    return StarNet(feat_dim=D, num_classes=C, cfg=cfg).eval()


@pytest.mark.parametrize("B", [1, 3])
@pytest.mark.parametrize("N", [1, 2, 17])
@pytest.mark.parametrize("variant", ["default", "stem", "scalar_index_none", "count_neutral_shared"])
def test_shapes_grid(B, N, variant):
    cfg = {
        "default": SMALL,
        "stem": dataclasses.replace(SMALL, use_coverage=False, use_ram=False),
        "scalar_index_none": dataclasses.replace(SMALL, coverage_gate="scalar", position_norm="index", assembly_norm="none"),
        "count_neutral_shared": dataclasses.replace(SMALL, assembly_norm="count", coverage_start="neutral", coverage_shared_w=True),
    }[variant]
    net = _net(cfg)
    feats = torch.randn(B, N, 6)
    mask = torch.ones(B, N, dtype=torch.bool)
    targets = make_targets([[0, 2]] * B, 4)
    out = net(feats, mask, targets)
    assert out.step_logits.shape == (B, 3, 5)
    assert out.attention.shape == (B, 3, N)
    assert out.ram.shape == (B, 3)
    assert out.patterns.shape == (B, 3, 6)
    assert out.labels.tolist() == [[0, 2, 4]] * B
    assert torch.isfinite(out.step_logits).all() and torch.isfinite(out.attention).all()
    assert ((out.attention > 0) & (out.attention < 1)).all()  # sigmoid, not softmax
    dec = net(feats, mask)
    assert dec.step_logits.shape[:2] == dec.labels.shape and dec.attention.shape[2] == N


def test_padding_gets_zero_attention_and_does_not_change_results():
    net = _net()
    torch.manual_seed(1)
    a = torch.randn(1, 7, 6)
    b = torch.randn(1, 12, 6)
    feats = torch.zeros(2, 12, 6)
    feats[0, :7] = a[0]
    feats[0, 7:] = 100.0  # garbage in the padding must not matter
    feats[1] = b[0]
    mask = torch.zeros(2, 12, dtype=torch.bool)
    mask[0, :7] = True
    mask[1] = True
    targets = make_targets([[1, 3], [2]], 4)
    out = net(feats, mask, targets)
    assert (out.attention[0, :, 7:] == 0).all()
    alone = net(a, torch.ones(1, 7, dtype=torch.bool), targets[:1])
    torch.testing.assert_close(out.attention[0, :, :7], alone.attention[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.step_logits[0], alone.step_logits[0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.ram[0], alone.ram[0], rtol=1e-5, atol=1e-5)


def test_pattern_is_assembly_of_segments():
    for norm in ("none", "sum", "count"):
        net = _net(dataclasses.replace(SMALL, assembly_norm=norm))
        feats = torch.randn(2, 9, 6)
        mask = torch.ones(2, 9, dtype=torch.bool)
        mask[1, 5:] = False
        out = net(feats, mask, make_targets([[0], [1, 2]], 4))
        w = net.assembler.assembly_weights(out.attention, mask)  # (B, T, N)
        torch.testing.assert_close(out.patterns, torch.einsum("btn,bnd->btd", w, feats * mask[..., None]), rtol=1e-5, atol=1e-6)
        mass = out.attention.sum(-1)
        torch.testing.assert_close(out.ram, net.assembler.ram_w * mass + net.assembler.ram_b)  # Eq. 8


def test_teacher_forcing_feeds_previous_target():
    net = _net()
    feats = torch.randn(1, 10, 6)
    mask = torch.ones(1, 10, dtype=torch.bool)
    o1 = net(feats, mask, make_targets([[0, 1]], 4))
    o2 = net(feats, mask, make_targets([[2, 1]], 4))
    torch.testing.assert_close(o1.step_logits[:, 0], o2.step_logits[:, 0])  # step 1 sees only y_0
    assert not torch.allclose(o1.step_logits[:, 1], o2.step_logits[:, 1])  # step 2 sees y_1


def test_greedy_decoding_never_repeats_and_stops_at_eos():
    C = 4
    for seed in range(20):
        net = _net(dataclasses.replace(SMALL, max_steps=6), C=C, seed=seed)
        with torch.no_grad():
            net.out.bias.zero_()
            net.out.bias[C] = -5.0  # make EOS unlikely so that the repeat mask is exercised
            out = net(torch.randn(3, 11, 6), torch.ones(3, 11, dtype=torch.bool))
        for row in out.labels.tolist():
            emitted = [c for c in row if 0 <= c < C]
            assert len(emitted) == len(set(emitted)), row
            assert C in row, row  # always terminates with EOS
            eos = row.index(C)
            assert all(c == -1 for c in row[eos + 1 :])
            assert all(0 <= c < C for c in row[:eos])
            assert eos <= min(C, 6)


def test_decoding_stops_early_when_eos_is_likely():
    net = _net()
    with torch.no_grad():
        net.out.bias.zero_()
        net.out.bias[4] = 20.0
        out = net(torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    assert out.labels.tolist() == [[4], [4]]
    assert out.step_logits.shape == (2, 1, 5)


def test_max_steps_forces_eos():
    net = _net(dataclasses.replace(SMALL, max_steps=2))
    with torch.no_grad():
        net.out.bias[4] = -50.0
        out = net(torch.randn(2, 5, 6), torch.ones(2, 5, dtype=torch.bool))
    assert out.labels[:, 2].tolist() == [4, 4]


def test_joint_decoding_of_two_streams_shares_labels():
    a, b = _net(seed=0), _net(seed=1)
    fa, fb = torch.randn(2, 8, 6), torch.randn(2, 8, 6)
    mask = torch.ones(2, 8, dtype=torch.bool)
    dec = greedy_decode([a, b], [fa, fb], mask, max_steps=3)
    assert dec.outputs[0].labels.equal(dec.outputs[1].labels)
    p0 = torch.softmax(dec.outputs[0].step_logits[:, 0], -1)
    p1 = torch.softmax(dec.outputs[1].step_logits[:, 0], -1)
    fused = (p0 + p1) / 2
    assert dec.labels[:, 0].equal(fused.argmax(-1))
    torch.testing.assert_close(dec.probs[:, 0], fused.max(-1).values)


def test_make_targets_and_bad_inputs():
    t = make_targets([[2, 0], [1]], 3)
    assert t.tolist() == [[2, 0, 3], [1, 3, IGNORE_INDEX]]
    with pytest.raises(ValueError, match="repeats"):
        make_targets([[1, 1]], 3)
    with pytest.raises(ValueError, match="out of range"):
        make_targets([[3]], 3)
    net = _net()
    with pytest.raises(ValueError, match="expects features"):
        net(torch.randn(1, 4, 5), torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="mask"):
        net(torch.randn(1, 4, 6), torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="coverage_gate"):
        StarNet(feat_dim=4, num_classes=2, cfg=dataclasses.replace(SMALL, coverage_gate="matrix"))


def test_gradients_reach_all_parameters():
    net = _net().train()
    out = net(torch.randn(2, 9, 6), torch.ones(2, 9, dtype=torch.bool), make_targets([[0, 1], [3]], 4))
    (out.step_logits.sum() + out.ram.sum()).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_background_logits_score_the_complement_pattern():
    net = _net().train()
    feats = torch.randn(2, 7, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    targets = make_targets([[0, 1], [2]], 4)
    out = net(feats, mask, targets)
    assert out.background_logits.shape == out.step_logits.shape
    assert net.eval()(feats, mask, targets).background_logits is None
    with_bg = net(feats, mask, targets, background=True)
    torch.testing.assert_close(with_bg.step_logits, net(feats, mask, targets).step_logits)
    # the complement weights (1 - α) give x̄ = Σ(1-α)s / Σ(1-α); feeding it as the pattern reproduces the logits
    comp = (1 - with_bg.attention) * mask[:, None, :]
    x_bar = torch.einsum("btn,bnd->btd", comp, feats) / comp.sum(-1, keepdim=True)
    for step in range(targets.shape[1]):
        calls = {"t": 0}

        def swap(module, args, out, step=step):
            t = calls["t"]
            calls["t"] += 1
            return out._replace(pattern=x_bar[:, t]) if t == step else out

        h = net.assembler.register_forward_hook(swap)
        try:
            swapped = net(feats, mask, targets, background=False)
        finally:
            h.remove()
        torch.testing.assert_close(swapped.step_logits[:, step], with_bg.background_logits[:, step], rtol=1e-4, atol=1e-5)
