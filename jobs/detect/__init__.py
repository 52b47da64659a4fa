"""Bulk detection over a lake's features (or videos), to hive-partitioned Parquet, tracked in MLflow.

One run, in three parts:

- :mod:`jobs.detect.planning`: which videos to process, skip or retry (incremental: a video this
  model version has done is never redone; one that failed is retried when its features change);
- :mod:`jobs.detect.running`: the Ray Data pipeline (model loaded once per actor; a corrupt row
  fails alone, with its reason);
- :mod:`jobs.detect.recording`: detections files, the run's manifest, its MLflow run and timelines.

:func:`detect` wires them. Run it as ``star detect ...`` or ``python -m jobs.detect ...`` (the
KubeRay entrypoint).
"""

from __future__ import annotations

import datetime as dt
import logging

from jobs.detect.config import DetectJobConfig
from jobs.detect.planning import JOB, DetectPlan, choose_feature_set, plan_videos, processed_before, select_videos
from jobs.detect.recording import DetectRecorder, DetectRunResult
from jobs.detect.running import READ_COLUMNS, RESULT_SCHEMA, DetectBatch, Loader

__all__ = [
    "JOB", "READ_COLUMNS", "RESULT_SCHEMA", "DetectBatch", "DetectJobConfig", "DetectPlan", "DetectRunResult", "Loader",
    "choose_feature_set", "detect", "plan_videos", "processed_before", "select_videos",
]

log = logging.getLogger("star.detect")


def detect(cfg: DetectJobConfig, loader: Loader | None = None) -> DetectRunResult:
    """Detect actions on every selected video that this model version has not processed yet.

    Args:
        cfg: the job config.
        loader: ``model_uri -> (StarDetector, ModelRef)`` used once per actor; default
            ``jobs.tracking.load_detector`` (the MLflow registry). Must be picklable.

    Returns:
        :class:`DetectRunResult` with counts, files, partitions, throughput and the MLflow run id.

    Raises:
        ValueError: bad selection (unknown dataset or feature set, no model in the registry).
    """
    import time

    from jobs import tracking
    from jobs.detect.running import extract_missing, run_pipeline
    from jobs.runtime import ensure_ray
    from star_core.io import feature_store
    from star_core.io.lake import Lake

    t_start = time.monotonic()
    lake = Lake(cfg.lake_uri, cfg.s3_endpoint_url)
    date = cfg.date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    tracking_uri = cfg.tracking_uri or tracking.tracking_uri(lake)
    model = tracking.resolve_model(cfg.model_uri, tracking_uri)  # pinned name/version before any work

    feature_set, extract_failures = extract_missing(cfg) if cfg.videos else (cfg.feature_set, {})
    feature_set = choose_feature_set(lake, feature_set)
    selection, ground_truth = select_videos(lake, cfg)
    done, failed_before = processed_before(lake, model.name, model.version)
    plan = plan_videos(feature_store.feature_index(lake, feature_set), selection, done, failed_before, retry_failed=cfg.retry_failed)
    log.info(
        "model %s v%s, feature set %s: %d selected, %d already done, %d failed before on unchanged features, "
        "%d without features, %d to process",
        model.name, model.version, feature_set, len(plan.selected), plan.n_done, plan.n_stale_failures,
        len(plan.missing), plan.todo.num_rows,
    )

    recorder = DetectRecorder(lake, cfg, tracking_uri, model, feature_set, date, plan, extract_failures, t_start)
    status = "FAILED"
    try:
        if plan.todo.num_rows:
            ensure_ray(cfg.ray_address)
            shards = run_pipeline(lake, cfg, plan.todo, model.uri, loader, tracking.worker_env(tracking_uri), on_first=recorder.first_batch)
            for shard in shards:
                recorder.record_shard(shard)
        status = "FINISHED"
    finally:
        result = recorder.finish(status, ground_truth)
    log.info("%s", result.summary())
    return result


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.detect``: exactly ``star detect`` (same options, errors and exit codes)."""
    import sys

    from jobs.cli import main as star

    return star(["detect", *(sys.argv[1:] if argv is None else argv)])
