"""Checkpoints of a training run on the lake: naming, completeness, resume point, cadence.

A checkpoint is a directory ``checkpoints/<run_name>/checkpoint_epoch_<NNNNN>/`` holding
``trainer.pt`` (``Trainer.state_dict()``) and ``meta.json`` (epoch, metric history, last
evaluation, the size of ``trainer.pt``). Rank 0 writes one every ``train.checkpoint_every_epochs``
epochs, or with 0 (the default) at most once per ``train.checkpoint_min_interval_s``, and always
after the last epoch (:class:`CheckpointCadence`).

Resume: every worker starts from the newest COMPLETE checkpoint in the run's directory on the lake
(:func:`newest_complete_checkpoint`), not from Ray's own record: a worker killed right after
``report`` leaves a checkpoint the controller never registered (a run killed after epoch 7 would
otherwise restart from epoch 5).
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
            raise ValueError(
                f"train.checkpoint_every_epochs ({every_epochs}) and train.checkpoint_min_interval_s ({min_interval_s}) must be >= 0"
            )
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


def write_checkpoint(trainer_state: dict, meta: dict[str, Any]) -> str:
    """A local checkpoint directory (``trainer.pt``, ``meta.json`` with ``trainer_bytes``) for ``ray.train.report``."""
    import torch

    tmp = Path(tempfile.mkdtemp(prefix="star-ckpt-"))
    torch.save(trainer_state, tmp / TRAINER_FILE)
    meta = {**meta, "trainer_bytes": (tmp / TRAINER_FILE).stat().st_size}
    (tmp / META_FILE).write_text(json.dumps(meta))
    return str(tmp)


@dataclass
class ResumePoint:
    """Where a worker starts: after ``start_epoch`` epochs, with the run's metric history so far."""

    start_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    last_eval: dict[str, float] = field(default_factory=dict)
    orphans: list[str] = field(default_factory=list)  # checkpoints Ray does not track (its num_to_keep never deletes them)


def resume(lake, run_name: str, trainer, registered_path: str | None, rank: int, total_epochs: int) -> ResumePoint:
    """Load the run's newest complete checkpoint into ``trainer`` (if any) and say where to start.

    Args:
        lake: the lake holding ``checkpoints/<run_name>/``.
        run_name: the training run.
        trainer: a ``star_core.train_loop.Trainer``; its state is replaced by the checkpoint's.
        registered_path: the checkpoint Ray registered last (``ray.train.get_checkpoint()``), may lag behind.
        rank: this worker's rank; rank 0 deletes incomplete checkpoints newer than the resume point.
        total_epochs: epochs of the whole run (for the log line).
    """
    newest = newest_complete_checkpoint(lake, run_name)
    if newest is None:
        return ResumePoint()
    registered_epoch = (_epoch_of(registered_path) or 0) if registered_path is not None else 0
    state, meta = read_checkpoint(lake, newest[1])
    trainer.load_state_dict(state)
    point = ResumePoint(
        start_epoch=trainer.epoch,
        history=meta["history"],
        last_eval=meta.get("eval", {}),
        orphans=[p for e, p in list_checkpoints(lake, run_name) if e > registered_epoch],
    )
    if rank == 0:
        log.info(
            "resuming run %s from its newest complete checkpoint, after epoch %d of %d (%s)",
            run_name, point.start_epoch, total_epochs, newest[1],
        )
        for e, p in list_checkpoints(lake, run_name):
            if e > point.start_epoch:  # incomplete (killed while saving): never resumed from, rewritten later
                lake.fs.rm(p, recursive=True)
    return point
