"""Benchmark: the Ray extract job against the single-process extractor, and the per-core costs.

Measures, on the same generated videos:

1. single process: ``extract_video`` with one ``I3DExtractor`` (model loaded once, not timed);
2. the Ray job (``jobs.extract.extract``) on a fresh local Ray with W workers, W = 1, 2, ...:
   W I3D actors (1 CPU each) and W decode+flow tasks in flight, ``num_cpus = 2 W``; end to end
   (actor start included), throughput and the ratio to (1);
3. Ray's overhead per video: one video at a time through the job's own task and actor
   (``jobs.extract_workers``), driver latency minus the work the workers report;
4. per CPU core (one thread): decode + TV-L1 flow and decode + Farneback at DeepMind's
   settings (256 short side, 224 crop), and I3D (both streams) at 224, in segments/s.

Usage::

    python benchmarks/bench_extract_ray.py                     # defaults: 6 videos of 3 s, 112 px
    python benchmarks/bench_extract_ray.py --videos 8 --duration-s 4 --workers 1 2 --out results.json
    python benchmarks/bench_extract_ray.py --skip-ray           # per-core numbers only

Numbers depend on the machine (and on what else runs on it): the JSON records the core count
and load average next to every figure. ``docs/cost_model.md`` explains how they scale.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")  # random-weights warnings: the benchmark times, it does not judge features
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from star_core.data import Instance  # noqa: E402
from star_core.synth_video import make_video  # noqa: E402
from star_core.video.config import FeatureConfig  # noqa: E402

log = logging.getLogger("bench")


def make_videos(directory: Path, n: int, duration_s: float, size: int) -> list[Path]:
    paths = []
    for k in range(n):
        v = make_video(directory / f"bench_{k:03d}.mp4", [Instance("BallBounce", 0.2, duration_s - 0.2)], duration_s, size=size, seed=k)
        paths.append(v.path)
    return paths


def bench_single(paths: list[Path], features: FeatureConfig) -> dict:
    """Single-process extractor: model loaded once, then every video in turn."""
    from star_core.video import I3DExtractor, extract_video

    t0 = time.perf_counter()
    extractor = I3DExtractor(features, device="cpu")
    load_s = time.perf_counter() - t0
    per_video, segments = [], 0
    t0 = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        segments += extract_video(str(p), p.stem, features, extractor).n_segments
        per_video.append(time.perf_counter() - t)
    total_s = time.perf_counter() - t0
    return {
        "model_load_s": load_s,
        "total_s": total_s,
        "segments": segments,
        "segments_per_s": segments / total_s,
        "per_video_s": per_video,
    }


def bench_ray(paths: list[Path], features: FeatureConfig, workers: int, lake_dir: Path) -> dict:
    """The Ray job end to end on a fresh local cluster of ``2 * workers`` CPUs."""
    import ray

    from jobs.extract import extract
    from star_core.config import StarConfig, replace

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    for attempt in range(3):  # a loaded machine can miss Ray's fixed 30 s raylet start-up wait
        t0 = time.perf_counter()
        try:
            ray.init(address="local", num_cpus=2 * workers, include_dashboard=False, log_to_driver=False)
            break
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception here
            log.warning("ray.init failed (attempt %d): %s", attempt + 1, exc)
            ray.shutdown()
            if attempt == 2:
                raise
    init_s = time.perf_counter() - t0
    try:
        cfg = replace(
            StarConfig(features=features),
            **{
                "storage.lake_uri": str(lake_dir),
                "resources.gpu": False,
                "resources.actors": workers,
                "extract.prepare_in_flight": workers,
                "extract.shard_videos": len(paths),
                "extract.progress_every_s": 30.0,
            },
        )
        t0 = time.perf_counter()
        result = extract(cfg, [str(p) for p in paths])
        total_s = time.perf_counter() - t0
        overhead = bench_overhead(paths[: min(4, len(paths))], features) if workers == 1 else None
    finally:
        ray.shutdown()
    out = {
        "workers": workers,
        "ray_init_s": init_s,
        "total_s": total_s,
        "segments": result.n_segments,
        "done": result.done,
        "failed": result.failed,
        "segments_per_s": result.n_segments / total_s,
    }
    if overhead:
        out["overhead"] = overhead
    return out


def bench_overhead(paths: list[Path], features: FeatureConfig) -> dict:
    """Ray's cost per video: driver latency (prepare task -> actor embed) minus worker-reported work."""
    import ray

    from jobs import extract_workers as workers

    prepare = ray.remote(workers.prepare).options(num_cpus=1, num_returns=2)
    actor = ray.remote(workers.Embedder).options(num_cpus=1).remote(features, "cpu", {})
    ray.get(actor.feature_set.remote())  # model loaded before timing
    ray.get(prepare.remote(str(paths[0]), features, 1 << 30)[0])  # warm a CPU worker (imports)
    rows = []
    for p in paths:
        t0 = time.perf_counter()
        status_ref, prepared_ref = prepare.remote(str(p), features, 1 << 30)
        status = ray.get(status_ref)
        _, embed_s = ray.get(actor.embed.remote(prepared_ref, str(p)))
        latency_s = time.perf_counter() - t0
        rows.append({"latency_s": latency_s, "work_s": status["prepare_s"] + embed_s})
    ray.kill(actor)
    overheads = [r["latency_s"] - r["work_s"] for r in rows]
    return {"videos": len(rows), "median_overhead_s": statistics.median(overheads), "max_overhead_s": max(overheads), "rows": rows}


