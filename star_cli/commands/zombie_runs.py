"""``star zombie-runs [--within-s N]``: the Prefect server automation that marks a flow run ``Crashed``
when its heartbeats stop (see ``flows/zombie_runs.py``). Idempotent: creates the automation, or updates
the one of the same name; run it after ``prefect --no-prompt deploy --all`` (docs/prefect.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from flows.zombie_runs import DEFAULT_WITHIN_S  # a constant: flows.zombie_runs imports Prefect only when used

    parser.add_argument(
        "--within-s", type=int, default=DEFAULT_WITHIN_S,
        help="seconds without a heartbeat before a Running flow run is marked Crashed (default %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from flows.zombie_runs import AUTOMATION_NAME, ZombieRule, ensure_zombie_automation

    rule = ZombieRule(within_s=args.within_s)  # ValueError (a window shorter than two heartbeats): exit 2
    automation_id, action = ensure_zombie_automation(rule)
    print(
        f"automation '{AUTOMATION_NAME}' {action} ({automation_id}): Running flow runs with no heartbeat for {rule.within_s} s -> Crashed"
    )
    return 0
