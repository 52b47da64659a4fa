"""Chaos: Ray worker processes SIGKILLed from outside in the middle of a job (real `ray start` cluster, tiny data).

Each test asserts that the job finishes (Ray restarts the actor / Ray Train restarts the worker
group from the newest complete checkpoint), that a rerun completes without redoing work, that no
row is duplicated or lost (counted against the inputs) and that the manifests tell the truth.
The outcomes are tabled in docs/operations.md ("Faults").
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[2]
N_DETECT = 40  # feature rows for the detection case (batch size 1: 40 actor calls)
VIDEOS = {"chaos_a": 1.2, "chaos_b": 1.0, "chaos_c": 1.2, "chaos_d": 0.8, "chaos_e": 1.0}  # 1-2 segments each


def _parent_pid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat[stat.rindex(")") + 2 :].split()[1])  # the field after the state; the name may hold spaces


def _ours(pid: int) -> bool:
    """Whether ``pid`` descends from the `ray start` head of this test session (other sessions' Ray may run on the machine)."""
    from tests import services

    head = services._RAY_HEAD.proc.pid if services._RAY_HEAD is not None else -1
    while pid > 1:
        if pid == head:
            return True
        pid = _parent_pid(pid)
    return False


def ray_worker_titles() -> dict[int, str]:
    """Pid -> process title of this session's Ray worker processes (``ray::...``)."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith("ray::") and _ours(int(entry.name)):
            out[int(entry.name)] = cmd
    return out


def ray_worker_pids(title: str) -> list[int]:
    """Pids of this session's Ray workers whose title starts with ``ray::<title>`` (e.g. ``Embedder``, ``RayTrainWorker``)."""
    # Ray Data's actors are titled after their class, ``ray::_MapWorker`` (``.submit`` while they run a batch).
    return sorted(pid for pid, cmd in ray_worker_titles().items() if cmd[len("ray::") :].lstrip("_").startswith(title))


def kill_when(title: str, ready, timeout_s: float = 300) -> int:
    """SIGKILL the first ``ray::<title>`` process once ``ready()`` holds; returns its pid."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pids = ray_worker_pids(title)
        if pids and ready():
            os.kill(pids[0], signal.SIGKILL)
            return pids[0]
        time.sleep(0.2)
    raise AssertionError(f"no ray::{title} process to kill within {timeout_s:.0f} s")


@pytest.fixture(scope="module")
def videos_dir(tmp_path_factory):
    from star_core.data import Instance
    from star_core.synth_video import make_video

    d = tmp_path_factory.mktemp("chaos-videos")
    for k, (vid, dur) in enumerate(VIDEOS.items()):
        make_video(d / f"{vid}.mp4", [Instance("BallBounce", 0.1, dur - 0.1)], dur, size=64, seed=k)
    return d


def test_i3d_actor_killed_mid_extraction(videos_dir, ray_address, tmp_path):
    from star_core.io import feature_store, manifests
    from star_core.io.lake import Lake

    lake_uri = str(tmp_path / "lake")
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
            lake_uri,
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

    cmd = command("chaos-kill")
    log_path = tmp_path / "extract.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, "RAY_ADDRESS": ray_address}, stdout=log, stderr=subprocess.STDOUT)
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        # Kill the I3D actor after its first video, with videos still to go.
        killed = kill_when("Embedder", lambda: "videos: 1 done" in text() or "videos: 2 done" in text())
        rc = proc.wait(timeout=600)
    out = text()
    assert rc == 0, f"extract exited {rc} after the I3D actor (pid {killed}) was killed\n{out[-4000:]}"

    lake = Lake(lake_uri)
    fs = feature_store.list_feature_sets(lake)
    assert len(fs) == 1
    ids = feature_store.feature_index(lake, fs[0]).column("video_id").to_pylist()
    assert sorted(ids) == sorted(VIDEOS), f"each video exactly once, none lost: {sorted(ids)}\n{out[-3000:]}"
    rows = manifests.read_manifest(lake, "extract", "chaos-kill").to_pylist()
    assert sorted((r["input"].rsplit("/", 1)[-1], r["status"]) for r in rows) == [(f"{v}.mp4", "done") for v in sorted(VIDEOS)], rows

    # A rerun finds everything done: nothing extracted twice.
    again = subprocess.run(
        command("chaos-rerun"), cwd=REPO, env={**os.environ, "RAY_ADDRESS": ray_address}, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert sorted(feature_store.feature_index(lake, fs[0]).column("video_id").to_pylist()) == sorted(VIDEOS)
    rerun = [r["status"] for r in manifests.read_manifest(lake, "extract", "chaos-rerun").to_pylist()]
    assert rerun == ["skipped"] * len(VIDEOS), rerun


def test_training_worker_killed_mid_epoch(ray_address, tmp_path, monkeypatch):
    from jobs import tracking
    from jobs.train import train
    from jobs.train_checkpoints import list_checkpoints
    from tests.jobs.test_train_job import make_tiny_dataset, tiny_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake, *_ = make_tiny_dataset(str(tmp_path / "lake"), n_train=8, n_test=4)
    epochs = 40
    cfg = tiny_config(
        **{
            "train.epochs": epochs,
            "train.checkpoint_every_epochs": 5,
            "storage.lake_uri": lake.uri,
            "resources.workers": 1,
            "train_run.run_name": "chaos",
            "train_run.model_name": "chaos",
            "train_run.max_failures": 1,
        }
    )
    result: dict = {}

    def run() -> None:
        try:
            result["ok"] = train(cfg, "tiny")
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    killed = kill_when("RayTrainWorker", lambda: any(e >= 5 for e, _ in list_checkpoints(lake, "chaos")))
    thread.join(timeout=600)
    assert not thread.is_alive(), "training hung after its worker was killed"
    assert "error" not in result, f"training failed after the worker (pid {killed}) was killed: {result.get('error')!r}"
    r = result["ok"]
    assert r.epochs_completed == epochs and r.resumed_from_epoch >= 5 and r.resumed_from_epoch % 5 == 0, r
    client = tracking.client(r.tracking_uri)
    steps = {m.step for m in client.get_metric_history(r.run_id, "rgb/total")}
    assert steps == set(range(1, epochs + 1))  # every epoch logged; epochs after the checkpoint are logged again by the restart
    versions = client.search_model_versions("name='chaos'")
    assert [str(v.version) for v in versions] == ["1"]  # one model for one run
    with pytest.raises(ValueError, match="already finished"):
        train(cfg, "tiny")  # the rerun of a finished run is refused, not retrained


def test_detect_actor_killed_mid_detection(ray_address, tmp_path, monkeypatch):
    """`star detect` (python -m star_cli detect) on the `ray start` cluster; the model-holding Ray Data actor
    (``ray::_MapWorker`` of ``MapBatches(DetectBatch)``, the only map actor of the job) is SIGKILLed while it
    starts (loading the model), all videos to go.

    On tiny data the actor detects all 40 videos within about 1 s of loading the model (measured: 10-18 s
    of start-up, then 1 s), so a kill between batches cannot be placed reliably; the start-up window can."""
    import torch

    from jobs import tracking
    from star_core.detector import StarDetector
    from star_core.io import detections as detio
    from star_core.io import feature_store, manifests
    from star_core.io.lake import Lake
    from star_core.model.config import LocalizeConfig
    from tests.jobs.test_detect_job import D, make_pair

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake_uri = str(tmp_path / "lake")
    lake = Lake(lake_uri)
    videos = [make_pair(f"d{i:02d}", i % 2, n=24, seed=i)[0] for i in range(N_DETECT)]
    for k in range(0, N_DETECT, 8):  # several feature files, like several extraction shards
        feature_store.write_features(lake, "fs", videos[k : k + 8])
    # Untrained, every class kept: each video gets detections, so lost or doubled rows show in the counts.
    torch.manual_seed(5)  # an initialisation that detects 6..20 actions on every one of these videos (some seeds find none on a few)
    detector = StarDetector(classes=("CricketShot", "Diving"), feat_dim=D, localize_cfg=LocalizeConfig(min_class_prob=0.0)).eval()
    expected = {v.video_id: len(detector.detect(v)) for v in videos}
    assert all(expected.values()), f"the scenario needs detections on every video: {expected}"
    uri = tracking.tracking_uri(lake_uri)  # the embedded registry inside the local lake
    run = tracking.start_run(uri, tracking.ensure_experiment(uri, "models", tracking.artifact_location(lake_uri, uri)), "chaos")
    ref = tracking.log_detector(uri, run, detector, "chaosdet")
    tracking.end_run(uri, run)

    def command(run_id: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "star_cli",
            "detect",
            "--lake",
            lake_uri,
            "--model",
            ref.uri,
            "--batch-size",
            "1",
            "--date",
            "2026-11-20",
            "--run-id",
            run_id,
            "--timelines",
            "0",
            "--json",
        ]

    env = {**os.environ, "RAY_ADDRESS": ray_address}
    log_path = tmp_path / "detect.log"
    with open(log_path, "wb") as fh, open(tmp_path / "detect.json", "wb") as js:
        proc = subprocess.Popen(command("chaos-kill"), cwd=REPO, env=env, stdout=js, stderr=fh)
        text = lambda: log_path.read_text(errors="replace")  # noqa: E731
        try:
            killed = kill_when("MapWorker", lambda: "to process" in text() and "first results after" not in text(), timeout_s=120)
        except AssertionError as exc:
            proc.kill()
            raise AssertionError(f"{exc}; ray processes: {sorted(ray_worker_titles().values())}\n{text()[-4000:]}") from None
        at_kill = text()
        rc = proc.wait(timeout=600)
    out = text()
    assert "first results after" not in at_kill  # the kill landed before any result: all 40 videos to go
    assert rc == 0, f"detect exited {rc} after the actor (pid {killed}) was killed\n{out[-4000:]}"
    first = json.loads((tmp_path / "detect.json").read_text())
    assert (first["processed"], first["failed"], first["skipped"]) == (N_DETECT, 0, 0), out[-3000:]

    files = detio.model_files(lake, "chaosdet", ref.version)
    rows = detio.read_detections(lake, files)
    per_video = collections.Counter(rows.column("video_id").to_pylist())
    assert dict(per_video) == expected, "each video's detections exactly once: none lost, none doubled"
    assert rows.num_rows == first["detections_written"] == sum(expected.values())
    assert set(rows.column("run_id").to_pylist()) == {first["run_id"]}
    manifest = manifests.read_manifest(lake, "detect", first["run_id"]).to_pylist()
    assert sorted((r["input"], r["status"]) for r in manifest) == [(v, "done") for v in sorted(expected)]
    assert tracking.client(uri).get_run(first["run_id"]).info.status == "FINISHED"

    # A rerun finds everything done: nothing detected or written twice.
    again = subprocess.run(command("chaos-rerun"), cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    second = json.loads(again.stdout)
    assert (second["processed"], second["skipped"], second["detections_written"]) == (0, N_DETECT, 0)
    assert detio.model_files(lake, "chaosdet", ref.version) == files
