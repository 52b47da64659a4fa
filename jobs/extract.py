"""Distributed two-stream I3D feature extraction with Ray: videos on any fsspec URL -> features in the lake.

    inputs (files, prefixes, globs, @lists)  ──list, skip videos with features in this feature set
        ──Ray CPU tasks: read once, decode, 25 fps, resize/crop, optical flow  (prepare, num_returns=2)
        ──I3D actors holding the model (one GPU each, or CPU)                    (embed; queue per actor)
          (--flow tvl1-torch: the CPU tasks only decode and resize; the actors compute the flow on their
           device from frames uploaded once, then both streams, while the next videos decode)
        ──driver: features/<feature_set>/part-<digest of ids>.parquet  every ``shard_videos`` videos
                  manifests/extract/<run_id>.parquet  (every input: done | failed | skipped, reason, s)

Ray Core tasks and actors rather than Ray Data: the job needs per-video failure records, a
CPU->GPU hand-off by reference (the driver never fetches frames), deterministic shard names
and app-level resume, none of which Ray Data's ``write_parquet`` (random names, append) or
``max_errored_blocks`` (drops whole blocks) gives (docs/stack_notes.md).

Failure semantics:

- a corrupt/unsupported/too short video (``VideoError``) is recorded ``failed`` with its reason;
  the run goes on;
- a crashed worker (or a transient I/O error) is retried by Ray up to ``max_retries`` times; an
  actor that dies is restarted (model reloaded) and its call retried. A retried video still
  reaches exactly one shard: the driver adds each input to a shard once;
- a killed run loses at most its unwritten shard: started again, it skips every video whose
  features exist and does only what is missing. Shard names are digests of their video ids, so a
  rewrite overwrites; ``feature_store.feature_index`` keeps the newest row if a video ever lands twice.

Run it as ``star extract --ray INPUT... --lake s3://bucket/lake`` (what ``ray job submit`` and the
KubeRay RayJob run); in Python, ``extract(cfg, inputs)`` with the ``StarConfig`` whose ``features``
(the extractor, which names the feature set), ``extract`` (sharding, retries, in-flight work) and
``resources`` (actors, GPUs, Ray address) sections set the run.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from star_core.config import StarConfig
from star_core.data import VideoFeatures
from star_core.io import feature_store, manifests
from star_core.io.inputs import INTERRUPTED_REASON, resolve_inputs, video_id_from_uri
from star_core.io.lake import Lake
from star_core.video.config import FeatureConfig

log = logging.getLogger("star.extract")

JOB = "extract"


@dataclass
class ExtractRunResult:
    """Summary of one extraction run (the manifest has the per-video detail)."""

    run_id: str
    feature_set: str
    manifest: str  # URI of the run's manifest
    done: int = 0  # videos extracted by this run
    failed: int = 0  # videos that could not be extracted (reason in ``failures`` and the manifest)
    skipped: int = 0  # inputs with features already (or left out by ``limit``)
    n_segments: int = 0  # segments extracted by this run
    elapsed_s: float = 0.0
    outputs: list[str] = field(default_factory=list)  # feature shards written (URIs)
    failures: list[dict] = field(default_factory=list)  # {"input", "reason"} per failed video

    @property
    def segments_per_s(self) -> float:
        return self.n_segments / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """Plain dict (JSON friendly) of the result."""
        return dataclasses.asdict(self) | {"segments_per_s": round(self.segments_per_s, 3)}


def feature_set_of(features: FeatureConfig) -> str:
    """The feature set a run with these settings writes (and skips by).

    The same rule as ``I3DExtractor.feature_set`` (weights digests from ``star_core.video.weights``),
    computed without building the networks; the actors check that they agree.
    """
    from star_core.video.weights import RANDOM_DIGEST, file_digest, weights_digest

    def digest(path: str | None) -> str:
        return file_digest(path) if path else RANDOM_DIGEST

    return features.feature_set(weights_digest(digest(features.rgb_weights), digest(features.flow_weights)))


# ----- the run -----------------------------------------------------------------------------------
@dataclass
class _Pending:
    uri: str
    prepared: Any = None  # ObjectRef of the PreparedVideo
    prepare_s: float = 0.0
    actor_idx: int = -1


class _Run:
    """Driver state of one run: inputs, in-flight work, the open shard and the manifest rows."""

    def __init__(self, cfg: StarConfig, lake: Lake, feature_set: str, run_id: str) -> None:
        self.cfg, self.lake, self.feature_set, self.run_id = cfg, lake, feature_set, run_id
        self.job = cfg.extract
        self.rows: list[dict] = []  # manifest rows of finished inputs (done rows once their shard is written)
        self.shard: list[tuple[VideoFeatures, dict]] = []  # extracted, not yet written
        self.shard_started = time.monotonic()
        self.last_manifest = 0.0
        self.result = ExtractRunResult(run_id=run_id, feature_set=feature_set, manifest=lake.uri_of(lake.manifest_path(JOB, run_id)))

    def record(
        self,
        uri: str,
        status: str,
        reason: str | None = None,
        duration_s: float | None = None,
        n_segments: int | None = None,
        output: str | None = None,
    ) -> None:
        self.rows.append(manifests.manifest_row(JOB, self.run_id, uri, status, reason, duration_s, n_segments, output))
        if status == "failed":
            self.result.failed += 1
            self.result.failures.append({"input": uri, "reason": reason})
            log.warning("failed: %s: %s", uri, reason)
        elif status == "skipped":
            self.result.skipped += 1

    def add(self, feats: VideoFeatures, uri: str, duration_s: float) -> None:
        self.shard.append((feats, {"uri": uri, "duration_s": duration_s}))
        if len(self.shard) >= self.job.shard_videos:
            self.flush()

    def flush(self, final: bool = False) -> None:
        """Write the open shard (if any), then its done rows to the manifest."""
        if self.shard:
            path = feature_store.write_features(self.lake, self.feature_set, [f for f, _ in self.shard])
            url = self.lake.uri_of(path)
            self.result.outputs.append(url)
            for feats, info in self.shard:
                self.record(info["uri"], "done", None, info["duration_s"], feats.n_segments, url)
                self.result.done += 1
                self.result.n_segments += feats.n_segments
            log.info("wrote %d videos to %s", len(self.shard), url)
            self.shard = []
            self.write_manifest(force=True)
        elif final:
            self.write_manifest(force=True)
        self.shard_started = time.monotonic()

    def write_manifest(self, force: bool = False) -> None:
        now = time.monotonic()
        if force or now - self.last_manifest >= self.job.manifest_every_s:
            manifests.write_manifest(self.lake, JOB, self.run_id, self.rows)
            self.last_manifest = now


def extract(cfg: StarConfig, inputs: str | Sequence[str], run_id: str | None = None) -> ExtractRunResult:
    """Extract features for every input video without features in the feature set.

    Args:
        cfg: the lake (``storage``), extractor (``features``), run (``extract``) and cluster (``resources``) settings.
        inputs: video files, prefixes, globs (any fsspec URL) or ``@list`` files.
        run_id: the manifest's run id; None: a new ``extract-<time>-<hex>``.

    Returns:
        The run's :class:`ExtractRunResult` (counts, shards, manifest URI, failures).

    Raises:
        ValueError: bad config or ambiguous inputs (two videos with one video id). An input that
            does not exist is a failed input of the run (manifest and ``failures``), not an error.
    """
    from jobs.runtime import Progress, ensure_ray, new_run_id

    t0 = time.monotonic()
    lake = Lake(cfg.storage.lake_uri, cfg.storage.s3_endpoint_url)
    run_id = run_id or new_run_id(JOB)
    feature_set = feature_set_of(cfg.features)
    resolved = resolve_inputs((inputs,) if isinstance(inputs, str) else tuple(str(i) for i in inputs))
    limit = cfg.extract.limit
    uris = resolved.uris
    have = set(feature_store.feature_index(lake, feature_set).column("video_id").to_pylist())
    run = _Run(cfg, lake, feature_set, run_id)
    for item, reason in resolved.missing:
        run.record(item, "failed", reason)
    todo = []
    for uri in uris:
        if video_id_from_uri(uri) in have:
            run.record(uri, "skipped", f"features exist in {feature_set}")
        else:
            todo.append(uri)
    if limit is not None and len(todo) > limit:
        for uri in todo[limit:]:
            run.record(uri, "skipped", f"not processed: limit of {limit} videos reached")
        todo = todo[:limit]
    log.info(
        "run %s: %d inputs, %d with features, %d to extract into %s (lake %s)",
        run_id,
        len(uris),
        len(have & {video_id_from_uri(u) for u in uris}),
        len(todo),
        feature_set,
        lake.uri,
    )
    run.write_manifest(force=True)
    if todo:
        ensure_ray(cfg.resources.ray_address)
        try:
            _process(run, todo, Progress(total=len(todo), what="videos", every_s=cfg.extract.progress_every_s, logger=log))
        except KeyboardInterrupt:  # the manifest names every input this run did not finish
            finished = {r["input"] for r in run.rows}
            for uri in todo:
                if uri not in finished:
                    run.record(uri, "skipped", INTERRUPTED_REASON)
            run.write_manifest(force=True)
            raise
    run.flush(final=True)
    run.result.elapsed_s = time.monotonic() - t0
    r = run.result
    log.info(
        "run %s finished: %d done, %d failed, %d skipped, %d segments in %.1f s (%.2f segments/s); manifest %s",
        run_id,
        r.done,
        r.failed,
        r.skipped,
        r.n_segments,
        r.elapsed_s,
        r.segments_per_s,
        r.manifest,
    )
    return r


def _plan_resources(cfg: StarConfig) -> tuple[bool, int, int]:
    """(use_gpu, number of actors, prepare tasks in flight) for the cluster we are attached to."""
    import ray

    res, job = cfg.resources, cfg.extract
    resources = ray.cluster_resources()
    n_gpus = int(resources.get("GPU", 0))
    use_gpu = n_gpus > 0 if res.gpu is None else res.gpu
    if use_gpu and n_gpus == 0:
        log.warning("resources.gpu is set but the cluster has no GPU now: the I3D actors wait until an autoscaler adds one")
    n_actors = res.actors or (max(n_gpus, 1) if use_gpu else 1)
    free_cpus = resources.get("CPU", 1) - n_actors * res.cpus_per_actor
    in_flight = job.prepare_in_flight or max(1, int(free_cpus // job.prepare_cpus))
    return use_gpu, n_actors, in_flight


def _process(run: _Run, todo: list[str], progress: Any) -> None:
    import ray

    from jobs import extract_workers as workers
    from jobs.worker_env import forwarded_env

    cfg, job = run.cfg, run.job
    use_gpu, n_actors, in_flight = _plan_resources(cfg)
    fault = os.environ.get(workers.FAULT_ENV) or None
    env = forwarded_env()  # endpoints only, never credentials (docs/operations.md, "Credentials")
    log.info(
        "%d I3D actor(s) on %s, %d decode+flow task(s) in flight, shards of %d videos",
        n_actors,
        "GPU" if use_gpu else "CPU",
        in_flight,
        job.shard_videos,
    )
    actor_cls = ray.remote(workers.Embedder).options(
        num_cpus=cfg.resources.cpus_per_actor, num_gpus=1 if use_gpu else 0, max_restarts=job.max_retries, max_task_retries=job.max_retries
    )
    # The forward-pass batch does not change the features (not part of the feature set), only GPU use.
    actor_features = dataclasses.replace(cfg.features, batch_segments=job.gpu_batch_segments) if use_gpu else cfg.features
    actors = [actor_cls.remote(actor_features, "cuda" if use_gpu else "cpu", env) for _ in range(n_actors)]
    _check_actors(ray, actors, run.feature_set)
    prepare_task = ray.remote(workers.prepare).options(
        num_cpus=job.prepare_cpus, num_returns=2, max_retries=job.max_retries, retry_exceptions=[ConnectionError, TimeoutError]
    )
    max_in_memory = job.max_in_memory_mb << 20
    flow_workers = max(1, int(job.prepare_cpus))  # a task that reserves k CPUs computes flow in k threads
    queue = collections.deque(todo)
    preparing: dict[Any, _Pending] = {}  # status ref -> pending
    embedding: dict[Any, _Pending] = {}  # embed ref -> pending
    load = [0] * n_actors
    try:
        while queue or preparing or embedding:
            # Backpressure: at most `in_flight` decodes, and at most `actor_queue` prepared videos per actor.
            while queue and len(preparing) < in_flight and len(preparing) + len(embedding) < in_flight + job.actor_queue * n_actors:
                uri = queue.popleft()
                status_ref, prepared_ref = prepare_task.remote(uri, cfg.features, max_in_memory, fault, flow_workers)
                preparing[status_ref] = _Pending(uri, prepared_ref)
            ready, _ = ray.wait([*preparing, *embedding], num_returns=1, timeout=job.progress_every_s)
            for ref in ready:
                if ref in preparing:
                    _on_prepared(run, preparing.pop(ref), ref, actors, load, embedding, fault, progress)
                else:
                    _on_embedded(run, embedding.pop(ref), ref, load, progress)
            if run.shard and time.monotonic() - run.shard_started >= job.shard_max_s:
                run.flush()
            run.write_manifest()
            if not ready:
                progress.logger.info(progress.line())
    finally:
        for actor in actors:
            ray.kill(actor, no_restart=True)


def _check_actors(ray: Any, actors: list, feature_set: str) -> None:
    """Fail early (not per video) when an actor cannot load the model or loads other weights than the driver hashed."""
    for actor in actors:
        try:
            got = ray.get(actor.feature_set.remote())
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"an I3D actor failed to start: {_failure_reason(exc)}") from None
        if got != feature_set:
            raise RuntimeError(
                f"an I3D actor loaded weights of feature set {got!r}, the driver "
                f"expected {feature_set!r}: the weight files differ between machines"
            )


def _failure_reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    kind = type(cause or exc).__name__
    text = str(cause or exc).strip().splitlines()
    return f"{kind}: {text[-1] if text else ''} (after retries)"[:1000]


def _on_prepared(
    run: _Run, pending: _Pending, status_ref: Any, actors: list, load: list[int], embedding: dict, fault: str | None, progress: Any
) -> None:
    import ray

    try:
        status = ray.get(status_ref)
    except (ray.exceptions.RayError, ValueError, OSError) as exc:  # retries exhausted, or a bug in the CPU stage
        run.record(pending.uri, "failed", _failure_reason(exc))
        progress.update(failed=1)
        return
    if not status["ok"]:
        run.record(pending.uri, "failed", status["reason"], status["prepare_s"])
        progress.update(failed=1)
        return
    pending.prepare_s = status["prepare_s"]
    pending.actor_idx = min(range(len(actors)), key=load.__getitem__)  # least loaded actor
    load[pending.actor_idx] += 1
    embedding[actors[pending.actor_idx].embed.remote(pending.prepared, pending.uri, fault)] = pending


def _on_embedded(run: _Run, pending: _Pending, ref: Any, load: list[int], progress: Any) -> None:
    import ray

    load[pending.actor_idx] -= 1
    pending.prepared = None  # release the frames in the object store
    try:
        feats, embed_s = ray.get(ref)
    except (ray.exceptions.RayError, ValueError, RuntimeError) as exc:
        run.record(pending.uri, "failed", _failure_reason(exc), pending.prepare_s)
        progress.update(failed=1)
        return
    run.add(feats, pending.uri, pending.prepare_s + embed_s)
    progress.update(done=1, segments=feats.n_segments)
