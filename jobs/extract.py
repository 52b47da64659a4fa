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

Run it as ``python -m jobs.extract INPUT... --lake s3://bucket/lake`` (what ``ray job submit``
runs) or ``star extract --ray``; in Python, ``extract(ExtractJobConfig(...))``.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from star_core.config import StarConfig, load_config
from star_core.data import VideoFeatures
from star_core.io import feature_store, manifests
from star_core.io.inputs import INTERRUPTED_REASON, resolve_inputs, video_id_from_uri
from star_core.io.lake import Lake
from star_core.video.config import FLOW_METHODS, FeatureConfig

log = logging.getLogger("star.extract")

JOB = "extract"


@dataclass(frozen=True)
class ExtractJobConfig:
    """What to extract, where to, and how to spread it over the cluster."""

    inputs: str | tuple[str, ...]  # video files, prefixes, globs (any fsspec URL) or @list files
    lake_uri: str = "./star-lake"  # root of the lake: local path or s3://bucket/prefix
    features: FeatureConfig = field(default_factory=FeatureConfig)  # extractor settings (name the feature set)
    config: StarConfig | None = None  # a whole config tree: when given, its features and S3 endpoint are used
    run_id: str | None = None  # None: a new extract-<time>-<hex> id
    s3_endpoint_url: str | None = None  # S3-compatible endpoint; None: AWS_ENDPOINT_URL
    ray_address: str | None = None  # None: RAY_ADDRESS, else a local Ray started in-process
    use_gpu: bool | None = None  # I3D actors on GPUs; None: when the cluster has GPUs
    num_actors: int = 0  # I3D actors; 0: one per GPU when use_gpu, else 1
    actor_cpus: float = 1.0  # CPUs each I3D actor reserves
    prepare_cpus: float = 1.0  # CPUs each decode+flow task reserves (and flow threads it runs)
    max_prepare_in_flight: int = 0  # decode+flow tasks submitted at once; 0: the CPUs the actors leave free
    actor_queue: int = 2  # prepared videos waiting per actor (keeps the GPU busy; bounds object-store use)
    gpu_batch_segments: int = 32  # segments per I3D forward pass on a GPU (CPU actors use features.batch_segments)
    shard_videos: int = 16  # videos per features Parquet shard
    shard_max_s: float = 300.0  # write a partial shard after this long (a kill loses at most this much)
    max_retries: int = 3  # retries of a crashed task / restarts of a dead actor
    limit: int | None = None  # extract at most this many missing videos (trial runs); the rest are skipped
    max_in_memory_mb: int = 1024  # remote videos up to this size are fetched in one request
    manifest_every_s: float = 30.0  # rewrite the run's manifest at most this often (and at the end)
    progress_every_s: float = 10.0  # progress line interval

    def __post_init__(self) -> None:
        inputs = (self.inputs,) if isinstance(self.inputs, str) else tuple(str(i) for i in self.inputs)
        object.__setattr__(self, "inputs", inputs)
        if self.config is not None:
            if self.features != FeatureConfig() and self.features != self.config.features:
                raise ValueError("ExtractJobConfig: give the feature settings either as `features` or inside `config`, not both")
            object.__setattr__(self, "features", self.config.features)
            if self.s3_endpoint_url is None and self.config.storage.s3_endpoint_url:
                object.__setattr__(self, "s3_endpoint_url", self.config.storage.s3_endpoint_url)
        checks = {
            "num_actors": self.num_actors >= 0,
            "actor_cpus": self.actor_cpus >= 0,
            "prepare_cpus": self.prepare_cpus > 0,
            "max_prepare_in_flight": self.max_prepare_in_flight >= 0,
            "actor_queue": self.actor_queue >= 1,
            "gpu_batch_segments": self.gpu_batch_segments >= 1,
            "shard_videos": self.shard_videos >= 1,
            "max_retries": self.max_retries >= 0,
            "limit": self.limit is None or self.limit >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"ExtractJobConfig: invalid {', '.join(f'{k}={getattr(self, k)!r}' for k in bad)}")


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

    def __init__(self, cfg: ExtractJobConfig, lake: Lake, feature_set: str, run_id: str) -> None:
        self.cfg, self.lake, self.feature_set, self.run_id = cfg, lake, feature_set, run_id
        self.rows: list[dict] = []  # manifest rows of finished inputs (done rows once their shard is written)
        self.shard: list[tuple[VideoFeatures, dict]] = []  # extracted, not yet written
        self.shard_started = time.monotonic()
        self.last_manifest = 0.0
        self.result = ExtractRunResult(run_id=run_id, feature_set=feature_set, manifest=lake.uri_of(lake.manifest_path(JOB, run_id)))

    def record(self, uri: str, status: str, reason: str | None = None, duration_s: float | None = None, n_segments: int | None = None, output: str | None = None) -> None:
        self.rows.append(manifests.manifest_row(JOB, self.run_id, uri, status, reason, duration_s, n_segments, output))
        if status == "failed":
            self.result.failed += 1
            self.result.failures.append({"input": uri, "reason": reason})
            log.warning("failed: %s: %s", uri, reason)
        elif status == "skipped":
            self.result.skipped += 1

    def add(self, feats: VideoFeatures, uri: str, duration_s: float) -> None:
        self.shard.append((feats, {"uri": uri, "duration_s": duration_s}))
        if len(self.shard) >= self.cfg.shard_videos:
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
        if force or now - self.last_manifest >= self.cfg.manifest_every_s:
            manifests.write_manifest(self.lake, JOB, self.run_id, self.rows)
            self.last_manifest = now


