"""`star lake check [--quarantine]` and the readers' errors, on a lake with a really truncated Parquet file (local and moto S3)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from star_cli.cli import main as star
from star_core.data import VideoFeatures, VideoLabels
from star_core.io import datasets, feature_store
from star_core.io.lake import Lake


def _video(video_id: str) -> VideoFeatures:
    rng = np.random.default_rng(len(video_id))
    return VideoFeatures(video_id, rng.random((4, 8), dtype=np.float32), rng.random((4, 8), dtype=np.float32), duration_s=2.5)


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def broken_lake(request, tmp_path) -> tuple[Lake, str]:
    """A lake with two feature shards and a dataset, one shard truncated to half its size; returns (lake, bad path)."""
    uri = str(tmp_path / "lake") if request.param == "local" else request.getfixturevalue("s3_lake_uri")
    lake = Lake(uri)
    feature_store.write_features(lake, "fs", [_video("v0")])
    bad = feature_store.write_features(lake, "fs", [_video("v1")])
    datasets.save_dataset(lake, "toy", ["a"], [VideoLabels("v0", "test", ("a",), (1,)), VideoLabels("v1", "train", ("a",), (1,))])
    data = lake.read_bytes(bad)
    lake.fs.pipe_file(bad, data[: len(data) // 2])
    return lake, bad


def test_readers_name_the_bad_file_and_the_repair(broken_lake, capsys):
    lake, bad = broken_lake
    assert star(["datasets", "--lake", lake.uri]) == 2
    err = capsys.readouterr().err
    assert lake.uri_of(bad) in err and f"star lake check --lake {lake.uri} --quarantine" in err
    assert star(["query", "SELECT count(*) AS n FROM features", "--lake", lake.uri]) == 2
    err = capsys.readouterr().err
    assert f"lake file {lake.uri_of(bad)} is not a readable Parquet file" in err and "--quarantine" in err


def test_check_reports_then_quarantine_unblocks_the_lake(broken_lake, capsys):
    lake, bad = broken_lake
    rel = bad[len(lake.root) + 1:]
    assert star(["lake", "check", "--lake", lake.uri]) == 1
    out = capsys.readouterr().out
    assert f"unreadable: {lake.uri_of(bad)}: not a readable Parquet file" in out
    assert "checked 4 files, 1 bad" in out
    assert lake.exists(bad)  # a check alone moves nothing

    assert star(["lake", "check", "--lake", lake.uri, "--quarantine", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    (problem,) = report["problems"]
    assert problem["relative"] == rel and problem["moved_to"] == lake.uri_of(lake.path("quarantine", rel))
    assert not lake.exists(bad) and lake.exists(lake.path("quarantine", rel))

    assert star(["lake", "check", "--lake", lake.uri]) == 0
    assert "checked 3 files, 0 bad" in capsys.readouterr().out
    assert star(["datasets", "--lake", lake.uri, "--json"]) == 0
    (info,) = json.loads(capsys.readouterr().out)
    assert info["features"] == {"fs": {"test": 1}}  # v1's shard is in quarantine: only v0 has features
    assert star(["query", "SELECT count(*) AS n FROM features", "--lake", lake.uri, "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"n": 1}]
