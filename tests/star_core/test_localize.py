"""Score maps, thresholds (rank/log/linear), proposals, scoring and 1-D NMS: golden values."""

from __future__ import annotations

import numpy as np
import pytest

from star_core.localize import (
    Proposal,
    localize_step,
    nms_1d,
    nms_per_class,
    normalise_score,
    proposals_from_score,
    runs_above,
    score_interval,
    score_maps,
)
from star_core.model.config import LocalizeConfig


def test_runs_above():
    assert runs_above(np.array([0, 1, 1, 0, 1, 0, 1, 1], dtype=bool)) == [(1, 2), (4, 4), (6, 7)]
    assert runs_above(np.zeros(3, dtype=bool)) == []
    assert runs_above(np.ones(3, dtype=bool)) == [(0, 2)]


def test_normalise_score_spaces():
    s = np.array([0.1, 0.4, 0.4, 1.0])
    np.testing.assert_allclose(normalise_score(s, "linear"), [0.0, 1 / 3, 1 / 3, 1.0])
    np.testing.assert_allclose(normalise_score(s, "rank"), [0.0, 1.5 / 3, 1.5 / 3, 1.0])  # ties share the mean rank
    np.testing.assert_allclose(normalise_score(s, "log"), np.log(s / 0.1) / np.log(10))
    np.testing.assert_allclose(normalise_score(np.full(3, 0.2), "linear"), [1, 1, 1])
    with pytest.raises(ValueError, match="threshold_space"):
        normalise_score(s, "sqrt")


def test_peaked_map_rank_and_log_thresholds_recover_the_action():
    # action on segments 10..19 with a sharp peak at 14: linear min-max sees only the peak
    score = np.full(40, 1e-4)
    score[10:20] = 1e-2
    score[14] = 1.0
    lin = proposals_from_score(score, [0.1, 0.3, 0.5], "linear")
    assert lin == [(14, 14)]
    assert (10, 19) in proposals_from_score(score, [0.5, 0.7], "log")
    assert (10, 19) in proposals_from_score(score, [0.75], "rank")


def test_proposals_min_length_and_dedup():
    score = np.array([0.0, 0.9, 0.0, 0.8, 0.8, 0.8, 0.0])
    assert proposals_from_score(score, [0.5, 0.6], "linear", min_length=1) == [(1, 1), (3, 5)]
    assert proposals_from_score(score, [0.5], "linear", min_length=2) == [(3, 5)]


def test_score_interval():
    s = np.array([0.0, 0.0, 1.0, 1.0, 0.5, 0.0, 0.0, 0.0])
    assert score_interval(s, 2, 4) == pytest.approx(2.5 / 3)  # Eq. 14 mean
    # contrast: flank length max(1, 3 // 4) = 1: outer = mean(s[1], s[5]) = 0
    assert score_interval(s, 2, 4, "contrast") == pytest.approx((1 + 2.5 / 3) / 2)
    assert score_interval(s, 0, 7, "contrast") == pytest.approx((1 + 2.5 / 8) / 2)  # no flanks
    with pytest.raises(ValueError):
        score_interval(s, 0, 1, "max")


def test_nms_1d_hand_computed():
    starts = np.array([0.0, 1.0, 10.0, 0.0])
    ends = np.array([10.0, 11.0, 20.0, 4.0])
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    # order 3 (0-4), 0 (0-10): tIoU(0-4, 0-10) = .4 <= .5 keep; 1 (1-11) vs 0: 9/11 > .5 drop; 2 keep
    assert nms_1d(starts, ends, scores, 0.5) == [3, 0, 2]
    # at 0.3: 0 is suppressed by 3 (.4); 1 survives (tIoU to 3 = 3/11 = .27); 2 vs 1: 1/19
    assert nms_1d(starts, ends, scores, 0.3) == [3, 1, 2]
    assert nms_1d(np.zeros(0), np.zeros(0), np.zeros(0), 0.5) == []


def test_nms_per_class_keeps_classes_apart():
    props = [Proposal(0, 0, 9, 0.9), Proposal(1, 0, 9, 0.8), Proposal(0, 1, 9, 0.5), Proposal(1, 20, 29, 0.7)]
    kept = nms_per_class(props, 0.5, max_keep=10)
    assert [(p.class_idx, p.start_idx, p.score) for p in kept] == [(0, 0, 0.9), (1, 0, 0.8), (1, 20, 0.7)]
    assert len(nms_per_class(props, 0.5, max_keep=2)) == 2


def test_score_maps_localizers():
    a_rgb, a_flow = np.array([0.2, 0.8]), np.array([0.6, 0.4])
    xi_rgb, xi_flow = np.array([0.0, 100.0]), np.array([-100.0, 0.0])
    fused = 0.25 * a_rgb + 0.75 * a_flow
    (att,) = score_maps("attention", 0.25, a_rgb, a_flow)
    np.testing.assert_allclose(att, fused)
    g_rgb, g_flow = score_maps("gradcam", 0.25, a_rgb, a_flow, xi_rgb, xi_flow)
    np.testing.assert_allclose(g_rgb, [0.5, 1.0])
    np.testing.assert_allclose(g_flow, [0.0, 0.5], atol=1e-12)
    ag_rgb, ag_flow = score_maps("attended_gradcam", 0.25, a_rgb, a_flow, xi_rgb, xi_flow)
    np.testing.assert_allclose(ag_rgb, fused * [0.5, 1.0])
    np.testing.assert_allclose(ag_flow, fused * [0.0, 0.5], atol=1e-12)
    with pytest.raises(ValueError, match="localizer"):
        score_maps("cam", 0.5, a_rgb, a_flow)


def test_localize_step_scores_with_class_probability():
    m = np.array([0.0, 0.0, 1.0, 1.0, 0.0])
    cfg = LocalizeConfig(thresholds=(0.5,), threshold_space="linear", class_score_weight=1.0)
    (p,) = localize_step([m], class_idx=3, class_prob=0.5, cfg=cfg)
    assert p == Proposal(3, 2, 3, 0.5)
    cfg0 = LocalizeConfig(thresholds=(0.5,), threshold_space="linear", class_score_weight=0.0)
    assert localize_step([m], 3, 0.5, cfg0)[0].score == pytest.approx(1.0)


def test_logit_space_undoes_sigmoid_saturation():
    xi = np.array([-4.0, 0.0, 6.0, 12.0, 2.0])
    m = 1.0 / (1.0 + np.exp(-xi))
    np.testing.assert_allclose(normalise_score(m, "logit"), (xi + 4.0) / 16.0, atol=1e-9)


def test_attention_scale_max_equalises_streams():
    a_rgb, a_flow = np.array([0.01, 0.02]), np.array([0.5, 0.25])
    (raw,) = score_maps("attention", 0.5, a_rgb, a_flow)
    np.testing.assert_allclose(raw, [0.255, 0.135])
    (scaled,) = score_maps("attention", 0.5, a_rgb, a_flow, attention_scale="max")
    np.testing.assert_allclose(scaled, [0.75, 0.75])
    with pytest.raises(ValueError, match="attention_scale"):
        score_maps("attention", 0.5, a_rgb, a_flow, attention_scale="sum")