def extract(cfg: ExtractJobConfig) -> ExtractRunResult:
    """Extract features for every input video without features in the feature set.

    Args:
        cfg: inputs, lake, feature settings and cluster settings.

    Returns:
        The run's :class:`ExtractRunResult` (counts, shards, manifest URI, failures).

    Raises:
        ValueError: bad config or ambiguous inputs (two videos with one video id). An input that
            does not exist is a failed input of the run (manifest and ``failures``), not an error.
    """
    from jobs.runtime import Progress, ensure_ray, new_run_id

    t0 = time.monotonic()
    lake = Lake(cfg.lake_uri, cfg.s3_endpoint_url)
    run_id = cfg.run_id or new_run_id(JOB)
    feature_set = feature_set_of(cfg.features)
    resolved = resolve_inputs(cfg.inputs)
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
    if cfg.limit is not None and len(todo) > cfg.limit:
        for uri in todo[cfg.limit:]:
            run.record(uri, "skipped", f"not processed: limit of {cfg.limit} videos reached")
        todo = todo[: cfg.limit]
    log.info("run %s: %d inputs, %d with features, %d to extract into %s (lake %s)", run_id, len(uris), len(have & {video_id_from_uri(u) for u in uris}), len(todo), feature_set, lake.uri)
    run.write_manifest(force=True)
    if todo:
        ensure_ray(cfg.ray_address)
        try:
            _process(run, todo, Progress(total=len(todo), what="videos", every_s=cfg.progress_every_s, logger=log))
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
    log.info("run %s finished: %d done, %d failed, %d skipped, %d segments in %.1f s (%.2f segments/s); manifest %s", run_id, r.done, r.failed, r.skipped, r.n_segments, r.elapsed_s, r.segments_per_s, r.manifest)
    return r


