"""``star query "SQL" --lake LAKE [--format table|csv|json]``: SQL over the lake with DuckDB.

Views: ``detections`` (with hive partition columns ``model`` and ``date``), ``features``
(metadata only) and ``labels`` (latest version of every dataset, with a ``dataset`` column).
Examples are in docs/querying.md.
"""

from __future__ import annotations

import argparse
import sys

from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sql", help="the SQL query ('-' reads it from stdin); views: detections, features, labels")
    setting(parser, "--lake", key="storage.lake_uri")
    add_config_options(parser)
    parser.add_argument("--format", choices=("table", "csv", "json"), default="table", help="output format (default %(default)s)")
    parser.add_argument("--max-rows", type=int, default=200, help="rows shown in table format (default %(default)s; csv/json print all)")


def run(args: argparse.Namespace) -> int:
    from jobs.query import format_table, query

    sql = sys.stdin.read() if args.sql == "-" else args.sql
    result = query(load(args).storage.lake_uri, sql)
    print(format_table(result, args.format, max_rows=args.max_rows if args.format == "table" else None))
    return 0
