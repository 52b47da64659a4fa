"""ST-GradCAM (Eq. 10-13) against finite differences; Eq. 12 identity; hooks always removed."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from star_core.gradcam import attended_score, record_cell_inputs, st_gradcam
from star_core.model.config import ModelConfig
from star_core.model.star import StarNet

CFG = ModelConfig(hidden_dim=12, attn_dim=8, label_embed_dim=4, dropout=0.0, max_steps=3)


def _setup(cfg=CFG, seed=0, B=2, N=9, D=5, C=4):
    torch.manual_seed(seed)
    net = StarNet(feat_dim=D, num_classes=C, cfg=cfg).double().eval()
    feats = torch.randn(B, N, D, dtype=torch.float64)
    mask = torch.ones(B, N, dtype=torch.bool)
    mask[1, 6:] = False
    labels = torch.tensor([[2, 0, C], [1, C, -1]])
    return net, feats, mask, labels


def _scores_with_pattern_offset(net, feats, mask, labels, step, offset):
    """d_t for the labels' classes, with ``offset`` (B, D) added to x_t of step ``step`` only."""
    calls = {"n": 0}

    def hook(module, args, out):
        t = calls["n"]
        calls["n"] += 1
        if t == step:
            return out._replace(pattern=out.pattern + offset)
        return out

    h = net.assembler.register_forward_hook(hook)
    try:
        targets = torch.where(labels < 0, torch.full_like(labels, -100), labels)
        with torch.no_grad():
            out = net(feats, mask, targets)
    finally:
        h.remove()
    return out.step_logits.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # (B, T)


@pytest.mark.parametrize("norm", ["sum", "none"])
def test_weights_equal_finite_differences(norm):
    net, feats, mask, labels = _setup(dataclasses.replace(CFG, assembly_norm=norm))
    cam = st_gradcam(net, feats, mask, labels)
    B, T = labels.shape
    eps = 1e-6
    for t in range(T):
        for k in range(feats.shape[-1]):
            off = torch.zeros(B, feats.shape[-1], dtype=torch.float64)
            off[:, k] = eps
            up = _scores_with_pattern_offset(net, feats, mask, labels, t, off)[:, t]
            down = _scores_with_pattern_offset(net, feats, mask, labels, t, -off)[:, t]
            fd = (up - down) / (2 * eps)
            for b in range(B):
                if labels[b, t] >= 0:
                    assert cam.weights[b, t, k].item() == pytest.approx(fd[b].item(), rel=1e-5, abs=1e-8)
                else:
                    assert cam.weights[b, t, k].item() == 0.0
    base = _scores_with_pattern_offset(net, feats, mask, labels, -1, None)
    torch.testing.assert_close(cam.scores, base * (labels >= 0))


def test_eq12_identity_and_xi_is_derivative_wrt_assembly_weight():
    net, feats, mask, labels = _setup()
    cam = st_gradcam(net, feats, mask, labels)
    # Eq. 12: Σ_k w x_t = Σ_i ã ξ exactly (the rest of d_t is the bias term)
    lhs = (cam.weights * cam.patterns).sum(-1)
    rhs = (cam.assembly * cam.xi).sum(-1)
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)
    # Eq. 13: ξ_i = ∂d_t/∂ã_i (first order): raise ã_{t,i} by ε, i.e. x_t += ε s_i
    eps = 1e-6
    B, T = labels.shape
    for t in range(T):
        for i in (0, 3, 7):
            off = eps * feats[:, i] * mask[:, i, None]
            fd = (
                _scores_with_pattern_offset(net, feats, mask, labels, t, off)
                - _scores_with_pattern_offset(net, feats, mask, labels, t, -off)
            )[:, t] / (2 * eps)
            for b in range(B):
                if labels[b, t] >= 0:
                    assert cam.xi[b, t, i].item() == pytest.approx(fd[b].item(), rel=1e-5, abs=1e-8)
    assert (cam.xi[1, :, 6:] == 0).all()  # padding


def test_batched_equals_single_video():
    net, feats, mask, labels = _setup()
    cam = st_gradcam(net, feats, mask, labels)
    one = st_gradcam(net, feats[1:, :6], mask[1:, :6], labels[1:, :2])
    torch.testing.assert_close(cam.xi[1, :2, :6], one.xi[0], rtol=1e-9, atol=1e-9)


def test_hooks_are_removed_and_model_untouched():
    net, feats, mask, labels = _setup()
    params = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():  # works under a caller's no_grad
        st_gradcam(net, feats, mask, labels)
    assert len(net.cell._forward_pre_hooks) == 0
    assert all(torch.equal(params[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    with pytest.raises(RuntimeError):
        with record_cell_inputs(net):
            raise RuntimeError("boom")
    assert len(net.cell._forward_pre_hooks) == 0


def test_attended_score_range():
    net, feats, mask, labels = _setup()
    cam = st_gradcam(net, feats, mask, labels)
    s = attended_score(cam.attention, cam.xi)
    assert ((s >= 0) & (s <= cam.attention)).all()
    assert (s[1, :, 6:] == 0).all()
