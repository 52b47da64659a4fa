"""The detection job's run settings (what to detect on, with which model, where to write)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from star_core.video.config import FeatureConfig


@dataclass(frozen=True)
class DetectJobConfig:
    """What to detect on, with which model, where to write.

    Input selection: ``dataset`` (optionally ``dataset_version`` and ``split``), or ``videos``
    (URI, prefix, glob or ``@list`` file: features are extracted first for what is missing),
    or neither (every video of the feature set: the nightly job).
    """

    lake_uri: str  # root of the lake: local path or s3://bucket/prefix
    dataset: str | None = None  # detect on this dataset's videos
    dataset_version: int | None = None  # None: latest version
    split: str | None = None  # train | val | test; None: all splits
    videos: str | None = None  # video URI/prefix/glob/@list: extract missing features, then detect
    feature_set: str | None = None  # None: the lake's only feature set (or the one extraction writes)
    model_uri: str = "models:/star@champion"  # registry URI: models:/NAME@ALIAS or models:/NAME/VERSION
    batch_size: int = 16  # videos per Ray Data batch
    num_actors: int = 1  # model-holding actors
    cpus_per_actor: float = 1.0  # CPU slots reserved per actor (torch threads follow Ray's OMP_NUM_THREADS)
    use_gpu: bool = False  # one GPU per actor
    date: str | None = None  # partition date YYYY-MM-DD; None: today (UTC)
    run_id: str | None = None  # caller's id (e.g. a Prefect flow run): MLflow run name and tag
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray
    experiment: str = "star-detect"  # MLflow experiment of detection runs
    tracking_uri: str | None = None  # None: jobs.tracking.tracking_uri(lake)
    s3_endpoint_url: str | None = None  # S3-compatible endpoint of the lake
    shard_videos: int = 1000  # videos per detections file (the driver flushes a shard this often)
    timelines_logged: int = 3  # timeline PNGs logged to the MLflow run
    retry_failed: bool = False  # retry videos that failed before even when their features are unchanged
    features: FeatureConfig | None = None  # extractor settings for ``videos`` (None: FeatureConfig defaults)

    def __post_init__(self) -> None:
        if self.dataset and self.videos:
            raise ValueError("detect: give either a dataset or a videos URI, not both")
        if self.batch_size < 1 or self.num_actors < 1 or self.shard_videos < 1:
            raise ValueError(
                "detect: batch_size, num_actors and shard_videos must be >= 1 "
                f"(got {self.batch_size}, {self.num_actors}, {self.shard_videos})"
            )
        if self.date is not None:
            try:
                dt.date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"detect: date {self.date!r} is not YYYY-MM-DD") from None
        if self.split is not None and self.split not in ("train", "val", "test"):
            raise ValueError(f"detect: split {self.split!r} must be train, val or test")

