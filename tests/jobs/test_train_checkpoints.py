"""Checkpoints of a training run on a local lake (jobs.train_checkpoints): write, resume, clean up."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from jobs.train_checkpoints import checkpoint_dir_name, is_complete, resume, write_checkpoint
from star_core.io.lake import Lake


class Counter:
    """The part of ``star_core.train_loop.Trainer`` that resume uses: ``epoch`` and its state dict."""

    def __init__(self) -> None:
        self.epoch, self.weights = 0, torch.zeros(3)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.weights = int(state["epoch"]), state["weights"]


def save(lake: Lake, run: str, epoch: int) -> str:
    """Write a checkpoint of ``epoch`` where Ray would upload it."""
    trainer = Counter()
    trainer.epoch, trainer.weights = epoch, torch.full((3,), float(epoch))
    local = write_checkpoint(trainer.state_dict(), {"epoch": epoch, "history": [{"epoch": epoch}], "eval": {"test/map_0.5": 1.0}})
    dst = Path(lake.checkpoints_dir(run)) / checkpoint_dir_name(epoch)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(local, dst)
    return str(dst)


def test_resume_loads_the_newest_complete_checkpoint_and_drops_newer_partial_ones(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    fresh = resume(lake, "r", Counter(), registered_path=None, rank=0, total_epochs=9)
    assert (fresh.start_epoch, fresh.history, fresh.orphans) == (0, [], [])

    p2, p4 = save(lake, "r", 2), save(lake, "r", 4)
    p5 = save(lake, "r", 5)
    (Path(p5) / "trainer.pt").write_bytes(b"cut short")  # killed during the upload
    assert is_complete(lake, p4, 4) and not is_complete(lake, p5, 5)

    trainer = Counter()
    point = resume(lake, "r", trainer, registered_path=p2, rank=0, total_epochs=9)
    assert point.start_epoch == 4 and trainer.epoch == 4 and torch.equal(trainer.weights, torch.full((3,), 4.0))
    assert point.history == [{"epoch": 4}] and point.last_eval == {"test/map_0.5": 1.0}
    assert point.orphans == [p4, p5]  # newer than what Ray registered: Ray will never delete them
    assert not Path(p5).exists() and Path(p4).exists() and Path(p2).exists()  # rank 0 removed the partial one


def test_other_ranks_resume_without_deleting(tmp_path):
    lake = Lake(str(tmp_path / "lake"))
    save(lake, "r", 1)
    p3 = save(lake, "r", 3)
    (Path(p3) / "meta.json").write_text('{"epoch": 3, "tra')
    point = resume(lake, "r", Counter(), registered_path=None, rank=1, total_epochs=9)
    assert point.start_epoch == 1 and Path(p3).exists()
