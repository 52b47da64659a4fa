"""Prefect tasks of the ``star`` flow: each wraps ONE job call and is named like the job.

Job modules (torch, Ray, MLflow) are imported inside the tasks, never at module import. Tasks
return small JSON-able dicts (counts, names, versions), never tensors or Ray objects.

Retries: ``extract`` and ``detect`` are idempotent per video (they skip what is done), so a
retry after a transient failure (S3 hiccup, Ray node lost) redoes only what is missing.
``train`` retries with the same run name, so the job resumes from its last checkpoint.
Timeouts come from ``resources.timeout_s`` of the run's config (set per call with ``with_options``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from prefect import task
from pydantic import BaseModel, ConfigDict

# Seconds between attempts of the steps that can fail transiently (network, Ray node loss).
RETRY_DELAYS_S = [30, 120]
# Failures listed in a task's result (all of them are in the job's manifest).
MAX_FAILURES_LISTED = 100
# Errors that mean bad input (unknown dataset, schema mismatch, missing file): retrying cannot help.
PERMANENT_ERRORS = (ValueError, KeyError, TypeError, FileNotFoundError, ImportError)


def retry_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the task failed on bad input."""
    try:
        state.result()
    except PERMANENT_ERRORS:
        return False
    except Exception:
        return True
    return True


class JobSettings(BaseModel):
    """What every job call of a flow run shares: the lake, the feature set and the run's config
    (a config file, dotted ``key=value`` overrides, then ``values``: dotted keys set by flow
    parameters, e.g. ``{"resources.workers": 2, "train.epochs": 5}``)."""

    model_config = ConfigDict(frozen=True)

    lake_uri: str
    feature_set: str | None = None
    config_path: str | None = None
    overrides: tuple[str, ...] = ()
    values: dict[str, Any] = {}

    def star_config(self, **values: Any):
        """The typed ``StarConfig`` of this run; ``values`` (dotted keys as ``**{"a.b": v}``) are set last."""
        from star_core.config import load_config

        return load_config(self.config_path, self.overrides, values={"storage.lake_uri": self.lake_uri, **self.values, **values})


@dataclass
class FeaturePlan:
    """Which of a dataset's videos have features, and which can be extracted (have a source URI)."""

    dataset: str
    dataset_version: int
    feature_set: str | None
    videos: int
    splits: dict[str, int]
    with_features: int
    missing_uris: list[str] = field(default_factory=list)  # source URIs of the videos to extract

    def summary(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "dataset_version": self.dataset_version,
            "feature_set": self.feature_set,
            "videos": self.videos,
            "videos_train": self.splits.get("train", 0),
            "videos_test": self.splits.get("test", 0),
            "videos_with_features": self.with_features,
            "videos_to_extract": len(self.missing_uris),
        }


