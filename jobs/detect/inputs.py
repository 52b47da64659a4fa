"""What one detection run is asked to detect on: per-invocation inputs, not settings.

The settings (model URI, batch size, experiment, actors, GPUs, lake...) are in the one
``StarConfig`` tree (``detect``, ``resources``, ``storage``); these are the arguments of a run.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from star_core.data import SPLIT_NAMES


@dataclass(frozen=True)
class DetectInputs:
    """Input selection: ``dataset`` (optionally ``dataset_version`` and ``split``), or ``videos``
    (URI, prefix, glob or ``@list`` file: features are extracted first for what is missing),
    or neither (every video of the feature set: the nightly job)."""

    dataset: str | None = None  # detect on this dataset's videos
    dataset_version: int | None = None  # None: latest version
    split: str | None = None  # train | val | test; None: all splits
    videos: str | None = None  # video URI/prefix/glob/@list: extract missing features, then detect
    feature_set: str | None = None  # None: the lake's only feature set (or the one extraction writes)
    date: str | None = None  # partition date YYYY-MM-DD; None: today (UTC)
    run_id: str | None = None  # caller's id (e.g. a Prefect flow run): MLflow run name and tag

    def __post_init__(self) -> None:
        if self.dataset and self.videos:
            raise ValueError("detect: give either a dataset or a videos URI, not both")
        if self.date is not None:
            try:
                dt.date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"detect: date {self.date!r} is not YYYY-MM-DD") from None
        if self.split is not None and self.split not in SPLIT_NAMES:
            raise ValueError(f"detect: split {self.split!r} must be one of {', '.join(SPLIT_NAMES)}")
