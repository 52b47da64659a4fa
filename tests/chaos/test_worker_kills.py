"""Chaos: Ray worker processes SIGKILLed from outside in the middle of a job (real `ray start` cluster, tiny data).

Each test asserts that the job finishes (Ray restarts the actor / Ray Train restarts the worker
group from the newest complete checkpoint), that a rerun completes without redoing work, that no
row is duplicated or lost (counted against the inputs) and that the manifests tell the truth.
The outcomes are tabled in docs/operations.md ("Faults").
"""

from __future__ import annotations

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
VIDEOS = {"chaos_a": 1.2, "chaos_b": 1.0, "chaos_c": 1.2, "chaos_d": 0.8, "chaos_e": 1.0}  # 1-2 segments each


def ray_worker_pids(title: str) -> list[int]:
    """Pids of Ray worker processes whose title starts with ``ray::<title>`` (e.g. ``Embedder``, ``RayTrainWorker``)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
        except OSError:
            continue
        if cmd.startswith(f"ray::{title}"):
            out.append(int(entry.name))
    return out


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
    from star_core.io import tables
    from star_core.io.lake import Lake

    lake_uri = str(tmp_path / "lake")
    def command(run_id: str) -> list[str]:
        return [
            sys.executable, "-m", "jobs.extract", str(videos_dir), "--lake", lake_uri, "--run-id", run_id, "--shard-videos", "1",
            "--prepare-in-flight", "1", "--set", "features.flow=farneback", "--set", "features.resize_short_side=64", "--set", "features.crop_size=64",
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
    fs = tables.list_feature_sets(lake)
    assert len(fs) == 1
    ids = tables.feature_index(lake, fs[0]).column("video_id").to_pylist()
    assert sorted(ids) == sorted(VIDEOS), f"each video exactly once, none lost: {sorted(ids)}\n{out[-3000:]}"
    rows = tables.read_manifest(lake, "extract", "chaos-kill").to_pylist()
    assert sorted((r["input"].rsplit("/", 1)[-1], r["status"]) for r in rows) == [(f"{v}.mp4", "done") for v in sorted(VIDEOS)], rows

    # A rerun finds everything done: nothing extracted twice.
    again = subprocess.run(command("chaos-rerun"), cwd=REPO, env={**os.environ, "RAY_ADDRESS": ray_address}, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert sorted(tables.feature_index(lake, fs[0]).column("video_id").to_pylist()) == sorted(VIDEOS)
    rerun = [r["status"] for r in tables.read_manifest(lake, "extract", "chaos-rerun").to_pylist()]
    assert rerun == ["skipped"] * len(VIDEOS), rerun


def test_training_worker_killed_mid_epoch(ray_address, tmp_path, monkeypatch):
    from jobs import tracking
    from jobs.train import TrainJobConfig, train
    from jobs.train_worker import list_checkpoints
    from tests.jobs.test_train_job import make_tiny_dataset, tiny_config

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    lake, *_ = make_tiny_dataset(str(tmp_path / "lake"), n_train=8, n_test=4)
    epochs = 40
    star = tiny_config(**{"train.epochs": epochs, "train.checkpoint_every_epochs": 5})
    cfg = TrainJobConfig(lake_uri=lake.uri, dataset="tiny", star=star, workers=1, run_name="chaos", model_name="chaos", max_failures=1)
    result: dict = {}

    def run() -> None:
        try:
            result["ok"] = train(cfg)
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
        train(cfg)  # the rerun of a finished run is refused, not retrained
