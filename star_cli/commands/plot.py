"""``star plot VIDEO_ID --lake LAKE [--model-version V] [--dataset NAME] [--out PNG]``.

A timeline of one video's detections per class, shaded by score, against its ground-truth
instances when the video belongs to a dataset (the paper's Fig. 5). Without
``--model-version`` the model whose detections of the video are newest is drawn.
"""

from __future__ import annotations

import argparse
import math

from star_cli.options import add_config_options, load, setting


def _score(text: str) -> float:
    """A finite float (argparse type): ``nan``/``inf`` would silently hide every detection or none."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("video_id", metavar="VIDEO_ID", help="the video to draw")
    setting(parser, "--lake", key="storage.lake_uri")
    add_config_options(parser)
    parser.add_argument("--model-version", help="model partition NAME-vN (e.g. star-v3) or a version number (default: newest detections)")
    parser.add_argument("--dataset", help="ground truth from this dataset (default: any dataset holding the video)")
    parser.add_argument("--min-score", type=_score, default=0.0, help="hide detections below this score (a finite number)")
    parser.add_argument("--out", help="PNG to write (default: <VIDEO_ID>-timeline.png)")


def run(args: argparse.Namespace) -> int:
    from jobs.plots import plot_timeline
    from jobs.timeline import timeline_inputs
    from star_core.io.lake import Lake

    lake = Lake(load(args).storage.lake_uri)
    inputs = timeline_inputs(lake, args.video_id, model_version=args.model_version, dataset=args.dataset)
    out = args.out or f"{args.video_id}-timeline.png"
    path = plot_timeline(
        args.video_id, inputs.detections, inputs.ground_truth, inputs.classes, inputs.duration_s, out, min_score=args.min_score
    )
    what = f"{len(inputs.detections)} detections" + (f" of {inputs.model}" if inputs.model else "")
    gt = f", ground truth from {inputs.dataset}" if inputs.dataset else ", no ground truth"
    print(f"{path}: {args.video_id}: {what}{gt}")
    return 0
