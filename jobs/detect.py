"""Bulk detection over a lake's features (or videos), to hive-partitioned Parquet, tracked in MLflow.

    features/<feature_set>/*.parquet ──Ray Data read_parquet (only files holding videos to do)
        ──map_batches(DetectBatch, ActorPoolStrategy(size=num_actors))   model loaded once per actor
        ──driver: iter_batches → detections/model=<name>-v<ver>/date=<date>/part-<run>-<shard>.parquet
                                 manifests/detect/<run>.parquet (done | failed | skipped, with reason)

Incremental: a video is processed only if this model version has neither detections for it
(any date) nor a ``done`` manifest entry pointing into its partition (a video where the model
found no action has no detection rows but is done all the same). Reruns therefore add nothing,
and a video added later is the only one processed next time.

Every run is an MLflow run in its own experiment (default ``star-detect``): the model it used,
the input selection, the counts, the partition URIs and a few timeline PNGs. Its run id is the
``run_id`` column of every detection it wrote and names its files and manifest, so any row can
be traced back to the exact model version and run.

Failures never stop the job and are never silent: a corrupt feature row (wrong length, NaN/Inf,
wrong feature dim) is caught per row inside the actor and recorded as ``failed`` with its reason.

Run it as ``star detect ...`` or ``python -m jobs.detect ...`` (the KubeRay entrypoint).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from star_core.data import Detection, VideoFeatures
from star_core.video.config import FeatureConfig
from star_core.io import detections as detio
from star_core.io import fs as fsmod
from star_core.io import schemas, tables
from star_core.io.lake import Lake

log = logging.getLogger("star.detect")

JOB = "detect"
# Feature columns the actors need (created_at, extractor_digest, feature_set are not read).
READ_COLUMNS = ["video_id", "source_uri", "fps", "segment_frames", "n_segments", "feat_dim", "duration_s", "rgb", "flow"]
# One output row per input video (the actor's result, consumed by the driver).
RESULT_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("status", pa.string()),  # done | failed
        ("reason", pa.string()),
        ("n_segments", pa.int32()),
        ("duration_s", pa.float64()),
        ("model_s", pa.float64()),  # seconds of model time attributed to this video
        ("labels", pa.list_(pa.string())),
        ("t_start_s", pa.list_(pa.float64())),
        ("t_end_s", pa.list_(pa.float64())),
        ("score", pa.list_(pa.float32())),
    ]
)

Loader = Callable[[str], tuple[Any, Any]]  # model_uri -> (StarDetector, ModelRef)


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
            raise ValueError(f"detect: batch_size, num_actors and shard_videos must be >= 1 (got {self.batch_size}, {self.num_actors}, {self.shard_videos})")
        if self.date is not None:
            try:
                dt.date.fromisoformat(self.date)
            except ValueError:
                raise ValueError(f"detect: date {self.date!r} is not YYYY-MM-DD") from None
        if self.split is not None and self.split not in ("train", "val", "test"):
            raise ValueError(f"detect: split {self.split!r} must be train, val or test")


@dataclass
class JobResult:
    """Summary of one detection run (also logged to its MLflow run)."""

    run_id: str  # MLflow run id: the detections' run_id column, file names, manifest name
    model_name: str
    model_version: str
    model_uri: str  # the pinned registry URI the actors loaded
    feature_set: str
    date: str
    processed: int = 0  # videos detected (done)
    failed: int = 0  # videos whose features or detection failed (see the manifest)
    skipped: int = 0  # videos in the selection already done for this model version, or without features
    detections_written: int = 0
    segments_processed: int = 0
    files: list[str] = field(default_factory=list)  # detections files written (URIs)
    partitions: list[str] = field(default_factory=list)  # partition directories written (URIs)
    manifest_uri: str = ""
    elapsed_s: float = 0.0
    model_s: float = 0.0  # summed model time over all actors
    failures: list[tuple[str, str]] = field(default_factory=list)  # (video_id, reason)
    shard_count: int = 0  # shards flushed (files are written only for shards with detections)
    startup_s: float = 0.0  # seconds from the job's start to the first detected batch (planning, actors, model load)
    first_batch_videos: int = 0  # videos in that first batch (for steady-state rates)

    @property
    def videos_per_s(self) -> float:
        return (self.processed + self.failed) / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def segments_per_s(self) -> float:
        return self.segments_processed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"videos_per_s": self.videos_per_s, "segments_per_s": self.segments_per_s}

    def summary(self) -> str:
        lines = [
            f"detection run {self.run_id}: model {self.model_name} v{self.model_version} on feature set {self.feature_set}",
            f"  videos: {self.processed} processed, {self.failed} failed, {self.skipped} skipped",
            f"  detections written: {self.detections_written} in {len(self.files)} file(s)",
            f"  throughput: {self.videos_per_s:.2f} videos/s, {self.segments_per_s:.0f} segments/s ({self.elapsed_s:.1f} s)",
        ]
        lines += [f"  partition: {p}" for p in self.partitions]
        lines += [f"  failed: {vid}: {reason}" for vid, reason in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"  ... {len(self.failures) - 20} more failures in {self.manifest_uri}")
        lines.append(f"  manifest: {self.manifest_uri}")
        return "\n".join(lines)


# ----- the actor ------------------------------------------------------------------------------
def _row_streams(batch: pa.Table, stream: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat float32 values and int64 offsets of a large_list<float32> column (zero copy when possible)."""
    col = batch.column(stream).combine_chunks()
    values = col.values.to_numpy(zero_copy_only=False)
    offsets = col.offsets.to_numpy(zero_copy_only=False)
    return values, offsets


