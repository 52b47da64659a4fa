"""Training job: STAR (both streams) with Ray Train over the lake, tracked in MLflow, registered.

``train(cfg, dataset) -> TrainResult`` is what ``star train`` and the Prefect flow call; every
setting is in the one ``StarConfig`` tree (``train`` optimisation, ``train_run`` run name, tracking
and registry, ``resources`` workers and GPUs, ``storage`` lake and endpoints). On the driver:

1. Resolve the dataset version, its feature set, the train/test split video ids, the feature
   dimension and the label order (``train_loop.label_order``, once, here).
2. Open or resume the run: the run's state file ``<lake>/checkpoints/<run_name>/star_run.json``
   records the config fingerprint and the MLflow run id. A fresh run name (the default,
   ``train-<UTC time>-<hex>``) always starts from scratch; an existing name resumes from its last
   checkpoint when its config matches and is an error otherwise, or when that run already finished.
   The fingerprint is :func:`star_core.config.resume_fingerprint`: every setting but the fields
   declared ``metadata=RESUME_FREE`` (resources, endpoints, run name, checkpoint/eval cadence...).
3. ``TorchTrainer(jobs.train_worker.train_loop, ScalingConfig(num_workers, use_gpu))`` with
   checkpoints on the lake (``RunConfig(storage_path=<lake>/checkpoints, storage_filesystem=...)``;
   Ray Train V2 resumes a run name whose directory holds a checkpoint snapshot).
4. After ``fit()``: the detector from the final checkpoint is logged to the MLflow run, registered
   (default name ``star``) and given the alias (default ``champion``) only when its test avg
   mAP@0.1:0.7 beats the current holder's.

MLflow is written by rank 0 (metrics, plots) and by the driver (params, model, registry), through
:mod:`jobs.tracking` only; the tracking URI travels in the loop config.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from star_core.config import StarConfig, resume_fingerprint, to_dict
from star_core.io.lake import Lake, check_name

log = logging.getLogger("star.train")

RUN_STATE_FILE = "star_run.json"
# TEST ONLY (fault injection for the resume tests): read by the driver, never a config field. When
# set to K, the first attempt of the workers exits hard after epoch K (jobs/train_worker.py).
FAIL_AFTER_EPOCH_ENV = "STAR_TEST_FAIL_AFTER_EPOCH"


@dataclass
class TrainResult:
    run_id: str  # MLflow run id
    run_name: str  # checkpoint directory name (resume key)
    model_version: str | None  # registered version (None when not registered)
    model_uri: str  # models:/<name>/<version>, or runs:/<run_id>/model
    alias_set: bool  # the alias now points at this version
    metrics: dict[str, float]  # final epoch losses and test mAP (percent)
    epochs_completed: int
    resumed_from_epoch: int  # 0 for a fresh run
    tracking_uri: str
    checkpoint_dir: str


def _fingerprint(cfg: StarConfig, lake: Lake, dataset: str, dataset_version: int, feature_set: str) -> dict[str, Any]:
    """What must be equal for a run to be resumed: the data and every setting not declared resume-free."""
    return {"job": {"lake_uri": lake.uri, "dataset": dataset, "dataset_version": dataset_version, "feature_set": feature_set},
            "star": resume_fingerprint(cfg)}


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _resolve_inputs(name: str, dataset_version: int | None, feature_set: str | None, lake: Lake, state: dict | None):
    """Dataset, version, feature set, split ids and feature dim (pinned to the run state on resume)."""
    from star_core.io import schemas
    from star_core.io.datasets import SplitProtocol, dataset_source, load_dataset
    from star_core.io.feature_store import feature_index

    version = dataset_version if dataset_version is not None else (state or {}).get("dataset_version")
    dataset = load_dataset(lake, name, version)
    source = dataset_source(lake, name, dataset.version)
    feature_set = feature_set or (state or {}).get("feature_set") or source.get("feature_set")
    if not feature_set:
        raise ValueError(f"dataset {name!r} v{dataset.version} does not name its feature set: pass feature_set (--feature-set)")
    check_name("feature set", feature_set)
    protocol = SplitProtocol.of(source)
    train_split, test_split = protocol.train_split, protocol.test_split
    train_labels = [v for v in dataset.videos if v.split == train_split]
    test_labels = [v for v in dataset.videos if v.split == test_split]
    if not train_labels:
        raise ValueError(f"dataset {name!r} v{dataset.version} has no videos in split {train_split!r}")
    index = feature_index(lake, feature_set)
    have = set(index.column("video_id").to_pylist())
    missing = sorted(v.video_id for v in train_labels + test_labels if v.video_id not in have)
    if missing:
        raise ValueError(
            f"feature set {feature_set!r} in {lake.uri} lacks features for {len(missing)} video(s) of dataset {name!r}: {missing[:10]}"
        )
    first_path = index.column("path")[0].as_py()
    feat_dim = int(lake.read_table(first_path, schemas.FEATURES, columns=["feat_dim"]).column("feat_dim")[0].as_py())
    exclude = protocol.exclude_videos
    return dataset, feature_set, train_labels, test_labels, feat_dim, exclude


def _log_dir(lake: Lake, run_name: str) -> str:
    """Where Ray's driver and worker lines of this run go: ``<lake>/checkpoints/<run>/logs`` on a
    local lake, else ``<tmp>/star-logs/<run>`` (files need a local directory)."""
    import tempfile

    if lake.is_local:
        return f"{lake.checkpoints_dir(run_name)}/logs"
    return os.path.join(tempfile.gettempdir(), "star-logs", run_name)


def _open_run(lake: Lake, run_name: str) -> tuple[dict | None, str]:
    """Read the run state of ``run_name`` (None when new) and check it may be resumed."""
    state_path = f"{lake.checkpoints_dir(run_name)}/{RUN_STATE_FILE}"
    if lake.exists(state_path):
        state = lake.read_json(state_path)
        if state.get("status") == "finished":
            raise ValueError(
                f"run {run_name!r} already finished (model {state.get('model_uri')}); "
                "start a new run without --run-name or with another name"
            )
        return state, state_path
    if lake.exists(lake.checkpoints_dir(run_name)) and lake.fs.ls(lake.checkpoints_dir(run_name)):
        raise ValueError(f"{lake.checkpoints_dir(run_name)} exists but holds no {RUN_STATE_FILE}: not a star run; choose another run name")
    return None, state_path


def train(cfg: StarConfig, dataset: str, *, dataset_version: int | None = None, feature_set: str | None = None) -> TrainResult:
    """Train STAR on ``dataset``'s train split with Ray Train; evaluate, log, register.

    Args:
        cfg: every setting; ``cfg.train.epochs`` is the total over all resumptions.
        dataset: dataset name in the lake (``labels/<dataset>/v<N>``).
        dataset_version: None: the latest version (pinned in the run state on first start).
        feature_set: None: the feature set the dataset was imported with.

    Returns:
        A :class:`TrainResult` (MLflow run id, model version/URI, whether the alias moved, metrics).

    Raises:
        ValueError: bad input (unknown dataset, missing features, a run name whose config differs
            or that already finished, an s3:// lake without an MLflow server).
        ray.train.TrainingFailedError: training failed more often than ``train_run.max_failures``; rerun
            with the same ``run_name`` to resume from the last checkpoint.
    """
    from jobs import tracking
    from jobs.runtime import ensure_ray, new_run_id
    from star_core.train_loop import label_order

    res, run = cfg.resources, cfg.train_run
    if cfg.train.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {cfg.train.epochs}")
    lake = Lake(cfg.storage.lake_uri, endpoint_url=cfg.storage.s3_endpoint_url)
    if lake.fs.protocol in ("memory", ("memory",)):
        raise ValueError(f"lake {lake.uri}: Ray Train workers are separate processes and cannot see a memory:// lake")
    uri = tracking.tracking_uri(lake, cfg.storage.mlflow_tracking_uri)
    run_name = check_name("run name", run.run_name or new_run_id("train"))
    state, state_path = _open_run(lake, run_name)
    ds, feature_set, train_labels, test_labels, feat_dim, exclude = _resolve_inputs(dataset, dataset_version, feature_set, lake, state)
    fingerprint = _fingerprint(cfg, lake, dataset, ds.version, feature_set)

    if state is not None:
        changes = _diff(state["fingerprint"], fingerprint)
        if changes:
            raise ValueError(
                f"run {run_name!r} exists with a different config ({'; '.join(changes[:8])}); resume it unchanged or choose a new run name"
            )
        if state.get("tracking_uri") != uri or not tracking.run_exists(uri, state["mlflow_run_id"]):
            raise ValueError(
                f"run {run_name!r} was tracked at {state.get('tracking_uri')} "
                f"(MLflow run {state['mlflow_run_id']}), which {uri} does not hold"
            )
        run_id = state["mlflow_run_id"]
        tracking.client(uri).update_run(run_id, status="RUNNING")
        log.info("run %s exists: resuming (MLflow run %s)", run_name, run_id)
    else:
        exp_id = tracking.ensure_experiment(uri, run.experiment, tracking.artifact_location(lake, uri))
        run_id = tracking.start_run(
            uri, exp_id, run_name, tags={"star.dataset": f"{dataset}/v{ds.version}", "star.feature_set": feature_set, "star.lake": lake.uri}
        )
        job_params = {
            "job.lake_uri": lake.uri,
            "job.dataset": dataset,
            "job.dataset_version": ds.version,
            "job.feature_set": feature_set,
            "job.run_name": run_name,
            "data.n_train_videos": len(train_labels),
            "data.n_test_videos": len(test_labels),
            "data.feat_dim": feat_dim,
        }
        tracking.log_config(uri, run_id, cfg, extra=job_params)
        state = {
            "run_name": run_name,
            "mlflow_run_id": run_id,
            "tracking_uri": uri,
            "fingerprint": fingerprint,
            "dataset_version": ds.version,
            "feature_set": feature_set,
            "status": "running",
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        lake.write_json(state_path, state)  # written before fit(): a kill from here on resumes this run
        log.info("run %s: MLflow run %s at %s", run_name, run_id, uri)

    class_order = label_order(train_labels, ds.classes, cfg.model.label_order)
    fail_after = os.environ.get(FAIL_AFTER_EPOCH_ENV)
    loop_config = {
        "star": to_dict(cfg),
        "lake_uri": lake.uri,
        "dataset": dataset,
        "dataset_version": ds.version,
        "feature_set": feature_set,
        "classes": list(ds.classes),
        "class_order": list(class_order),
        "feat_dim": feat_dim,
        "train_ids": sorted(v.video_id for v in train_labels),
        "test_ids": sorted(v.video_id for v in test_labels),
        "exclude_videos": list(exclude),
        "tracking_uri": uri,
        "mlflow_run_id": run_id,
        "run_name": run_name,
        "eval_every_epochs": cfg.train.eval_every_epochs,
        "timelines_logged": run.timelines_logged,
        "fail_after_epoch": int(fail_after) if fail_after else None,
    }
    log.info(
        "training %s v%d (%d train / %d test videos, %d classes, D=%d) on %d worker(s)%s, %d epochs",
        dataset,
        ds.version,
        len(train_labels),
        len(test_labels),
        len(ds.classes),
        feat_dim,
        res.workers,
        " with GPUs" if res.gpu else "",
        cfg.train.epochs,
    )

    ensure_ray(res.ray_address, log_dir=_log_dir(lake, run_name))
    result = _fit(cfg, lake, run_name, loop_config, uri, run_id)
    return _finish(cfg, dataset, lake, result, state, state_path, uri, run_id, run_name)


def _fit(cfg: StarConfig, lake: Lake, run_name: str, loop_config: dict, uri: str, run_id: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs import tracking
    from jobs.train_worker import train_loop
    from jobs.worker_env import forwarded_env
    from star_core.io.fs import to_arrow_fs

    res, use_gpu = cfg.resources, bool(cfg.resources.gpu)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(
            num_workers=res.workers, use_gpu=use_gpu, resources_per_worker={"CPU": res.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=lake.path("checkpoints"),  # no protocol: the filesystem is given
            storage_filesystem=to_arrow_fs(lake.fs),
            checkpoint_config=CheckpointConfig(num_to_keep=2),  # the latest two; resume takes the latest
            failure_config=FailureConfig(max_failures=cfg.train_run.max_failures),
            worker_runtime_env={"env_vars": forwarded_env()},  # endpoints only: Ray logs env_vars (docs/operations.md)
        ),
    )
    t0 = time.monotonic()
    try:
        result = trainer.fit()
    except Exception:
        tracking.end_run(uri, run_id, "FAILED")
        log.error("run %s failed; rerun with run_name=%r (--run-name %s) to resume from its last checkpoint", run_name, run_name, run_name)
        raise
    log.info("fit() finished in %.0f s", time.monotonic() - t0)
    if result.checkpoint is None:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {run_name!r}: training finished without a checkpoint")
    return result


def _finish(
    cfg: StarConfig, dataset: str, lake: Lake, result, state: dict, state_path: str, uri: str, run_id: str, run_name: str
) -> TrainResult:
    """Driver side after fit(): final detector from the checkpoint -> MLflow model, registry, alias."""
    from pathlib import Path

    import torch

    from jobs import tracking
    from jobs.train_checkpoints import META_FILE, TRAINER_FILE, newest_complete_checkpoint, read_checkpoint
    from star_core.detector import StarDetector

    newest = newest_complete_checkpoint(lake, run_name)  # Ray's result.checkpoint can lag behind (see train_worker)
    if newest is not None:
        trainer_state, meta = read_checkpoint(lake, newest[1])
    else:
        with result.checkpoint.as_directory() as d:
            trainer_state = torch.load(Path(d) / TRAINER_FILE, map_location="cpu", weights_only=True)
            meta = json.loads((Path(d) / META_FILE).read_text())
    if meta["epoch"] < cfg.train.epochs:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(
            f"run {run_name!r}: the newest complete checkpoint is after epoch {meta['epoch']} of {cfg.train.epochs}; rerun to resume"
        )
    detector = StarDetector.from_checkpoint(trainer_state["detector"])
    metrics = {**(meta["history"][-1] if meta["history"] else {}), **meta.get("eval", {})}
    metrics.pop("epoch", None)
    score = metrics.get("test/avg_map_0.1_0.7")
    version_tags = {"star.dataset": f"{dataset}/v{state['dataset_version']}", "star.run_name": run_name, "epochs": meta["epoch"]}
    if score is not None:
        version_tags[tracking.SCORE_TAG] = f"{score:.6f}"
    ref = tracking.log_detector(uri, run_id, detector, cfg.train_run.model_name or None, tags=version_tags)
    alias_set = False
    alias = cfg.train_run.alias
    if ref.version is not None and alias:
        alias_set = tracking.maybe_set_alias(uri, ref.name, ref.version, alias, score)
    tracking.set_tags(uri, run_id, {"star.model_uri": ref.uri, "star.alias_set": alias_set})
    tracking.end_run(uri, run_id, "FINISHED")
    resumed_from = int((result.metrics or {}).get("resumed_from_epoch", 0))
    lake.write_json(
        state_path,
        {
            **state,
            "status": "finished",
            "model_uri": ref.uri,
            "model_version": ref.version,
            "epochs_completed": meta["epoch"],
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    log.info(
        "run %s: %d epochs, test avg mAP@0.1:0.7 %s, model %s%s",
        run_name,
        meta["epoch"],
        "n/a" if score is None else f"{score:.2f}",
        ref.uri,
        f" (now @{alias})" if alias_set else "",
    )
    return TrainResult(
        run_id=run_id,
        run_name=run_name,
        model_version=ref.version,
        model_uri=ref.uri,
        alias_set=alias_set,
        metrics=metrics,
        epochs_completed=int(meta["epoch"]),
        resumed_from_epoch=resumed_from,
        tracking_uri=uri,
        checkpoint_dir=lake.url("checkpoints", run_name),
    )
