"""The Ray Train loop of one worker (``train_loop_per_worker`` of :mod:`jobs.train`).

Each worker rebuilds the typed config from the dict it receives, reads ITS shard of the
training videos from the lake (rank r takes videos r, r+W, r+2W, ... of the sorted list, padded
by wrapping around so every worker runs the same number of steps: DDP needs that), builds a
:class:`star_core.train_loop.Trainer` with ``wrap_module=ray.train.torch.prepare_model`` (DDP
when there is more than one worker) and runs the remaining epochs.

Rank 0 alone: checkpoints (``trainer.pt`` = ``Trainer.state_dict()``, ``meta.json`` = epoch,
metric history, last evaluation, the size of ``trainer.pt``) every ``train.checkpoint_every_epochs``
epochs, or with 0 (the default) at most once per ``train.checkpoint_min_interval_s``, and always
after the last epoch; MLflow metrics and plots, evaluation on the test split (every K epochs and
at the end), progress lines. All workers call ``ray.train.report`` at each checkpoint only: a report
waits for the controller's next poll (~2 s), far longer than a small epoch.

Resume: every worker starts from the newest COMPLETE checkpoint in the run's directory on the lake
(:func:`newest_complete_checkpoint`), not from Ray's own record: a worker killed right after
``report`` leaves a checkpoint the controller never registered (a run killed after epoch 7 would
otherwise restart from epoch 5).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from star_core.data import VideoFeatures, VideoLabels

log = logging.getLogger("star.train")

TRAINER_FILE = "trainer.pt"
META_FILE = "meta.json"


CHECKPOINT_PREFIX = "checkpoint_epoch_"


def checkpoint_dir_name(epoch: int) -> str:
    return f"{CHECKPOINT_PREFIX}{epoch:05d}"


def _epoch_of(path: str) -> int | None:
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    try:
        return int(name[len(CHECKPOINT_PREFIX):])
    except ValueError:
        return None


def list_checkpoints(lake, run_name: str) -> list[tuple[int, str]]:
    """``(epoch, path)`` of every ``checkpoint_epoch_*`` directory of the run, oldest first."""
    directory = lake.checkpoints_dir(run_name)
    lake.fs.invalidate_cache()
    try:
        entries = lake.fs.ls(directory, detail=False)
    except FileNotFoundError:
        return []
    return sorted((e, p) for p in entries if (e := _epoch_of(p)) is not None)


def is_complete(lake, path: str, epoch: int) -> bool:
    """``meta.json`` parses, names this epoch, and ``trainer.pt`` has the size it records."""
    try:
        meta = json.loads(lake.fs.cat_file(f"{path}/{META_FILE}"))
        size = lake.fs.size(f"{path}/{TRAINER_FILE}")
    except (FileNotFoundError, OSError, ValueError):
        return False
    return meta.get("epoch") == epoch and meta.get("trainer_bytes", size) == size


def newest_complete_checkpoint(lake, run_name: str) -> tuple[int, str] | None:
    """``(epoch, path)`` of the run's newest complete checkpoint on the lake, None without one."""
    for epoch, path in reversed(list_checkpoints(lake, run_name)):
        if is_complete(lake, path, epoch):
            return epoch, path
    return None


def read_checkpoint(lake, path: str) -> tuple[dict, dict]:
    """``(Trainer.state_dict(), meta)`` of a checkpoint directory on the lake (weights only)."""
    import io

    import torch

    state = torch.load(io.BytesIO(lake.fs.cat_file(f"{path}/{TRAINER_FILE}")), map_location="cpu", weights_only=True)
    return state, json.loads(lake.fs.cat_file(f"{path}/{META_FILE}"))