@task(name="labels-import", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def labels_import(settings: JobSettings, labels_uri: str, dataset: str) -> dict[str, Any]:
    """Run the label import (``star labels import``): a label file becomes a version of ``dataset``.

    Re-importing the same content is a no-op (the latest version is kept); changed content makes
    a new version, so the model trained by this run records exactly which labels it saw.

    Args:
        settings: the run's lake.
        labels_uri: CSV/TSV, JSON Lines, Parquet or ActivityNet JSON file (local path or URI).
        dataset: dataset name.

    Returns:
        Version, whether it was created, videos per split, videos without features.
    """
    from star_core.io.labels_import import import_labels
    from star_core.io.lake import Lake

    r = import_labels(labels_uri, Lake(settings.lake_uri), dataset)
    return {
        "dataset": r.dataset,
        "version": r.version,
        "created": r.created,
        "source": r.source,
        "n_videos": r.n_videos,
        "splits": dict(r.splits),
        "without_features": len(r.without_features),
        "warnings": list(r.warnings)[:20],
    }


@task(name="plan-features", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def plan_features(settings: JobSettings, dataset: str) -> FeaturePlan:
    """List the dataset's videos without features in the feature set the training will read (lake reads only).

    The feature set is, in order: the ``feature_set`` parameter, the one the dataset was imported
    with (public features), else the one the extractor config writes.

    Args:
        settings: the run's lake, feature set and config.
        dataset: dataset name in the lake (its latest version).

    Returns:
        The plan: videos per split, how many have features, the source URIs to extract.

    Raises:
        KeyError: no such dataset. ValueError: videos lack features in a feature set that the
            extractor (with this config) does not write, so extraction could not fill the gap.
    """
    from jobs.extract import feature_set_of
    from star_core.io import datasets, feature_store
    from star_core.io.lake import Lake

    lake = Lake(settings.lake_uri)
    ds = datasets.load_dataset(lake, dataset)
    source = datasets.dataset_source(lake, dataset, ds.version)
    extractor_set = feature_set_of(settings.star_config().features)
    feature_set = settings.feature_set or source.get("feature_set") or extractor_set
    have = set(feature_store.feature_index(lake, feature_set).column("video_id").to_pylist())
    missing = [v for v in ds.videos if v.video_id not in have]
    if missing and feature_set != extractor_set:
        raise ValueError(
            f"{len(missing)} video(s) of dataset {dataset!r} lack features in feature set {feature_set!r} (e.g. {missing[0].video_id!r}), "
            f"but the extractor settings write {extractor_set!r}: import the missing features, or train on the extractor's feature set"
        )
    no_source = sorted(v.video_id for v in missing if not v.source_uri)
    if no_source:
        raise ValueError(
            f"{len(no_source)} video(s) of dataset {dataset!r} have no features in feature set {feature_set!r} and no source_uri "
            f"to extract them from: {no_source[:10]}"
        )
    splits: dict[str, int] = {}
    for v in ds.videos:
        splits[v.split] = splits.get(v.split, 0) + 1
    return FeaturePlan(
        dataset=dataset,
        dataset_version=ds.version,
        feature_set=feature_set,
        videos=len(ds.videos),
        splits=splits,
        with_features=len(ds.videos) - len(missing),
        missing_uris=sorted(v.source_uri for v in missing if v.source_uri),
    )


@task(name="extract", retries=2, retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=retry_transient)
def extract(settings: JobSettings, inputs: str | Sequence[str]) -> dict[str, Any]:
    """Run ``jobs.extract.extract`` over ``inputs``: videos without features in the feature set are extracted.

    Args:
        settings: the run's lake, config (feature settings) and resources.
        inputs: a URI, prefix, glob or ``@list`` file, or a list of video URIs.

    Returns:
        Counts (done/failed/skipped), the feature set written, shards, manifest, failures.
    """
    from prefect.runtime import flow_run

    from jobs.extract import extract as extract_job

    r = extract_job(settings.star_config(), inputs, run_id=_run_name("extract", flow_run.get_id()))
    return {
        "run_id": r.run_id,
        "feature_set": r.feature_set,
        "done": r.done,
        "failed": r.failed,
        "skipped": r.skipped,
        "segments": r.n_segments,
        "elapsed_s": round(r.elapsed_s, 1),
        "outputs": list(r.outputs),
        "manifest": r.manifest,
        "failures": [dict(f) for f in r.failures[:MAX_FAILURES_LISTED]],
    }


@task(name="train", retries=1, retry_delay_seconds=RETRY_DELAYS_S[:1], retry_condition_fn=retry_transient)
def train(settings: JobSettings, dataset: str, feature_set: str | None, model_name: str, alias: str) -> dict[str, Any]:
    """Run ``jobs.train.train``: Ray Train, evaluation on the test split, MLflow model, registry and alias.

    Args:
        settings: the run's lake, config and resources.
        dataset: dataset to train on (its latest version).
        feature_set: the feature set to read (from :func:`plan_features`).
        model_name: registered model name; alias: moved to the new version when it beats the holder.

    Returns:
        Model name/version/URI, whether the alias moved, the test mAP per tIoU and averages,
        final losses, the MLflow run id and the job's run name (its checkpoint key).
    """
    from prefect.runtime import flow_run

    from jobs.train import train as train_job

    # One run name per flow run: a retry of this task resumes the job's checkpoints; a new flow
    # run trains afresh.
    run_name = _run_name("train", flow_run.get_id())
    cfg = settings.star_config(**{"train_run.run_name": run_name, "train_run.model_name": model_name, "train_run.alias": alias})
    t0 = time.monotonic()
    r = train_job(cfg, dataset, feature_set=feature_set)
    m = r.metrics
    map_by_tiou = {k.removeprefix("test/map_"): round(v, 3) for k, v in m.items() if k.startswith("test/map_")}
    return {
        "model": {"name": model_name, "version": r.model_version, "uri": r.model_uri, "alias": alias, "alias_set": r.alias_set},
        "mlflow_run_id": r.run_id,
        "train_run_name": r.run_name,
        "map": map_by_tiou or None,
        "avg_0.1_0.5": m.get("test/avg_map_0.1_0.5"),
        "avg_0.1_0.7": m.get("test/avg_map_0.1_0.7"),
        "losses": {k: round(v, 5) for k, v in m.items() if not k.startswith("test/")},
        "epochs": r.epochs_completed,
        "resumed_from_epoch": r.resumed_from_epoch,
        "checkpoint_dir": r.checkpoint_dir,
        "train_s": round(time.monotonic() - t0, 1),
    }


@task(name="detect", retries=2, retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=retry_transient)
def detect(settings: JobSettings, model_uri: str, feature_set: str | None = None) -> dict[str, Any]:
    """Run ``jobs.detect.detect`` over every video of the feature set without detections for the model version.

    Args:
        settings: the run's lake, config and resources.
        model_uri: registry URI, e.g. ``models:/star@champion`` (pinned to a version by the job).
        feature_set: the feature set the extraction step wrote; None: ``settings.feature_set``,
            else the lake's only feature set.

    Returns:
        Counts (done/failed/skipped), detections written, files, the MLflow run id, model name/version.
    """
    from prefect.runtime import flow_run

    from jobs.detect import DetectInputs
    from jobs.detect import detect as detect_job

    cfg = settings.star_config(**{"detect.model_uri": model_uri})
    r = detect_job(cfg, DetectInputs(feature_set=feature_set or settings.feature_set, run_id=_run_name("detect", flow_run.get_id())))
    return {
        "run_id": r.run_id,  # MLflow run of the detection (the detections' run_id column)
        "model_name": r.model_name,
        "model_version": r.model_version,
        "model_uri_pinned": r.model_uri,
        "feature_set": r.feature_set,
        "date": r.date,
        "done": r.processed,
        "failed": r.failed,
        "skipped": r.skipped,
        "detections": r.detections_written,
        "segments": r.segments_processed,
        "videos_per_s": round(r.videos_per_s, 3),
        "elapsed_s": round(r.elapsed_s, 1),
        "outputs": list(r.partitions),
        "files": list(r.files),
        "manifest": r.manifest_uri,
        "failures": [{"input": vid, "reason": reason} for vid, reason in r.failures[:MAX_FAILURES_LISTED]],
    }


def _run_name(job: str, flow_run_id: str | None) -> str:
    """Name of a job run started by a flow run (``<job>-prefect-<flow run id>``), traceable both ways."""
    return f"{job}-prefect-{flow_run_id or 'local'}"
