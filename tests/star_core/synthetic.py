"""Tiny synthetic two-stream videos with known action intervals, for model-core tests.

Each class has a random prototype direction per stream; action segments are noise + ``signal`` ×
prototype. Background segments are noise + ``distractor`` × the prototype of a random class that is
*not* in the video (a different one per segment): background that resembles other actions, as in
real videos, so an attention that takes background in is pushed towards wrong classes (with
pure-noise background any attention pattern classifies, and localization is not identifiable
from video-level labels). ``context`` adds a video-specific background vector (a random mix of
class directions, constant over the video's background): it survives pooling, so classifying
from the video mean fails and the attention has to single out the action. Segment grid: 16 frames at 25 fps (0.64 s per segment).
"""

from __future__ import annotations

import numpy as np

from star_core.data import Instance, VideoFeatures, VideoLabels


def make_videos(
    n_videos: int = 12,
    n_classes: int = 4,
    feat_dim: int = 16,
    n_segments: tuple[int, int] = (40, 60),
    max_labels: int = 2,
    seed: int = 0,
    signal: float = 2.0,
    noise: float = 0.5,
    distractor: float = 0.7,
    context: float = 0.0,
) -> tuple[tuple[str, ...], list[tuple[VideoFeatures, VideoLabels]]]:
    rng = np.random.default_rng(seed)
    classes = tuple(f"action{c}" for c in range(n_classes))
    protos = {s: rng.normal(size=(n_classes, feat_dim)) for s in ("rgb", "flow")}
    for s in protos:
        protos[s] /= np.linalg.norm(protos[s], axis=1, keepdims=True)
    pairs = []
    step_s = 16 / 25.0
    for v in range(n_videos):
        n = int(rng.integers(n_segments[0], n_segments[1] + 1))
        k = int(rng.integers(1, max_labels + 1))
        labs = rng.choice(n_classes, size=k, replace=False)
        feats = {s: rng.normal(scale=noise, size=(n, feat_dim)).astype(np.float32) for s in protos}
        free = np.ones(n, dtype=bool)
        instances = []
        counts = []
        for c in labs:
            n_inst = int(rng.integers(1, 3))
            placed = 0
            for _ in range(50):
                if placed == n_inst:
                    break
                length = int(rng.integers(4, 9))
                start = int(rng.integers(0, n - length))
                if not free[max(0, start - 1) : start + length + 1].all():
                    continue
                free[start : start + length] = False
                for s in protos:
                    feats[s][start : start + length] += signal * protos[s][c]
                instances.append(Instance(classes[c], start * step_s, (start + length) * step_s))
                placed += 1
            counts.append(placed)
        bg = np.flatnonzero(free)
        if context > 0:
            # video-specific background content (scene): a random mix of class directions, the same on
            # every background segment of the video, so it does not average out of a pooled pattern
            mix = rng.normal(size=n_classes) * context
            for s in protos:
                feats[s][bg] += (mix @ protos[s]).astype(np.float32)
        absent = np.setdiff1d(np.arange(n_classes), labs)
        if absent.size:
            other = absent[rng.integers(0, absent.size, size=bg.size)]
            for s in protos:
                feats[s][bg] += distractor * protos[s][other]
        vid = f"video_{v:03d}"
        pairs.append(
            (
                VideoFeatures(vid, feats["rgb"], feats["flow"], fps=25.0, segment_frames=16, duration_s=n * step_s),
                VideoLabels(vid, "train", tuple(classes[c] for c in labs), tuple(counts), tuple(instances), duration_s=n * step_s),
            )
        )
    return classes, pairs