class CheckpointCadence:
    """When rank 0 checkpoints: every ``every_epochs`` epochs, or (0) at most once per
    ``min_interval_s`` seconds of training; always after the last epoch."""

    def __init__(self, every_epochs: int, min_interval_s: float, total_epochs: int, clock=time.monotonic):
        if every_epochs < 0 or min_interval_s < 0:
            raise ValueError(f"train.checkpoint_every_epochs ({every_epochs}) and train.checkpoint_min_interval_s ({min_interval_s}) must be >= 0")
        self.every_epochs, self.min_interval_s, self.total_epochs, self.clock = every_epochs, min_interval_s, total_epochs, clock
        self.last_s = clock()

    def due(self, epochs_done: int) -> bool:
        if epochs_done >= self.total_epochs:
            return True
        if self.every_epochs > 0:
            return epochs_done % self.every_epochs == 0
        return self.clock() - self.last_s >= self.min_interval_s

    def saved(self) -> None:
        self.last_s = self.clock()


def shard_ids(video_ids: Sequence[str], rank: int, world_size: int) -> list[str]:
    """Videos of worker ``rank``: every ``world_size``-th, all shards padded to equal length.

    Padding repeats videos from the start of the list, so each worker runs the same number of
    batches per epoch (unequal counts would leave DDP's all-reduce waiting forever).
    """
    if not video_ids:
        raise ValueError("no training videos to shard")
    n = len(video_ids)
    per_worker = math.ceil(n / world_size)
    return [video_ids[(rank + world_size * j) % n] for j in range(per_worker)]


def _reduce_across_workers(metrics: dict[str, float], op: str = "mean") -> dict[str, float]:
    """Mean (equal-sized shards, so exact) or max of per-worker values over all workers."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return metrics
    keys = sorted(metrics)
    t = torch.tensor([metrics[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    scale = 1.0 if op == "max" else 1.0 / dist.get_world_size()
    return {k: float(v) * scale for k, v in zip(keys, t.cpu().tolist())}


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MiB)."""
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return kb / 1024.0


def evaluate(detector, lake, feature_set: str, labels: Sequence[VideoLabels], classes: Sequence[str], exclude_videos: Sequence[str], batch_videos: int = 8):
    """Detect on ``labels``' videos (streamed from the lake in small batches) and compute mAP.

    Returns:
        ``(MapResult, detections by video id)``.
    """
    from star_core.io.tables import read_features
    from star_core.metrics import evaluate_detections

    by_video: dict[str, list] = {}
    batch: list[VideoFeatures] = []

    def flush() -> None:
        for video, dets in zip(batch, detector.detect_batch(batch)):
            by_video[video.video_id] = dets
        batch.clear()

    for video in read_features(lake, feature_set, [v.video_id for v in labels]):
        batch.append(video)
        if len(batch) >= batch_videos:
            flush()
    if batch:
        flush()
    detections = [d for dets in by_video.values() for d in dets]
    result = evaluate_detections(detections, labels, classes, exclude_videos=tuple(exclude_videos))
    return result, by_video


def eval_metrics(result) -> dict[str, float]:
    """``test/map_0.1`` ... ``test/map_0.7``, ``test/avg_map_0.1_0.5``, ``test/avg_map_0.1_0.7`` (percent)."""
    out = {f"test/map_{k}": float(v) for k, v in result.map.items()}
    out["test/avg_map_0.1_0.5"] = float(result.avg_0_1_0_5)
    out["test/avg_map_0.1_0.7"] = float(result.avg_0_1_0_7)
    return out


