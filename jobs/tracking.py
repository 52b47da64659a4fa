"""Every MLflow call of `star`: tracking URI, runs, params, metrics, plots, model registry.

Where runs go (`tracking_uri`):
1. ``storage.mlflow_tracking_uri`` in the config, else
2. the standard ``MLFLOW_TRACKING_URI`` variable (an MLflow server, artifacts on S3), else
3. embedded: ``sqlite:///<lake>/mlflow.db`` with artifacts under ``<lake>/mlflow-artifacts``
   (local lakes only; an ``s3://`` lake needs a server).

The model is logged twice in one MLflow model directory (flavor ``pytorch``):
- ``data/model.pth``: the pickled :class:`star_core.detector.StarDetector` (``serialization_format=
  "pickle"``; the default ``pt2`` traces ``forward`` with fixed shapes, see docs/stack_notes.md), so
  ``mlflow.pytorch.load_model(uri)`` returns a detector. The class is importable from
  ``star_core``, never from ``__main__`` or the training code.
- ``extra_files/star_detector.pt``: ``StarDetector.to_checkpoint()`` (plain tensors, strings,
  lists). :func:`load_detector` reads only this file with ``torch.load(weights_only=True)``:
  no pickled code runs when the detection job loads a model.

Champion rule: a new version takes the alias (default ``champion``) only when its test
avg mAP@0.1:0.7 (tag :data:`SCORE_TAG` on the model version) is strictly greater than the
current holder's; no holder means it takes the alias.

This module never sets the process-wide tracking URI for longer than one call: MLflow's
``set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` to the environment, which would
silently redirect later runs of the same process (tests, notebooks) to the wrong store.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from star_core.io.lake import Lake

if TYPE_CHECKING:  # torch/mlflow are imported at call time (`star --help` stays instant)
    from star_core.detector import StarDetector

log = logging.getLogger("star.tracking")

CHECKPOINT_FILE = "star_detector.pt"  # StarDetector.to_checkpoint(), inside the model's extra_files/
MODEL_ARTIFACT = "model"  # name of the logged model within its run
SCORE_TAG = "test_avg_map_0.1_0.7"  # model version tag the champion rule compares (percent)
CLASSES_TAG = "classes"  # JSON class list (tag values are capped, see _classes_tag)
_MAX_TAG_CHARS = 4900  # below MLflow's model-version tag value limit (5000)
_METRIC_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-. /:]")


@dataclass(frozen=True)
class ModelRef:
    """Where a loaded model came from."""

    name: str | None  # registered model name (None: an unregistered run/logged model)
    version: str | None  # registered version
    uri: str  # the URI it was loaded from (as given)
    run_id: str | None  # training run
    classes: tuple[str, ...]  # the model's class list (output order)


# ----- where runs go ---------------------------------------------------------------------------
def tracking_uri(lake: Lake | str, configured: str | None = None) -> str:
    """The tracking URI for runs about ``lake``.

    Args:
        lake: the lake (or its URI); the embedded default lives inside it.
        configured: ``storage.mlflow_tracking_uri`` from the config (wins when set).

    Returns:
        ``configured``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///<lake>/mlflow.db``.

    Raises:
        ValueError: the lake is remote (``s3://``) and no tracking server is configured.
    """
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    if not lake.is_local:
        raise ValueError(
            f"lake {lake.uri} is not a local directory, so MLflow cannot keep its embedded SQLite database "
            "there: set MLFLOW_TRACKING_URI (e.g. http://mlflow:5000, an MLflow server with S3 artifacts) "
            "or storage.mlflow_tracking_uri in the config"
        )
    Path(lake.root).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{lake.mlflow_db_path()}"


def artifact_location(lake: Lake | str, uri: str) -> str | None:
    """Artifact root for new experiments: ``<lake>/mlflow-artifacts`` with the embedded store.

    A server decides its own artifact root (``--artifacts-destination``), so this is None then.
    """
    if not uri.startswith("sqlite:"):
        return None
    lake = lake if isinstance(lake, Lake) else Lake(lake)
    return Path(lake.path("mlflow-artifacts")).as_uri()


@contextlib.contextmanager
def _using(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for one block, then restore global state and env."""
    import mlflow
    from mlflow.tracking._tracking_service import utils as tracking_utils

    old_global = tracking_utils._tracking_uri
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        tracking_utils._tracking_uri = old_global
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


def client(uri: str):
    """An ``MlflowClient`` for ``uri`` (tracking and registry)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(uri: str, name: str, artifact_root: str | None = None) -> str:
    """Id of experiment ``name``, creating it (with ``artifact_root`` when given) if missing."""
    c = client(uri)
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            raise ValueError(f"MLflow experiment {name!r} is deleted at {uri}: restore it or choose another experiment name")
        return exp.experiment_id
    try:
        return c.create_experiment(name, artifact_location=artifact_root)
    except Exception:  # another process created it between the two calls
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def start_run(uri: str, experiment_id: str, run_name: str, tags: Mapping[str, str] | None = None) -> str:
    """Create a run (status RUNNING) and return its id; nothing becomes the 'active' run."""
    run = client(uri).create_run(experiment_id, run_name=run_name, tags=dict(tags or {}))
    return run.info.run_id


def run_exists(uri: str, run_id: str) -> bool:
    try:
        client(uri).get_run(run_id)
        return True
    except Exception:
        return False


def end_run(uri: str, run_id: str, status: str = "FINISHED") -> None:
    """Mark a run FINISHED / FAILED / KILLED."""
    client(uri).set_terminated(run_id, status=status)


# ----- params, metrics, artifacts -----------------------------------------------------------
def log_params(uri: str, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values stringified; tuples as JSON lists), in batches of 100."""
    from mlflow.entities import Param

    items = [Param(k, json.dumps(list(v)) if isinstance(v, (tuple, list)) else str(v)) for k, v in sorted(params.items())]
    c = client(uri)
    for start in range(0, len(items), 100):
        c.log_batch(run_id, params=items[start : start + 100])


def log_config(uri: str, run_id: str, cfg: Any, extra: Mapping[str, Any] | None = None) -> None:
    """Log the whole typed config as dotted params (``train.lr``...) plus ``config.json``.

    ``extra["job.lake_uri"]``, the lake the job actually used (``--lake X``), replaces the config's
    ``storage.lake_uri`` default, so the run never records a lake it did not use.
    """
    from star_core.config import flatten, replace, to_dict

    if extra and extra.get("job.lake_uri") and hasattr(cfg, "storage"):
        cfg = replace(cfg, **{"storage.lake_uri": str(extra["job.lake_uri"])})
    params = flatten(cfg)
    params.update(extra or {})
    log_params(uri, run_id, params)
    log_dict(uri, run_id, {"config": to_dict(cfg), **({"job": dict(extra)} if extra else {})}, "config.json")


def metric_key(name: str) -> str:
    """A valid MLflow metric name (``@`` and other symbols become ``_``)."""
    return _METRIC_KEY_BAD.sub("_", name)


def log_metrics(uri: str, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    """Log numeric metrics at ``step`` (non-numeric and non-finite values are skipped)."""
    import math

    from mlflow.entities import Metric

    now_ms = int(time.time() * 1000)
    items = []
    for k, v in sorted(metrics.items()):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            continue
        items.append(Metric(metric_key(k), float(v), now_ms, int(step)))
    c = client(uri)
    for start in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=items[start : start + 1000])


def log_artifact(uri: str, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
    """Upload one file (or a directory's contents) to the run's artifacts."""
    p = Path(local_path)
    c = client(uri)
    if p.is_dir():
        c.log_artifacts(run_id, str(p), artifact_path)
    else:
        c.log_artifact(run_id, str(p), artifact_path)


def log_dict(uri: str, run_id: str, obj: Any, artifact_file: str) -> None:
    """Upload a JSON document as ``artifact_file``."""
    client(uri).log_dict(run_id, obj, artifact_file)


def set_tags(uri: str, run_id: str, tags: Mapping[str, Any]) -> None:
    c = client(uri)
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


def run_metrics(uri: str, run_id: str) -> dict[str, float]:
    """Latest value of each metric of a run."""
    return dict(client(uri).get_run(run_id).data.metrics)


# ----- model: log, register, alias, load ------------------------------------------------------
def _classes_tag(classes: tuple[str, ...]) -> str:
    text = json.dumps(list(classes))
    return text if len(text) <= _MAX_TAG_CHARS else json.dumps({"n_classes": len(classes), "see": "the model's checkpoint"})


def log_detector(
    uri: str, run_id: str, detector: "StarDetector", registered_name: str | None, tags: Mapping[str, Any] | None = None
) -> ModelRef:
    """Log ``detector`` to the run (pickled module + weights-only checkpoint) and register it.

    Args:
        uri: tracking (and registry) URI.
        run_id: the training run.
        detector: the trained model; its class must be importable from ``star_core``.
        registered_name: registry name (e.g. ``"star"``); None logs without registering.
        tags: model version tags (e.g. the test mAP used by the champion rule).

    Returns:
        A :class:`ModelRef` with the new version (``models:/<name>/<version>``) or the run URI.
    """
    import mlflow
    import torch

    module = type(detector).__module__
    if not module.startswith("star_core."):
        raise ValueError(
            f"log_detector: {type(detector).__qualname__} comes from {module!r}; the model must be a star_core class to load elsewhere"
        )
    classes = tuple(detector.classes)
    tags = {str(k): str(v) for k, v in (tags or {}).items()}
    tags.setdefault(CLASSES_TAG, _classes_tag(classes))
    with tempfile.TemporaryDirectory(prefix="star-model-") as tmp:
        ckpt = Path(tmp) / CHECKPOINT_FILE
        torch.save(detector.to_checkpoint(), ckpt)
        torch_version = torch.__version__.split("+")[0]
        was_training = detector.training
        detector.eval()
        with _using(uri), mlflow.start_run(run_id=run_id, log_system_metrics=False):
            info = mlflow.pytorch.log_model(
                detector,
                name=MODEL_ARTIFACT,
                serialization_format="pickle",  # pt2 would fix input shapes (docs/stack_notes.md)
                extra_files=[str(ckpt)],
                pip_requirements=[f"torch=={torch_version}", "numpy"],
                metadata={"classes": list(classes), "star_class": f"{module}.{type(detector).__qualname__}"},
            )
        detector.train(was_training)
    client(uri).set_tag(run_id, CLASSES_TAG, _classes_tag(classes))
    run_uri = f"runs:/{run_id}/{MODEL_ARTIFACT}"
    if not registered_name:
        return ModelRef(None, None, run_uri, run_id, classes)
    with _using(uri):
        # Register the logged model itself (MLflow 3 stores it outside the run's artifact dir).
        mv = mlflow.register_model(info.model_uri, registered_name, tags=tags)
    log.info("registered %s version %s (run %s)", registered_name, mv.version, run_id)
    return ModelRef(registered_name, str(mv.version), f"models:/{registered_name}/{mv.version}", run_id, classes)


def alias_holder(uri: str, name: str, alias: str) -> tuple[str, float | None] | None:
    """(version, score) of the version holding ``alias``, or None when no version holds it."""
    c = client(uri)
    try:
        mv = c.get_model_version_by_alias(name, alias)
    except Exception:
        return None
    raw = (mv.tags or {}).get(SCORE_TAG)
    try:
        score = float(raw) if raw is not None else None
    except ValueError:
        score = None
    return str(mv.version), score


def maybe_set_alias(uri: str, name: str, version: str, alias: str, score: float | None) -> bool:
    """Give ``alias`` to ``version`` when its score beats the current holder's.

    Args:
        uri: tracking/registry URI.
        name: registered model name.
        version: the candidate version.
        alias: e.g. ``"champion"``.
        score: the candidate's test avg mAP@0.1:0.7 (percent); None never takes an alias.

    Returns:
        True when the alias now points at ``version``.
    """
    if score is None:
        log.info("%s v%s has no test mAP: alias %r unchanged", name, version, alias)
        return False
    c = client(uri)
    c.set_model_version_tag(name, version, SCORE_TAG, f"{score:.6f}")
    holder = alias_holder(uri, name, alias)
    if holder is not None:
        held_version, held_score = holder
        if held_version == str(version):
            return True
        if held_score is not None and not score > held_score:
            log.info(
                "%s v%s: avg mAP %.2f does not beat %s@%s (v%s, %.2f): alias unchanged",
                name,
                version,
                score,
                name,
                alias,
                held_version,
                held_score,
            )
            return False
    c.set_registered_model_alias(name, alias, str(version))
    log.info("%s@%s -> v%s (avg mAP %.2f%s)", name, alias, version, score, "" if holder is None else f", was v{holder[0]}")
    return True


_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")
_LOGGED_MODEL_URI = re.compile(r"^models:/(?P<model_id>m-[0-9a-f]+)/?$")
_RUNS_URI = re.compile(r"^runs:/(?P<run_id>[0-9a-zA-Z]+)/(?P<path>.+?)/?$")


def _resolve_registry(c, model_uri: str) -> tuple[str | None, str | None, str | None]:
    """(name, version, run_id) for a ``models:/`` or ``runs:/`` URI (Nones when unregistered)."""
    if _LOGGED_MODEL_URI.match(model_uri):
        model_id = _LOGGED_MODEL_URI.match(model_uri)["model_id"]
        run_id = c.get_logged_model(model_id).source_run_id
        versions = [v for v in c.search_model_versions(f"run_id='{run_id}'") if v.source == model_uri.rstrip("/")] if run_id else []
        return (versions[0].name, str(versions[0].version), run_id) if versions else (None, None, run_id)
    m = _MODELS_URI.match(model_uri)
    if m:
        name = m["name"]
        try:
            mv = c.get_model_version_by_alias(name, m["alias"]) if m["alias"] else c.get_model_version(name, m["version"])
        except Exception as exc:
            raise ValueError(f"model {model_uri!r} not found in the registry: {exc}") from None
        return name, str(mv.version), mv.run_id
    m = _RUNS_URI.match(model_uri)
    if m:
        versions = c.search_model_versions(f"run_id='{m['run_id']}'")
        if versions:
            mv = sorted(versions, key=lambda v: int(v.version))[-1]
            return mv.name, str(mv.version), m["run_id"]
        return None, None, m["run_id"]
    return None, None, None


def load_detector(model_uri: str, tracking: str | None = None) -> tuple["StarDetector", ModelRef]:
    """Load a trained detector from MLflow without unpickling code.

    Args:
        model_uri: ``models:/star@champion``, ``models:/star/3``, ``runs:/<run_id>/model`` or a
            local directory holding a downloaded MLflow model.
        tracking: tracking URI; default ``MLFLOW_TRACKING_URI`` (as MLflow itself resolves it).

    Returns:
        ``(detector, ref)``: the detector in eval mode and where it came from.

    Raises:
        ValueError: the URI does not resolve, or the model has no STAR checkpoint.
    """
    import mlflow
    import torch

    from star_core.detector import StarDetector

    uri = tracking or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    name = version = run_id = None
    local = Path(model_uri)
    with tempfile.TemporaryDirectory(prefix="star-load-") as tmp:
        if "://" not in model_uri and ":/" not in model_uri and local.is_dir():
            path = local / "extra_files" / CHECKPOINT_FILE
        else:
            c = client(uri)
            name, version, run_id = _resolve_registry(c, model_uri)
            if _LOGGED_MODEL_URI.match(model_uri):
                base = c.get_logged_model(_LOGGED_MODEL_URI.match(model_uri)["model_id"]).artifact_location
            elif name is not None and model_uri.startswith("models:/"):
                base = f"models:/{name}/{version}"  # pinned: an alias that moves meanwhile cannot mix versions
            else:
                base = model_uri.rstrip("/")
            try:
                with _using(uri):  # models:/ URIs resolve through the global registry URI
                    fetched = mlflow.artifacts.download_artifacts(
                        artifact_uri=f"{base}/extra_files/{CHECKPOINT_FILE}", dst_path=tmp, tracking_uri=uri, registry_uri=uri
                    )
            except Exception as exc:
                raise ValueError(
                    f"model {model_uri!r} at {uri}: cannot fetch its STAR checkpoint (extra_files/{CHECKPOINT_FILE}): {exc}"
                ) from None
            path = Path(fetched)
        if not path.is_file():
            raise ValueError(f"model {model_uri!r}: no STAR checkpoint at {path} (was it logged by jobs.tracking.log_detector?)")
        state = torch.load(path, map_location="cpu", weights_only=True)
    detector = StarDetector.from_checkpoint(state)
    detector.eval()
    ref = ModelRef(name=name, version=version, uri=model_uri, run_id=run_id, classes=tuple(detector.classes))
    return detector, ref


# ----- detection runs (jobs.detect) ------------------------------------------------------------
@dataclass(frozen=True)
class ResolvedModel:
    """A registry model pinned to one version before a detection run starts."""

    name: str
    version: str
    alias: str | None  # the alias it was selected by (``champion``), if any
    uri: str  # pinned ``models:/<name>/<version>``: every actor loads exactly this version


def resolve_model(model_uri: str, uri: str) -> ResolvedModel:
    """Pin ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``, ``runs:/`` of a registered run) to a version.

    Detections are partitioned by model name and version, so the version is fixed once, in
    the driver; an alias moved during the run cannot mix two versions in one run.

    Raises:
        ValueError: the URI is not in the registry (the message names it).
    """
    name, version, _ = _resolve_registry(client(uri), model_uri)
    if name is None or version is None:
        raise ValueError(f"model {model_uri!r}: detection needs a registered model (models:/NAME@ALIAS or models:/NAME/VERSION) at {uri}")
    m = _MODELS_URI.match(model_uri)
    alias = m["alias"] if m else None
    return ResolvedModel(name=name, version=str(version), alias=alias, uri=f"models:/{name}/{version}")


def start_detect_run(
    uri: str, experiment: str, run_name: str | None, params: Mapping[str, Any], lake: Lake | str, tags: Mapping[str, str] | None = None
) -> str:
    """Open the MLflow run of one detection job (experiment ``experiment``) and log its params.

    Returns:
        The run id; it becomes the detections' ``run_id`` column and names the run's files.
    """
    exp_id = ensure_experiment(uri, experiment, artifact_location(lake, uri))
    run_tags = {"star.job": "detect", **{k: str(v) for k, v in (tags or {}).items() if v not in (None, "")}}
    run_id = start_run(uri, exp_id, run_name or "", run_tags)
    if not run_name:  # MLflow's random name is meaningless here: name the run by its id
        client(uri).set_tag(run_id, "mlflow.runName", f"detect-{run_id[:8]}")
    log_params(uri, run_id, params)
    return run_id


def finish_detect_run(
    uri: str, run_id: str, metrics: Mapping[str, float], tags: Mapping[str, Any], artifacts: Mapping[str, str], status: str = "FINISHED"
) -> None:
    """Log a detection run's counts, partition URIs and timeline PNGs, then close it.

    Args:
        uri: tracking URI.
        run_id: the detection run.
        metrics: counts and throughput (logged at step 0).
        tags: e.g. ``star.partitions`` (newline-separated partition URIs), ``star.manifest``.
        artifacts: artifact path (``timelines/<video>.png``) -> local file.
        status: FINISHED or FAILED.
    """
    try:
        log_metrics(uri, run_id, metrics, step=0)
        set_tags(uri, run_id, {k: str(v)[:_MAX_TAG_CHARS] for k, v in tags.items()})
        for name, local in artifacts.items():
            directory, _, filename = name.rpartition("/")
            with tempfile.TemporaryDirectory(prefix="star-artifact-") as tmp:
                target = Path(tmp) / filename
                target.write_bytes(Path(local).read_bytes())
                log_artifact(uri, run_id, target, directory or None)
    finally:
        # MLflow writes "View run ... at URL" to stdout when a run on a server ends; `star detect
        # --json` must print only JSON there, so the URL goes to the log instead.
        old = os.environ.get("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT")
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        try:
            end_run(uri, run_id, status)
        finally:
            if old is None:
                os.environ.pop("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", None)
            else:
                os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = old
        log.info("detection run %s %s (tracking %s)", run_id, status.lower(), uri)


def worker_env(uri: str) -> dict[str, str]:
    """Environment a Ray worker needs to load models from ``uri`` (no secrets: endpoints only, jobs.worker_env)."""
    from jobs.worker_env import forwarded_env

    return {**forwarded_env(), "MLFLOW_TRACKING_URI": uri, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}  # no bars in job logs