def bench_per_core(path: Path, seconds_budget: float = 60.0) -> dict:
    """One thread: decode + flow (TV-L1 and Farneback) and I3D at DeepMind's 256/224 settings, in segments/s."""
    import cv2
    import torch

    from star_core.video import I3DExtractor, prepare_video

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    out: dict = {}
    for flow in ("farneback", "tvl1"):
        cfg = FeatureConfig(flow=flow)
        t0, c0 = time.perf_counter(), time.process_time()
        prepared = prepare_video(str(path), cfg)
        wall_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
        segs = prepared.n_frames / cfg.segment_frames
        out[f"prepare_{flow}"] = {
            "frames": prepared.n_frames,
            "wall_s": wall_s,
            "cpu_s": cpu_s,
            "segments_per_s": segs / wall_s,
            "segments_per_cpu_s": segs / cpu_s,
        }
    extractor = I3DExtractor(FeatureConfig(), device="cpu")
    rgb, flow = prepared.rgb_u8[None, :16], prepared.flow_f16[None, :16]
    extractor.embed_segments(rgb, flow)  # warm-up
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while n < 3 and time.perf_counter() - t0 < seconds_budget:
        extractor.embed_segments(rgb, flow)
        n += 1
    wall_s, cpu_s = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
    out["i3d_two_streams_224"] = {
        "wall_s_per_segment": wall_s,
        "cpu_s_per_segment": cpu_s,
        "segments_per_s": 1.0 / wall_s,
        "segments_per_cpu_s": 1.0 / cpu_s,
        "torch_threads": 1,
    }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--videos", type=int, default=6)
    p.add_argument("--duration-s", type=float, default=3.0)
    p.add_argument("--size", type=int, default=112, help="video side and crop (pixels) for the throughput runs")
    p.add_argument("--flow", default="farneback", choices=["farneback", "tvl1"], help="flow for the throughput runs")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--skip-ray", action="store_true", help="per-core numbers only")
    p.add_argument("--skip-per-core", action="store_true")
    p.add_argument("--out", default=None, help="write the results JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("star.video").setLevel(logging.ERROR)

    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    results: dict = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_start": os.getloadavg()}}
    try:
        paths = make_videos(work / "videos", args.videos, args.duration_s, args.size)
        features = FeatureConfig(flow=args.flow, resize_short_side=args.size, crop_size=args.size)
        results["setup"] = {"videos": len(paths), "duration_s": args.duration_s, "size": args.size, "flow": args.flow}
        if not args.skip_ray:
            results["single"] = bench_single(paths, features)
            log.info("single process: %.1f s, %.2f segments/s", results["single"]["total_s"], results["single"]["segments_per_s"])
            results["ray"] = []
            for w in args.workers:
                r = bench_ray(paths, features, w, work / f"lake-{w}")
                r["ratio_to_single"] = r["segments_per_s"] / results["single"]["segments_per_s"]
                results["ray"].append(r)
                log.info(
                    "ray, %d worker(s): %.1f s, %.2f segments/s, %.2fx single", w, r["total_s"], r["segments_per_s"], r["ratio_to_single"]
                )
                if "overhead" in r:
                    log.info("ray overhead per video: median %.3f s", r["overhead"]["median_overhead_s"])
        if not args.skip_per_core:
            long_video = make_videos(work / "long", 1, 4.0, 320)[0]  # 320x320 -> resized 256, cropped 224
            results["per_core"] = bench_per_core(long_video)
            for k, v in results["per_core"].items():
                log.info("per core, %s: %.3f segments/s (%.3f per CPU-second)", k, v["segments_per_s"], v["segments_per_cpu_s"])
        results["machine"]["load_avg_end"] = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(results, indent=2, default=float)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