def _log_plots(uri: str, run_id: str, history: list[dict], timelines: Iterable[tuple[VideoLabels, list, float | None]], classes: Sequence[str], epoch: int) -> None:
    from jobs import plots, tracking

    with tempfile.TemporaryDirectory(prefix="star-plots-") as tmp:
        if history:
            png = plots.plot_loss_curves(history, Path(tmp) / "loss_curves.png", title=f"training losses (epoch {epoch})")
            tracking.log_artifact(uri, run_id, png, "plots")
        tdir = Path(tmp) / "timelines"
        for labels, dets, duration_s in timelines:
            plots.plot_timeline(labels.video_id, dets, labels, classes, duration_s, tdir / f"{labels.video_id}.png")
        if tdir.exists():
            tracking.log_artifact(uri, run_id, tdir, "plots/timelines")


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: the config dict is rebuilt into typed configs first."""
    import ray.train
    import ray.train.torch
    import torch

    from jobs import tracking
    from star_core.config import from_dict
    from star_core.io.lake import Lake
    from star_core.io.tables import load_dataset, read_features
    from star_core.train_loop import Trainer

    from jobs.ray_logs import setup_worker_logging

    setup_worker_logging()  # star's format (the driver shows these lines); also Ray's setup hook
    cfg = from_dict(config["star"])  # typed StarConfig from here on
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    lake = Lake(config["lake_uri"], endpoint_url=cfg.storage.s3_endpoint_url)
    dataset = load_dataset(lake, config["dataset"], config["dataset_version"])
    labels_by_id = {v.video_id: v for v in dataset.videos}
    classes = tuple(config["classes"])
    if classes != dataset.classes:
        raise ValueError(f"dataset {config['dataset']!r} v{config['dataset_version']}: classes changed since the driver read them")

    # This worker's shard, read once (features stay in memory for all epochs).
    t0 = time.monotonic()
    mine = shard_ids(config["train_ids"], rank, world)
    feats = {v.video_id: v for v in read_features(lake, config["feature_set"], sorted(set(mine)))}
    pairs = [(feats[vid], labels_by_id[vid]) for vid in mine]
    log.info("worker %d/%d: %d training videos (%d segments) read in %.1f s", rank, world, len(pairs), sum(f.n_segments for f, _ in pairs), time.monotonic() - t0)

    def wrap(module):
        # DDP only with >1 worker; unused parameters (e.g. no counts in a batch) must not stall the all-reduce.
        return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": True}) if world > 1 else module.to(device)

    trainer = Trainer(classes, int(config["feat_dim"]), cfg, tuple(config["class_order"]), device=device, wrap_module=wrap)
    history: list[dict[str, float]] = []
    last_eval: dict[str, float] = {}
    start_epoch = 0
    run_name = config["run_name"]
    registered = ray.train.get_checkpoint()  # Ray's record; may lag behind what was written
    registered_epoch = (_epoch_of(registered.path) or 0) if registered is not None else 0
    newest = newest_complete_checkpoint(lake, run_name)
    orphans: list[str] = []  # checkpoints Ray does not track (its num_to_keep never deletes them)
    if newest is not None:
        state, meta = read_checkpoint(lake, newest[1])
        trainer.load_state_dict(state)
        start_epoch = trainer.epoch
        history, last_eval = meta["history"], meta.get("eval", {})
        orphans = [p for e, p in list_checkpoints(lake, run_name) if e > registered_epoch]
        if rank == 0:
            log.info("resuming run %s from its newest complete checkpoint, after epoch %d of %d (%s)", run_name, start_epoch, cfg.train.epochs, newest[1])
            for e, p in list_checkpoints(lake, run_name):
                if e > start_epoch:  # incomplete (killed while saving): never resumed from, rewritten below
                    lake.fs.rm(p, recursive=True)

    epochs = cfg.train.epochs
    eval_every = int(config["eval_every_epochs"] or 0)
    uri, run_id = config["tracking_uri"], config["mlflow_run_id"]
    test_labels = [labels_by_id[v] for v in config["test_ids"]]
    fail_after = config.get("fail_after_epoch")  # fault injection for the resume test only
    cadence = CheckpointCadence(cfg.train.checkpoint_every_epochs, cfg.train.checkpoint_min_interval_s, epochs)
    t_start = time.monotonic()

    if start_epoch >= epochs:  # killed after the last checkpoint, before the driver finished: nothing to train
        ray.train.report({**(history[-1] if history else {}), **last_eval, "epoch": start_epoch, "resumed_from_epoch": start_epoch})
        return

    for epoch in range(start_epoch, epochs):
        t_epoch = time.monotonic()
        metrics = _reduce_across_workers(trainer.train_epoch(pairs, epoch))
        done = epoch + 1
        epoch_s = time.monotonic() - t_epoch
        peak = _reduce_across_workers({"worker_peak_rss_mb": peak_rss_mb()}, op="max")  # the largest worker
        row = {"epoch": done, **metrics, "epoch_time_s": epoch_s, **peak}
        history.append(row)
        report: dict[str, Any] = {**row, "resumed_from_epoch": start_epoch}
        ckpt = None
        if rank == 0 and done == epochs and cfg.refine.rounds > 0:
            # Stage 2 (star_core.refine) on every training video, not only this worker's shard.
            from star_core.train_loop import refine_detector

            ids = list(dict.fromkeys(config["train_ids"]))
            every = feats if set(ids) <= set(feats) else {v.video_id: v for v in read_features(lake, config["feature_set"], sorted(ids))}
            refine_detector(trainer.detector, [(every[v], labels_by_id[v]) for v in ids], cfg.refine)
        if rank == 0:
            is_eval = bool(test_labels) and (done == epochs or (eval_every > 0 and done % eval_every == 0))
            timelines = []
            if is_eval:
                t_eval = time.monotonic()
                result, by_video = evaluate(trainer.detector, lake, config["feature_set"], test_labels, classes, config["exclude_videos"])
                last_eval = {**eval_metrics(result), "eval_time_s": time.monotonic() - t_eval}
                report.update(last_eval)
                shown = [v for v in test_labels if v.instances][: int(config["timelines_logged"])] if done == epochs else []
                timelines = [(v, by_video.get(v.video_id, []), v.duration_s) for v in shown]
                log.info("epoch %d: test mAP@0.1:0.7 avg %.2f, @0.1:0.5 avg %.2f (%.1f s)", done, result.avg_0_1_0_7, result.avg_0_1_0_5, last_eval["eval_time_s"])
            tracking.log_metrics(uri, run_id, {k: v for k, v in report.items() if k != "resumed_from_epoch"}, step=done)
            if is_eval or done == epochs:
                _log_plots(uri, run_id, history, timelines, classes, done)
            rate_s = (time.monotonic() - t_start) / (done - start_epoch)
            terms = " ".join(f"{k} {metrics[k]:.4f}" for k in ("rgb/total", "flow/total", "rgb/classification", "flow/classification") if k in metrics)
            log.info("epoch %d/%d | %s | %.2f s/epoch | ETA %.0f s", done, epochs, terms, epoch_s, rate_s * (epochs - done))
        # Report (a barrier that waits for the controller's next poll, ~2 s) only with a checkpoint:
        # rank 0's clock decides, every worker follows.
        save = _reduce_across_workers({"save": float(rank == 0 and cadence.due(done))}, op="max")["save"] > 0
        if save:
            if rank == 0:
                tmp = tempfile.mkdtemp(prefix="star-ckpt-")
                torch.save(trainer.state_dict(), Path(tmp) / TRAINER_FILE)
                meta = {"epoch": done, "history": history, "eval": last_eval, "run_name": run_name, "trainer_bytes": (Path(tmp) / TRAINER_FILE).stat().st_size}
                (Path(tmp) / META_FILE).write_text(json.dumps(meta))
                ckpt = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(report, checkpoint=ckpt, checkpoint_dir_name=checkpoint_dir_name(done))
            cadence.saved()
        if ckpt is not None:
            shutil.rmtree(ckpt.path, ignore_errors=True)  # uploaded synchronously; the local copy is done
            for path in orphans:  # a newer checkpoint exists now: the untracked older ones can go
                lake.fs.rm(path, recursive=True)
            orphans = []
        if fail_after is not None and done == int(fail_after) and start_epoch == 0 and rank == 0:
            log.warning("fault injection: worker exits after epoch %d", done)
            os._exit(17)
