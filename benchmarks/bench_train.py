"""Benchmark of the training job: time per epoch and peak memory with 1 and 2 Ray Train workers.

Data: the full-size THUMOS'14 stand-in (``star synth --scale full``: 412 videos, D=1024 per stream,
200 training videos of ~330 segments on average) imported into a local lake with
``star import wtalc``; both steps run once and are skipped when the lake already holds the dataset.
Each worker count runs the real job (``jobs.train.train``: Ray Train, checkpoints on the lake,
MLflow in the lake's SQLite, evaluation on the test split at the end, model logged and registered).

    python benchmarks/bench_train.py                        # 1 and 2 workers, 3 epochs, default config
    python benchmarks/bench_train.py --workers 2 --epochs 2 --out bench_train.json

Reported per worker count: seconds per epoch (median over epochs after the first, which includes
warm-up), first-epoch seconds, peak RSS of the largest worker and of the driver, wall time of
``train()``, evaluation time on the test split and the test mAP.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_train")


def ensure_standin(lake_uri: str, dataset: str, standin_dir: str, seed: int) -> None:
    """Generate the full stand-in and import it unless the lake already has ``dataset``."""
    from star_core.io import standin
    from star_core.io.wtalc_import import import_wtalc
    from star_core.io.lake import Lake
    from star_core.io.datasets import dataset_versions

    lake = Lake(lake_uri)
    if dataset_versions(lake, dataset):
        log.info("lake %s already holds dataset %s", lake_uri, dataset)
        return
    marker_path = Path(standin_dir) / "synth.json"
    if marker_path.exists():
        marker = json.loads(marker_path.read_text())
    else:
        from jobs.runtime import Progress

        progress = Progress(total=412, what="videos")
        t0 = time.monotonic()
        marker = standin.build_standin(standin_dir, "full", seed, on_progress=lambda done, total, n: progress.update(done=1, segments=n))
        log.info("stand-in generated in %.0f s", time.monotonic() - t0)
    t0 = time.monotonic()
    result = import_wtalc(marker["features"], marker["annotations"], lake, dataset)
    log.info(
        "imported %s: %s videos, %s segments, D=%s, splits %s in %.0f s",
        dataset,
        result.n_videos,
        result.n_segments,
        result.feat_dim,
        result.splits,
        time.monotonic() - t0,
    )


def bench_one(args: argparse.Namespace, workers: int) -> dict:
    from jobs import tracking
    from jobs.runtime import new_run_id
    from jobs.train import train
    from star_core.config import load_config

    cfg = load_config(
        args.config,
        [f"train.epochs={args.epochs}", *args.overrides],
        values={
            "storage.lake_uri": args.lake,
            "resources.workers": workers,
            "resources.cpus_per_worker": args.cpus_per_worker,
            "train_run.run_name": new_run_id(f"bench-w{workers}"),
            "train_run.model_name": "star-bench",
            "train_run.alias": None,
            "train_run.experiment": "bench-train",
        },
    )
    t0 = time.monotonic()
    result = train(cfg, args.dataset)
    wall_s = time.monotonic() - t0
    client = tracking.client(result.tracking_uri)
    epoch_s = [m.value for m in sorted(client.get_metric_history(result.run_id, "epoch_time_s"), key=lambda m: m.step)]
    rss = [m.value for m in client.get_metric_history(result.run_id, "worker_peak_rss_mb")]
    steady = epoch_s[1:] or epoch_s
    return {
        "workers": workers,
        "cpus_per_worker": args.cpus_per_worker,
        "epochs": result.epochs_completed,
        "epoch_s_median": statistics.median(steady),
        "epoch_s_first": epoch_s[0],
        "epoch_s_all": epoch_s,
        "worker_peak_rss_mb": max(rss) if rss else None,
        "driver_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "train_wall_s": wall_s,
        "eval_s": result.metrics.get("eval_time_s"),
        "test_avg_map_0.1_0.7": result.metrics.get("test/avg_map_0.1_0.7"),
        "test_avg_map_0.1_0.5": result.metrics.get("test/avg_map_0.1_0.5"),
        "run_id": result.run_id,
        "model_uri": result.model_uri,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lake", default="/tmp/star-bench/lake", help="local lake (created on first use)")
    parser.add_argument("--dataset", default="th14-standin")
    parser.add_argument("--standin-dir", default="/tmp/star-bench/standin")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cpus-per-worker", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--config", help="StarConfig YAML (default: the paper's settings)")
    parser.add_argument("--out", help="write the results as JSON here")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.pop("MLFLOW_TRACKING_URI", None)  # the embedded SQLite store of the lake

    ensure_standin(args.lake, args.dataset, args.standin_dir, args.seed)
    rows = [bench_one(args, w) for w in args.workers]
    header = (
        "| workers | s/epoch (median) | first epoch s | worker peak RSS MiB | driver peak RSS MiB "
        "| train() wall s | eval s | avg mAP 0.1:0.7 |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|")

    def fmt(value, digits: int) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    for r in rows:
        cells = [
            str(r["workers"]),
            fmt(r["epoch_s_median"], 1),
            fmt(r["epoch_s_first"], 1),
            fmt(r["worker_peak_rss_mb"], 0),
            fmt(r["driver_peak_rss_mb"], 0),
            fmt(r["train_wall_s"], 0),
            fmt(r["eval_s"], 0),
            fmt(r["test_avg_map_0.1_0.7"], 2),
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    if args.out:
        Path(args.out).write_text(json.dumps({"load_avg": os.getloadavg(), "cpus": os.cpu_count(), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
