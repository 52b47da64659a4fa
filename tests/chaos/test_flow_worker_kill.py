"""Chaos: the Prefect process worker SIGKILLed during a flow run (real Prefect server, `ray start` cluster, tiny data).

The worker and the flow-run process it started are killed together, as when the worker's machine or
container goes away. The deployments are set up as docs/prefect.md says: ``prefect deploy --all``
(heartbeats every 30 s from prefect.yaml) and ``star zombie-runs`` (the automation that
crashes runs whose heartbeats stop; here with a short window). The test asserts that the orphaned run
becomes Crashed by itself, that a new worker's rerun then completes (the concurrency slot is free),
and that no detection row is duplicated or lost (counted against the inputs).
The outcome is tabled in docs/operations.md ("Faults").
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.chaos.test_worker_kills import _parent_pid
from tests.flows.test_deployments import Stack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

N_VIDEOS = 12
WINDOW_S = 75  # the automation's window in this test (production: flows.zombie_runs.DEFAULT_WITHIN_S)


def _descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the worker and the flow-run process it spawned)."""
    found = [pid]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            p = int(entry.name)
            while p > 1 and p != pid:
                p = _parent_pid(p)
            if p == pid and int(entry.name) != pid:
                found.append(int(entry.name))
    return found


def _setup_lake(lake_uri: str) -> tuple[str, dict[str, int]]:
    """Features of N_VIDEOS videos and an untrained detector registered as ``<name>@champion`` in the lake's registry;
    returns (model name, detections expected per video)."""
    import torch

    from jobs import tracking
    from star_core.detector import StarDetector
    from star_core.io import feature_store
    from star_core.io.lake import Lake
    from star_core.model.config import LocalizeConfig
    from tests.jobs.test_detect_job import D, make_pair

    videos = [make_pair(f"n{i:02d}", i % 2, n=24, seed=i)[0] for i in range(N_VIDEOS)]
    feature_store.write_features(Lake(lake_uri), "fs", videos)
    torch.manual_seed(5)  # detects actions on every video (see test_worker_kills.test_detect_actor_killed_mid_detection)
    detector = StarDetector(classes=("CricketShot", "Diving"), feat_dim=D, localize_cfg=LocalizeConfig(min_class_prob=0.0)).eval()
    expected = {v.video_id: len(detector.detect(v)) for v in videos}
    assert all(expected.values()), f"the scenario needs detections on every video: {expected}"
    uri = tracking.tracking_uri(lake_uri)  # the lake's own registry (sqlite), as the quickstart
    run = tracking.start_run(uri, tracking.ensure_experiment(uri, "models", tracking.artifact_location(lake_uri, uri)), "chaos")
    ref = tracking.log_detector(uri, run, detector, "nightly-chaos")
    tracking.end_run(uri, run)
    tracking.client(uri).set_registered_model_alias("nightly-chaos", "champion", ref.version)
    return "nightly-chaos", expected


def _heartbeats(stack: Stack, flow_run_id: str) -> int:
    """How many ``prefect.flow-run.heartbeat`` events of the flow run the server has stored."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter
    from prefect.settings import PREFECT_API_URL, temporary_settings

    flt = EventFilter(
        event=EventNameFilter(name=["prefect.flow-run.heartbeat"]), resource=EventResourceFilter(id=[f"prefect.flow-run.{flow_run_id}"])
    )
    with temporary_settings({PREFECT_API_URL: stack.server.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        return client.read_events(filter=flt, limit=50).total


def _deployed_env(stack: Stack, name: str) -> dict:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: stack.server.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name).job_variables.get("env", {})


def _zombie_setup(stack: Stack, *args: str) -> str:
    """``star zombie-runs ARGS`` as docs/prefect.md's set-up step, in the user's environment."""
    cmd = [sys.executable, "-m", "star_cli", "zombie-runs", *args]
    out = subprocess.run(cmd, cwd=stack.workdir, env=stack.env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def _delete_zombie_automation(stack: Stack) -> None:
    """The session's Prefect server is shared: later tests must not run under this test's short window."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.zombie_runs import AUTOMATION_NAME

    with temporary_settings({PREFECT_API_URL: stack.server.env["PREFECT_API_URL"]}), get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(AUTOMATION_NAME):
            client.delete_automation(automation.id)


