"""Chaos: the services a job talks to restarted in the middle of it (moto S3), on tiny data.

Each test asserts that the job finishes or fails with a clear message, that a rerun completes,
that no row is duplicated or lost (counted against the inputs) and that the manifests tell the
truth. The outcomes are tabled in docs/operations.md ("Faults").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests import services
from tests.chaos.test_worker_kills import REPO, VIDEOS, videos_dir  # noqa: F401 - the module-scoped videos fixture

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_s3_server_restarted_mid_extraction(videos_dir, s3_lake_uri, ray_address, tmp_path):  # noqa: F811
    from star_core.io import feature_store, manifests
    from star_core.io.lake import Lake

    def command(run_id: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "star_cli",
            "extract",
            "--ray",
            "--json",
            str(videos_dir),
            "--lake",
            s3_lake_uri,
            "--run-id",
            run_id,
            "--shard-videos",
            "1",
            "--prepare-in-flight",
            "1",
            "--set",
            "features.flow=farneback",
            "--set",
            "features.resize_short_side=64",
            "--set",
            "features.crop_size=64",
        ]

    env = {**os.environ, "RAY_ADDRESS": ray_address}
    log_path = tmp_path / "extract.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command("s3-restart"), cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        deadline = time.monotonic() + 300
        while "videos: 1 done" not in text() and "videos: 2 done" not in text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert proc.poll() is None, f"extract ended before the restart could land\n{text()[-3000:]}"
        at_restart = text()
        services.restart_moto(down_s=3.0)
        rc = proc.wait(timeout=600)
    out = text()
    lake = Lake(s3_lake_uri)
    fs = feature_store.list_feature_sets(lake)
    ids = feature_store.feature_index(lake, fs[0]).column("video_id").to_pylist() if fs else []
    assert len(ids) == len(set(ids)), f"a video stored twice: {sorted(ids)}"
    rows = manifests.read_manifest(lake, "extract", "s3-restart").to_pylist()
    status = {r["input"].rsplit("/", 1)[-1][: -len(".mp4")]: r["status"] for r in rows}
    # S3 down 3 s: the clients' retries (botocore, s3fs) cover the gap and the job finishes.
    assert rc == 0, f"extract exited {rc} after the S3 server restart\n{out[-4000:]}"
    assert sorted(ids) == sorted(VIDEOS) and status == dict.fromkeys(VIDEOS, "done"), (ids, rows, out[-3000:])

    # The rerun completes: every video exactly once.
    again = subprocess.run(command("s3-rerun"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    fs = feature_store.list_feature_sets(lake)
    ids = feature_store.feature_index(lake, fs[0]).column("video_id").to_pylist()
    assert sorted(ids) == sorted(VIDEOS), f"each video exactly once after the rerun: {sorted(ids)}"
    rerun = {
        r["input"].rsplit("/", 1)[-1][: -len(".mp4")]: r["status"] for r in manifests.read_manifest(lake, "extract", "s3-rerun").to_pylist()
    }
    assert rerun == dict.fromkeys(VIDEOS, "skipped"), rerun  # nothing extracted twice
    assert "videos: 1 done" in at_restart or "videos: 2 done" in at_restart  # the restart landed with videos to go


def test_mlflow_server_restarted_mid_training(s3_lake_uri, mlflow_server, ray_address, tmp_path):
    """`star train` (python -m star_cli train) on an s3:// lake, tracked on the session's MLflow server; the server
    is stopped after the run logged epoch 2, kept down 2 s and started again (same port, SQLite store, artifact root).

    While it is down the worker's per-epoch ``log_batch`` waits in the MLflow client's HTTP retries
    (MLFLOW_HTTP_REQUEST_MAX_RETRIES, exponential backoff: minutes), so training pauses and goes on."""
    import uuid

    from jobs import tracking
    from tests.jobs.test_train_job import TINY_MODEL, make_tiny_dataset

    make_tiny_dataset(s3_lake_uri, n_train=6, n_test=3)
    epochs, model = 20, f"chaos-mlflow-{uuid.uuid4().hex[:6]}"  # the MLflow server is shared by the session
    overrides = [f"{k}={v}" for k, v in TINY_MODEL.items() if k != "train.epochs"]
    cmd = [
        sys.executable,
        "-m",
        "star_cli",
        "train",
        "--lake",
        s3_lake_uri,
        "--dataset",
        "tiny",
        "--workers",
        "1",
        "--epochs",
        str(epochs),
        "--model-name",
        model,
        "--experiment",
        "chaos",
        "--run-name",
        "mlflow-restart",
        *overrides,
    ]
    env = {**os.environ, "RAY_ADDRESS": ray_address, "MLFLOW_TRACKING_URI": mlflow_server, "PYTHONUNBUFFERED": "1"}
    client = tracking.client(mlflow_server)
    log_path = tmp_path / "train.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        deadline, run_id, steps = time.monotonic() + 300, None, set()
        while len(steps) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if run_id is None and "MLflow run " in text():
                run_id = text().split("MLflow run ", 1)[1].split()[0]
            if run_id is not None:
                steps = {m.step for m in client.get_metric_history(run_id, "rgb/total")}
        assert proc.poll() is None and len(steps) >= 2, f"train ended before the restart could land\n{text()[-3000:]}"
        down_s = services.restart_mlflow(down_s=2.0)
        rc = proc.wait(timeout=600)
    out = text()
    assert len(steps) < epochs  # the restart landed with epochs to go
    assert rc == 0, f"star train exited {rc} after the MLflow server restart (down {down_s:.0f} s)\n{out[-4000:]}"
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED", run.info
    assert {m.step for m in client.get_metric_history(run_id, "rgb/total")} == set(range(1, epochs + 1)), "a metric step lost"
    assert [str(v.version) for v in client.search_model_versions(f"name='{model}'")] == ["1"]  # one model for one run

    # The rerun with the same run name reports it finished, trains nothing, registers nothing.
    again = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode != 0 and "already finished" in again.stdout + again.stderr, again.stdout[-3000:] + again.stderr[-3000:]
    assert [str(v.version) for v in client.search_model_versions(f"name='{model}'")] == ["1"]
    print(f"MLflow server unreachable {down_s:.1f} s (down 2 s + start-up)")
