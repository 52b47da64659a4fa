"""Bulk detection over a lake's features (or videos), to hive-partitioned Parquet, tracked in MLflow.

One run, in three parts:

- :mod:`jobs.detect.planning`: which videos to process, skip or retry (incremental: a video this
  model version has done is never redone; one that failed is retried when its features change);
- :mod:`jobs.detect.running`: the Ray Data pipeline (model loaded once per actor; a corrupt row
  fails alone, with its reason);
- :mod:`jobs.detect.recording`: detections files, the run's manifest, its MLflow run and timelines.

:func:`detect` wires them: ``detect(cfg, inputs)`` with the settings in the one ``StarConfig`` tree
(``detect``, ``resources``, ``storage``) and the run's selection in :class:`DetectInputs`. Run it as
``star detect ...`` (also the KubeRay entrypoint).
"""

from __future__ import annotations

import datetime as dt
import logging

from star_core.config import StarConfig

from jobs.detect.inputs import DetectInputs
from jobs.detect.planning import JOB, DetectPlan, choose_feature_set, plan_videos, processed_before, select_videos
from jobs.detect.recording import DetectRecorder, DetectRunResult
from jobs.detect.running import READ_COLUMNS, RESULT_SCHEMA, DetectBatch, Loader

__all__ = [
    "JOB", "READ_COLUMNS", "RESULT_SCHEMA", "DetectBatch", "DetectInputs", "DetectPlan", "DetectRunResult", "Loader",
    "choose_feature_set", "detect", "plan_videos", "processed_before", "row_to_video", "select_videos",
]

log = logging.getLogger("star.detect")


def detect(cfg: StarConfig, inputs: DetectInputs = DetectInputs(), loader: Loader | None = None) -> DetectRunResult:
    """Detect actions on every selected video that this model version has not processed yet.

    Args:
        cfg: the settings (``detect``: model URI, batch, experiment...; ``resources``; ``storage``).
        inputs: what to detect on (dataset, split or videos; feature set, date, caller's run id).
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
    lake = Lake(cfg.storage.lake_uri, cfg.storage.s3_endpoint_url)
    date = inputs.date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    tracking_uri = tracking.tracking_uri(lake, cfg.storage.mlflow_tracking_uri)
    model = tracking.resolve_model(cfg.detect.model_uri, tracking_uri)  # pinned name/version before any work

    feature_set, extract_failures = extract_missing(cfg, inputs) if inputs.videos else (inputs.feature_set, {})
    feature_set = choose_feature_set(lake, feature_set)
    selection, ground_truth = select_videos(lake, inputs)
    done, failed_before = processed_before(lake, model.name, model.version)
    plan = plan_videos(feature_store.feature_index(lake, feature_set), selection, done, failed_before, retry_failed=cfg.detect.retry_failed)
    log.info(
        "model %s v%s, feature set %s: %d selected, %d already done, %d failed before on unchanged features, "
        "%d without features, %d to process",
        model.name, model.version, feature_set, len(plan.selected), plan.n_done, plan.n_stale_failures,
        len(plan.missing), plan.todo.num_rows,
    )

    recorder = DetectRecorder(lake, cfg, inputs, tracking_uri, model, feature_set, date, plan, extract_failures, t_start)
    status = "FAILED"
    try:
        if plan.todo.num_rows:
            ensure_ray(cfg.resources.ray_address)
            shards = run_pipeline(lake, cfg, plan.todo, model.uri, loader, tracking.worker_env(tracking_uri), on_first=recorder.first_batch)
            for shard in shards:
                recorder.record_shard(shard)
        status = "FINISHED"
    finally:
        result = recorder.finish(status, ground_truth)
    log.info("%s", result.summary())
    return result
