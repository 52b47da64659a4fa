"""`star import`: public two-stream feature releases into the lake.

    star import wtalc --features Thumos14reduced-I3D-JOINTFeatures.npy \\
        --annotations Thumos14reduced-Annotations --lake ./star-lake --dataset thumos14
    star import basnet --root BaSNet/dataset/THUMOS14 --lake ./star-lake --dataset thumos14-basnet
"""

from __future__ import annotations

import argparse

from jobs.runtime import Progress
from star_cli.options import add_config_options, load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="layout", required=True, metavar="{wtalc,basnet}")
    w = sub.add_parser("wtalc", help="W-TALC layout: one JOINT features .npy + the *-Annotations directory")
    w.add_argument("--features", required=True, help="object .npy of [T_i, 2D] arrays (RGB 0:D, flow D:2D)")
    w.add_argument("--annotations", required=True, help="directory with videoname.npy, segments.npy, ... and Ambiguous_test.txt")
    w.add_argument(
        "--labels-from",
        choices=("instances", "labels_all"),
        default="instances",
        help="video-level labels from the intervals (default) or labels_all.npy as shipped",
    )
    b = sub.add_parser("basnet", help="BaS-Net layout: features/{train,test}/{rgb,flow}/<video>.npy + gt.json")
    b.add_argument("--root", required=True, help="folder holding features/ and gt.json")
    b.add_argument("--gt", default=None, help="ground-truth JSON (default <root>/gt.json)")
    b.add_argument("--video-info", default=None, help="true durations, e.g. TH14_video_info.json (gt.json's are frames/30)")
    b.add_argument("--ambiguous", default=None, help="Ambiguous_test.txt (ignored segments in evaluation)")
    for p in (w, b):
        setting(p, "--lake", key="storage.lake_uri")
        add_config_options(p)
        p.add_argument("--dataset", required=True, help="dataset name to create (new version only if content changed)")
        p.add_argument(
            "--feature-set", default=None, help="feature-set name in the lake (default per layout; stand-in data declares its own)"
        )
        p.add_argument(
            "--keep-excluded", action="store_true", help="keep video_test_0000270/0001496 in the test split (W-TALC's 212-video protocol)"
        )
        p.add_argument(
            "--length-tolerance",
            type=float,
            default=0.1,
            help="relative tolerance of feature length vs duration; negative disables the check",
        )
        setting(p, "--shard-videos", key="extract.shard_videos", help="videos per features Parquet file (as extraction writes them)")


def run(args: argparse.Namespace) -> int:
    from star_core.io import wtalc_import
    from star_core.io.import_basnet import import_basnet

    exclude = () if args.keep_excluded else wtalc_import.THUMOS14_EXCLUDED
    tolerance = None if args.length_tolerance < 0 else args.length_tolerance
    progress: Progress | None = None

    def on_progress(done: int, total: int) -> None:
        nonlocal progress
        if progress is None:
            progress = Progress(total=total, what="videos")
        progress.update(done=done - progress.done)

    cfg = load(args)
    lake_uri = cfg.storage.lake_uri
    common = dict(exclude_videos=exclude, length_tolerance=tolerance, shard_videos=cfg.extract.shard_videos, on_progress=on_progress)
    if args.layout == "wtalc":
        result = wtalc_import.import_wtalc(
            args.features, args.annotations, lake_uri, args.dataset, args.feature_set, labels_from=args.labels_from, **common
        )
    else:
        result = import_basnet(
            args.root,
            lake_uri,
            args.dataset,
            args.feature_set,
            gt_json=args.gt,
            video_info=args.video_info,
            ambiguous=args.ambiguous,
            **common,
        )
    state = "created" if result.created else "unchanged (same content)"
    splits = ", ".join(f"{k}={v}" for k, v in sorted(result.splits.items()))
    print(
        f"dataset {result.dataset} v{result.version} {state}: {result.n_videos} videos "
        f"({splits}), {result.n_segments} segments, D={result.feat_dim} per stream"
    )
    print(f"features: {lake_uri.rstrip('/')}/features/{result.feature_set} ({len(result.feature_files)} files)")
    return 0