def row_to_video(batch: pa.Table, i: int, streams: dict[str, tuple[np.ndarray, np.ndarray]]) -> VideoFeatures:
    """Row ``i`` of a features batch as :class:`VideoFeatures`; ValueError naming the video when corrupt."""
    video_id = batch.column("video_id")[i].as_py()
    n, d = batch.column("n_segments")[i].as_py(), batch.column("feat_dim")[i].as_py()
    arrays = {}
    for name, (values, offsets) in streams.items():
        flat = values[offsets[i] : offsets[i + 1]]  # (n * d,)
        if n is None or d is None or n <= 0 or d <= 0 or flat.size != n * d:
            raise ValueError(f"video {video_id!r}: {name} holds {flat.size} floats, expected n_segments*feat_dim = {n}*{d}")
        arr = flat.reshape(n, d)  # (N, D)
        if not np.isfinite(arr).all():
            raise ValueError(f"video {video_id!r}: {name} features contain NaN or Inf")
        arrays[name] = arr
    return VideoFeatures(
        video_id=video_id,
        rgb=arrays["rgb"],
        flow=arrays["flow"],
        fps=batch.column("fps")[i].as_py(),
        segment_frames=batch.column("segment_frames")[i].as_py(),
        duration_s=batch.column("duration_s")[i].as_py(),
        source_uri=batch.column("source_uri")[i].as_py(),
    )


