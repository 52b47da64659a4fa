"""Dense optical flow between consecutive frames, scaled as the I3D flow stream expects.

DeepMind's flow input (kinetics-i3d README): grayscale frames, TV-L1 optical flow, values
truncated to [-20, 20] pixels, then rescaled to [-1, 1]. TV-L1 is OpenCV contrib's
``DualTVL1OpticalFlow`` with the parameters of the OpenCV implementation DeepMind used (its
defaults, written out here so a library change of defaults cannot silently change features).
Farneback is a much faster option for quick runs; its features are a different feature set
(the flow method is part of ``FeatureConfig.feature_set``) and must never be mixed with TV-L1's.
"tvl1-torch" is the same TV-L1 in PyTorch (``flow_torch.py``), batched and on any device; it agrees
with OpenCV's to ~0.01 px (docs/extraction.md) but is still its own feature set.

Channel order is (dx, dy) in pixels of the resized frame: positive dx = motion to the right,
positive dy = motion downwards, from frame i to frame i + 1.
"""

from __future__ import annotations

import cv2
import numpy as np

from star_core.video.config import FLOW_METHODS

FLOW_BOUND_PX = 20.0  # DeepMind's truncation bound (pixels)

# OpenCV DualTVL1OpticalFlow parameters (Zach et al. 2007 / Sanchez et al. 2013 TV-L1).
TVL1_PARAMS = {
    "tau": 0.25,  # time step of the numerical scheme
    "lambda_": 0.15,  # weight of the data term (smaller = smoother flow)
    "theta": 0.3,  # coupling of the two variables of the dual formulation
    "nscales": 5,  # pyramid levels
    "warps": 5,  # warpings per level
    "epsilon": 0.01,  # stopping threshold
    "innerIterations": 30,
    "outerIterations": 10,
    "scaleStep": 0.8,
    "gamma": 0.0,  # no illumination-change term
    "medianFiltering": 5,
    "useInitialFlow": False,
}

# Farneback: OpenCV's commonly used settings (pyramid 0.5 x 3 levels, 15 px window).
FARNEBACK_PARAMS = {"pyr_scale": 0.5, "levels": 3, "winsize": 15, "iterations": 3, "poly_n": 5, "poly_sigma": 1.2, "flags": 0}


class FlowEstimator:
    """``estimator(prev_gray, next_gray) -> (H, W, 2) float32`` flow in pixels (dx, dy)."""

    def __init__(self, method: str = "tvl1") -> None:
        if method not in FLOW_METHODS:
            raise ValueError(f"unknown flow method {method!r}; choose one of {FLOW_METHODS}")
        self.method = method
        self._tvl1 = None
        self._torch = None
        if method == "tvl1-torch":  # one pair at a time on the CPU; video extraction batches it (flow_torch.TorchTVL1)
            from star_core.video.flow_torch import TorchTVL1

            self._torch = TorchTVL1(device="cpu", batch_size=1)
        if method == "tvl1":
            if not hasattr(cv2, "optflow"):
                raise ImportError("TV-L1 flow needs OpenCV contrib (pip install opencv-contrib-python-headless)")
            p = TVL1_PARAMS
            tv = cv2.optflow.DualTVL1OpticalFlow_create()
            # Setters, not constructor keywords (the binding's keyword names differ between versions).
            tv.setTau(p["tau"])
            tv.setLambda(p["lambda_"])
            tv.setTheta(p["theta"])
            tv.setScalesNumber(p["nscales"])
            tv.setWarpingsNumber(p["warps"])
            tv.setEpsilon(p["epsilon"])
            tv.setInnerIterations(p["innerIterations"])
            tv.setOuterIterations(p["outerIterations"])
            tv.setScaleStep(p["scaleStep"])
            tv.setGamma(p["gamma"])
            tv.setMedianFiltering(p["medianFiltering"])
            tv.setUseInitialFlow(p["useInitialFlow"])
            self._tvl1 = tv

    def __call__(self, prev_gray: np.ndarray, next_gray: np.ndarray) -> np.ndarray:
        if prev_gray.shape != next_gray.shape or prev_gray.ndim != 2:
            raise ValueError(f"flow needs two grayscale frames of one size, got {prev_gray.shape} and {next_gray.shape}")
        if self._torch is not None:
            from star_core.video.flow_torch import flow_numpy

            flow = flow_numpy(prev_gray, next_gray, self._torch)
        elif self._tvl1 is not None:
            flow = self._tvl1.calc(prev_gray, next_gray, None)
        else:
            p = FARNEBACK_PARAMS
            flow = cv2.calcOpticalFlowFarneback(
                prev_gray,
                next_gray,
                None,
                p["pyr_scale"],
                p["levels"],
                p["winsize"],
                p["iterations"],
                p["poly_n"],
                p["poly_sigma"],
                p["flags"],
            )
        return flow.astype(np.float32, copy=False)  # (H, W, 2)


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma (ITU-R BT.601, as OpenCV)."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def scale_flow(flow_px: np.ndarray, bound_px: float = FLOW_BOUND_PX) -> np.ndarray:
    """Clip to [-bound, bound] pixels and scale to [-1, 1]: the I3D flow stream's input range."""
    return np.clip(flow_px, -bound_px, bound_px) / bound_px
