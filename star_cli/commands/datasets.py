"""``star datasets --lake LAKE [--json]``: datasets, versions, classes, splits and feature coverage."""

from __future__ import annotations

import argparse
import json

from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    setting(parser, "--lake", key="storage.lake_uri")
    add_config_options(parser)
    parser.add_argument("--dataset", help="only this dataset")
    parser.add_argument("--json", action="store_true", help="print JSON (one object per dataset version)")


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows)


def run(args: argparse.Namespace) -> int:
    from star_core.io.labels_import import describe_datasets
    from star_core.io.lake import Lake
    from star_core.io.feature_store import list_feature_sets

    lake_uri = load(args).storage.lake_uri
    lake = Lake(lake_uri)
    infos = describe_datasets(lake, args.dataset)
    if args.json:
        print(json.dumps(infos, indent=2))
        return 0
    if not infos:
        print(f"lake {lake.uri}: no datasets yet (import labels with `star labels import FILE --lake {lake_uri} --dataset NAME`)")
        return 0
    feature_sets = list_feature_sets(lake)
    rows = [["dataset", "version", "videos", "train", "val", "test", "classes", *[f"features:{fs}" for fs in feature_sets]]]
    for d in infos:
        with_features = [str(sum(d["features"].get(fs, {}).values())) for fs in feature_sets]
        splits = [str(d["splits"].get(s, 0)) for s in ("train", "val", "test")]
        rows.append([d["name"], f"v{d['version']}", str(d["n_videos"]), *splits, str(len(d["classes"])), *with_features])
    print(f"lake {lake.uri}")
    print(_table(rows))
    for d in infos:
        print(f"\n{d['name']} v{d['version']} classes: {', '.join(d['classes'])}")
        for fs, per_split in d["features"].items():
            if per_split:
                cover = ", ".join(f"{s} {n}/{d['splits'].get(s, 0)}" for s, n in per_split.items())
                print(f"  features {fs}: {cover}")
        if d.get("source"):
            print(f"  imported from {d['source']} at {d['created_at']}")
    return 0