class DetectBatch:
    """Ray Data callable class: loads the model once per actor, detects a batch of feature rows.

    Args:
        model_uri: the pinned registry URI (``models:/NAME/VERSION``) every actor loads.
        loader: ``model_uri -> (StarDetector, ModelRef)``; default ``jobs.tracking.load_detector``.
        env: environment variables the loader needs on the worker (tracking URI, endpoints).
        device: torch device for the model.
    """

    def __init__(self, model_uri: str, loader: Loader | None = None, env: dict[str, str] | None = None, device: str = "cpu") -> None:
        os.environ.update(env or {})
        if loader is None:
            from jobs.tracking import load_detector as loader
        t0 = time.monotonic()
        self.detector, self.ref = loader(model_uri)
        if device != "cpu":
            self.detector = self.detector.to(device)
        self.detector.eval()
        log.info("actor %s loaded %s in %.1f s", os.getpid(), model_uri, time.monotonic() - t0)

    def __call__(self, batch: pa.Table) -> pa.Table:
        n_rows = batch.num_rows
        results: list[dict[str, Any]] = [{} for _ in range(n_rows)]
        videos: list[tuple[int, VideoFeatures]] = []
        streams = {s: _row_streams(batch, s) for s in ("rgb", "flow")}
        for i in range(n_rows):
            try:
                videos.append((i, row_to_video(batch, i, streams)))
            except (ValueError, TypeError) as exc:  # corrupt row: report and skip, never drop silently
                results[i] = _failed(batch.column("video_id")[i].as_py(), batch.column("n_segments")[i].as_py(), exc)
        if videos:
            t0 = time.monotonic()
            per_video = self._detect(videos, results)
            model_s = (time.monotonic() - t0) / len(videos)
            for (i, video), dets in zip(videos, per_video):
                if dets is None:
                    continue
                results[i] = {
                    "video_id": video.video_id,
                    "status": "done",
                    "reason": None,
                    "n_segments": video.n_segments,
                    "duration_s": video.duration_s if video.duration_s is not None else float(video.segment_bounds_s()[1][-1]),
                    "model_s": model_s,
                    "labels": [d.label for d in dets],
                    "t_start_s": [float(d.t_start_s) for d in dets],
                    "t_end_s": [float(d.t_end_s) for d in dets],
                    "score": [float(d.score) for d in dets],
                }
        return pa.Table.from_pylist(results, schema=RESULT_SCHEMA)

    def _detect(self, videos: list[tuple[int, VideoFeatures]], results: list[dict]) -> list[list[Detection] | None]:
        """Batched detection; on an error, video by video so one bad video fails alone."""
        try:
            return list(self.detector.detect_batch([v for _, v in videos]))
        except (ValueError, RuntimeError):
            out: list[list[Detection] | None] = []
            for i, video in videos:
                try:
                    out.append(list(self.detector.detect(video)))
                except (ValueError, RuntimeError) as exc:
                    results[i] = _failed(video.video_id, video.n_segments, exc)
                    out.append(None)
            return out


