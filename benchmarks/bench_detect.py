"""Bulk detection throughput, peak memory and I/O-versus-model time (``jobs.detect`` on a local lake).

For each archive size (default 1,000 and 10,000 videos) the benchmark

1. writes stand-in features to ``<root>/lake-<N>`` once (uniform random in [0, 1), non-negative like I3D's
   post-ReLU features; ~330 segments x 1024 dims x 2 streams per video, 64 videos per shard;
   ~2.7 MB a video, so 10,000 videos take ~27 GB of disk),
2. runs the real job (``jobs.detect.detect``: Ray Data over the feature index, a randomly
   initialised StarDetector registered in an embedded MLflow and loaded once per actor,
   detections and manifest written to the lake, MLflow run) after clearing earlier detections,
3. samples the memory of the whole process tree (driver, raylet, GCS, workers) every second:
   peak summed PSS (shared pages split between processes, so the object store counts once),
   peak summed private memory (heaps; without the object store's shared arena, whose pages stay
   resident up to its high-water mark, at most ``--object-store-mb``) and the driver's peak RSS,
4. times an I/O-only pass (the same Ray Data read and row decoding, no model) and the model
   alone on in-memory videos, to split the job's time between I/O and the model.

Usage::

    python benchmarks/bench_detect.py [--sizes 1000 10000] [--root /tmp/star-bench] [--actors 2]
        [--cpus-per-actor 1] [--batch-size 16] [--out bench_detect.json] [--delete-lakes]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import threading
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_detect")

FEAT_DIM = 1024
MEAN_SEGMENTS = 330  # ~3.5 min at 25 fps / 16 frames: a typical THUMOS'14 test video
SHARD_VIDEOS = 64
N_CLASSES = 20
FEATURE_SET = "bench-i3d"
MODEL_NAME = "bench-star"


# ----- stand-in archive ----------------------------------------------------------------------
def ensure_lake(root: Path, n_videos: int) -> str:
    """Write ``n_videos`` stand-in feature rows (once; a marker file records completion)."""
    from star_core.data import VideoFeatures
    from star_core.io import feature_store
    from star_core.io.lake import Lake

    uri = str(root / f"lake-{n_videos}")
    marker = Path(uri) / "features" / f"{FEATURE_SET}.complete"
    if marker.exists():
        return uri
    lake = Lake(uri)
    t0 = time.monotonic()
    for shard_idx, start in enumerate(range(0, n_videos, SHARD_VIDEOS)):
        rng = np.random.default_rng(shard_idx)
        videos = []
        for i in range(start, min(start + SHARD_VIDEOS, n_videos)):
            n = int(rng.integers(MEAN_SEGMENTS - 80, MEAN_SEGMENTS + 81))
            feats = [rng.random((n, FEAT_DIM), dtype=np.float32) for _ in range(2)]  # (N, D) in [0, 1), incompressible like real floats
            videos.append(
                VideoFeatures(f"vid{i:07d}", feats[0], feats[1], duration_s=n * 16 / 25.0, source_uri=f"s3://archive/vid{i:07d}.mp4")
            )
        feature_store.write_features(lake, FEATURE_SET, videos)
        if shard_idx % 10 == 0:
            log.info(
                "lake-%d: %d/%d videos written (%.0f s)", n_videos, min(start + SHARD_VIDEOS, n_videos), n_videos, time.monotonic() - t0
            )
    marker.write_text("ok\n")
    return uri


def register_random_model(root: Path) -> str:
    """Tracking URI of an embedded MLflow holding a random StarDetector as ``bench-star@champion``."""
    import torch

    from jobs import tracking
    from star_core.detector import StarDetector
    from star_core.model.config import LocalizeConfig

    uri = f"sqlite:///{root / 'mlflow.db'}"
    c = tracking.client(uri)
    try:
        c.get_model_version_by_alias(MODEL_NAME, "champion")
        return uri
    except Exception:
        pass
    torch.manual_seed(0)
    # min_class_prob 0: a random model's class probabilities are ~1/C; localize every decoded
    # class so that the write path carries a realistic number of detections.
    detector = StarDetector(
        classes=[f"class{i:02d}" for i in range(N_CLASSES)], feat_dim=FEAT_DIM, localize_cfg=LocalizeConfig(min_class_prob=0.0)
    )
    with torch.no_grad():  # a random LSTM often emits EOS first: make it decode max_steps classes like a trained one
        for net in (detector.rgb, detector.flow):
            net.out.bias[N_CLASSES] = -20.0
    exp = tracking.ensure_experiment(uri, "bench", (root / "mlflow-artifacts").as_uri())
    run_id = tracking.start_run(uri, exp, "random-model")
    ref = tracking.log_detector(uri, run_id, detector, MODEL_NAME)
    tracking.end_run(uri, run_id)
    c.set_registered_model_alias(MODEL_NAME, "champion", ref.version)
    return uri


# ----- memory sampling -----------------------------------------------------------------------
def _descendants(root_pid: int) -> list[int]:
    """Pids of ``root_pid`` and all its descendants (from /proc; Linux)."""
    parent: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
                parent[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])  # field 4: ppid
            except (OSError, IndexError, ValueError):
                pass
    found, frontier = [root_pid], [root_pid]
    while frontier:
        kids = [pid for pid, ppid in parent.items() if ppid in frontier]
        found += kids
        frontier = kids
    return found


def _kb(path: str, *keys: str) -> dict[str, int]:
    """The ``keys`` of a /proc status-style file in kB (0 when missing), read once."""
    out = dict.fromkeys(keys, 0)
    try:
        with open(path) as fh:
            for line in fh:
                key = line.split(":", 1)[0] + ":"
                if key in out:
                    out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, private = Private_Clean + Private_Dirty) of one process in kB, from one read of smaps_rollup."""
    m = _kb(f"/proc/{pid}/smaps_rollup", "Pss:", "Private_Clean:", "Private_Dirty:")
    return m["Pss:"], m["Private_Clean:"] + m["Private_Dirty:"]


