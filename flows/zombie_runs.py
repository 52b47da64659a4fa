"""The server automation that marks a flow run ``Crashed`` when its heartbeats stop ("zombie" runs).

A flow run whose process dies without reporting (worker machine lost, container evicted, SIGKILL)
stays ``Running`` on the server for good, and a ``Running`` ``star/nightly-detect`` run holds the
deployment's concurrency slot (limit 1, ``CANCEL_NEW``): every later nightly run would be cancelled.
Prefect's answer (docs: "How to detect and respond to zombie flows") is two parts, both shipped here:

- heartbeats: the flow-run process emits a ``prefect.flow-run.heartbeat`` event every
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (Prefect 3.9.1: default 180, minimum 30); our
  deployments set it to ``HEARTBEAT_FREQUENCY_S`` in ``prefect.yaml`` (``job_variables.env``);
- this automation: a proactive trigger per flow run (``for_each prefect.resource.id``) that, after a
  heartbeat, expects another heartbeat or a terminal state event within ``within_s``; when none
  comes, it sets the run ``Crashed`` (which frees its concurrency slot).

Idempotent: ``star zombie-runs [--within-s N]`` creates the automation, or updates the
one of the same name; run it after ``prefect --no-prompt deploy --all`` (docs/prefect.md).
The window applies to every flow run on the server, also those started with Prefect's default
heartbeat (180 s): keep it above that, with room for a late heartbeat (``DEFAULT_WITHIN_S``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from uuid import UUID

    from prefect.events.schemas.automations import AutomationCore

AUTOMATION_NAME = "star: crash flow runs whose heartbeats stopped"
HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"
# Terminal states end a run's heartbeats: they satisfy the expectation too (no false crash after a run ends).
TERMINAL_EVENTS = tuple(f"prefect.flow-run.{s}" for s in ("Completed", "Failed", "Cancelled", "Crashed"))
HEARTBEAT_FREQUENCY_S = 30  # prefect.yaml job_variables.env PREFECT_FLOWS_HEARTBEAT_FREQUENCY (Prefect's minimum)
PREFECT_DEFAULT_HEARTBEAT_S = 180  # flow runs started without our setting (e.g. `star run-flow` against the server)
DEFAULT_WITHIN_S = 300


@dataclass(frozen=True)
class ZombieRule:
    """How long after a flow run's last heartbeat the server marks it Crashed."""

    within_s: int = DEFAULT_WITHIN_S

    def __post_init__(self) -> None:
        if self.within_s < 2 * HEARTBEAT_FREQUENCY_S:
            raise ValueError(
                f"within_s={self.within_s}: the window must span at least two heartbeat intervals (>= {2 * HEARTBEAT_FREQUENCY_S} s; "
                f"heartbeat every {HEARTBEAT_FREQUENCY_S} s, prefect.yaml), or a late heartbeat marks a healthy flow run Crashed"
            )


def zombie_automation(rule: ZombieRule) -> AutomationCore:
    """The automation of Prefect's "detect zombie flows" recipe, with ``rule.within_s`` as its window."""
    from datetime import timedelta

    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    return AutomationCore(
        name=AUTOMATION_NAME,
        description=(
            f"Marks a Running flow run Crashed when no {HEARTBEAT_EVENT} (or terminal state) follows its last heartbeat "
            f"within {rule.within_s} s: its process is gone. Created by `star zombie-runs` (docs/prefect.md)."
        ),
        enabled=True,
        trigger=EventTrigger(
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            after={HEARTBEAT_EVENT},
            expect={HEARTBEAT_EVENT, *TERMINAL_EVENTS},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=rule.within_s),
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {rule.within_s} s: the flow-run process is gone (marked by '{AUTOMATION_NAME}')",
            )
        ],
    )


def ensure_zombie_automation(rule: ZombieRule = ZombieRule()) -> tuple[UUID, str]:
    """Create the automation on the server of ``PREFECT_API_URL``, or update the one of the same name
    (extra copies of it are deleted). Returns (automation id, ``"created"`` or ``"updated"``)."""
    from prefect.client.orchestration import get_client

    automation = zombie_automation(rule)
    with get_client(sync_client=True) as client:
        found = [a for a in client.read_automations_by_name(AUTOMATION_NAME) if a.name == AUTOMATION_NAME]
        if not found:
            return client.create_automation(automation), "created"
        keep, *extra = found
        client.update_automation(keep.id, automation)
        for dup in extra:
            client.delete_automation(dup.id)
        return keep.id, "updated"
