"""The Ray extract job end to end: moto S3 + the `ray start` cluster, tiny generated videos, random I3D.

Videos are 64x64, 0.6-1.2 s (1-2 segments), Farneback flow and a 64-pixel crop, so the real I3D
runs on CPU in seconds. Every run is compared with the single-process extractor.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from jobs.extract import ExtractRunResult, extract, feature_set_of
from star_core.data import Instance
from star_core.io import feature_store, manifests, schemas
from star_core.io.lake import Lake
from star_core.synth_video import make_video
from star_core.video.config import FeatureConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FEATURES = FeatureConfig(flow="farneback", resize_short_side=64, crop_size=64, batch_segments=8)
DURATIONS_S = {"clip_a": 0.64, "clip_b": 1.0, "clip_c": 0.8, "clip_d": 1.2}  # 16-30 frames: 1-2 segments
OVERRIDES = ["features.flow=farneback", "features.resize_short_side=64", "features.crop_size=64"]


@pytest.fixture(scope="module")
def archive(s3, tmp_path_factory):
    """Four tiny videos plus a truncated one, on S3 (``videos``) and locally (for the reference)."""
    local = tmp_path_factory.mktemp("videos")
    prefix = f"s3://star/extract-job-{uuid.uuid4().hex[:8]}"
    store = Lake(prefix)
    for k, (vid, dur) in enumerate(DURATIONS_S.items()):
        v = make_video(local / f"{vid}.mp4", [Instance("BallBounce", 0.1, dur - 0.1)], dur, size=64, seed=k)
        store.write_bytes(store.path("videos", f"{vid}.mp4"), v.path.read_bytes())
    whole = (local / "clip_a.mp4").read_bytes()
    store.write_bytes(store.path("videos", "broken.mp4"), whole[: len(whole) // 2])  # an interrupted upload
    return {"local": local, "prefix": prefix, "videos": store.url("videos"), "store": store}


@pytest.fixture(scope="module")
def reference(archive):
    """Single-process features of the good videos (the same random I3D weights, seeded)."""
    from star_core.video import I3DExtractor, extract_video

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extractor = I3DExtractor(FEATURES, device="cpu")
    return {vid: extract_video(str(archive["local"] / f"{vid}.mp4"), vid, FEATURES, extractor) for vid in DURATIONS_S}


def _run(archive, lake_uri: str, ray_address: str, inputs=None, run_id: str | None = None) -> ExtractRunResult:
    from star_core.config import StarConfig, replace

    cfg = replace(
        StarConfig(features=FEATURES),
        **{
            "storage.lake_uri": lake_uri,
            "resources.ray_address": ray_address,
            "extract.shard_videos": 2,
            "extract.max_retries": 2,
            "extract.progress_every_s": 2.0,
        },
    )
    return extract(cfg, archive["videos"] if inputs is None else inputs, run_id=run_id)


def _assert_matches_reference(lake: Lake, reference: dict, video_ids) -> None:
    got = {v.video_id: v for v in feature_store.read_features(lake, feature_set_of(FEATURES))}
    assert sorted(got) == sorted(video_ids)
    for vid in video_ids:
        ref = reference[vid]
        assert got[vid].n_segments == ref.n_segments and got[vid].duration_s == pytest.approx(ref.duration_s)
        np.testing.assert_allclose(got[vid].rgb, ref.rgb, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got[vid].flow, ref.flow, rtol=1e-4, atol=1e-5)


def _rows_per_video(lake: Lake) -> dict[str, int]:
    """Rows of every shard file (not deduplicated): a duplicate would show as a count of 2."""
    counts: dict[str, int] = {}
    for path in lake.list_files(lake.features_dir(feature_set_of(FEATURES))):
        for vid in lake.read_table(path, schemas.FEATURES, columns=["video_id"]).column("video_id").to_pylist():
            counts[vid] = counts.get(vid, 0) + 1
    return counts


@pytest.fixture(scope="module")
def first_run(archive, ray_address) -> tuple[Lake, ExtractRunResult]:
    lake_uri = f"{archive['prefix']}/lake"
    return Lake(lake_uri), _run(archive, lake_uri, ray_address, run_id="first")


def test_extracts_to_s3_with_the_single_process_numbers(first_run, reference):
    lake, result = first_run
    assert (result.done, result.failed, result.skipped) == (4, 1, 0)
    assert result.n_segments == sum(v.n_segments for v in reference.values())
    assert len(result.outputs) == 2 and all(o.startswith("s3://star/") for o in result.outputs)  # 4 videos, shards of 2
    _assert_matches_reference(lake, reference, list(DURATIONS_S))
    assert _rows_per_video(lake) == {vid: 1 for vid in DURATIONS_S}
    sources = {v.video_id: v.source_uri for v in feature_store.read_features(lake, feature_set_of(FEATURES))}
    assert sources["clip_a"] == f"{lake.uri.rsplit('/lake', 1)[0]}/videos/clip_a.mp4"


def test_a_corrupt_video_is_recorded_failed_with_its_reason(first_run):
    lake, result = first_run
    manifest = manifests.read_manifest(lake, "extract", "first")
    assert result.manifest == lake.url("manifests", "extract", "first.parquet")
    rows = {r["input"].rsplit("/", 1)[-1]: r for r in manifest.to_pylist()}
    assert sorted(rows) == ["broken.mp4", "clip_a.mp4", "clip_b.mp4", "clip_c.mp4", "clip_d.mp4"]
    assert rows["broken.mp4"]["status"] == "failed"
    assert rows["broken.mp4"]["reason"].startswith("TruncatedVideoError: ")
    assert result.failures == [{"input": rows["broken.mp4"]["input"], "reason": rows["broken.mp4"]["reason"]}]
    for name in ("clip_a.mp4", "clip_b.mp4", "clip_c.mp4", "clip_d.mp4"):
        row = rows[name]
        assert row["status"] == "done" and row["n_segments"] >= 1 and row["duration_s"] > 0
        assert row["output"] in result.outputs


def test_a_rerun_with_nothing_missing_does_nothing(first_run, archive, ray_address, tmp_path):
    lake, _ = first_run
    before = {p: lake.fs.info(p)["LastModified"] for p in lake.list_files(lake.features_dir(feature_set_of(FEATURES)))}
    listing = tmp_path / "good.txt"  # a list file of the four good videos
    listing.write_text("".join(f"{archive['videos']}/{vid}.mp4\n" for vid in DURATIONS_S))
    t0 = time.monotonic()
    again = _run(archive, lake.uri, ray_address, inputs=f"@{listing}", run_id="again")
    assert (again.done, again.failed, again.skipped, again.outputs) == (4 - 4, 0, 4, [])
    assert time.monotonic() - t0 < 15  # no Ray work at all: listing and the feature index only
    after = {p: lake.fs.info(p)["LastModified"] for p in lake.list_files(lake.features_dir(feature_set_of(FEATURES)))}
    assert after == before
    statuses = manifests.read_manifest(lake, "extract", "again").column("status").to_pylist()
    assert statuses == ["skipped"] * 4


def test_crashed_workers_are_retried_without_duplicate_rows(archive, reference, ray_address, s3_lake_uri, tmp_path, monkeypatch):
    """A decode task and an I3D actor each die once (os._exit); both videos still land exactly once."""
    markers = {"prepare": tmp_path / "prepare-crashed", "embed": tmp_path / "embed-crashed"}
    monkeypatch.setenv("STAR_EXTRACT_FAULT", f"prepare:clip_a:{markers['prepare']},embed:clip_b:{markers['embed']}")
    listing = tmp_path / "two.txt"
    listing.write_text(f"{archive['videos']}/clip_a.mp4\n{archive['videos']}/clip_b.mp4\n")
    result = _run(archive, s3_lake_uri, ray_address, inputs=f"@{listing}", run_id="crashy")
    assert markers["prepare"].exists() and markers["embed"].exists()  # the faults did fire
    assert (result.done, result.failed) == (2, 0), result.failures
    lake = Lake(s3_lake_uri)
    assert _rows_per_video(lake) == {"clip_a": 1, "clip_b": 1}
    _assert_matches_reference(lake, reference, ["clip_a", "clip_b"])


def test_a_killed_run_started_again_does_only_what_is_missing(archive, reference, ray_address, s3_lake_uri):
    lake = Lake(s3_lake_uri)
    features_dir = lake.features_dir(feature_set_of(FEATURES))
    cmd = [
        sys.executable,
        "-m",
        "star_cli",
        "extract",
        "--ray",
        archive["videos"],
        "--lake",
        s3_lake_uri,
        "--run-id",
        "killed",
        "--shard-videos",
        "1",
        "--prepare-in-flight",
        "1",
    ]
    for item in OVERRIDES:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and proc.poll() is None and not lake.list_files(features_dir):
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed:\n" + proc.stdout.read().decode()[-3000:]
        assert lake.list_files(features_dir), "no shard was written in time"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-run (its Ray tasks and actors go with it)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    first = set(feature_store.feature_index(lake, feature_set_of(FEATURES)).column("video_id").to_pylist())
    assert 1 <= len(first) < 4
    resumed = _run(archive, s3_lake_uri, ray_address, run_id="resumed")
    assert resumed.skipped == len(first) and resumed.done == 4 - len(first) and resumed.failed == 1
    manifest = manifests.read_manifest(lake, "extract", "resumed")
    done = manifest.filter(pc.equal(manifest.column("status"), "done")).column("input").to_pylist()
    assert sorted(u.rsplit("/", 1)[-1][:-4] for u in done) == sorted(set(DURATIONS_S) - first)
    assert _rows_per_video(lake) == {vid: 1 for vid in DURATIONS_S}
    _assert_matches_reference(lake, reference, list(DURATIONS_S))


def test_a_missing_input_is_a_failed_input_and_the_batch_goes_on(archive, reference, ray_address, tmp_path):
    """A missing file among good inputs: its manifest row says why, the good video is extracted."""
    missing, good = str(tmp_path / "none.mp4"), str(archive["local"] / "clip_c.mp4")
    lake = Lake(str(tmp_path / "lake"))
    result = _run(archive, lake.uri, ray_address, inputs=[missing, good], run_id="missing")
    assert (result.done, result.failed, result.skipped) == (1, 1, 0)
    rows = {r["input"]: r for r in manifests.read_manifest(lake, "extract", "missing").to_pylist()}
    assert rows[missing]["status"] == "failed"
    assert rows[missing]["reason"].startswith("MissingInputError: input") and "does not exist" in rows[missing]["reason"]
    assert result.failures == [{"input": missing, "reason": rows[missing]["reason"]}]
    assert [r["status"] for u, r in rows.items() if u != missing] == ["done"]
    _assert_matches_reference(lake, reference, ["clip_c"])


def test_bad_configs_are_clear_errors_and_missing_inputs_are_recorded(tmp_path):
    lake = str(tmp_path / "lake")
    cmd = [sys.executable, "-m", "star_cli", "extract", "--ray", "x", "--lake", lake, "--shard-videos", "0"]
    bad = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("star extract: error: ") and "invalid shard_videos=0" in bad.stderr
    # only missing inputs: the run records them (no Ray needed); --fail-on-error turns that into exit 1
    cmd = [
        sys.executable,
        "-m",
        "star_cli",
        "extract",
        "--ray",
        str(tmp_path / "none"),
        "--lake",
        lake,
        "--run-id",
        "gone",
        "--fail-on-error",
        "--json",
    ]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stderr[-2000:]
    summary = json.loads(out.stdout[out.stdout.index("{") :])  # --json: the summary, indented
    assert (summary["done"], summary["failed"]) == (0, 1)
    assert summary["failures"][0]["input"] == str(tmp_path / "none") and "does not exist" in summary["failures"][0]["reason"]
    rows = manifests.read_manifest(Lake(lake), "extract", "gone").to_pylist()
    assert [(r["input"], r["status"], r["reason"]) for r in rows] == [(str(tmp_path / "none"), "failed", summary["failures"][0]["reason"])]
