"""``star lake check --lake LAKE [--quarantine] [--json]``: find (and move aside) lake files readers fail on.

Reads every Parquet file under ``features/``, ``labels/``, ``detections/`` and ``manifests/`` and
every dataset version's ``dataset.json`` (``star_core.io.lake_check``), prints each bad file with
its reason, and with ``--quarantine`` moves it to ``<lake>/quarantine/<its path>``.

Exit status: 0 when the lake is clean, or when ``--quarantine`` moved every damaged file; 1 when a
bad file is left in place (no ``--quarantine``, a file written by another schema version, or a
move that failed).
"""

from __future__ import annotations

import argparse
import json
import logging

from star_cli.options import add_config_options, load, setting

log = logging.getLogger("star.lake")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    check = sub.add_parser(
        "check",
        help="read every table file of the lake and report those readers fail on",
        description="Read every Parquet file under features/, labels/, detections/, manifests/ (and each dataset.json); "
        "report unreadable or foreign files with the reason.",
    )
    setting(check, "--lake", key="storage.lake_uri")
    add_config_options(check)
    check.add_argument(
        "--quarantine", action="store_true", help="move each damaged or foreign file to <lake>/quarantine/<its path> and exit 0"
    )
    check.add_argument("--json", action="store_true", help="print the result as JSON")


def run(args: argparse.Namespace) -> int:
    from star_core.io.lake import Lake
    from star_core.io.lake_check import check_lake, quarantine

    lake = Lake(load(args).storage.lake_uri)
    result = check_lake(lake)
    problems = list(result.problems)
    if args.quarantine and problems:
        problems = quarantine(lake, problems)
    left = [p for p in problems if p.moved_to is None]
    if args.json:
        print(json.dumps({"lake": lake.uri, "checked": result.n_checked, "problems": [p.to_dict() for p in problems]}, indent=2))
    else:
        for p in problems:
            print(f"{p.kind}: {p.uri}: {p.reason}")
            if p.moved_to:
                print(f"  quarantined -> {p.moved_to}")
        summary = f"lake {lake.uri}: checked {result.n_checked} files, {len(problems)} bad"
        if args.quarantine:
            summary += f", {len(problems) - len(left)} quarantined"
        elif left:
            summary += f" (move them aside with `star lake check --lake {lake.uri} --quarantine`)"
        print(summary)
    return 1 if left else 0
