"""I3D layers against independent reference computations (explicit padding + conv, the BN formula)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from star_core.video.i3d import BN_EPS, InceptionI3d, MaxPool3dSame, Unit3D, same_padding


def test_same_padding_matches_tf_rule():
    # Hand-worked TF SAME cases: out = ceil(n / s), total = (out - 1) * s + k - n, front = total // 2.
    assert same_padding(224, 7, 2) == (2, 3)  # 112 outputs: total 5
    assert same_padding(10, 7, 2) == (2, 3)
    assert same_padding(9, 7, 2) == (3, 3)
    assert same_padding(8, 3, 2) == (0, 1)
    assert same_padding(7, 3, 2) == (1, 1)
    assert same_padding(16, 2, 2) == (0, 0)
    assert same_padding(5, 2, 2) == (0, 1)
    assert same_padding(16, 1, 1) == (0, 0)
    assert same_padding(16, 3, 1) == (1, 1)


def _bn_ref(x, bn):
    shape = (1, -1, 1, 1, 1)
    return (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + 1e-3) * bn.weight.view(shape) + bn.bias.view(shape)


def _randomise_bn(bn, gen):
    c = bn.num_features
    with torch.no_grad():
        bn.running_mean.copy_(torch.randn(c, generator=gen))
        bn.running_var.copy_(torch.rand(c, generator=gen) * 2 + 0.1)
        bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=gen))


def test_unit3d_stride2_parity_with_explicit_pad_conv_bn():
    gen = torch.Generator().manual_seed(0)
    unit = Unit3D(3, 8, (7, 7, 7), (2, 2, 2)).eval()
    _randomise_bn(unit.bn, gen)
    x = torch.randn(2, 3, 5, 10, 9, generator=gen)  # T=5, H=10, W=9
    # T=5,k=7,s=2: out 3, total 6 -> (3,3); H=10: out 5, total 5 -> (2,3); W=9: out 5, total 6 -> (3,3)
    ref = F.conv3d(F.pad(x, (3, 3, 2, 3, 3, 3)), unit.conv3d.weight, stride=2)
    ref = torch.relu(_bn_ref(ref, unit.bn))
    with torch.no_grad():
        out = unit(x)
    assert out.shape == (2, 8, 3, 5, 5)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    assert unit.bn.eps == BN_EPS == 1e-3


def test_unit3d_stride1_keeps_size_and_bias_head():
    gen = torch.Generator().manual_seed(1)
    unit = Unit3D(4, 5, (3, 3, 3)).eval()
    _randomise_bn(unit.bn, gen)
    x = torch.randn(1, 4, 4, 6, 7, generator=gen)
    ref = torch.relu(_bn_ref(F.conv3d(F.pad(x, (1, 1, 1, 1, 1, 1)), unit.conv3d.weight), unit.bn))
    with torch.no_grad():
        torch.testing.assert_close(unit(x), ref, rtol=1e-5, atol=1e-5)
    head = Unit3D(4, 3, activation=None, use_bn=False, use_bias=True)
    with torch.no_grad():
        torch.testing.assert_close(head(x), F.conv3d(x, head.conv3d.weight, head.conv3d.bias))
    assert head.bn is None and (head(x) < 0).any()  # no ReLU on the logits


def test_maxpool_same_ignores_padding():
    x = -1.0 - torch.rand(1, 2, 5, 8, 7)  # all negative: zero padding would win the max
    pool = MaxPool3dSame((3, 3, 3), (2, 2, 2))
    # T=5: out 3, total 2 -> (1,1); H=8: out 4, total 1 -> (0,1); W=7: out 4, total 2 -> (1,1)
    ref = F.max_pool3d(F.pad(x, (1, 1, 0, 1, 1, 1), value=float("-inf")), 3, 2)
    out = pool(x)
    assert out.shape == (1, 2, 3, 4, 4)
    torch.testing.assert_close(out, ref)
    assert (out < -1.0).all()


def test_model_shapes_and_piergiaj_names():
    model = InceptionI3d(in_channels=2, num_classes=7).eval()
    keys = set(model.state_dict())
    for k in (
        "Conv3d_1a_7x7.conv3d.weight",
        "Conv3d_1a_7x7.bn.running_var",
        "Conv3d_2c_3x3.bn.bias",
        "Mixed_3b.b0.conv3d.weight",
        "Mixed_4f.b1b.bn.running_mean",
        "Mixed_5b.b2b.conv3d.weight",
        "Mixed_5c.b3b.bn.weight",
        "logits.conv3d.weight",
        "logits.conv3d.bias",
    ):
        assert k in keys, k
    # 3 stem units + 9 modules x 6 units, 6 entries per BN unit (weight + 5 BN tensors), plus the 2 logits tensors.
    assert len(keys) == (3 + 9 * 6) * 6 + 2
    x = torch.randn(2, 2, 16, 32, 32)
    with torch.no_grad():
        h = model.mixed_5c(x)
        assert h.shape == (2, 1024, 2, 1, 1)
        torch.testing.assert_close(model.features(x), h.mean(dim=(2, 3, 4)))
        assert model(x).shape == (2, 7)
