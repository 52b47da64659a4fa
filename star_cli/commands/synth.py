"""`star synth`: write the THUMOS'14-shaped stand-in features in the W-TALC layout.

    star synth --out ./standin --scale small            # 12 videos x 64 dims, seconds
    star synth --out ./standin --scale full --seed 0    # 412 videos x 1024 dims (~1.2 GB), minutes
    star import wtalc --features ./standin/Thumos14reduced-I3D-JOINTFeatures.npy \\
        --annotations ./standin/Thumos14reduced-Annotations --lake ./star-lake --dataset th14-standin
"""

from __future__ import annotations

import argparse

from jobs.runtime import Progress


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output folder (local path or fsspec URI)")
    parser.add_argument(
        "--scale", choices=("small", "full"), default="full", help="small: 12 videos x 64 dims; full: 412 videos x 1024 dims"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the world and every video")
    parser.add_argument("--annotations", default=None, help="real W-TALC annotation folder (default: the repository's data/thumos14 copy)")
    parser.add_argument("--feat-dim", type=int, default=None, help="override the per-stream feature dimension")
    from star_core.synth.world import DIFFICULTIES

    parser.add_argument(
        "--difficulty", choices=sorted(DIFFICULTIES), default="standard", help="named difficulty setting (star_core.synth.DIFFICULTIES)"
    )


def run(args: argparse.Namespace) -> int:
    from star_core.io import standin

    progress: Progress | None = None

    def on_progress(done: int, total: int, n_segments: int) -> None:
        nonlocal progress
        if progress is None:
            progress = Progress(total=total, what="videos")
        progress.update(done=1, segments=n_segments)

    marker = standin.build_standin(
        args.out, args.scale, args.seed, args.annotations, args.feat_dim, on_progress, difficulty=args.difficulty
    )
    print(
        f"stand-in ({args.scale}, seed {args.seed}): {marker['n_videos']} videos, "
        f"{marker['n_segments']} segments, D={marker['feat_dim']} per stream"
    )
    print(f"features:    {marker['features']}")
    print(f"annotations: {marker['annotations']}")
    print(
        f"import with: star import wtalc --features {marker['features']} --annotations {marker['annotations']} --lake LAKE --dataset NAME"
    )
    return 0
