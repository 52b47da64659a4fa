"""Bulk detection (jobs.detect) with real components.

Slow scenario: a moto S3 lake, the `ray start` cluster, a StarDetector trained for a few epochs
on synthetic features and registered in the MLflow server's registry (alias champion):
partitions, per-row failures, the MLflow run holding the Parquet's numbers, `star query` and
`star plot` on s3://, a rerun adding nothing, a later video being the only one processed.
Fast tests: the actor on corrupt rows and the "already processed" rule, without Ray.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import tracking
from star_cli.cli import main as star
from jobs.detect import RESULT_SCHEMA, DetectBatch, DetectInputs, DetectRunResult, detect, processed_before
from star_core.config import StarConfig, replace
from star_core.data import Instance, VideoFeatures, VideoLabels
from star_core.detector import StarDetector
from star_core.io import datasets, feature_store, manifests, schemas
from star_core.io.lake import Lake

D = 32  # feature dim of the synthetic features
CLASSES = ("CricketShot", "Diving")
DATE1, DATE2 = "2026-11-20", "2026-11-21"


def make_pair(video_id: str, label_idx: int, n: int = 24, seed: int = 0) -> tuple[VideoFeatures, VideoLabels]:
    """Synthetic two-stream features: the action's segments carry a class-specific offset."""
    rng = np.random.default_rng(seed)
    rgb = rng.normal(0, 1, (n, D)).astype(np.float32)
    flow = rng.normal(0, 1, (n, D)).astype(np.float32)
    start, end = n // 4, n // 4 + n // 3
    rgb[start:end, label_idx * 4 : label_idx * 4 + 4] += 3.0
    flow[start:end, label_idx * 4 : label_idx * 4 + 4] += 3.0
    label = CLASSES[label_idx]
    seg_s = 16 / 25.0
    video = VideoFeatures(video_id, rgb, flow, duration_s=n * seg_s, source_uri=f"s3://archive/{video_id}.mp4")
    gt = VideoLabels(video_id, "test", (label,), (1,), (Instance(label, start * seg_s, end * seg_s),), duration_s=n * seg_s)
    return video, gt


def tiny_config(epochs: int = 5) -> StarConfig:
    """A small STAR that learns the synthetic classes in a few epochs (high lr: few steps)."""
    return replace(
        StarConfig(),
        **{
            "train.epochs": epochs,
            "train.lr": 2e-2,
            "train.batch_size": 2,
            "train.sample_segments": 0,
            "model.hidden_dim": 16,
            "model.attn_dim": 8,
            "model.label_embed_dim": 4,
        },
    )


# ----- fast: the actor and the incremental rule, no Ray ------------------------------------
def _features_batch(videos: list[VideoFeatures]) -> pa.Table:
    return feature_store.features_to_table(videos, "fs").select([n for n in schemas.FEATURES.names])


def test_detect_batch_reports_corrupt_rows_and_keeps_the_rest():
    pairs = [make_pair(f"v{i}", i % 2, seed=i) for i in range(3)]
    nan_video = dataclasses.replace(pairs[2][0], video_id="bad_nan", rgb=pairs[2][0].rgb.copy())
    nan_video.rgb[3, 5] = np.nan
    table = _features_batch([p[0] for p in pairs] + [nan_video])
    # corrupt the length of v1: declare one segment more than stored
    n_seg = table.column("n_segments").to_pylist()
    n_seg[1] += 1
    table = table.set_column(table.schema.get_field_index("n_segments"), "n_segments", pa.array(n_seg, pa.int32()))
    detector = StarDetector(classes=CLASSES, feat_dim=D)

    def loader(uri):  # the real StarDetector, without the registry (the slow test uses the registry)
        return detector, tracking.ModelRef("star", "1", uri, None, CLASSES)

    actor = DetectBatch("models:/star/1", loader=loader)
    out = actor(table)
    assert out.schema == RESULT_SCHEMA and out.num_rows == 4
    rows = {r["video_id"]: r for r in out.to_pylist()}
    assert rows["v0"]["status"] == rows["v2"]["status"] == "done"
    assert rows["v1"]["status"] == "failed" and "expected n_segments*feat_dim = 25*32" in rows["v1"]["reason"]
    assert rows["bad_nan"]["status"] == "failed" and "NaN" in rows["bad_nan"]["reason"]
    # the good rows get exactly what the detector gives on its own
    expected = detector.detect(pairs[0][0])
    assert rows["v0"]["labels"] == [d.label for d in expected]
    assert rows["v0"]["t_start_s"] == pytest.approx([d.t_start_s for d in expected])
    # a wrong feature dim fails that video alone (batched detection falls back to per video)
    wide = VideoFeatures("wide", np.zeros((4, D + 1), np.float32), np.zeros((4, D + 1), np.float32))
    out = actor(_features_batch([wide, pairs[0][0]]))
    status = dict(zip(out.column("video_id").to_pylist(), out.column("status").to_pylist()))
    assert status == {"wide": "failed", "v0": "done"}
    assert "feature dim 33" in out.column("reason")[0].as_py()


