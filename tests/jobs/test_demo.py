"""The newcomer path: `star demo` from an empty directory, with its relative default paths.

A user runs the demo from wherever they cloned; Ray workers, actors and the MLflow logging in the
training worker run in other working directories. This runs the real command (generated videos,
Ray extraction, Ray Train, MLflow registry, Ray Data detection, query, timeline) at a tiny size
on the session's Ray cluster and checks that everything lands where the report says it does.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from star_core.io import detections
from star_core.io.lake import Lake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]
# What Ray prints by default and star's console must not (the list, and Ray's line prefixes).
RAY_INTERNAL_MARKS = (
    "PlacementGroupCleaner", "core_worker.cc", "logging.cc", "Checkpoint successfully created", "Reporting training result",
    "(RayTrainWorker", "(TrainController", "(raylet)", "pid=", "streaming_executor.py", "worker.py:", "Started a local Ray instance",
)


def test_demo_runs_end_to_end_from_an_empty_directory(ray_address, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}  # the embedded SQLite default
    env |= {"RAY_ADDRESS": ray_address, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    star = Path(sys.executable).with_name("star")
    out = subprocess.run(
        [str(star), "demo", "--videos", "4", "--epochs", "3"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1400
    )
    assert out.returncode == 0, f"star demo exited {out.returncode}\n{out.stdout[-4000:]}\n{out.stderr[-8000:]}"
    report = out.stdout
    assert "star demo finished in" in report and "Detection mAP (%) on the test videos:" in report, report[-3000:]

    # A quiet console: star's own lines (the training worker's epochs among them), no Ray internals;
    # Ray's lines are in files whose place the report prints.
    console = out.stdout + out.stderr
    leaked = [line for line in console.splitlines() if any(mark in line for mark in RAY_INTERNAL_MARKS)]
    assert not leaked, "Ray-internal lines on the console:\n" + "\n".join(leaked[:20])
    assert "INFO star.train: epoch 3/3 |" in console, console[-3000:]
    ray_logs = Path(report.split("Ray logs (training):", 1)[1].split()[0])
    assert (ray_logs / "ray-workers.log").is_file() and "RayTrainWorker" in (ray_logs / "ray-workers.log").read_text()

    lake_dir = tmp_path / "star-lake"  # the default ./star-lake, resolved against the user's directory
    assert f"lake (features, labels, detections, manifests): {lake_dir}" in report
    assert (lake_dir / "mlflow.db").is_file()  # the training worker logged to the same SQLite file
    lake = Lake(str(lake_dir))
    from jobs import tracking
    from star_core.io import manifests

    mv = tracking.client(f"sqlite:///{lake_dir / 'mlflow.db'}").get_model_version_by_alias("star", "champion")
    video_ids = {p.stem for p in (tmp_path / "star-demo-videos").glob("*.mp4")}
    assert len(video_ids) == 4
    done = [r["input"] for r in manifests.read_manifests(lake, "detect").to_pylist() if r["status"] == "done"]
    assert sorted(done) == sorted(video_ids), report[-3000:]  # every video through the registered model, once
    files = detections.model_files(lake, "star", mv.version)
    if files:  # a 3-epoch model may find nothing; what it found belongs to these videos
        assert set(detections.read_detections(lake, files).column("video_id").to_pylist()) <= video_ids
    pngs = list((tmp_path / "star-demo-videos").glob("timeline_*.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 10_000 and str(pngs[0]) in report
