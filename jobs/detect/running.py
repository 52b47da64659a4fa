"""The Ray Data pipeline of a detection run: feature rows in, one result row per video out.

    features/<feature_set>/*.parquet ──Ray Data read_parquet (only files holding videos to do)
        ──map_batches(DetectBatch, ActorPoolStrategy(size=num_actors))   model loaded once per actor
        ──driver: iter_batches, grouped into shards of about ``shard_videos`` rows

Failures never stop the job and are never silent: a corrupt feature row (wrong length, NaN/Inf,
wrong feature dim) is caught per row inside the actor and returned as ``failed`` with its reason.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable, Iterator

import pyarrow as pa
import pyarrow.compute as pc

from jobs.detect.inputs import DetectInputs
from star_core.config import StarConfig
from star_core.data import Detection, VideoFeatures
from star_core.io import fs as fsmod
from star_core.io.feature_store import feature_streams, row_to_video
from star_core.io.lake import Lake

log = logging.getLogger("star.detect")

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


# ----- the actor ------------------------------------------------------------------------------
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
        streams = feature_streams(batch)
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
                if dets is not None:
                    results[i] = _done(video, dets, model_s)
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


def _done(video: VideoFeatures, dets: list[Detection], model_s: float) -> dict[str, Any]:
    """The result row (RESULT_SCHEMA) of a detected video."""
    return {
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


def _failed(video_id: str, n_segments: int | None, exc: Exception) -> dict[str, Any]:
    """The result row (RESULT_SCHEMA) of a video whose features or detection failed."""
    return {
        "video_id": video_id, "status": "failed", "reason": f"{type(exc).__name__}: {exc}", "n_segments": n_segments,
        "model_s": 0.0, "labels": [], "t_start_s": [], "t_end_s": [], "score": [],
    }


def _keep_rows(batch: pa.Table, keep: dict[str, list[str]]) -> pa.Table:
    """Keep the rows to do (``keep``: file path -> video ids) and drop the path column."""
    paths = batch.column("path").to_pylist()
    mask = [vid in keep.get(p, ()) for p, vid in zip(paths, batch.column("video_id").to_pylist())]
    return batch.filter(pa.array(mask, pa.bool_())).drop_columns(["path"])


# ----- the pipeline ---------------------------------------------------------------------------
def run_pipeline(
    lake: Lake,
    cfg: StarConfig,
    todo: pa.Table,
    model_uri: str,
    loader: Loader | None,
    env: dict[str, str],
    on_first: Callable[[int], None] | None = None,
) -> Iterator[pa.Table]:
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
    res = cfg.resources
    use_gpu = bool(res.gpu)  # detection uses GPUs only when asked (resources.gpu: true)
    n_actors = res.actors or (max(1, int(ray.cluster_resources().get("GPU", 0))) if use_gpu else 1)
    ds = ds.map_batches(
        DetectBatch,
        fn_constructor_kwargs={"model_uri": model_uri, "loader": loader, "env": env, "device": "cuda" if use_gpu else "cpu"},
        batch_size=cfg.detect.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        num_gpus=1 if use_gpu else 0,
        num_cpus=res.cpus_per_actor,
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
        if n_pending >= cfg.detect.shard_videos:
            yield pa.concat_tables(pending)
            pending, n_pending = [], 0
    if pending:
        yield pa.concat_tables(pending)


def extract_missing(cfg: StarConfig, inputs: DetectInputs) -> tuple[str, dict[str, str]]:
    """Extract features for the videos of ``inputs.videos`` that have none (``star extract --ray`` on them).

    Returns:
        The feature set written and, per video id whose extraction failed, the reason.
    """
    from jobs.extract import extract
    from star_core.io.inputs import video_id_from_uri

    res = extract(cfg, inputs.videos, run_id=f"{inputs.run_id}-extract" if inputs.run_id else None)
    log.info(
        "extraction before detection: %d extracted, %d failed, %d had features (feature set %s)",
        res.done, res.failed, res.skipped, res.feature_set,
    )
    if inputs.feature_set and inputs.feature_set != res.feature_set:
        raise ValueError(
            f"detect: --feature-set {inputs.feature_set!r} differs from the feature set the extractor settings write ({res.feature_set!r})"
        )
    failures = {video_id_from_uri(f["input"]): f["reason"] for f in res.failures}
    return res.feature_set, failures
