"""STAR: Segregated Temporal Assembly Recurrent networks for weakly-supervised action detection.

Pure computational core (torch, numpy, PyAV, OpenCV). Storage lives in ``star_core.io``;
Ray, MLflow and Prefect live in ``jobs`` and ``flows``.

Shape letters used in comments throughout the package:
    B: batch (videos)
    N: segments (16-frame feature units, the paper's s_i)
    T: recurrent steps (assembled instance-patterns x_t)
    D: feature dim (1024 per I3D stream)
    C: classes (without the end-of-sequence class; logits have C + 1 entries)
"""

__version__ = "0.1.0"
