"""`star demo`: the whole system on embedded defaults (see jobs/demo.py)."""

from __future__ import annotations

import argparse

from jobs.demo import DemoConfig
from star_cli.options import load, setting


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    setting(parser, "--lake", key="storage.lake_uri")
    parser.add_argument("--videos-dir", default=d.videos_dir, help="where the generated videos go; default %(default)s")
    parser.add_argument("--videos", type=int, default=d.n_videos, help="videos to generate; default %(default)s")
    parser.add_argument("--epochs", type=int, default=d.epochs, help="training epochs; default %(default)s")
    parser.add_argument("--workers", type=int, default=d.workers, help="Ray Train workers; default %(default)s")
    parser.add_argument("--rgb-weights", help="RGB I3D weight file (default: random weights)")
    parser.add_argument("--flow-weights", help="flow I3D weight file (default: random weights)")
    parser.add_argument("--seed", type=int, default=d.seed)


def run(args: argparse.Namespace) -> int:
    from jobs.demo import run_demo

    cfg = DemoConfig(
        lake_uri=load(args).storage.lake_uri, videos_dir=args.videos_dir, n_videos=args.videos, epochs=args.epochs, workers=args.workers,
        rgb_weights=args.rgb_weights, flow_weights=args.flow_weights, seed=args.seed,
    )
    run_demo(cfg)
    return 0