class MemorySampler:
    """Peak summed PSS of this process and all its descendants, and this process's peak RSS (MB).

    PSS splits shared pages between the processes mapping them, so Ray's shared-memory object
    store is counted once rather than once per worker that touched it.
    """

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self.peak_tree_pss_mb = 0.0
        self.peak_tree_private_mb = 0.0
        self.peak_driver_rss_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        per_pid = [memory_kb(pid) for pid in _descendants(os.getpid())]
        self.peak_tree_pss_mb = max(self.peak_tree_pss_mb, sum(p for p, _ in per_pid) / 1024)
        self.peak_tree_private_mb = max(self.peak_tree_private_mb, sum(q for _, q in per_pid) / 1024)
        self.peak_driver_rss_mb = max(self.peak_driver_rss_mb, _kb("/proc/self/status", "VmRSS:")["VmRSS:"] / 1024)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every_s)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# ----- I/O only and model only ------------------------------------------------------------------
class DecodeOnly:
    """The actor's row decoding without the model (what the job does besides detection)."""

    def __call__(self, batch):
        import pyarrow as pa

        from star_core.io.feature_store import feature_streams, row_to_video

        streams = feature_streams(batch)
        n = [row_to_video(batch, i, streams).n_segments for i in range(batch.num_rows)]
        return pa.table({"n_segments": pa.array(n, pa.int32())})


def io_only_pass(lake_uri: str, actors: int, cpus_per_actor: float, batch_size: int) -> dict:
    """Read and decode every feature row through the job's Ray Data read path, no model."""
    import ray.data

    from jobs.detect.running import READ_COLUMNS, _keep_rows
    from star_core.io import fs as fsmod
    from star_core.io import feature_store
    from star_core.io.lake import Lake

    lake = Lake(lake_uri)
    index = feature_store.feature_index(lake, FEATURE_SET)
    keep: dict[str, set[str]] = {}
    for p, vid in zip(index.column("path").to_pylist(), index.column("video_id").to_pylist()):
        keep.setdefault(p, set()).add(vid)
    t0 = time.monotonic()
    ds = ray.data.read_parquet(sorted(keep), filesystem=fsmod.to_arrow_fs(lake.fs), include_paths=True).select_columns(
        [*READ_COLUMNS, "path"]
    )
    ds = ds.map_batches(_keep_rows, fn_kwargs={"keep": keep}, batch_format="pyarrow", batch_size=None)
    ds = ds.map_batches(
        DecodeOnly, batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor
    )
    videos = segments = 0
    first_s, first_videos = None, 0
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        videos += batch.num_rows
        segments += int(np.sum(batch.column("n_segments").to_numpy()))
        if first_s is None:  # start-up (workers, actors, first read) ends with the first batch
            first_s, first_videos = time.monotonic() - t0, videos
    wall_s = time.monotonic() - t0
    steady = (videos - first_videos) / (wall_s - first_s) if first_s is not None and wall_s > first_s else float("nan")
    return {
        "videos": videos,
        "segments": segments,
        "wall_s": round(wall_s, 2),
        "videos_per_s": round(videos / wall_s, 2),
        "startup_s": round(first_s or 0.0, 1),
        "steady_videos_per_s": round(steady, 2),
    }


def model_only(lake_uri: str, tracking_uri: str, n_videos: int = 32, batch_size: int = 16) -> dict:
    """Seconds per video of the model alone (1 thread, videos already in memory)."""
    import torch

    from jobs.tracking import load_detector
    from star_core.io import feature_store
    from star_core.io.lake import Lake

    torch.set_num_threads(1)
    detector, _ = load_detector(f"models:/{MODEL_NAME}@champion", tracking_uri)
    videos = []
    for v in feature_store.read_features(Lake(lake_uri), FEATURE_SET):
        videos.append(v)
        if len(videos) == n_videos:
            break
    detector.detect_batch(videos[:2])  # warm-up
    t0 = time.monotonic()
    n_dets = 0
    for i in range(0, len(videos), batch_size):
        n_dets += sum(len(d) for d in detector.detect_batch(videos[i : i + batch_size]))
    per_video_s = (time.monotonic() - t0) / len(videos)
    return {"s_per_video_1_thread": round(per_video_s, 4), "detections_per_video": round(n_dets / len(videos), 1)}