def _plan_resources(cfg: ExtractJobConfig) -> tuple[bool, int, int]:
    """(use_gpu, number of actors, prepare tasks in flight) for the cluster we are attached to."""
    import ray

    resources = ray.cluster_resources()
    n_gpus = int(resources.get("GPU", 0))
    use_gpu = n_gpus > 0 if cfg.use_gpu is None else cfg.use_gpu
    if use_gpu and n_gpus == 0:
        log.warning("use_gpu is set but the cluster has no GPU now: the I3D actors wait until an autoscaler adds one")
    n_actors = cfg.num_actors or (max(n_gpus, 1) if use_gpu else 1)
    free_cpus = resources.get("CPU", 1) - n_actors * cfg.actor_cpus
    in_flight = cfg.max_prepare_in_flight or max(1, int(free_cpus // cfg.prepare_cpus))
    return use_gpu, n_actors, in_flight


def _process(run: _Run, todo: list[str], progress: Any) -> None:
    import ray

    from jobs import extract_workers as workers
    from jobs.worker_env import forwarded_env

    cfg = run.cfg
    use_gpu, n_actors, in_flight = _plan_resources(cfg)
    fault = os.environ.get(workers.FAULT_ENV) or None
    env = forwarded_env()  # endpoints only, never credentials (docs/operations.md, "Credentials")
    log.info("%d I3D actor(s) on %s, %d decode+flow task(s) in flight, shards of %d videos", n_actors, "GPU" if use_gpu else "CPU", in_flight, cfg.shard_videos)
    actor_cls = ray.remote(workers.Embedder).options(
        num_cpus=cfg.actor_cpus, num_gpus=1 if use_gpu else 0, max_restarts=cfg.max_retries, max_task_retries=cfg.max_retries
    )
    # The forward-pass batch does not change the features (not part of the feature set), only GPU use.
    actor_features = dataclasses.replace(cfg.features, batch_segments=cfg.gpu_batch_segments) if use_gpu else cfg.features
    actors = [actor_cls.remote(actor_features, "cuda" if use_gpu else "cpu", env) for _ in range(n_actors)]
    _check_actors(ray, actors, run.feature_set)
    prepare_task = ray.remote(workers.prepare).options(
        num_cpus=cfg.prepare_cpus, num_returns=2, max_retries=cfg.max_retries, retry_exceptions=[ConnectionError, TimeoutError]
    )
    max_in_memory = cfg.max_in_memory_mb << 20
    flow_workers = max(1, int(cfg.prepare_cpus))  # a task that reserves k CPUs computes flow in k threads
    queue = collections.deque(todo)
    preparing: dict[Any, _Pending] = {}  # status ref -> pending
    embedding: dict[Any, _Pending] = {}  # embed ref -> pending
    load = [0] * n_actors
    try:
        while queue or preparing or embedding:
            # Backpressure: at most `in_flight` decodes, and at most `actor_queue` prepared videos per actor.
            while queue and len(preparing) < in_flight and len(preparing) + len(embedding) < in_flight + cfg.actor_queue * n_actors:
                uri = queue.popleft()
                status_ref, prepared_ref = prepare_task.remote(uri, cfg.features, max_in_memory, fault, flow_workers)
                preparing[status_ref] = _Pending(uri, prepared_ref)
            ready, _ = ray.wait([*preparing, *embedding], num_returns=1, timeout=cfg.progress_every_s)
            for ref in ready:
                if ref in preparing:
                    _on_prepared(run, preparing.pop(ref), ref, actors, load, embedding, fault, progress)
                else:
                    _on_embedded(run, embedding.pop(ref), ref, load, progress)
            if run.shard and time.monotonic() - run.shard_started >= cfg.shard_max_s:
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
            raise RuntimeError(f"an I3D actor loaded weights of feature set {got!r}, the driver expected {feature_set!r}: the weight files differ between machines")


def _failure_reason(exc: BaseException) -> str:
    cause = getattr(exc, "cause", None)
    kind = type(cause or exc).__name__
    text = str(cause or exc).strip().splitlines()
    return f"{kind}: {text[-1] if text else ''} (after retries)"[:1000]


def _on_prepared(run: _Run, pending: _Pending, status_ref: Any, actors: list, load: list[int], embedding: dict, fault: str | None, progress: Any) -> None:
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


# ----- command line (what `ray job submit -- python -m jobs.extract ...` runs) -----------------------
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Arguments of ``python -m jobs.extract`` (also usable by ``star extract --ray``)."""
    p = parser or argparse.ArgumentParser(prog="python -m jobs.extract", description="Distributed I3D feature extraction with Ray.")
    p.add_argument("inputs", nargs="+", help="video files, prefixes, globs (any fsspec URL) or @list files")
    p.add_argument("--lake", default=None, help="lake root URI (default: storage.lake_uri of the config)")
    p.add_argument("--config", default=None, help="YAML/JSON config file (StarConfig)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override, e.g. features.flow=farneback")
    p.add_argument("--flow", choices=FLOW_METHODS, default=None,
                   help="optical flow (= --set features.flow=...): tvl1 (OpenCV, in the CPU tasks), "
                        "tvl1-torch (on the I3D actors' device; with --gpu the CPU tasks only decode), farneback")
    p.add_argument("--run-id", default=None)
    p.add_argument("--ray-address", default=None, help="Ray cluster (default: RAY_ADDRESS, else local)")
    gpu = p.add_mutually_exclusive_group()
    gpu.add_argument("--gpu", dest="use_gpu", action="store_true", default=None, help="I3D actors on GPUs")
    gpu.add_argument("--cpu", dest="use_gpu", action="store_false", help="I3D actors on CPU")
    p.add_argument("--num-actors", type=int, default=0, help="I3D actors (0: one per GPU, else 1)")
    p.add_argument("--prepare-in-flight", type=int, default=0, help="decode+flow tasks at once (0: free CPUs)")
    p.add_argument("--prepare-cpus", type=float, default=1.0, help="CPUs (and flow threads) per decode+flow task")
    p.add_argument("--shard-videos", type=int, default=16, help="videos per features shard")
    p.add_argument("--max-retries", type=int, default=3)
    p.add_argument("--limit", type=int, default=None, help="extract at most this many missing videos")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 when a video failed")
    return p


def config_from_args(args: argparse.Namespace) -> ExtractJobConfig:
    """The job config of parsed command-line arguments."""
    star_cfg = load_config(args.config, [*args.overrides, *([f"features.flow={args.flow}"] if args.flow else [])])
    return ExtractJobConfig(
        inputs=tuple(args.inputs),
        lake_uri=args.lake or star_cfg.storage.lake_uri,
        config=star_cfg,
        run_id=args.run_id,
        ray_address=args.ray_address or star_cfg.storage.ray_address,
        use_gpu=args.use_gpu,
        num_actors=args.num_actors,
        max_prepare_in_flight=args.prepare_in_flight,
        prepare_cpus=args.prepare_cpus,
        shard_videos=args.shard_videos,
        max_retries=args.max_retries,
        limit=args.limit,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = extract(config_from_args(args))
    except (FileNotFoundError, ValueError) as exc:
        print(f"jobs.extract: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # unfinished inputs are in the manifest
        print("jobs.extract: interrupted", file=sys.stderr)
        return 130
    print(json.dumps(result.summary(), default=str))
    return 1 if args.fail_on_error and result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
