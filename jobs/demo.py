"""The newcomer path: the whole system on embedded defaults, from video files, in minutes.

    videos with known actions (generated) -> labels CSV -> `star labels import`
      -> `star extract` (Ray: decode, flow, I3D) -> `star train` (Ray Train, MLflow, registry)
      -> `star detect` (Ray Data, Parquet) -> mAP table, `star query`, `star plot`

Every step calls the same job function as the CLI, the Ray job and the Prefect flow; nothing
here is demo-only except the generated videos and the small extractor/model sizes, which keep
the run within minutes on 2 CPU cores. I3D runs with random weights unless ``--rgb-weights`` /
``--flow-weights`` are given (the extractor warns loudly); the synthetic actions are simple
enough (colour and motion) for random features to separate them.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from star_core.config import StarConfig, replace
from star_core.video.config import FeatureConfig

log = logging.getLogger("star.demo")


@dataclass(frozen=True)
class DemoConfig:
    lake_uri: str = "./star-lake"  # where everything is written
    videos_dir: str = "./star-demo-videos"  # generated archive
    n_videos: int = 16  # generated videos (the last quarter is the test split)
    duration_s: float = 12.0  # per video
    video_size: int = 128  # pixels (square)
    epochs: int = 60  # STAR training epochs
    workers: int = 1  # Ray Train workers
    seed: int = 0
    dataset: str = "demo"
    model_name: str = "star"
    rgb_weights: str | None = None
    flow_weights: str | None = None
    features: FeatureConfig = field(
        default_factory=lambda: FeatureConfig(flow="farneback", resize_short_side=128, crop_size=112)
    )  # small frames and the fast flow keep extraction to minutes on 2 cores


def _step(n: int, total: int, text: str) -> float:
    log.info("[%d/%d] %s", n, total, text)
    return time.monotonic()


def _write_labels_csv(videos, path: Path, n_test: int) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "labels", "counts", "intervals", "split", "duration_s"])
        for k, v in enumerate(videos):
            counts = "|".join(f"{lab}:{c}" for lab, c in zip(v.labels, v.counts))
            intervals = "|".join(f"{i.label}:{i.t_start_s}-{i.t_end_s}" for i in v.instances)
            split = "test" if k >= len(videos) - n_test else "train"
            w.writerow([str(v.path.resolve()), "|".join(v.labels), counts, intervals, split, f"{v.duration_s:.2f}"])
    return path


def run_demo(cfg: DemoConfig) -> dict:
    """Run every stage; returns a summary (paths, model version, mAP, counts)."""
    from jobs import detect as detect_job
    from jobs import extract as extract_job
    from jobs import query as query_job
    from jobs import train as train_job
    from jobs.plots import plot_timeline
    from jobs.timeline import timeline_inputs
    from star_core.io.labels_import import import_labels
    from star_core.io.lake import Lake
    from star_core.synth_video import make_demo_set

    from jobs.runtime import ensure_ray, new_run_id, ray_log_dir, set_ray_log_dir

    total = 7
    t_start = time.monotonic()
    lake = Lake(cfg.lake_uri)
    videos_dir = Path(cfg.videos_dir).resolve()
    summary: dict = {"lake": lake.url(), "videos_dir": str(videos_dir)}
    # Ray's own log lines go to files (the console shows star's lines; -v shows everything).
    demo_logs = lake.path("logs", new_run_id("demo")) if lake.is_local else None
    ensure_ray(log_dir=demo_logs)
    summary["ray_logs"] = str(ray_log_dir())

    t = _step(1, total, f"generating {cfg.n_videos} videos with known actions in {videos_dir}")
    videos = make_demo_set(videos_dir, n_videos=cfg.n_videos, duration_s=cfg.duration_s, size=cfg.video_size, seed=cfg.seed)
    log.info("      %d videos, %.0f s of video, in %.1f s", len(videos), sum(v.duration_s for v in videos), time.monotonic() - t)

    t = _step(2, total, "importing video-level labels (star labels import)")
    n_test = max(1, cfg.n_videos // 4)
    labels_csv = _write_labels_csv(videos, videos_dir / "labels.csv", n_test)
    imported = import_labels(str(labels_csv), lake, cfg.dataset)
    log.info("      dataset %s v%d: %s, classes %s", cfg.dataset, imported.version, imported.splits, imported.classes)

    features = FeatureConfig(**{**cfg.features.__dict__, "rgb_weights": cfg.rgb_weights, "flow_weights": cfg.flow_weights})
    t = _step(3, total, f"extracting two-stream I3D features ({features.flow} flow, {features.crop_size} px) with Ray")
    base = dataclasses.replace(
        replace(StarConfig(), **{"storage.lake_uri": cfg.lake_uri, "resources.workers": cfg.workers}), features=features
    )
    extracted = extract_job.extract(base, str(videos_dir))
    log.info(
        "      %d done, %d failed, %d skipped, %d segments, %.1f segments/s",
        extracted.done,
        extracted.failed,
        extracted.skipped,
        extracted.n_segments,
        extracted.segments_per_s,
    )
    summary["feature_set"] = extracted.feature_set

    t = _step(4, total, f"training STAR (both streams, {cfg.epochs} epochs) with Ray Train, tracked in MLflow")
    star = replace(
        base,
        **{
            "train.epochs": cfg.epochs,
            "train.batch_size": 2,
            "train.lr": 1e-3,
            "train.sample_segments": 0,
            "train.seed": cfg.seed,
            "model.hidden_dim": 128,
            "model.attn_dim": 64,
            "model.feature_norm": "standardize",  # random-weight I3D features need per-dim standardisation
            "train_run.model_name": cfg.model_name,
        },
    )
    trained = train_job.train(star, cfg.dataset, feature_set=extracted.feature_set)
    summary |= {
        "mlflow_run_id": trained.run_id,
        "model_uri": trained.model_uri,
        "tracking_uri": trained.tracking_uri,
        "metrics": trained.metrics,
    }
    summary["ray_logs_train"] = str(ray_log_dir())
    set_ray_log_dir(summary["ray_logs"])  # detection's lines back into the demo's log directory
    log.info("      model %s (alias set: %s) in %.0f s", trained.model_uri, trained.alias_set, time.monotonic() - t)

    t = _step(5, total, f"detecting actions in every video with {trained.model_uri} (Ray Data -> Parquet)")
    detected = detect_job.detect(
        replace(star, **{"detect.model_uri": trained.model_uri}),
        detect_job.DetectInputs(dataset=cfg.dataset, feature_set=extracted.feature_set),
    )
    summary["detect"] = detected.summary() if hasattr(detected, "summary") else str(detected)

    t = _step(6, total, "querying the detections (star query)")
    sql = (
        "SELECT label, count(*) AS detections, round(avg(t_end_s - t_start_s), 2) AS mean_length_s, round(max(score), 3) AS best_score "
        "FROM detections GROUP BY label ORDER BY label"
    )
    table = query_job.query(lake, sql)
    summary["query"] = sql

    t = _step(7, total, "drawing a detection timeline (star plot)")
    test_video = videos[-1].video_id
    inputs = timeline_inputs(lake, test_video)
    png = Path(videos_dir) / f"timeline_{test_video}.png"
    plot_timeline(inputs.video_id, inputs.detections, inputs.ground_truth, inputs.classes, inputs.duration_s, png)
    summary["timeline_png"] = str(png)
    summary["elapsed_s"] = round(time.monotonic() - t_start, 1)

    _print_report(summary, trained.metrics, query_job.format_table(table), cfg)
    return summary


def _print_report(summary: dict, metrics: dict, query_text: str, cfg: DemoConfig) -> None:
    thresholds = ["0.1", "0.2", "0.3", "0.4", "0.5", "0.6", "0.7"]
    maps = [metrics.get(f"test/map_{t}") for t in thresholds]
    lines = ["", "=" * 78, f"star demo finished in {summary['elapsed_s']:.0f} s", "=" * 78, "", "Detection mAP (%) on the test videos:"]
    lines.append("  tIoU  " + "  ".join(f"{t:>5}" for t in thresholds) + "   avg0.1:0.5  avg0.1:0.7")
    cells = "  ".join(f"{m:5.1f}" if isinstance(m, (int, float)) else "    -" for m in maps)
    avg5 = metrics.get("test/avg_map_0.1_0.5")
    avg7 = metrics.get("test/avg_map_0.1_0.7")
    fmt = lambda v: f"{v:10.1f}" if isinstance(v, (int, float)) else "         -"  # noqa: E731
    lines.append(f"  mAP   {cells}   {fmt(avg5)}  {fmt(avg7)}")
    lines += ["", "star query: detections per class", query_text, ""]
    tracking = summary["tracking_uri"]
    lines += [
        "Where everything went:",
        f"  lake (features, labels, detections, manifests): {summary['lake']}",
        f"  generated videos and labels.csv:                {summary['videos_dir']}",
        f"  timeline picture:                               {summary['timeline_png']}",
        f"  model:                                          {summary['model_uri']} (MLflow run {summary['mlflow_run_id']})",
        f"  Ray logs (extraction, detection):               {summary['ray_logs']}",
        f"  Ray logs (training):                            {summary['ray_logs_train']}",
        "",
        "Look closer:",
        f"  MLflow UI:    .venv/bin/mlflow ui --backend-store-uri {tracking}",
        f'  SQL:          .venv/bin/star query "SELECT * FROM detections LIMIT 20" --lake {cfg.lake_uri}',
        f"  A timeline:   .venv/bin/star plot <video_id> --lake {cfg.lake_uri} --out timeline.png",
        "  Prefect UI:   .venv/bin/prefect server start   (then `prefect deploy --all`; see docs/prefect.md)",
    ]
    print("\n".join(lines))
