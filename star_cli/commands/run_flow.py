"""``star run-flow train|nightly-detect [--param k=v ...]``: run the ``star`` Prefect flow in-process.

The same flow the deployments ``star/train`` and ``star/nightly-detect`` run on a worker, here in
this process (no worker, no deployment). With ``PREFECT_API_URL`` set, the run is recorded on
that server; without it, Prefect starts a temporary local server for the run.

Parameter values are JSON when they parse as JSON (numbers, booleans, lists, objects), else
strings, like ``prefect deployment run --param``; dotted keys set nested fields, e.g.
``--param resources.workers=2``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from typing import Any

MODES = ("train", "nightly-detect")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=MODES, help="which deployment's flow to run")
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="flow parameter (repeatable), e.g. lake_uri=s3://star/lake, epochs=5, resources.workers=2",
    )
    parser.add_argument("--json", action="store_true", help="print the run summary as JSON")


def parse_params(items: list[str]) -> dict[str, Any]:
    """``["epochs=5", "resources.workers=2"]`` -> ``{"epochs": 5, "resources": {"workers": 2}}``."""
    from star_cli.cli import CommandError

    params: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CommandError(f"--param {item!r}: expected KEY=VALUE")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = params
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise CommandError(f"--param {item!r}: {part!r} is not an object parameter")
        node[parts[-1]] = value
    if "mode" in params:
        raise CommandError("--param mode=...: give the mode as the first argument (train | nightly-detect)")
    return params


def run(args: argparse.Namespace) -> int:
    from star_cli.cli import CommandError

    params = parse_params(args.param)
    # A temporary server needs ~16 s on 2 cores; Prefect's default startup timeout is 20 s.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline machines: no telemetry errors
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per API request otherwise
    from flows.star_flow import star

    known = list(star.parameters.properties)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise CommandError(
            f"unknown flow parameter(s) {', '.join(unknown)}; the star flow takes: {', '.join(k for k in known if k != 'mode')}"
        )
    summary = star(mode=args.mode, **params)
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
    else:
        from flows import report

        print(report.train_markdown(summary) if args.mode == "train" else report.detect_markdown(summary))
    return 0
