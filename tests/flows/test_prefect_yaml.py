"""prefect.yaml: the deployments users rely on, asserted field by field (Prefect's parser is not strict)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def project() -> dict:
    return yaml.safe_load((REPO / "prefect.yaml").read_text())


@pytest.fixture(scope="module")
def deployments(project) -> dict[str, dict]:
    return {d["name"]: d for d in project["deployments"]}


def test_top_level_keys_are_known(project):
    assert set(project) <= {"name", "prefect-version", "build", "push", "pull", "deployments"}
    assert project["prefect-version"] == "3.9.1"


def test_no_pull_step_bakes_a_deploy_time_path(project, deployments):
    # Module entrypoints are imported from the worker's environment: nothing machine-specific stored.
    assert project["pull"] == []
    for d in deployments.values():
        assert "pull" not in d
    assert "{{ $" not in yaml.safe_dump(project)  # deploy-time templating (comments aside)


def test_both_deployments_exist_with_known_keys(deployments):
    assert set(deployments) == {"train", "nightly-detect"}
    allowed = {"name", "description", "entrypoint", "tags", "parameters", "work_pool", "schedules", "concurrency_limit", "version"}
    for d in deployments.values():
        assert set(d) <= allowed, set(d) - allowed
        assert set(d["work_pool"]) <= {"name", "work_queue_name", "job_variables"}


def test_entrypoints_resolve_to_the_star_flow(deployments):
    from prefect.flows import load_flow_from_entrypoint

    for d in deployments.values():
        ep = d["entrypoint"]
        assert ":" not in ep, "a module-path entrypoint (dotted, no ':') is imported from the installed package"
        flow = load_flow_from_entrypoint(ep, use_placeholder_flow=False)
        assert flow.name == "star"
        assert d["parameters"]["mode"] == d["name"]
        # Deployment parameters must be parameters of the flow.
        assert set(d["parameters"]) <= set(flow.parameters.properties)


def test_work_pool_is_star_local(deployments):
    for d in deployments.values():
        assert d["work_pool"]["name"] == "star-local"


def test_nightly_schedule_and_concurrency(deployments):
    nightly = deployments["nightly-detect"]
    (schedule,) = nightly["schedules"]
    assert schedule == {"cron": "0 2 * * *", "timezone": "UTC", "active": True}
    assert nightly["concurrency_limit"] == {"limit": 1, "collision_strategy": "CANCEL_NEW"}
    assert "schedules" not in deployments["train"]


def test_cron_is_valid():
    from prefect.client.schemas.schedules import CronSchedule

    assert CronSchedule(cron="0 2 * * *", timezone="UTC").cron == "0 2 * * *"


def test_importing_flows_does_not_import_torch_ray_or_mlflow():
    code = (
        "import sys, flows.star_flow, flows.tasks, flows.report, flows.zombie_runs; "
        "bad = [m for m in ('torch', 'ray', 'mlflow') if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_deployment_sends_heartbeats_for_the_zombie_automation(deployments):
    # The flow-run process reads PREFECT_FLOWS_HEARTBEAT_FREQUENCY from the job's env; Prefect 3.9.1 rejects < 30.
    from prefect.settings import Settings

    from flows.zombie_runs import HEARTBEAT_FREQUENCY_S

    for d in deployments.values():
        env = d["work_pool"]["job_variables"]["env"]
        assert env == {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_FREQUENCY_S)}, d["name"]
        settings = Settings(flows={"heartbeat_frequency": env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"]})
        assert settings.flows.heartbeat_frequency == HEARTBEAT_FREQUENCY_S


def test_zombie_automation_crashes_runs_whose_heartbeats_stop():
    from datetime import timedelta

    from flows.zombie_runs import DEFAULT_WITHIN_S, PREFECT_DEFAULT_HEARTBEAT_S, ZombieRule, zombie_automation

    a = zombie_automation(ZombieRule())
    t = a.trigger
    assert t.posture == "Proactive" and t.threshold == 1 and t.for_each == {"prefect.resource.id"}
    assert t.after == {"prefect.flow-run.heartbeat"}
    assert t.expect == {"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed"))}
    assert t.within == timedelta(seconds=DEFAULT_WITHIN_S) and DEFAULT_WITHIN_S > PREFECT_DEFAULT_HEARTBEAT_S
    (action,) = a.actions
    assert action.type == "change-flow-run-state" and action.state.value == "CRASHED"


def test_zombie_window_shorter_than_two_heartbeats_is_refused():
    from flows.zombie_runs import ZombieRule
    from star_cli.cli import main

    with pytest.raises(ValueError, match="within_s=59: the window must span at least two heartbeat intervals"):
        ZombieRule(within_s=59)
    assert main(["zombie-runs", "--within-s", "30"]) == 2  # refused before any server is contacted
