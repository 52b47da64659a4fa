"""The Ray Train loop of one worker (``train_loop_per_worker`` of :mod:`jobs.train`).

Each worker rebuilds the typed config from the dict it receives, reads ITS shard of the
training videos from the lake (rank r takes videos r, r+W, r+2W, ... of the sorted list, padded
by wrapping around so every worker runs the same number of steps: DDP needs that), builds a
:class:`star_core.train_loop.Trainer` with ``wrap_module=ray.train.torch.prepare_model`` (DDP
when there is more than one worker), resumes from the run's newest complete checkpoint
(:mod:`jobs.train_checkpoints`) and runs the remaining epochs.

Rank 0 alone: checkpoints (see :mod:`jobs.train_checkpoints` for when), MLflow metrics and plots,
evaluation on the test split (every K epochs and at the end), progress lines. All workers call
``ray.train.report`` at each checkpoint only: a report waits for the controller's next poll
(~2 s), far longer than a small epoch.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from jobs.train_checkpoints import CheckpointCadence, ResumePoint, checkpoint_dir_name, resume, write_checkpoint
from star_core.data import VideoFeatures, VideoLabels

log = logging.getLogger("star.train")


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


def eval_metrics(result) -> dict[str, float]:
    """``test/map_0.1`` ... ``test/map_0.7``, ``test/avg_map_0.1_0.5``, ``test/avg_map_0.1_0.7`` (percent)."""
    out = {f"test/map_{k}": float(v) for k, v in result.map.items()}
    out["test/avg_map_0.1_0.5"] = float(result.avg_0_1_0_5)
    out["test/avg_map_0.1_0.7"] = float(result.avg_0_1_0_7)
    return out


def _log_plots(
    uri: str,
    run_id: str,
    history: list[dict],
    timelines: Iterable[tuple[VideoLabels, list, float | None]],
    classes: Sequence[str],
    epoch: int,
) -> None:
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


@dataclass
class WorkerContext:
    """What one worker knows: its typed config, rank, lake, labels and its shard of training videos."""

    config: dict[str, Any]  # the loop config the driver built (jobs.train)
    cfg: Any  # StarConfig
    rank: int
    world: int
    device: Any  # torch.device
    lake: Any  # Lake
    classes: tuple[str, ...]
    labels_by_id: dict[str, VideoLabels]
    features: dict[str, VideoFeatures]  # this worker's training videos, read once for all epochs
    pairs: list[tuple[VideoFeatures, VideoLabels]]  # this worker's shard, padded (shard_ids)

    @property
    def rank0(self) -> bool:
        return self.rank == 0


def worker_context(config: dict[str, Any]) -> WorkerContext:
    """Typed config, rank and device, the dataset's labels, and this worker's shard read from the lake."""
    import ray.train
    import ray.train.torch

    from star_core.config import from_dict
    from star_core.io.lake import Lake
    from star_core.io.datasets import load_dataset
    from star_core.io.feature_store import read_features

    cfg = from_dict(config["star"])  # typed StarConfig from here on
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    lake = Lake(config["lake_uri"], endpoint_url=cfg.storage.s3_endpoint_url)
    dataset = load_dataset(lake, config["dataset"], config["dataset_version"])
    labels_by_id = {v.video_id: v for v in dataset.videos}
    classes = tuple(config["classes"])
    if classes != dataset.classes:
        raise ValueError(f"dataset {config['dataset']!r} v{config['dataset_version']}: classes changed since the driver read them")
    t0 = time.monotonic()
    mine = shard_ids(config["train_ids"], rank, world)
    feats = {v.video_id: v for v in read_features(lake, config["feature_set"], sorted(set(mine)))}
    pairs = [(feats[vid], labels_by_id[vid]) for vid in mine]
    log.info(
        "worker %d/%d: %d training videos (%d segments) read in %.1f s",
        rank, world, len(pairs), sum(f.n_segments for f, _ in pairs), time.monotonic() - t0,
    )
    return WorkerContext(config, cfg, rank, world, ray.train.torch.get_device(), lake, classes, labels_by_id, feats, pairs)


def build_trainer(w: WorkerContext):
    """A :class:`star_core.train_loop.Trainer` whose modules are DDP-wrapped with more than one worker."""
    import ray.train.torch

    from star_core.train_loop import Trainer

    def wrap(module):
        # DDP only with >1 worker; unused parameters (e.g. no counts in a batch) must not stall the all-reduce.
        if w.world > 1:
            return ray.train.torch.prepare_model(module, parallel_strategy_kwargs={"find_unused_parameters": True})
        return module.to(w.device)

    return Trainer(w.classes, int(w.config["feat_dim"]), w.cfg, tuple(w.config["class_order"]), device=w.device, wrap_module=wrap)


class EpochLoop:
    """The epochs of one worker after its resume point: train, (rank 0) refine, evaluate, log, checkpoint."""

    def __init__(self, w: WorkerContext, trainer, start: ResumePoint) -> None:
        self.w, self.trainer, self.start = w, trainer, start
        self.history, self.last_eval, self.orphans = start.history, start.last_eval, start.orphans
        self.epochs = w.cfg.train.epochs
        self.eval_every = int(w.config["eval_every_epochs"] or 0)
        self.uri, self.run_id = w.config["tracking_uri"], w.config["mlflow_run_id"]
        self.test_labels = [w.labels_by_id[v] for v in w.config["test_ids"]]
        self.fail_after = w.config.get("fail_after_epoch")  # fault injection for the resume test only
        self.cadence = CheckpointCadence(w.cfg.train.checkpoint_every_epochs, w.cfg.train.checkpoint_min_interval_s, self.epochs)
        self.t_start = time.monotonic()

    def run_epoch(self, epoch: int) -> None:
        t_epoch = time.monotonic()
        metrics = _reduce_across_workers(self.trainer.train_epoch(self.w.pairs, epoch))
        done = epoch + 1
        epoch_s = time.monotonic() - t_epoch
        peak = _reduce_across_workers({"worker_peak_rss_mb": peak_rss_mb()}, op="max")  # the largest worker
        row = {"epoch": done, **metrics, "epoch_time_s": epoch_s, **peak}
        self.history.append(row)
        report: dict[str, Any] = {**row, "resumed_from_epoch": self.start.start_epoch}
        if self.w.rank0 and done == self.epochs and self.w.cfg.refine.rounds > 0:
            self._refine()
        if self.w.rank0:
            self._evaluate_and_log(done, metrics, report, epoch_s)
        self._maybe_checkpoint(done, report)
        if self.fail_after is not None and done == int(self.fail_after) and self.start.start_epoch == 0 and self.w.rank0:
            log.warning("fault injection: worker exits after epoch %d", done)
            os._exit(17)

    def _refine(self) -> None:
        """Stage 2 (star_core.refine) on every training video, not only this worker's shard."""
        from star_core.io.feature_store import read_features
        from star_core.train_loop import refine_detector

        w = self.w
        ids = list(dict.fromkeys(w.config["train_ids"]))
        every = w.features
        if not set(ids) <= set(every):
            every = {v.video_id: v for v in read_features(w.lake, w.config["feature_set"], sorted(ids))}
        refine_detector(self.trainer.detector, [(every[v], w.labels_by_id[v]) for v in ids], w.cfg.refine)

    def _evaluate_and_log(self, done: int, metrics: dict[str, float], report: dict[str, Any], epoch_s: float) -> None:
        """Rank 0: test-split evaluation when due, MLflow metrics and plots, the progress line."""
        from jobs import tracking
        from star_core.io.feature_store import read_features
        from star_core.metrics import evaluate_detector

        w, epochs = self.w, self.epochs
        is_eval = bool(self.test_labels) and (done == epochs or (self.eval_every > 0 and done % self.eval_every == 0))
        timelines = []
        if is_eval:
            t_eval = time.monotonic()
            videos = read_features(w.lake, w.config["feature_set"], [v.video_id for v in self.test_labels])  # streamed
            evaluation = evaluate_detector(self.trainer.detector, videos, self.test_labels, w.classes, w.config["exclude_videos"])
            result, by_video = evaluation.result, evaluation.detections_by_video
            self.last_eval = {**eval_metrics(result), "eval_time_s": time.monotonic() - t_eval}
            report.update(self.last_eval)
            shown = [v for v in self.test_labels if v.instances][: int(w.config["timelines_logged"])] if done == epochs else []
            timelines = [(v, by_video.get(v.video_id, []), v.duration_s) for v in shown]
            log.info(
                "epoch %d: test mAP@0.1:0.7 avg %.2f, @0.1:0.5 avg %.2f (%.1f s)",
                done, result.avg_0_1_0_7, result.avg_0_1_0_5, self.last_eval["eval_time_s"],
            )
        tracking.log_metrics(self.uri, self.run_id, {k: v for k, v in report.items() if k != "resumed_from_epoch"}, step=done)
        if is_eval or done == epochs:
            _log_plots(self.uri, self.run_id, self.history, timelines, w.classes, done)
        rate_s = (time.monotonic() - self.t_start) / (done - self.start.start_epoch)
        names = ("rgb/total", "flow/total", "rgb/classification", "flow/classification")
        terms = " ".join(f"{k} {metrics[k]:.4f}" for k in names if k in metrics)
        log.info("epoch %d/%d | %s | %.2f s/epoch | ETA %.0f s", done, epochs, terms, epoch_s, rate_s * (epochs - done))

    def _maybe_checkpoint(self, done: int, report: dict[str, Any]) -> None:
        """Report (a barrier that waits for the controller's next poll, ~2 s) only with a checkpoint:
        rank 0's clock decides, every worker follows."""
        import ray.train

        w = self.w
        save = _reduce_across_workers({"save": float(w.rank0 and self.cadence.due(done))}, op="max")["save"] > 0
        if not save:
            return
        ckpt = None
        if w.rank0:
            meta = {"epoch": done, "history": self.history, "eval": self.last_eval, "run_name": w.config["run_name"]}
            ckpt = ray.train.Checkpoint.from_directory(write_checkpoint(self.trainer.state_dict(), meta))
        ray.train.report(report, checkpoint=ckpt, checkpoint_dir_name=checkpoint_dir_name(done))
        self.cadence.saved()
        if ckpt is not None:
            shutil.rmtree(ckpt.path, ignore_errors=True)  # uploaded synchronously; the local copy is done
            for path in self.orphans:  # a newer checkpoint exists now: the untracked older ones can go
                w.lake.fs.rm(path, recursive=True)
            self.orphans = []


def train_loop(config: dict[str, Any]) -> None:
    """``train_loop_per_worker``: the config dict is rebuilt into typed configs first."""
    import ray.train

    from jobs.ray_logs import setup_worker_logging

    setup_worker_logging()  # star's format (the driver shows these lines); also Ray's setup hook
    w = worker_context(config)
    trainer = build_trainer(w)
    registered = ray.train.get_checkpoint()  # Ray's record; may lag behind what was written
    start = resume(w.lake, config["run_name"], trainer, registered.path if registered is not None else None, w.rank, w.cfg.train.epochs)
    if start.start_epoch >= w.cfg.train.epochs:  # killed after the last checkpoint, before the driver finished: nothing to train
        last = start.history[-1] if start.history else {}
        ray.train.report({**last, **start.last_eval, "epoch": start.start_epoch, "resumed_from_epoch": start.start_epoch})
        return
    loop = EpochLoop(w, trainer, start)
    for epoch in range(start.start_epoch, w.cfg.train.epochs):
        loop.run_epoch(epoch)