def test_processed_before_counts_empty_done_and_latest_failure(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    part = lake.url("detections", "model=star-v1", "date=2026-11-20") + "/"
    other = lake.url("detections", "model=star-v10", "date=2026-11-20") + "/"
    rows = [
        manifests.manifest_row("detect", "r1", "empty", "done", output=part),  # no action found: no detection rows
        manifests.manifest_row("detect", "r1", "flaky", "failed", reason="x", output=part),
        manifests.manifest_row("detect", "r1", "v10only", "done", output=other),  # another model version
        manifests.manifest_row("detect", "r1", "broken", "failed", reason="NaN", output=part),
    ]
    manifests.write_manifest(lake, "detect", "r1", rows)
    manifests.write_manifest(lake, "detect", "r2", [manifests.manifest_row("detect", "r2", "flaky", "done", output=part)])
    done, failed = processed_before(lake, "star", "1")
    assert done == {"empty", "flaky"}
    assert set(failed) == {"broken"}


def test_config_rejects_bad_input():
    with pytest.raises(ValueError, match="either a dataset or a videos URI"):
        DetectInputs(dataset="a", videos="s3://b/")
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        DetectInputs(date="20-11-2026")


# ----- slow: the whole job on S3 + Ray + the MLflow registry -------------------------------
@pytest.fixture(scope="module")
def registered_model(mlflow_server):
    """models:/<unique name>@champion: a StarDetector fitted 5 epochs on synthetic features."""
    from star_core.train_loop import fit

    pairs = [make_pair(f"train{i}", i % 2, seed=100 + i) for i in range(6)]
    detector = fit(pairs, CLASSES, tiny_config())
    decoded = [sorted({d.label for d in dets}) for dets in detector.detect_batch([p[0] for p in pairs])]
    assert any(decoded), "the tiny model detects nothing on its own training videos: the scenario needs detections"
    name = f"star-detect-test-{uuid.uuid4().hex[:6]}"
    exp = tracking.ensure_experiment(mlflow_server, "star-detect-test-train")
    run_id = tracking.start_run(mlflow_server, exp, "train")
    ref = tracking.log_detector(mlflow_server, run_id, detector, name)
    tracking.end_run(mlflow_server, run_id)
    tracking.client(mlflow_server).set_registered_model_alias(name, "champion", ref.version)
    return name, ref.version


def _write_corrupt_length(lake: Lake, video: VideoFeatures) -> None:
    """A feature row whose rgb/flow hold fewer floats than n_segments*feat_dim says."""
    table = feature_store.features_to_table([video], "fs")
    table = table.set_column(table.schema.get_field_index("n_segments"), "n_segments", pa.array([video.n_segments + 2], pa.int32()))
    lake.write_table(f"{lake.features_dir('fs')}/part-corrupt.parquet", table, schemas.FEATURES)


def _detection_files(lake: Lake) -> list[str]:
    return lake.list_files(lake.path("detections"))


def _parquet_rows(lake: Lake, files: list[str]) -> pa.Table:
    """The detections as the Parquet files hold them, read with pyarrow straight from S3."""
    return pa.concat_tables([pq.read_table(lake.fs.open(f, "rb")) for f in files])


@pytest.mark.slow
def test_detect_on_s3_with_registry_incremental(s3_lake_uri, ray_address, mlflow_server, registered_model, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    name, version = registered_model
    lake = Lake(s3_lake_uri)
    pairs = [make_pair(f"v{i:02d}", i % 2, seed=i) for i in range(5)]
    bad_nan, gt_nan = make_pair("bad_nan", 0, seed=50)
    bad_nan.rgb[7, 3] = np.nan
    bad_len, gt_len = make_pair("bad_len", 1, seed=51)
    feature_store.write_features(lake, "fs", [p[0] for p in pairs[:3]] + [bad_nan])
    feature_store.write_features(lake, "fs", [p[0] for p in pairs[3:]])
    _write_corrupt_length(lake, bad_len)
    no_features = VideoLabels("nofeat", "test", ("Diving",), (1,))
    datasets.save_dataset(lake, "toy", CLASSES, [p[1] for p in pairs] + [gt_nan, gt_len, no_features])
    cfg = replace(
        StarConfig(),
        **{
            "storage.lake_uri": s3_lake_uri,
            "detect.model_uri": f"models:/{name}@champion",
            "resources.ray_address": ray_address,
            "detect.batch_size": 4,
            "detect.timelines_logged": 2,
        },
    )
    base = DetectInputs(dataset="toy")

    # --- first run: 5 processed, 2 corrupt rows reported, 1 video without features skipped
    r1 = detect(cfg, dataclasses.replace(base, date=DATE1))
    assert (r1.processed, r1.failed, r1.skipped) == (5, 2, 1)
    assert (r1.model_name, r1.model_version, r1.model_uri) == (name, version, f"models:/{name}/{version}")
    failures = dict(r1.failures)
    assert "NaN" in failures["bad_nan"] and "expected n_segments*feat_dim" in failures["bad_len"]
    partition = lake.url("detections", f"model={name}-v{version}", f"date={DATE1}")
    files = _detection_files(lake)
    assert r1.partitions == [partition] and len(files) == 1 and r1.files == [lake.url(files[0][len(lake.root) + 1 :])]
    assert files[0].endswith(f"/model={name}-v{version}/date={DATE1}/part-{r1.run_id}-00000.parquet")
    rows = _parquet_rows(lake, files)
    assert rows.num_rows == r1.detections_written > 0
    assert set(rows.column("run_id").to_pylist()) == {r1.run_id}
    assert set(rows.column("video_id").to_pylist()) <= {p[0].video_id for p in pairs}
    assert set(rows.column("model_version").to_pylist()) == {version}
    assert set(rows.column("label").to_pylist()) <= set(CLASSES)
    manifest = manifests.read_manifest(lake, "detect", r1.run_id)
    status = dict(zip(manifest.column("input").to_pylist(), manifest.column("status").to_pylist()))
    assert status == {**{p[0].video_id: "done" for p in pairs}, "bad_nan": "failed", "bad_len": "failed", "nofeat": "skipped"}

    # --- the MLflow run holds the numbers the Parquet holds
    run = tracking.client(mlflow_server).get_run(r1.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["detections_written"] == rows.num_rows
    assert (run.data.metrics["videos_processed"], run.data.metrics["videos_failed"], run.data.metrics["videos_skipped"]) == (5, 2, 1)
    assert run.data.metrics["videos_per_s"] > 0
    assert run.data.params["model_name"] == name and run.data.params["model_version"] == version
    assert run.data.params["model_alias"] == "champion" and run.data.params["selection"] == "dataset=toy"
    assert run.data.tags["star.partitions"] == partition
    exp = tracking.client(mlflow_server).get_experiment(run.info.experiment_id)
    assert exp.name == "star-detect"
    pngs = [a.path for a in tracking.client(mlflow_server).list_artifacts(r1.run_id, "timelines")]
    assert 1 <= len(pngs) <= 2 and all(p.endswith(".png") for p in pngs)

    # --- star query on s3:// returns exactly the Parquet rows
    capsys.readouterr()  # drop what the job printed
    sql = (
        "SELECT video_id, label, t_start_s, t_end_s, score, run_id FROM detections "
        f"WHERE model = '{name}-v{version}' AND date = DATE '{DATE1}'"
    )
    assert star(["query", sql, "--lake", s3_lake_uri, "--format", "json"]) == 0
    got = json.loads(capsys.readouterr().out)
    key = lambda r: (r["video_id"], r["label"], r["t_start_s"], r["t_end_s"])  # noqa: E731
    want = rows.select(["video_id", "label", "t_start_s", "t_end_s", "score", "run_id"]).to_pylist()
    rounded = lambda rs: sorted(({**r, "score": round(r["score"], 6)} for r in rs), key=key)  # noqa: E731
    assert len(got) == rows.num_rows and rounded(got) == rounded(want)
    # star plot reads the same partitions (and the dataset's ground truth)
    shown = rows.column("video_id")[0].as_py()
    png = tmp_path / "t.png"
    assert star(["plot", shown, "--lake", s3_lake_uri, "--out", str(png)]) == 0
    assert png.read_bytes()[:4] == b"\x89PNG" and "ground truth from toy v1" in capsys.readouterr().out

    # --- a rerun adds nothing (corrupt rows are not retried while their features are unchanged)
    r2 = detect(cfg, dataclasses.replace(base, date=DATE2))
    assert (r2.processed, r2.failed, r2.skipped, r2.detections_written) == (0, 0, 8, 0)
    assert _detection_files(lake) == files and not lake.exists(lake.detections_dir(name, version, DATE2))

    # --- a video added later is the only one processed next time
    late, gt_late = make_pair("late", 1, seed=77)
    feature_store.write_features(lake, "fs", [late])
    datasets.save_dataset(lake, "toy", CLASSES, [p[1] for p in pairs] + [gt_nan, gt_len, no_features, gt_late])
    r3 = detect(cfg, dataclasses.replace(base, date=DATE2))
    assert (r3.processed, r3.failed) == (1, 0)
    manifest = manifests.read_manifest(lake, "detect", r3.run_id)
    done = [i for i, s in zip(manifest.column("input").to_pylist(), manifest.column("status").to_pylist()) if s == "done"]
    assert done == ["late"]
    new_files = sorted(set(_detection_files(lake)) - set(files))
    if new_files:
        new_rows = _parquet_rows(lake, new_files)
        assert set(new_rows.column("video_id").to_pylist()) == {"late"} and set(new_rows.column("run_id").to_pylist()) == {r3.run_id}
        assert new_rows.num_rows == r3.detections_written
    assert _parquet_rows(lake, _detection_files(lake)).num_rows == rows.num_rows + r3.detections_written


def test_job_result_summary_mentions_counts_and_failures():
    r = DetectRunResult(
        run_id="abc",
        model_name="star",
        model_version="2",
        model_uri="models:/star/2",
        feature_set="fs",
        date=DATE1,
        processed=3,
        failed=1,
        skipped=2,
        detections_written=9,
        segments_processed=90,
        elapsed_s=3.0,
        failures=[("v9", "ValueError: NaN")],
    )
    text = r.summary()
    assert "3 processed, 1 failed, 2 skipped" in text and "v9: ValueError: NaN" in text and "1.33 videos/s" in text
    assert r.to_dict()["segments_per_s"] == pytest.approx(30.0)


@pytest.mark.slow
def test_detect_videos_extracts_missing_features_first(tmp_path, ray_address, monkeypatch):
    """`--videos`: tiny generated videos are extracted (random I3D, 64 px) then detected; a truncated
    upload fails at extraction and is reported as failed; a rerun extracts and detects nothing new."""
    from star_core.model.config import LocalizeConfig
    from star_core.synth_video import make_video
    from star_core.video.config import FeatureConfig

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    videos = tmp_path / "videos"
    videos.mkdir()
    for k, (vid, dur) in enumerate({"clip_a": 0.64, "clip_b": 1.0}.items()):
        make_video(videos / f"{vid}.mp4", [Instance("BallBounce", 0.1, dur - 0.1)], dur, size=64, seed=k)
    whole = (videos / "clip_a.mp4").read_bytes()
    (videos / "broken.mp4").write_bytes(whole[: len(whole) // 2])
    lake_uri = str(tmp_path / "lake")
    uri = tracking.tracking_uri(lake_uri)  # the embedded registry inside the local lake
    # feature dim of I3D (1024); untrained: this test is about the videos -> features -> detections path
    detector = StarDetector(classes=("BallBounce", "Other"), feat_dim=1024, localize_cfg=LocalizeConfig(min_class_prob=0.0))
    run_id = tracking.start_run(uri, tracking.ensure_experiment(uri, "models", tracking.artifact_location(lake_uri, uri)), "random")
    ref = tracking.log_detector(uri, run_id, detector, "vstar")
    tracking.end_run(uri, run_id)
    features = FeatureConfig(flow="farneback", resize_short_side=64, crop_size=64, batch_segments=8)
    cfg = replace(
        StarConfig(features=features), **{"storage.lake_uri": lake_uri, "detect.model_uri": ref.uri, "resources.ray_address": ray_address}
    )
    inputs = DetectInputs(videos=str(videos), date=DATE1)

    r = detect(cfg, inputs)
    assert (r.processed, r.failed, r.skipped) == (2, 1, 0)
    assert r.failures[0][0] == "broken" and r.failures[0][1].startswith("extraction failed:")
    lake = Lake(lake_uri)
    assert r.feature_set in feature_store.list_feature_sets(lake)
    manifest = manifests.read_manifest(lake, "detect", r.run_id)
    assert dict(zip(manifest.column("input").to_pylist(), manifest.column("status").to_pylist())) == {
        "clip_a": "done",
        "clip_b": "done",
        "broken": "failed",
    }
    rows = _parquet_rows(lake, _detection_files(lake)) if _detection_files(lake) else schemas.DETECTIONS.empty_table()
    assert rows.num_rows == r.detections_written and set(rows.column("video_id").to_pylist()) <= {"clip_a", "clip_b"}

    again = detect(cfg, inputs)
    assert (again.processed, again.skipped) == (0, 2) and again.detections_written == 0
