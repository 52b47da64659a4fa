"""Prefect tasks of the ``star`` flow: each wraps ONE job call and is named like the job.

Job modules (torch, Ray, MLflow) are imported inside the tasks, never at module import. Tasks
return small JSON-able dicts (counts, names, versions), never tensors or Ray objects.

Retries: ``extract`` and ``detect`` are idempotent per video (they skip what is done), so a
retry after a transient failure (S3 hiccup, Ray node lost) redoes only what is missing.
``train`` retries with the same run name, so the job resumes from its last checkpoint.
Timeouts come from ``Resources.timeout_s`` (set per call with ``with_options``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from prefect import task
from pydantic import BaseModel, ConfigDict

from flows.params import Resources

# Seconds between attempts of the steps that can fail transiently (network, Ray node loss).
RETRY_DELAYS_S = [30, 120]
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
    """What every job call of a flow run shares: lake, feature set, config, resources."""

    model_config = ConfigDict(frozen=True)

    lake_uri: str
    feature_set: str | None = None
    config_path: str | None = None
    overrides: tuple[str, ...] = ()
    resources: Resources = Resources()

    def star_config(self):
        """The typed ``StarConfig`` of this run (file, then dotted overrides)."""
        from star_core.config import load_config

        return load_config(self.config_path, self.overrides)


@dataclass
class FeaturePlan:
    """Which of a dataset's videos have features, and which can be extracted (have a source URI)."""

    dataset: str
    dataset_version: int
    feature_set: str | None
    videos: int
    splits: dict[str, int]
    with_features: int
    missing_uris: list[str] = field(default_factory=list)
    missing_without_source: list[str] = field(default_factory=list)

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
            "videos_without_source": self.missing_without_source[:50],
        }


def _counts(result: Any) -> dict[str, Any]:
    """Plain counts of a job result (``JobResult``-like object or dict)."""
    get = result.get if isinstance(result, dict) else (lambda k, d=None: getattr(result, k, d))
    failures = [dict(f) if isinstance(f, dict) else {"input": getattr(f, "input", str(f)), "reason": getattr(f, "reason", None)} for f in (get("failures") or [])]
    return {
        "run_id": get("run_id"),
        "done": int(get("n_done", get("done", 0)) or 0),
        "failed": int(get("n_failed", get("failed", 0)) or 0),
        "skipped": int(get("n_skipped", get("skipped", 0)) or 0),
        "failures": failures,
        "manifest": get("manifest_path", get("manifest")),
        "outputs": list(get("outputs") or []),
    }


@task(name="plan-features", retries=2, retry_delay_seconds=[5, 30], retry_condition_fn=retry_transient)
def plan_features(settings: JobSettings, dataset: str) -> FeaturePlan:
    """List the dataset's videos without features in the feature set (lake reads only).

    Args:
        settings: the run's lake and feature set.
        dataset: dataset name in the lake (its latest version).

    Returns:
        The plan: videos per split, how many have features, the source URIs to extract.
    """
    from star_core.io import tables
    from star_core.io.lake import Lake

    lake = Lake(settings.lake_uri)
    ds = tables.load_dataset(lake, dataset)
    feature_set = settings.feature_set or _only_feature_set(lake)
    have = set(tables.feature_index(lake, feature_set).column("video_id").to_pylist()) if feature_set else set()
    missing = [v for v in ds.videos if v.video_id not in have]
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
        missing_without_source=sorted(v.video_id for v in missing if not v.source_uri),
    )


def _only_feature_set(lake) -> str | None:
    from star_core.io import tables

    sets = tables.list_feature_sets(lake)
    if len(sets) > 1:
        raise ValueError(f"lake {lake.uri} holds feature sets {sets}: pass the feature_set parameter")
    return sets[0] if sets else None


@task(name="extract", retries=2, retry_delay_seconds=RETRY_DELAYS_S, retry_condition_fn=retry_transient)
def extract(settings: JobSettings, inputs: str | Sequence[str]) -> dict[str, Any]:
    """Run ``jobs.extract.extract`` over ``inputs`` (URI/glob/list file, or a list of video URIs)."""
    from jobs.extract import ExtractJobConfig
    from jobs.extract import extract as extract_job

    res = settings.resources
    cfg = ExtractJobConfig(
        lake_uri=settings.lake_uri,
        inputs=inputs if isinstance(inputs, str) else list(inputs),
        config=settings.star_config(),
        ray_address=res.ray_address,
        num_actors=res.actors,
        use_gpu=res.gpu,
    )
    return _counts(extract_job(cfg))


@task(name="train", retries=1, retry_delay_seconds=RETRY_DELAYS_S[:1], retry_condition_fn=retry_transient)
def train(settings: JobSettings, dataset: str, model_name: str, alias: str) -> dict[str, Any]:
    """Run ``jobs.train.train`` (Ray Train, evaluation, MLflow registry and alias)."""
    from prefect.runtime import flow_run

    from jobs.train import TrainJobConfig
    from jobs.train import train as train_job

    res = settings.resources
    # One run name per flow run: a retry of this task resumes the job's checkpoints, a new flow run starts fresh.
    run_name = f"prefect-{str(flow_run.get_id() or 'local')[:8]}"
    cfg = TrainJobConfig(
        lake_uri=settings.lake_uri,
        dataset=dataset,
        config=settings.star_config(),
        run_name=run_name,
        model_name=model_name,
        alias=alias,
        num_workers=res.workers,
        use_gpu=res.gpu,
        ray_address=res.ray_address,
    )
    result = train_job(cfg)
    return {"train_run_name": run_name, **_train_summary(result)}


def _train_summary(result: Any) -> dict[str, Any]:
    get = result.get if isinstance(result, dict) else (lambda k, d=None: getattr(result, k, d))
    metrics = get("map_result") or get("metrics") or {}
    as_json = metrics.to_json() if hasattr(metrics, "to_json") else dict(metrics)
    return {
        "model": {"name": get("model_name"), "version": get("model_version"), "alias": get("alias"), "alias_set": bool(get("alias_set", False)), "uri": get("model_uri")},
        "mlflow_run_id": get("mlflow_run_id", get("run_id")),
        "map": as_json.get("map"),
        "avg_0.1_0.5": as_json.get("avg_0.1_0.5"),
        "avg_0.1_0.7": as_json.get("avg_0.1_0.7"),
        "epochs": get("epochs"),
        "train_s": get("duration_s"),
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

    from jobs.detect import DetectJobConfig
    from jobs.detect import detect as detect_job

    res = settings.resources
    cfg = DetectJobConfig(
        lake_uri=settings.lake_uri,
        feature_set=feature_set or settings.feature_set,
        model_uri=model_uri,
        num_actors=res.actors,
        use_gpu=res.gpu,
        ray_address=res.ray_address,
        run_id=_run_name("detect", flow_run.get_id()),
        batch_size=settings.star_config().detect.batch_size,
    )
    r = detect_job(cfg)
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
        "failures": [{"input": vid, "reason": reason} for vid, reason in r.failures],
    }


def _run_name(job: str, flow_run_id: str | None) -> str:
    """Name of a job run started by a flow run (``<job>-prefect-<flow run id>``), traceable both ways."""
    return f"{job}-prefect-{flow_run_id or 'local'}"