def _failed(video_id: str, n_segments: int | None, exc: Exception) -> dict[str, Any]:
    return {"video_id": video_id, "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "n_segments": n_segments, "model_s": 0.0, "labels": [], "t_start_s": [], "t_end_s": [], "score": []}


def _keep_rows(batch: pa.Table, keep: dict[str, list[str]]) -> pa.Table:
    """Keep the rows to do (``keep``: file path -> video ids) and drop the path column."""
    paths = batch.column("path").to_pylist()
    mask = [vid in keep.get(p, ()) for p, vid in zip(paths, batch.column("video_id").to_pylist())]
    return batch.filter(pa.array(mask, pa.bool_())).drop_columns(["path"])


# ----- planning -------------------------------------------------------------------------------
def _uri(lake: Lake, path: str) -> str:
    """User-facing URI of a lake path."""
    return lake.url(path[len(lake.root) :].lstrip("/"))


def choose_feature_set(lake: Lake, requested: str | None) -> str:
    """The feature set to read: the requested one, or the lake's only one."""
    found = tables.list_feature_sets(lake)
    if requested:
        if requested not in found:
            raise ValueError(f"lake {lake.uri}: no feature set {requested!r} (found: {', '.join(found) or 'none'})")
        return requested
    if len(found) != 1:
        raise ValueError(f"lake {lake.uri}: {'no feature sets' if not found else f'several feature sets ({chr(44).join(found)})'}; name one with --feature-set")
    return found[0]


def processed_before(lake: Lake, model_name: str, model_version: str) -> tuple[set[str], dict[str, dt.datetime]]:
    """What this model version has already seen.

    Returns:
        ``(done, failed)``: ``done`` holds videos with detections (any date, any run) or a
        ``done`` manifest entry in the model's partitions (a video where the model found no
        action has no rows but is done all the same); ``failed`` maps videos whose latest
        attempt failed to the time of that failure.
    """
    done = detio.detected_video_ids(lake, model_name, model_version)
    failed: dict[str, dt.datetime] = {}
    manifests = tables.read_manifests(lake, JOB)
    if manifests.num_rows:
        prefix = _uri(lake, lake.detections_dir(model_name, model_version)) + "/"
        mine = manifests.filter(pc.starts_with(pc.fill_null(manifests.column("output"), ""), prefix))
        mine = mine.sort_by([("finished_at", "ascending")])
        for vid, status, at in zip(mine.column("input").to_pylist(), mine.column("status").to_pylist(), mine.column("finished_at").to_pylist()):
            if status == "done":
                done.add(vid)
                failed.pop(vid, None)
            elif status == "failed":
                failed[vid] = at
    return done, {vid: at for vid, at in failed.items() if vid not in done}


def select_videos(lake: Lake, cfg: DetectJobConfig) -> tuple[list[str] | None, dict[str, Any]]:
    """Video ids of the input selection (None: the whole feature set), and the ground truth by video."""
    if cfg.dataset:
        ds = tables.load_dataset(lake, cfg.dataset, cfg.dataset_version)
        videos = [v for v in ds.videos if cfg.split is None or v.split == cfg.split]
        if not videos:
            raise ValueError(f"dataset {cfg.dataset!r} v{ds.version} has no videos{f' in split {cfg.split!r}' if cfg.split else ''}")
        return [v.video_id for v in videos], {v.video_id: v for v in videos}
    if cfg.videos:
        from star_core.io.inputs import list_inputs, video_id_from_uri

        return [video_id_from_uri(u) for u in list_inputs(cfg.videos)], {}
    return None, {}


# ----- the job --------------------------------------------------------------------------------
def detect(cfg: DetectJobConfig, loader: Loader | None = None) -> JobResult:
    """Detect actions on every selected video that this model version has not processed yet.

    Args:
        cfg: the job config.
        loader: ``model_uri -> (StarDetector, ModelRef)`` used once per actor; default
            ``jobs.tracking.load_detector`` (the MLflow registry). Must be picklable.

    Returns:
        :class:`JobResult` with counts, files, partitions, throughput and the MLflow run id.

    Raises:
        ValueError: bad selection (unknown dataset or feature set, no model in the registry).
    """
    from jobs import tracking
    from jobs.runtime import ensure_ray

    t_start = time.monotonic()
    lake = Lake(cfg.lake_uri, cfg.s3_endpoint_url)
    date = cfg.date or dt.datetime.now(dt.timezone.utc).date().isoformat()
    tracking_uri = cfg.tracking_uri or tracking.tracking_uri(lake)
    model = tracking.resolve_model(cfg.model_uri, tracking_uri)  # pinned name/version before any work

    feature_set = cfg.feature_set
    extract_failures: dict[str, str] = {}  # video_id -> why extraction failed (``videos`` input only)
    if cfg.videos:
        feature_set, extract_failures = _extract_missing(cfg)
    feature_set = choose_feature_set(lake, feature_set)
    selection, ground_truth = select_videos(lake, cfg)

    index = tables.feature_index(lake, feature_set)
    have = set(index.column("video_id").to_pylist())
    selected = have if selection is None else set(selection)
    missing = sorted(selected - have)
    done, failed_before = processed_before(lake, model.name, model.version)
    # A video that failed keeps failing on the same features: retry it only when its features
    # were rewritten after the failure (or when asked to).
    created = dict(zip(index.column("video_id").to_pylist(), index.column("created_at").to_pylist()))
    stale_failures = set() if cfg.retry_failed else {vid for vid, at in failed_before.items() if vid in created and created[vid] <= at}
    todo_ids = sorted((selected & have) - done - stale_failures)
    todo = index.filter(pc.is_in(index.column("video_id"), pa.array(todo_ids, pa.string())))
    n_done, n_stale = len(selected & have & done), len(selected & stale_failures)
    log.info(
        "model %s v%s, feature set %s: %d selected, %d already done, %d failed before on unchanged features, %d without features, %d to process",
        model.name, model.version, feature_set, len(selected), n_done, n_stale, len(missing), len(todo_ids),
    )

    params = {
        "model_name": model.name,
        "model_version": model.version,
        "model_alias": model.alias or "",
        "model_uri": cfg.model_uri,
        "model_uri_pinned": model.uri,
        "feature_set": feature_set,
        "selection": _selection_text(cfg),
        "date": date,
        "batch_size": cfg.batch_size,
        "num_actors": cfg.num_actors,
        "use_gpu": cfg.use_gpu,
        "videos_selected": len(selected),
    }
    run_id = tracking.start_detect_run(tracking_uri, cfg.experiment, run_name=cfg.run_id, params=params, lake=lake, tags={"star.job_run_id": cfg.run_id or ""})
    result = JobResult(run_id=run_id, model_name=model.name, model_version=model.version, model_uri=model.uri, feature_set=feature_set, date=date)
    unextracted = [vid for vid in missing if vid in extract_failures]
    result.skipped = n_done + n_stale + len(missing) - len(unextracted)
    result.failed = len(unextracted)
    result.failures = [(vid, f"extraction failed: {extract_failures[vid]}") for vid in unextracted]
    manifest_parts: list[pa.Table] = []
    if missing:
        rows = [
            tables.manifest_row(JOB, run_id, vid, "failed", reason=f"extraction failed: {extract_failures[vid]}")
            if vid in extract_failures
            else tables.manifest_row(JOB, run_id, vid, "skipped", reason=f"no features in feature set {feature_set!r}")
            for vid in missing
        ]
        manifest_parts.append(_manifest(rows))
    timelines: dict[str, tuple[list[Detection], float | None]] = {}
    status = "FAILED"
    try:
        if todo.num_rows:
            ensure_ray(cfg.ray_address)
            env = tracking.worker_env(tracking_uri)
            for shard in _run_pipeline(lake, cfg, todo, model.uri, loader, env, on_first=lambda n: _first_batch(result, t_start, n)):
                _write_shard(lake, cfg, result, model, run_id, date, shard, manifest_parts, timelines)
        status = "FINISHED"
    finally:
        result.manifest_uri = _uri(lake, tables.write_manifest(lake, JOB, run_id, pa.concat_tables(manifest_parts).to_pylist() if manifest_parts else []))
        result.elapsed_s = time.monotonic() - t_start
        pngs = _plot_timelines(timelines, ground_truth, cfg.timelines_logged) if status == "FINISHED" else {}
        tracking.finish_detect_run(
            tracking_uri,
            run_id,
            metrics={
                "videos_processed": result.processed,
                "videos_failed": result.failed,
                "videos_skipped": result.skipped,
                "detections_written": result.detections_written,
                "segments_processed": result.segments_processed,
                "videos_per_s": result.videos_per_s,
                "segments_per_s": result.segments_per_s,
                "elapsed_s": result.elapsed_s,
                "model_s": result.model_s,
                "startup_s": result.startup_s,
                "files_written": len(result.files),
            },
            tags={"star.partitions": "\n".join(result.partitions), "star.manifest": result.manifest_uri, "star.files": "\n".join(result.files)[:4900]},
            artifacts=pngs,
            status=status,
        )
        for path in pngs.values():
            os.unlink(path)
    log.info("%s", result.summary())
    return result


def _selection_text(cfg: DetectJobConfig) -> str:
    if cfg.dataset:
        return f"dataset={cfg.dataset}" + (f" version={cfg.dataset_version}" if cfg.dataset_version else "") + (f" split={cfg.split}" if cfg.split else "")
    if cfg.videos:
        return f"videos={cfg.videos}"
    return "all features"


def _extract_missing(cfg: DetectJobConfig) -> tuple[str, dict[str, str]]:
    """Extract features for the videos of ``cfg.videos`` that have none.

    Returns:
        The feature set written and, per video id whose extraction failed, the reason.
    """
    from jobs.extract import ExtractJobConfig, extract
    from star_core.io.inputs import video_id_from_uri

    ecfg = ExtractJobConfig(
        inputs=cfg.videos,
        lake_uri=cfg.lake_uri,
        features=cfg.features or FeatureConfig(),
        s3_endpoint_url=cfg.s3_endpoint_url,
        ray_address=cfg.ray_address,
        use_gpu=True if cfg.use_gpu else None,
        run_id=f"{cfg.run_id}-extract" if cfg.run_id else None,
    )
    res = extract(ecfg)
    log.info("extraction before detection: %d extracted, %d failed, %d had features (feature set %s)", res.done, res.failed, res.skipped, res.feature_set)
    if cfg.feature_set and cfg.feature_set != res.feature_set:
        raise ValueError(f"detect: --feature-set {cfg.feature_set!r} differs from the feature set the extractor settings write ({res.feature_set!r})")
    failures = {video_id_from_uri(f["input"]): f["reason"] for f in res.failures}
    return res.feature_set, failures


def _first_batch(result: JobResult, t_start: float, n_videos: int) -> None:
    result.startup_s = time.monotonic() - t_start
    result.first_batch_videos = n_videos
    log.info("first results after %.1f s (actors started, model loaded)", result.startup_s)


def _run_pipeline(lake: Lake, cfg: DetectJobConfig, todo: pa.Table, model_uri: str, loader: Loader | None, env: dict[str, str], on_first: Callable[[int], None] | None = None):
    """Yield Arrow tables of per-video results (RESULT_SCHEMA), about ``shard_videos`` rows each."""
    import ray.data

    from jobs.runtime import Progress

    paths = todo.column("path").to_pylist()
    ids = todo.column("video_id").to_pylist()
    per_path: dict[str, list[str]] = {}
    for p, vid in zip(paths, ids):
        per_path.setdefault(p, []).append(vid)
    # Each file keeps only its rows to do: a file may also hold done videos, or stale copies of
    # videos whose newest features live in another file (feature_index picks the newest).
    keep = {p: set(v) for p, v in per_path.items()}
    ds = ray.data.read_parquet(
        sorted(per_path),
        filesystem=fsmod.to_arrow_fs(lake.fs),
        include_paths=True,
        file_extensions=["parquet"],
    ).select_columns([*READ_COLUMNS, "path"])  # pushed into the Parquet scan (read_parquet(columns=) is deprecated)
    ds = ds.map_batches(_keep_rows, fn_kwargs={"keep": keep}, batch_format="pyarrow", batch_size=None)
    ds = ds.map_batches(
        DetectBatch,
        fn_constructor_kwargs={"model_uri": model_uri, "loader": loader, "env": env, "device": "cuda" if cfg.use_gpu else "cpu"},
        batch_size=cfg.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=cfg.num_actors),
        num_gpus=1 if cfg.use_gpu else 0,
        num_cpus=cfg.cpus_per_actor,
    )
    progress = Progress(total=len(ids), what="videos", logger=log)
    pending: list[pa.Table] = []
    n_pending = 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        if on_first is not None and progress.done + progress.failed == 0:
            on_first(batch.num_rows)
        n_failed = pc.sum(pc.equal(batch.column("status"), "failed")).as_py() or 0
        progress.update(done=batch.num_rows - n_failed, failed=n_failed, segments=pc.sum(batch.column("n_segments")).as_py() or 0)
        pending.append(batch)
        n_pending += batch.num_rows
        if n_pending >= cfg.shard_videos:
            yield pa.concat_tables(pending)
            pending, n_pending = [], 0
    if pending:
        yield pa.concat_tables(pending)


