"""Training job: STAR (both streams) with Ray Train over the lake, tracked in MLflow, registered.

``train(TrainJobConfig) -> TrainResult`` is what ``star train``, ``python -m jobs.train`` and the
Prefect flow call. On the driver:

1. Resolve the dataset version, its feature set, the train/test split video ids, the feature
   dimension and the label order (``train_loop.label_order``, once, here).
2. Open or resume the run: the run's state file ``<lake>/checkpoints/<run_name>/star_run.json``
   records the config fingerprint and the MLflow run id. A fresh run name (the default,
   ``train-<UTC time>-<hex>``) always starts from scratch; an existing name resumes from its last
   checkpoint when its config matches (same total epochs) and is an error otherwise, or when
   that run already finished.
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

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from star_core.config import StarConfig, from_dict, to_dict
from star_core.io.lake import Lake, check_name

log = logging.getLogger("star.train")

RUN_STATE_FILE = "star_run.json"
# Train settings that may change on resume (checkpoint cadence only decides when state is saved).
_RESUME_FREE_TRAIN = ("checkpoint_every_epochs", "checkpoint_min_interval_s")
# Job fields that may change between the interrupted run and its resumption.
_RESUME_FREE = ("workers", "use_gpu", "ray_address", "run_name", "eval_every_epochs", "timelines_logged", "max_failures", "cpus_per_worker", "alias", "fail_after_epoch")


@dataclass(frozen=True)
class TrainJobConfig:
    """Everything one training run needs (the model/loss/train settings are in ``star``)."""

    lake_uri: str  # lake root: local directory or s3://bucket/prefix
    dataset: str  # dataset name in the lake (labels/<dataset>/v<N>)
    dataset_version: int | None = None  # None: the latest version (pinned in the run state on first start)
    feature_set: str | None = None  # None: the feature set the dataset was imported with
    star: StarConfig = field(default_factory=StarConfig)  # model, loss, train, localize, storage settings
    workers: int = 1  # Ray Train workers (one DDP process each)
    use_gpu: bool = False  # one GPU per worker
    run_name: str | None = None  # None: a fresh train-<time>-<hex>; an existing name resumes that run
    model_name: str = "star"  # registered model name ("" or None: do not register)
    alias: str | None = "champion"  # alias given when the test mAP beats the holder's (None: never)
    experiment: str = "star"  # MLflow experiment
    ray_address: str | None = None  # None: storage.ray_address, RAY_ADDRESS, else a local Ray
    eval_every_epochs: int | None = None  # None: star.train.eval_every_epochs (0 = only at the end)
    timelines_logged: int = 3  # test videos whose detection timelines are logged as PNGs
    max_failures: int = 1  # worker failures Ray Train recovers from (restart from the last checkpoint)
    cpus_per_worker: float = 1.0  # CPUs reserved per worker
    fail_after_epoch: int | None = None  # TEST ONLY: worker exits hard after this epoch (first attempt)


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


def job_config(lake_uri: str, dataset: str, star: StarConfig | None = None, **fields: Any) -> TrainJobConfig:
    """Convenience constructor; rejects unknown fields with a clear message."""
    known = {f.name for f in dataclasses.fields(TrainJobConfig)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ValueError(f"unknown train job option(s) {unknown}; known: {sorted(known)}")
    return TrainJobConfig(lake_uri=lake_uri, dataset=dataset, star=star or StarConfig(), **fields)


def _fingerprint(cfg: TrainJobConfig, dataset_version: int, feature_set: str) -> dict[str, Any]:
    """What must be equal for a run to be resumed: everything but resources, storage endpoints and logging."""
    job = {k: v for k, v in to_dict(cfg).items() if k not in _RESUME_FREE and k != "star"}
    job.update(dataset_version=dataset_version, feature_set=feature_set)
    star = to_dict(cfg.star)
    star.pop("storage", None)
    for key in _RESUME_FREE_TRAIN:
        star["train"].pop(key, None)
    return json.loads(json.dumps({"job": job, "star": star}, default=str))


def _diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _diff(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} -> {new!r}"]


def _resolve_inputs(cfg: TrainJobConfig, lake: Lake, state: dict | None):
    """Dataset, version, feature set, split ids and feature dim (pinned to the run state on resume)."""
    from star_core.io import schemas
    from star_core.io.datasets import SplitProtocol, dataset_source, load_dataset
    from star_core.io.feature_store import feature_index

    version = cfg.dataset_version if cfg.dataset_version is not None else (state or {}).get("dataset_version")
    dataset = load_dataset(lake, cfg.dataset, version)
    source = dataset_source(lake, cfg.dataset, dataset.version)
    feature_set = cfg.feature_set or (state or {}).get("feature_set") or source.get("feature_set")
    if not feature_set:
        raise ValueError(f"dataset {cfg.dataset!r} v{dataset.version} does not name its feature set: pass feature_set (--feature-set)")
    check_name("feature set", feature_set)
    protocol = SplitProtocol.of(source)
    train_split, test_split = protocol.train_split, protocol.test_split
    train_labels = [v for v in dataset.videos if v.split == train_split]
    test_labels = [v for v in dataset.videos if v.split == test_split]
    if not train_labels:
        raise ValueError(f"dataset {cfg.dataset!r} v{dataset.version} has no videos in split {train_split!r}")
    index = feature_index(lake, feature_set)
    have = set(index.column("video_id").to_pylist())
    missing = sorted(v.video_id for v in train_labels + test_labels if v.video_id not in have)
    if missing:
        raise ValueError(f"feature set {feature_set!r} in {lake.uri} lacks features for {len(missing)} video(s) of dataset {cfg.dataset!r}: {missing[:10]}")
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


def _open_run(cfg: TrainJobConfig, lake: Lake, run_name: str, uri: str) -> tuple[dict | None, str]:
    """Read the run state of ``run_name`` (None when new) and check it may be resumed."""
    state_path = f"{lake.checkpoints_dir(run_name)}/{RUN_STATE_FILE}"
    if lake.exists(state_path):
        state = lake.read_json(state_path)
        if state.get("status") == "finished":
            raise ValueError(
                f"run {run_name!r} already finished (model {state.get('model_uri')}); start a new run without --run-name or with another name"
            )
        return state, state_path
    if lake.exists(lake.checkpoints_dir(run_name)) and lake.fs.ls(lake.checkpoints_dir(run_name)):
        raise ValueError(f"{lake.checkpoints_dir(run_name)} exists but holds no {RUN_STATE_FILE}: not a star run; choose another run name")
    return None, state_path


def train(cfg: TrainJobConfig) -> TrainResult:
    """Train STAR on ``cfg.dataset``'s train split with Ray Train; evaluate, log, register.

    Args:
        cfg: the job config; ``cfg.star.train.epochs`` is the total over all resumptions.

    Returns:
        A :class:`TrainResult` (MLflow run id, model version/URI, whether the alias moved, metrics).

    Raises:
        ValueError: bad input (unknown dataset, missing features, a run name whose config differs
            or that already finished, an s3:// lake without an MLflow server).
        ray.train.TrainingFailedError: training failed more often than ``cfg.max_failures``; rerun
            with the same ``run_name`` to resume from the last checkpoint.
    """
    from jobs import tracking
    from jobs.runtime import ensure_ray, new_run_id
    from star_core.train_loop import label_order

    if cfg.workers < 1:
        raise ValueError(f"workers must be >= 1, got {cfg.workers}")
    if cfg.star.train.epochs < 1:
        raise ValueError(f"train.epochs must be >= 1, got {cfg.star.train.epochs}")
    lake = Lake(cfg.lake_uri, endpoint_url=cfg.star.storage.s3_endpoint_url)
    if lake.fs.protocol in ("memory", ("memory",)):
        raise ValueError(f"lake {lake.uri}: Ray Train workers are separate processes and cannot see a memory:// lake")
    uri = tracking.tracking_uri(lake, cfg.star.storage.mlflow_tracking_uri)
    run_name = check_name("run name", cfg.run_name or new_run_id("train"))
    state, state_path = _open_run(cfg, lake, run_name, uri)
    dataset, feature_set, train_labels, test_labels, feat_dim, exclude = _resolve_inputs(cfg, lake, state)
    fingerprint = _fingerprint(cfg, dataset.version, feature_set)
    eval_every = cfg.eval_every_epochs if cfg.eval_every_epochs is not None else cfg.star.train.eval_every_epochs

    if state is not None:
        changes = _diff(state["fingerprint"], fingerprint)
        if changes:
            raise ValueError(f"run {run_name!r} exists with a different config ({'; '.join(changes[:8])}); resume it unchanged or choose a new run name")
        if state.get("tracking_uri") != uri or not tracking.run_exists(uri, state["mlflow_run_id"]):
            raise ValueError(f"run {run_name!r} was tracked at {state.get('tracking_uri')} (MLflow run {state['mlflow_run_id']}), which {uri} does not hold")
        run_id = state["mlflow_run_id"]
        tracking.client(uri).update_run(run_id, status="RUNNING")
        log.info("run %s exists: resuming (MLflow run %s)", run_name, run_id)
    else:
        exp_id = tracking.ensure_experiment(uri, cfg.experiment, tracking.artifact_location(lake, uri))
        run_id = tracking.start_run(uri, exp_id, run_name, tags={"star.dataset": f"{cfg.dataset}/v{dataset.version}", "star.feature_set": feature_set, "star.lake": lake.uri})
        job_params = {f"job.{k}": v for k, v in to_dict(cfg).items() if k != "star"}
        job_params.update({"job.dataset_version": dataset.version, "job.feature_set": feature_set, "job.run_name": run_name, "data.n_train_videos": len(train_labels), "data.n_test_videos": len(test_labels), "data.feat_dim": feat_dim})
        tracking.log_config(uri, run_id, cfg.star, extra=job_params)
        state = {"run_name": run_name, "mlflow_run_id": run_id, "tracking_uri": uri, "fingerprint": fingerprint, "dataset_version": dataset.version, "feature_set": feature_set, "status": "running", "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        lake.write_json(state_path, state)  # written before fit(): a kill from here on resumes this run
        log.info("run %s: MLflow run %s at %s", run_name, run_id, uri)

    class_order = label_order(train_labels, dataset.classes, cfg.star.model.label_order)
    loop_config = {
        "star": to_dict(cfg.star),
        "lake_uri": lake.uri,
        "dataset": cfg.dataset,
        "dataset_version": dataset.version,
        "feature_set": feature_set,
        "classes": list(dataset.classes),
        "class_order": list(class_order),
        "feat_dim": feat_dim,
        "train_ids": sorted(v.video_id for v in train_labels),
        "test_ids": sorted(v.video_id for v in test_labels),
        "exclude_videos": list(exclude),
        "tracking_uri": uri,
        "mlflow_run_id": run_id,
        "run_name": run_name,
        "eval_every_epochs": eval_every,
        "timelines_logged": cfg.timelines_logged,
        "fail_after_epoch": cfg.fail_after_epoch,
    }
    log.info("training %s v%d (%d train / %d test videos, %d classes, D=%d) on %d worker(s)%s, %d epochs", cfg.dataset, dataset.version, len(train_labels), len(test_labels), len(dataset.classes), feat_dim, cfg.workers, " with GPUs" if cfg.use_gpu else "", cfg.star.train.epochs)

    ensure_ray(cfg.ray_address or cfg.star.storage.ray_address, log_dir=_log_dir(lake, run_name))
    result = _fit(cfg, lake, run_name, loop_config, uri, run_id)
    return _finish(cfg, lake, result, state, state_path, uri, run_id, run_name)


def _fit(cfg: TrainJobConfig, lake: Lake, run_name: str, loop_config: dict, uri: str, run_id: str):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from jobs import tracking
    from jobs.train_worker import train_loop
    from jobs.worker_env import forwarded_env
    from star_core.io.fs import to_arrow_fs

    trainer = TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu, resources_per_worker={"CPU": cfg.cpus_per_worker, **({"GPU": 1} if cfg.use_gpu else {})}),
        run_config=RunConfig(
            name=run_name,
            storage_path=lake.path("checkpoints"),  # no protocol: the filesystem is given
            storage_filesystem=to_arrow_fs(lake.fs),
            checkpoint_config=CheckpointConfig(num_to_keep=2),  # the latest two; resume takes the latest
            failure_config=FailureConfig(max_failures=cfg.max_failures),
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


def _finish(cfg: TrainJobConfig, lake: Lake, result, state: dict, state_path: str, uri: str, run_id: str, run_name: str) -> TrainResult:
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
    if meta["epoch"] < cfg.star.train.epochs:
        tracking.end_run(uri, run_id, "FAILED")
        raise RuntimeError(f"run {run_name!r}: the newest complete checkpoint is after epoch {meta['epoch']} of {cfg.star.train.epochs}; rerun to resume")
    detector = StarDetector.from_checkpoint(trainer_state["detector"])
    metrics = {**(meta["history"][-1] if meta["history"] else {}), **meta.get("eval", {})}
    metrics.pop("epoch", None)
    score = metrics.get("test/avg_map_0.1_0.7")
    version_tags = {"star.dataset": f"{cfg.dataset}/v{state['dataset_version']}", "star.run_name": run_name, "epochs": meta["epoch"]}
    if score is not None:
        version_tags[tracking.SCORE_TAG] = f"{score:.6f}"
    ref = tracking.log_detector(uri, run_id, detector, cfg.model_name or None, tags=version_tags)
    alias_set = False
    if ref.version is not None and cfg.alias:
        alias_set = tracking.maybe_set_alias(uri, ref.name, ref.version, cfg.alias, score)
    tracking.set_tags(uri, run_id, {"star.model_uri": ref.uri, "star.alias_set": alias_set})
    tracking.end_run(uri, run_id, "FINISHED")
    resumed_from = int((result.metrics or {}).get("resumed_from_epoch", 0))
    lake.write_json(state_path, {**state, "status": "finished", "model_uri": ref.uri, "model_version": ref.version, "epochs_completed": meta["epoch"], "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    log.info("run %s: %d epochs, test avg mAP@0.1:0.7 %s, model %s%s", run_name, meta["epoch"], "n/a" if score is None else f"{score:.2f}", ref.uri, f" (now @{cfg.alias})" if alias_set else "")
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


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.train``: the same options as ``star train``."""
    from jobs.commands import train as command

    parser = argparse.ArgumentParser(prog="python -m jobs.train", description="train STAR with Ray Train, tracked in MLflow")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    command.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return command.run(args)
    except (ValueError, KeyError, FileNotFoundError) as exc:
        print(f"python -m jobs.train: error: {exc.args[0] if isinstance(exc, KeyError) and exc.args else exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
