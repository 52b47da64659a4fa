"""The ``star`` flow: one flow, two modes, two deployments (``star/train``, ``star/nightly-detect``).

A recipe over the job functions (``jobs.extract``, ``jobs.train``, ``jobs.detect``), which do the
heavy work on Ray (the cluster of ``resources.ray_address`` / ``RAY_ADDRESS``, else a local Ray).
Ray never calls Prefect: each task calls one job function and returns a small summary dict.

train:          plan-features -> extract (only missing) -> train (Ray Train; evaluates on the test
                split; registers the model and moves the alias when it wins) -> summary artifact
nightly-detect: extract (new videos under videos_uri; the job skips videos with features) ->
                detect (videos without detections for the alias's model version) -> summary artifact
"""

from __future__ import annotations

import logging
import os
from typing import Any

from prefect import flow, get_run_logger

from flows import report, tasks
from flows.params import LAKE_ENV, Mode, resolve_dataset, resolve_lake_uri


def _forward_job_logs() -> None:
    """Send the jobs' log lines (logger ``star``: progress with rate and ETA, run summaries) to the
    flow run's logs, so they show in the Prefect UI and ``prefect flow-run logs``.

    The same as ``PREFECT_LOGGING_EXTRA_LOGGERS=star`` on every worker, without relying on it:
    the ``star`` logger gets the handlers of Prefect's ``prefect.extra`` logger and level INFO.
    """
    job_log = logging.getLogger("star")
    if job_log.level == logging.NOTSET or job_log.level > logging.INFO:
        job_log.setLevel(logging.INFO)
    for handler in logging.getLogger("prefect.extra").handlers:
        if handler not in job_log.handlers:
            job_log.addHandler(handler)


def _logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # called outside a run (e.g. .fn() in a unit test)
        return logging.getLogger("star.flows")


@flow(name="star", description="STAR: train (features -> train -> evaluate -> register) or nightly detection.", validate_parameters=True)
def star(
    mode: Mode = "train",
    dataset: str | None = None,
    lake_uri: str | None = None,
    model_name: str = "star",
    alias: str = "champion",
    videos_uri: str | None = None,
    labels_uri: str | None = None,
    feature_set: str | None = None,
    epochs: int | None = None,
    config_path: str | None = None,
    overrides: list[str] | None = None,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a model or run nightly detection; returns the run's summary (also a Prefect artifact).

    Args:
        mode: ``"train"`` or ``"nightly-detect"``.
        dataset: dataset (labels) in the lake to train on (train mode); None: the lake's only
            dataset, else its most recent one (the log says which).
        lake_uri: lake root (local path or ``s3://bucket/prefix``); None: ``STAR_LAKE_URI`` of the
            worker, else ``./star-lake`` of the directory the worker was started in.
        model_name: MLflow registered model name.
        alias: alias moved to a better model (train) / used to pick the model (nightly-detect).
        videos_uri: new videos to extract first (prefix, glob or list file); train mode extracts
            the dataset's own ``source_uri`` videos that lack features instead.
        labels_uri: train: a label file (CSV, JSON Lines, Parquet, ActivityNet JSON) imported as
            the next version of ``dataset`` first (a no-op when its content is unchanged).
        feature_set: feature set to read; None: the one the dataset was imported with (public
            features), else the one the extractor config writes (nightly: the lake's only one).
        epochs: training epochs (shortcut for ``train.epochs=N``).
        config_path: YAML/JSON ``StarConfig`` file; ``overrides`` are dotted ``section.key=value``.
        resources: keys of the config's ``resources`` section, set last: Ray ``workers``, ``gpu``,
            model ``actors``, ``ray_address``, per-step ``timeout_s`` (docs/architecture.md).

    Returns:
        The summary dict: counts per step, model name/version/alias, mAP table (train) or
        detections written (nightly-detect).
    """
    log = _logger()
    _forward_job_logs()
    lake = resolve_lake_uri(lake_uri)
    settings = tasks.JobSettings(
        lake_uri=lake,
        feature_set=feature_set,
        config_path=config_path,
        overrides=tuple(overrides or ()),
        values={
            **{f"resources.{k}": v for k, v in (resources or {}).items()},
            **({"train.epochs": int(epochs)} if epochs is not None else {}),
        },
    )
    settings.star_config()  # a bad config file, override or resource fails the run here, before any job starts
    log.info(
        "star %s on lake %s%s",
        mode,
        lake,
        ""
        if lake_uri
        else " (no lake_uri parameter: " + ("STAR_LAKE_URI)" if os.environ.get(LAKE_ENV) else "./star-lake where the worker started)"),
    )
    if mode == "train":
        if labels_uri and not dataset:
            raise ValueError("labels_uri needs a dataset parameter: the name the labels are imported as")
        dataset, why = (dataset, "the dataset parameter") if dataset else resolve_dataset(lake, None)
        log.info("training on dataset %r (%s)", dataset, why)
        summary = _train(settings, dataset, model_name, alias, labels_uri)
    elif mode == "nightly-detect":
        summary = _nightly_detect(settings, model_name, alias, videos_uri)
    else:  # unreachable through Prefect's validation; kept for direct .fn() calls
        raise ValueError(f"mode must be 'train' or 'nightly-detect', got {mode!r}")
    report.publish(summary)
    log.info("summary: %s", {k: v for k, v in summary.items() if k not in ("extract", "detect")})
    return summary


def _train(settings: tasks.JobSettings, dataset: str, model_name: str, alias: str, labels_uri: str | None) -> dict[str, Any]:
    labels = tasks.labels_import(settings, labels_uri, dataset) if labels_uri else None
    plan = tasks.plan_features(settings, dataset)
    summary: dict[str, Any] = {"mode": "train", "lake_uri": settings.lake_uri, **plan.summary()}
    if labels:
        summary["labels_import"] = labels
    if plan.missing_uris:
        timeout = settings.star_config().resources.timeout_s
        summary["extract"] = tasks.extract.with_options(timeout_seconds=timeout)(settings, plan.missing_uris)
    summary.update(
        tasks.train.with_options(timeout_seconds=settings.star_config().resources.timeout_s)(
            settings, dataset, plan.feature_set, model_name, alias
        )
    )
    return summary


def _nightly_detect(settings: tasks.JobSettings, model_name: str, alias: str, videos_uri: str | None) -> dict[str, Any]:
    timeout = settings.star_config().resources.timeout_s
    model_uri = f"models:/{model_name}@{alias}"
    summary: dict[str, Any] = {"mode": "nightly-detect", "lake_uri": settings.lake_uri, "model_uri": model_uri, "videos_uri": videos_uri}
    feature_set = settings.feature_set
    if videos_uri:
        # New videos: the extract job skips those that already have features in the feature set.
        summary["extract"] = tasks.extract.with_options(timeout_seconds=timeout)(settings, videos_uri)
        feature_set = summary["extract"].get("feature_set") or feature_set
    # Every video of the feature set without detections for the alias's current model version:
    # the new ones, plus any that failed or were missed on earlier nights.
    det = tasks.detect.with_options(timeout_seconds=timeout)(settings, model_uri, feature_set)
    summary.update(model_name=det["model_name"], model_version=det["model_version"], feature_set=det["feature_set"], detect=det)
    return summary