def _write_shard(lake, cfg, result: JobResult, model, run_id: str, date: str, shard: pa.Table, manifest_parts: list, timelines: dict) -> None:
    """Write one shard's detections file and add its videos to the manifest and the counts.

    The file is written only when the shard holds detections (a rerun that finds nothing new, or
    only failures, leaves no trace in the partitions). Manifest ``output``: the file for videos
    with detections, else the partition directory (``.../model=<name>-v<ver>/date=<date>/``),
    so failed and empty videos are attributed to the model version too.
    """
    partition_path = lake.detections_dir(model.name, model.version, date)
    path = detio.shard_path(lake, model.name, model.version, date, run_id, result.shard_count)
    result.shard_count += 1
    partition_uri, file_uri = _uri(lake, partition_path) + "/", _uri(lake, path)
    rows = shard.to_pylist()
    dets = [Detection(r["video_id"], lab, s, e, sc) for r in rows if r["status"] == "done" for lab, s, e, sc in zip(r["labels"], r["t_start_s"], r["t_end_s"], r["score"])]
    if dets:
        table = detio.detections_to_table(dets, model_name=model.name, model_version=model.version, model_uri=model.uri, run_id=run_id, feature_set=result.feature_set, detected_at=dt.datetime.now(dt.timezone.utc))
        detio.write_detections(lake, path, table)
        result.files.append(file_uri)
        result.detections_written += table.num_rows
        if partition_uri.rstrip("/") not in result.partitions:
            result.partitions.append(partition_uri.rstrip("/"))
    manifest = []
    for r in rows:
        done = r["status"] == "done"
        output = file_uri if done and r["labels"] else partition_uri
        manifest.append(tables.manifest_row(JOB, run_id, r["video_id"], r["status"], reason=r["reason"], duration_s=r["model_s"], n_segments=r["n_segments"], output=output))
        if done:
            result.processed += 1
            result.segments_processed += r["n_segments"] or 0
            result.model_s += r["model_s"] or 0.0
            if r["labels"] and len(timelines) < cfg.timelines_logged:
                timelines[r["video_id"]] = ([d for d in dets if d.video_id == r["video_id"]], r["duration_s"])
        else:
            result.failed += 1
            result.failures.append((r["video_id"], r["reason"]))
            log.warning("video %s failed: %s", r["video_id"], r["reason"])
    manifest_parts.append(_manifest(manifest))


def _manifest(rows: Sequence[dict]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schemas.MANIFEST)


def _plot_timelines(timelines: dict, ground_truth: dict, limit: int) -> dict[str, str]:
    """Timeline PNGs (artifact name -> temporary file) of a few processed videos."""
    if not timelines or limit <= 0:
        return {}
    from jobs.plots import plot_timeline

    out = {}
    for video_id, (dets, duration_s) in list(timelines.items())[:limit]:
        gt = ground_truth.get(video_id)
        classes = sorted({d.label for d in dets} | ({i.label for i in gt.instances} if gt is not None else set()))
        fd, png = tempfile.mkstemp(suffix=".png", prefix=f"timeline-{video_id}-")
        os.close(fd)
        try:
            plot_timeline(video_id, dets, gt, classes, duration_s, png)
        except Exception as exc:  # a picture must never fail a finished detection run
            log.warning("timeline of %s not drawn: %s", video_id, exc)
            os.unlink(png)
            continue
        out[f"timelines/{video_id}.png"] = png
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m jobs.detect``: exactly ``star detect`` (same options, errors and exit codes)."""
    import sys

    from jobs.cli import main as star

    return star(["detect", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
