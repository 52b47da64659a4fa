"""``star labels import FILE --lake LAKE --dataset NAME``: video-level labels for your own videos.

FILE (local path or any URI: ``s3://``, ``memory://``; ``.gz`` is fine) is CSV/TSV, JSON Lines,
Parquet, a JSON array of rows, or an ActivityNet-style JSON, one row per video. See
``docs/labels.md`` for the columns and cell formats. Problems are listed with their row and the
import writes nothing; re-importing the same content is a no-op, changed content makes a new
dataset version.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from star_cli.cli import CommandError
from star_cli.options import add_config_options, load, setting
from star_core.data import SPLIT_ALIASES, SPLIT_NAMES
from star_core.labels import ALIASES, ImportOptions

log = logging.getLogger("star.labels")
MAX_LISTED = 20  # videos without features printed in the summary


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key.strip(), value.strip()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imp = sub.add_parser(
        "import",
        help="import a label file as a (new version of a) dataset",
        description="Import video-level labels (CSV, JSON Lines, Parquet, ActivityNet-style JSON) as a versioned dataset.",
        epilog=f"fields: {', '.join(ALIASES)} (video and labels required). "
        "Example: star labels import labels.csv --lake s3://bucket/lake --dataset mine",
    )
    imp.add_argument("file", help="label file: local path or URI (s3://..., memory://...)")
    setting(imp, "--lake", key="storage.lake_uri")
    add_config_options(imp)
    imp.add_argument("--dataset", required=True, help="dataset name (letters, digits, '.', '_', '-')")
    imp.add_argument("--format", choices=["csv", "tsv", "jsonl", "parquet", "json"], help="file format (default: from the file name)")
    imp.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="share of rows without a split that go to test (seeded, stable per video); default %(default)s",
    )
    imp.add_argument("--seed", type=int, default=0, help="seed of that split; default %(default)s")
    imp.add_argument("--label-delimiter", default="|", help="separates labels in a string cell; default %(default)r")
    imp.add_argument(
        "--column",
        action="append",
        type=_key_value,
        default=[],
        metavar="FIELD=COLUMN",
        help="read FIELD (video, labels, split, counts, intervals, duration_s) from COLUMN; repeatable",
    )
    imp.add_argument(
        "--ignore-column",
        action="append",
        default=[],
        metavar="COLUMN",
        help="leave COLUMN unread instead of rejecting it as unknown; repeatable",
    )
    imp.add_argument(
        "--split-map",
        action="append",
        type=_key_value,
        default=[],
        metavar="VALUE=SPLIT",
        help="map a split value of the file to train/val/test (e.g. validation=train for THUMOS'14); repeatable",
    )
    imp.add_argument(
        "--classes",
        help="fixed class list (its order is kept): comma-separated, or a text file with one class per line; default: sorted labels found",
    )
    imp.add_argument(
        "--feature-set",
        action="append",
        default=None,
        metavar="NAME",
        help="check feature coverage in this feature set only (repeatable); default: all in the lake",
    )
    imp.add_argument(
        "--duration-tolerance-s",
        type=float,
        default=0.5,
        help="an interval may end this many seconds past the video's duration; default %(default)s",
    )
    imp.add_argument("--skip-invalid", action="store_true", help="leave out rows with problems (they are listed) instead of failing")
    imp.add_argument("--json", action="store_true", help="print the result as JSON")


def _classes(value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    path = Path(value)
    names = path.read_text().splitlines() if path.is_file() else value.split(",")
    names = [n.strip() for n in names if n.strip()]
    dups = sorted({n for n in names if names.count(n) > 1})
    if not names or dups:
        raise CommandError(f"--classes {value!r}: " + (f"class {dups[0]!r} is listed twice" if dups else "no class names"))
    return tuple(names)


def run(args: argparse.Namespace) -> int:
    from star_core.io.labels_import import import_labels
    from star_core.io.lake import Lake

    split_map = dict(SPLIT_ALIASES)
    for value, split in args.split_map:
        if split not in SPLIT_NAMES:
            raise CommandError(f"--split-map {value}={split}: split must be one of {', '.join(SPLIT_NAMES)}")
        split_map[value.lower()] = split
    column_map = dict(args.column)
    opts = ImportOptions(
        label_delimiter=args.label_delimiter,
        test_fraction=args.test_fraction,
        seed=args.seed,
        split_map=split_map,
        classes=_classes(args.classes),
        duration_tolerance_s=args.duration_tolerance_s,
        skip_invalid=args.skip_invalid,
    )
    if not 0.0 <= args.test_fraction < 1.0:
        raise CommandError(f"--test-fraction must be in [0, 1), got {args.test_fraction}")
    result = import_labels(
        args.file,
        Lake(load(args).storage.lake_uri),
        args.dataset,
        opts,
        column_map=column_map,
        ignore_columns=args.ignore_column,
        fmt=args.format,
        feature_sets=args.feature_set,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    state = "created" if result.created else "unchanged (same content as the latest version; nothing written)"
    print(f"dataset {result.dataset} v{result.version}: {state}")
    print(f"  source   {result.source} ({result.format})")
    print(f"  lake     {result.lake}")
    print(f"  videos   {result.n_videos} (" + ", ".join(f"{k} {n}" for k, n in result.splits.items()) + ")")
    print(f"  classes  {len(result.classes)}: {', '.join(result.classes)}")
    for name, n in result.with_features.items():
        print(f"  features {name}: {n} of {result.n_videos} videos")
    if result.without_features:
        shown = ", ".join(result.without_features[:MAX_LISTED])
        more = f", ... ({len(result.without_features) - MAX_LISTED} more)" if len(result.without_features) > MAX_LISTED else ""
        print(f"  {len(result.without_features)} video(s) have no features yet (extract them, or the train flow skips them): {shown}{more}")
    for problem in result.skipped:
        print(f"  skipped  {problem}")
    for warning in result.warnings:
        print(f"  warning  {warning}")
    return 0