def test_prefect_worker_killed_during_flow_run(prefect_server, ray_address, tmp_path):
    from star_core.io import detections as detio
    from star_core.io import manifests
    from star_core.io.lake import Lake

    lake_uri = str(tmp_path / "lake")
    model, expected = _setup_lake(lake_uri)
    stack = Stack(prefect_server, "", tmp_path)
    stack.env = {k: v for k, v in stack.env.items() if not k.startswith("MLFLOW_TRACKING")}
    params = ["--param", f"lake_uri={lake_uri}", "--param", f"model_name={model}"]
    try:
        # The set-up of docs/prefect.md: pool, deployments, zombie automation (run twice: idempotent).
        stack.cli("work-pool", "create", "star-local", "--type", "process", "--overwrite")
        stack.cli("deploy", "--all", timeout_s=180)
        assert _deployed_env(stack, "star/nightly-detect") == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"}
        assert "created" in _zombie_setup(stack, "--within-s", str(WINDOW_S))
        assert "updated" in _zombie_setup(stack, "--within-s", str(WINDOW_S))
        stack.start_worker()
        out = stack.cli("deployment", "run", "star/nightly-detect", *params)
        killed_id = re.search(r"UUID:\s*([0-9a-f-]{36})", out.stdout).group(1)
        stack.flow_run_ids.append(killed_id)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            state = stack.flow_run(killed_id).state.type.value
            started = state == "RUNNING" and any("star nightly-detect on lake" in x for x in stack.log_lines(killed_id))
            # The automation starts watching a run at its first heartbeat (sent as the flow starts).
            if started and _heartbeats(stack, killed_id) > 0:
                break
            assert state in ("SCHEDULED", "PENDING", "RUNNING"), f"flow run {state} before the kill\n{stack.diagnostics()}"
            time.sleep(0.5)
        else:
            raise AssertionError(f"flow run not running with a heartbeat after 300 s\n{stack.diagnostics()}")
        pids = _descendants(stack.worker.pid)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        stack.worker.wait(timeout=30)
        t_kill, states = time.monotonic(), []

        # No process reports the run's end; its heartbeats stop and the automation marks it Crashed.
        while time.monotonic() - t_kill < WINDOW_S + 120:
            run = stack.flow_run(killed_id)
            states.append(run.state.type.value)
            if states[-1] != "RUNNING":
                break
            time.sleep(2)
        t_crashed_s = time.monotonic() - t_kill
        assert states[-1] == "CRASHED", f"{states}\n{stack.diagnostics()}"
        assert "no heartbeat for" in (run.state.message or ""), run.state.message
        lake = Lake(lake_uri)
        assert not detio.model_files(lake, model, "1")  # killed before any detection was written

        # A new worker, a rerun: the Crashed run no longer holds nightly-detect's concurrency slot (limit 1,
        # CANCEL_NEW), so the rerun is not cancelled; nobody touched the orphan.
        stack.worker_log = tmp_path / "worker2.log"
        stack.start_worker()
        rerun_id = stack.run_deployment("star/nightly-detect", {"lake_uri": lake_uri, "model_name": model}, timeout_s=400)
        assert stack.flow_run(rerun_id).state.type.value == "COMPLETED"
        rows = detio.read_detections(lake, detio.model_files(lake, model, "1"))
        assert dict(collections.Counter(rows.column("video_id").to_pylist())) == expected, "each video's detections exactly once"
        manifest = [(r["input"], r["status"]) for r in manifests.read_manifests(lake, "detect").to_pylist()]
        assert sorted(manifest) == [(v, "done") for v in sorted(expected)], manifest
        assert stack.flow_run(killed_id).state.type.value == "CRASHED"
        print(f"killed {len(pids)} processes (worker + flow run); Crashed {t_crashed_s:.0f} s after the kill (window {WINDOW_S} s); "
              f"rerun heartbeats {_heartbeats(stack, rerun_id)}")
    except BaseException:
        print(stack.diagnostics())
        raise
    finally:
        stack.stop_worker()
        _delete_zombie_automation(stack)
