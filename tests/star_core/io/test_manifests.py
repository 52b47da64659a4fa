"""Run manifests (star_core.io.manifests) on every backend."""

from __future__ import annotations

import pytest

from star_core.io import manifests


def test_manifests_round_trip_and_concatenate(lake):
    rows = [
        manifests.manifest_row("extract", "r1", "s3://a/v1.mp4", "done", duration_s=1.5, n_segments=7, output="features/x/part-1.parquet"),
        manifests.manifest_row("extract", "r1", "s3://a/v2.mp4", "failed", reason="VideoDecodeError: no video stream"),
        manifests.manifest_row("extract", "r1", "s3://a/v3.mp4", "skipped", reason="features exist"),
    ]
    path = manifests.write_manifest(lake, "extract", "r1", rows)
    assert path == lake.manifest_path("extract", "r1")
    back = manifests.read_manifest(lake, "extract", "r1")
    assert back.column("status").to_pylist() == ["done", "failed", "skipped"]
    assert back.column("reason").to_pylist()[1] == "VideoDecodeError: no video stream"
    assert back.column("n_segments").to_pylist() == [7, None, None]
    manifests.write_manifest(lake, "extract", "r2", [])
    assert manifests.read_manifest(lake, "extract", "r2").num_rows == 0
    manifests.write_manifest(lake, "extract", "r1", rows[:2])  # a later checkpoint of the same run replaces it
    everything = manifests.read_manifests(lake, "extract")
    assert everything.num_rows == 2 and set(everything.column("run_id").to_pylist()) == {"r1"}
    with pytest.raises(FileNotFoundError, match="no manifest for extract run 'r9'"):
        manifests.read_manifest(lake, "extract", "r9")


def test_manifest_status_is_checked(lake):
    with pytest.raises(ValueError, match="status must be one of"):
        manifests.manifest_row("extract", "r1", "x", "ok")
    row = manifests.manifest_row("extract", "r1", "x", "done")
    with pytest.raises(ValueError, match=r"unknown status \['ok'\]"):
        manifests.write_manifest(lake, "extract", "r1", [row | {"status": "ok"}])
