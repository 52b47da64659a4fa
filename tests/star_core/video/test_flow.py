"""Optical flow: sign and scale on a known translation, clipping to DeepMind's [-20, 20] px range."""

from __future__ import annotations

import numpy as np
import pytest

from star_core.video.flow import FLOW_BOUND_PX, TVL1_PARAMS, FlowEstimator, scale_flow, to_gray
from tests.star_core.video.videos import moving_texture_frames


@pytest.mark.parametrize("method", ["tvl1", "farneback", "tvl1-torch"])
@pytest.mark.parametrize("dx,dy", [(3, 0), (0, 2), (-2, 1)])
def test_flow_sign_and_scale_on_translation(method, dx, dy):
    a, b = moving_texture_frames(2, 64, 64, dx, dy, seed=1)
    flow = FlowEstimator(method)(to_gray(a), to_gray(b))
    assert flow.shape == (64, 64, 2) and flow.dtype == np.float32
    centre = flow[16:48, 16:48].reshape(-1, 2)
    med = np.median(centre, axis=0)  # (dx, dy): positive = right / down
    assert med[0] == pytest.approx(dx, abs=0.25)
    assert med[1] == pytest.approx(dy, abs=0.25)
    scaled = scale_flow(flow)
    np.testing.assert_allclose(np.median(scaled[16:48, 16:48].reshape(-1, 2), axis=0), med / 20.0, atol=1e-6)


def test_identical_frames_have_no_motion():
    (a,) = moving_texture_frames(1, 48, 48, 0, 0)
    g = to_gray(a)
    flow = FlowEstimator("tvl1")(g, g)
    assert np.abs(flow).max() < 0.05


def test_scale_flow_clips_at_20_px():
    px = np.array([-50.0, -20.0, -10.0, 0.0, 5.0, 20.0, 35.0], np.float32)
    np.testing.assert_allclose(scale_flow(px), [-1, -1, -0.5, 0, 0.25, 1, 1])
    assert FLOW_BOUND_PX == 20.0


def test_tvl1_uses_the_listed_parameters():
    tv = FlowEstimator("tvl1")._tvl1
    assert (tv.getTau(), tv.getLambda(), tv.getTheta()) == pytest.approx((TVL1_PARAMS["tau"], TVL1_PARAMS["lambda_"], TVL1_PARAMS["theta"]))
    assert (tv.getScalesNumber(), tv.getWarpingsNumber(), tv.getMedianFiltering()) == (5, 5, 5)


def test_bad_method_and_shapes():
    with pytest.raises(ValueError, match="unknown flow method"):
        FlowEstimator("pwc")
    with pytest.raises(ValueError):
        FlowEstimator("farneback")(np.zeros((8, 8), np.uint8), np.zeros((8, 9), np.uint8))