# ----- the benchmark --------------------------------------------------------------------------
def run_size(root: Path, n_videos: int, tracking_uri: str, args) -> dict:
    from jobs.detect import DetectInputs, detect
    from star_core.config import StarConfig, replace
    from star_core.io.lake import Lake

    lake_uri = ensure_lake(root, n_videos)
    lake = Lake(lake_uri)
    for sub in ("detections", "manifests"):  # a fresh archive for the job: nothing done yet
        lake.delete(lake.path(sub))
    cfg = replace(
        StarConfig(),
        **{
            "storage.lake_uri": lake_uri,
            "detect.model_uri": f"models:/{MODEL_NAME}@champion",
            "storage.mlflow_tracking_uri": tracking_uri,
            "detect.experiment": "bench-detect",
            "resources.actors": args.actors,
            "resources.cpus_per_actor": args.cpus_per_actor,
            "detect.batch_size": args.batch_size,
        },
    )
    with MemorySampler() as mem:
        result = detect(cfg, DetectInputs(date="2026-11-28"))
    with MemorySampler() as io_mem:
        io = io_only_pass(lake_uri, args.actors, args.cpus_per_actor, args.batch_size)
    busy_s = result.elapsed_s * args.actors  # actor-seconds available during the job
    # Wall seconds per video of the I/O path alone (steady state, same actors) against the model's
    # (its summed actor time spread over the actors): the share of the job that is I/O.
    io_s = 1.0 / io["steady_videos_per_s"] if io["steady_videos_per_s"] > 0 else float("nan")
    model_s = result.model_s / max(result.processed, 1) / args.actors
    io_share = round(io_s / (io_s + model_s), 3)
    steady = (
        (result.processed + result.failed - result.first_batch_videos) / (result.elapsed_s - result.startup_s)
        if result.elapsed_s > result.startup_s
        else float("nan")
    )
    out = {
        "videos": n_videos,
        "processed": result.processed,
        "failed": result.failed,
        "segments": result.segments_processed,
        "detections_written": result.detections_written,
        "files_written": len(result.files),
        "job_wall_s": round(result.elapsed_s, 1),
        "videos_per_s": round(result.videos_per_s, 2),
        "segments_per_s": round(result.segments_per_s, 0),
        "peak_tree_pss_mb": round(mem.peak_tree_pss_mb),
        "peak_tree_private_mb": round(mem.peak_tree_private_mb),
        "peak_driver_rss_mb": round(mem.peak_driver_rss_mb),
        "model_s_in_actors": round(result.model_s, 1),
        "model_share_of_actor_time": round(result.model_s / busy_s, 3) if busy_s else None,
        "io_only_pass": io
        | {"peak_tree_pss_mb": round(io_mem.peak_tree_pss_mb), "peak_tree_private_mb": round(io_mem.peak_tree_private_mb)},
        "startup_s": round(result.startup_s, 1),
        "steady_videos_per_s": round(steady, 2),
        "io_share_estimate": io_share,
    }
    log.info("size %d: %s", n_videos, json.dumps(out))
    if args.delete_lakes:
        shutil.rmtree(lake_uri, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000], help="archive sizes (videos)")
    parser.add_argument("--root", default="/tmp/star-bench-detect", help="where lakes and the MLflow DB go")
    parser.add_argument("--actors", type=int, default=2, help="model-holding actors")
    parser.add_argument("--cpus-per-actor", type=float, default=0.5, help="CPU slots per actor (2 actors x 0.5 leave a slot for reads)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray")
    parser.add_argument("--object-store-mb", type=int, default=None, help="object store of the local Ray (default: Ray's, ~30%% of RAM)")
    parser.add_argument("--out", default="bench_detect.json", help="results JSON")
    parser.add_argument("--delete-lakes", action="store_true", help="remove each stand-in lake after its run")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)

    from jobs.runtime import ensure_ray

    tracking_uri = register_random_model(root)
    ensure_ray(None, num_cpus=args.num_cpus, object_store_memory=args.object_store_mb * 2**20 if args.object_store_mb else None)
    import ray

    object_store_mb = round(ray.cluster_resources().get("object_store_memory", 0) / 2**20)
    first_lake = ensure_lake(root, min(args.sizes))
    results = {
        "machine": {
            "cpus": os.cpu_count(),
            "ray_cpus": args.num_cpus,
            "object_store_mb": object_store_mb,
            "python": platform.python_version(),
            "load_avg_start": os.getloadavg(),
        },
        "settings": {
            "actors": args.actors,
            "cpus_per_actor": args.cpus_per_actor,
            "batch_size": args.batch_size,
            "feat_dim": FEAT_DIM,
            "mean_segments": MEAN_SEGMENTS,
            "classes": N_CLASSES,
        },
        "model_only": model_only(first_lake, tracking_uri),
        "sizes": [],
    }
    for n in args.sizes:
        results["sizes"].append(run_size(root, n, tracking_uri, args))
    results["machine"]["load_avg_end"] = os.getloadavg()
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
