"""Lakes on every backend the io layer supports: ``memory://``, a local directory, moto S3."""

from __future__ import annotations

import uuid

import numpy as np
import pytest

from star_core.data import VideoFeatures
from star_core.io.lake import Lake


@pytest.fixture(params=["memory", "local", pytest.param("s3", marks=pytest.mark.slow)])
def lake(request, tmp_path) -> Lake:
    """An empty lake on each backend (the S3 one on the moto server fixture)."""
    if request.param == "memory":
        uri = f"memory://lake-{uuid.uuid4().hex[:8]}"
    elif request.param == "local":
        uri = str(tmp_path / "lake")
    else:
        uri = request.getfixturevalue("s3_lake_uri")
    lk = Lake(uri)
    yield lk
    if request.param == "memory":
        lk.delete(lk.root)


def make_video(video_id: str, n_segments: int = 3, feat_dim: int = 4, seed: int = 0) -> VideoFeatures:
    """A small VideoFeatures with reproducible random values."""
    rng = np.random.default_rng(seed)
    return VideoFeatures(
        video_id=video_id,
        rgb=rng.standard_normal((n_segments, feat_dim)).astype(np.float32),
        flow=rng.standard_normal((n_segments, feat_dim)).astype(np.float32),
        fps=25.0,
        segment_frames=16,
        duration_s=n_segments * 16 / 25.0 - 0.1,
        source_uri=f"s3://archive/{video_id}.mp4",
    )
