"""`star extract --flow tvl1-torch` end to end on the CPU: single process, and through the Ray job (CPU actor).

On a GPU cluster the same path runs with ``--gpu``: the decode tasks ship resized frames, the actor uploads
them once and computes flow and both I3D streams on its device (star_core/video/extract.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from star_cli.cli import main
from star_core.io import feature_store
from star_core.io.lake import Lake
from tests.star_core.video.videos import moving_texture_frames, write_video

TINY = ["--flow", "tvl1-torch", "--set", "features.resize_short_side=40", "--set", "features.crop_size=32"]


@pytest.fixture()
def clip(tmp_path):
    return write_video(tmp_path / "pan.mp4", moving_texture_frames(20, 48, 64, 2, 1, seed=5), fps=25)  # 20 frames: 2 segments


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # no OpenMP spin-waiting on a shared 2-core box
    yield
    torch.set_num_threads(before)


def _summary(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{"):])


def _features(lake_uri: str, feature_set: str) -> dict:
    return {f.video_id: f for f in feature_store.read_features(Lake(lake_uri), feature_set)}


@pytest.mark.slow
def test_star_extract_with_torch_tvl1_single_process_and_ray(tmp_path, clip, capsys, ray_address):
    local_lake, ray_lake = str(tmp_path / "lake"), str(tmp_path / "ray-lake")
    with pytest.warns(UserWarning, match="RANDOM weights"):
        rc = main(["extract", str(clip), "--lake", local_lake, *TINY, "--device", "cpu", "--json"])
    local = _summary(capsys)
    assert rc == 0 and local["done"] == 1 and local["n_segments"] == 2
    assert local["feature_set"].startswith("i3d-tvl1-torch-")

    rc = main(["extract", str(clip), "--lake", ray_lake, "--ray", "--ray-address", ray_address, *TINY, "--json"])
    distributed = _summary(capsys)
    assert rc == 0 and distributed["done"] == 1 and distributed["feature_set"] == local["feature_set"]

    a = _features(local_lake, local["feature_set"])["pan"]
    b = _features(ray_lake, local["feature_set"])["pan"]
    assert a.flow.shape == b.flow.shape == (2, 1024) and np.isfinite(a.flow).all()
    np.testing.assert_allclose(b.rgb, a.rgb, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.flow, a.flow, rtol=1e-3, atol=1e-4)  # same computation, another process

    # the OpenCV TV-L1 feature set is another one, and its flow features are close to these
    with pytest.warns(UserWarning):
        main(["extract", str(clip), "--lake", local_lake, *TINY, "--flow", "tvl1", "--device", "cpu", "--json"])
    opencv = _summary(capsys)
    assert opencv["feature_set"] != local["feature_set"] and opencv["done"] == 1
    c = _features(local_lake, opencv["feature_set"])["pan"]
    cos = (a.flow * c.flow).sum(1) / np.linalg.norm(a.flow, axis=1) / np.linalg.norm(c.flow, axis=1)
    assert (cos > 0.999).all()
