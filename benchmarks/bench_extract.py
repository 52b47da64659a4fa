"""Throughput of each feature-extraction stage, in 16-frame segments per second, and which one bounds the pipeline.

Stages (DeepMind's preprocessing at 25 fps, short side 256, crop 224):

- decode: PyAV decode + fps resampling + bilinear resize + centre crop + grayscale;
- flow: TV-L1 and Farneback on consecutive 256-short-side grayscale frames (16 flows per segment),
  with OpenCV on 1 thread (the per-core figure a cluster cost model needs) and on all threads;
- i3d: the RGB and the flow network (random weights: cost does not depend on values), batched;
- end to end: prepare_video (flow in one thread per CPU) + I3DExtractor.embed on the test video, as `star extract` runs it.

The test video is generated here (textured, moving, 320x240 at 30 fps, like THUMOS'14 sources).

    python benchmarks/bench_extract.py                    # CPU, about 2-4 minutes on 2 cores
    python benchmarks/bench_extract.py --quick            # fewer repeats, ~1 minute
    python benchmarks/bench_extract.py --device cuda --quick --stages i3d   # I3D segments/s on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_video(path: Path, seconds: float, fps: int = 30, width: int = 320, height: int = 240) -> Path:
    """A textured scene panning 2 px/frame with a bright disc crossing it (something for flow to track)."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    n = int(seconds * fps)
    big = cv2.GaussianBlur(rng.uniform(0, 255, (height + 8, width + 2 * n + 8, 3)).astype(np.float32), (0, 0), 3)
    big = ((big - big.min()) / (big.max() - big.min()) * 200 + 20).astype(np.uint8)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(n):
            img = np.ascontiguousarray(big[4:4 + height, 2 * i:2 * i + width])
            cv2.circle(img, (int(width * (i % fps) / fps), height // 2), 30, (250, 250, 250), -1)
            for p in s.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


def bench_decode(video: Path, repeats: int) -> dict:
    from star_core.video.decode import center_crop, iter_resampled_frames, resize_short_side
    from star_core.video.flow import to_gray

    def transform(rgb):
        resized = resize_short_side(rgb, 256)
        return np.ascontiguousarray(center_crop(resized, 224)), to_gray(resized)

    best = cpu = None
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        frames = list(iter_resampled_frames(video, 25.0, transform))
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        best = dt if best is None else min(best, dt)
        cpu = dc if cpu is None else min(cpu, dc)
    grays = [f[1] for f in frames]
    seg = len(frames) / 16
    return {"frames": len(frames), "s": best, "cpu_s": cpu, "segments_per_s": seg / best, "segments_per_cpu_s": seg / cpu, "grays": grays}


def bench_flow(grays: list, method: str, pairs: int, threads: int | None) -> dict:
    import cv2

    from star_core.video.flow import FlowEstimator

    old = cv2.getNumThreads()
    if threads is not None:
        cv2.setNumThreads(threads)
    try:
        est = FlowEstimator(method)
        est(grays[0], grays[1])  # warm-up
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(pairs):
            est(grays[i], grays[i + 1])
        dt, dc = (time.perf_counter() - t0) / pairs, (time.process_time() - c0) / pairs
    finally:
        cv2.setNumThreads(old)
    return {"s_per_flow": dt, "cpu_s_per_flow": dc, "segments_per_s": 1.0 / (16 * dt), "segments_per_cpu_s": 1.0 / (16 * dc),
            "cv2_threads": threads or old, "shape": list(grays[0].shape)}


def bench_i3d(device: str, batch: int, repeats: int, stream: str) -> dict:
    import torch

    from star_core.video.weights import load_i3d

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model, _ = load_i3d(None, stream)
    model.to(device)
    c = 3 if stream == "rgb" else 2
    x = torch.rand(batch, c, 16, 224, 224, device=device) * 2 - 1

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    with torch.inference_mode():
        model.features(x)  # warm-up (cuDNN autotune, oneDNN primitives)
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(repeats):
            model.features(x)
        sync()
        dt, dc = (time.perf_counter() - t0) / repeats, (time.process_time() - c0) / repeats
    return {"batch": batch, "s_per_batch": dt, "cpu_s_per_batch": dc, "segments_per_s": batch / dt, "segments_per_cpu_s": batch / dc}


def bench_end_to_end(video: Path, flow: str, device: str, flow_workers: int) -> dict:
    from star_core.video import I3DExtractor, prepare_video
    from star_core.video.config import FeatureConfig

    cfg = FeatureConfig(flow=flow)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = I3DExtractor(cfg, device=device)
    t0, c0 = time.perf_counter(), time.process_time()
    pv = prepare_video(video, cfg, flow_workers=flow_workers)
    t1, c1 = time.perf_counter(), time.process_time()
    feats = ex.embed(pv, "bench")
    t2, c2 = time.perf_counter(), time.process_time()
    n = feats.n_segments
    return {
        "flow": flow,
        "flow_workers": flow_workers,
        "segments": n,
        "prepare_s": t1 - t0,
        "embed_s": t2 - t1,
        "prepare_cpu_s": c1 - c0,
        "embed_cpu_s": c2 - c1,
        "segments_per_s": n / (t2 - t0),
        "segments_per_cpu_s": n / (c2 - c0),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="torch device for I3D (cpu, cuda)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and a shorter video")
    ap.add_argument("--stages", default="decode,flow,i3d,e2e", help="comma list of decode, flow, i3d, e2e")
    ap.add_argument("--batch", type=int, nargs="+", help="I3D batch sizes (segments per forward); default 8 (cpu) or 8 32 (cuda)")
    ap.add_argument("--seconds", type=float, help="length of the generated test video (default 4, quick 2.6)")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    args = ap.parse_args(argv)

    import logging

    import cv2
    import torch

    logging.getLogger("star.video").setLevel(logging.ERROR)  # random weights are fine for timing
    stages = set(args.stages.split(","))
    seconds = args.seconds or (2.6 if args.quick else 4.0)
    repeats = 1 if args.quick else 2
    batches = args.batch or ([8, 32] if args.device.startswith("cuda") else [4 if args.quick else 8])
    res: dict = {"host": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "cv2_threads": cv2.getNumThreads(),
                          "torch": torch.__version__, "opencv": cv2.__version__, "python": platform.python_version(),
                          "device": args.device, "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
                          "load_avg": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        # the test video only for the stages that decode it (an I3D-only run needs no PyAV, e.g. on a bare GPU host)
        video = make_video(Path(tmp) / "bench.mp4", seconds) if stages & {"decode", "flow", "e2e"} else None
        if stages & {"decode", "flow"}:
            d = bench_decode(video, repeats)
            grays = d.pop("grays")
            res["decode"] = d
            print(
                f"decode+resample+resize+crop : {d['segments_per_s']:8.2f} segments/s, {d['segments_per_cpu_s']:8.2f} per CPU-s  "
                f"({d['frames']} frames in {d['s']:.2f} s)",
                flush=True,
            )
        if "flow" in stages:
            pairs = 4 if args.quick else 10
            for method in ("tvl1", "farneback"):
                for threads in (1, None):
                    r = bench_flow(grays, method, pairs if method == "tvl1" else 3 * pairs, threads)
                    res[f"flow_{method}_{'1thread' if threads == 1 else 'allthreads'}"] = r
                    print(
                        f"flow {method:9s} ({r['cv2_threads']} thr)      : {r['segments_per_s']:8.3f} segments/s, "
                        f"{r['segments_per_cpu_s']:8.3f} per CPU-s  ({r['s_per_flow'] * 1000:.0f} ms, {r['cpu_s_per_flow'] * 1000:.0f} "
                        f"CPU-ms per flow at {r['shape'][1]}x{r['shape'][0]})",
                        flush=True,
                    )
        if "i3d" in stages:
            for stream in ("rgb", "flow"):
                for b in batches:
                    r = bench_i3d(args.device, b, repeats if not args.device.startswith("cuda") else 10, stream)
                    res[f"i3d_{stream}_b{b}"] = r
                    print(
                        f"I3D {stream:4s} on {args.device} batch {b:3d}  : {r['segments_per_s']:8.2f} segments/s, "
                        f"{r['segments_per_cpu_s']:8.3f} per CPU-s  ({r['s_per_batch']:.3f} s per batch)",
                        flush=True,
                    )
        if "e2e" in stages:
            for flow in ("tvl1", "farneback"):
                r = bench_end_to_end(video, flow, args.device, os.cpu_count() or 1)
                res[f"e2e_{flow}"] = r
                print(
                    f"end to end ({flow:9s})     : {r['segments_per_s']:8.3f} segments/s, {r['segments_per_cpu_s']:8.3f} per CPU-s  "
                    f"(prepare {r['prepare_s']:.1f} s + I3D {r['embed_s']:.1f} s for {r['segments']} segments)",
                    flush=True,
                )
    # Which stage bounds a single process (times per segment add up) and a pipelined cluster (slowest stage per resource)?
    # CPU runs compare CPU-seconds per segment (robust to other processes on the host); GPU runs wall time.
    key = "segments_per_s" if args.device.startswith("cuda") else "segments_per_cpu_s"
    per_seg = {}
    if "decode" in res:
        per_seg["decode"] = 1 / res["decode"]["segments_per_cpu_s"]
    if "flow_tvl1_1thread" in res:
        per_seg["flow (tvl1)"] = 1 / res["flow_tvl1_1thread"]["segments_per_cpu_s"]
    i3d_keys = [k for k in res if k.startswith("i3d_")]
    if i3d_keys:
        for stream in ("rgb", "flow"):
            best = max((res[k][key] for k in i3d_keys if k.startswith(f"i3d_{stream}")), default=None)
            if best:
                per_seg[f"i3d {stream}"] = 1 / best
    if per_seg:
        total = sum(per_seg.values())
        bound = max(per_seg, key=per_seg.get)
        res["bound"] = {
            "stage": bound,
            "share": per_seg[bound] / total,
            "seconds_per_segment": per_seg,
            "pipeline_segments_per_s": 1 / total,
        }
        print(f"{'CPU-' if key.endswith('cpu_s') else ''}seconds per segment: " + ", ".join(f"{k} {v:.3f}" for k, v in per_seg.items()))
        unit = "segments/s" if key == "segments_per_s" else "segments per CPU-s"
        print(
            f"bound by: {bound} ({100 * per_seg[bound] / total:.0f}% of the time per segment); all stages in one process: {1 / total:.3f} "
            f"{unit}"
        )
        if "flow (tvl1)" in per_seg and key == "segments_per_s" and "i3d rgb" in per_seg and "i3d flow" in per_seg:
            gpu_rate = 1 / (per_seg["i3d rgb"] + per_seg["i3d flow"])
            print(
                f"one {args.device} device embeds {gpu_rate:.1f} two-stream segments/s: it needs {gpu_rate * per_seg['flow (tvl1)']:.0f} "
                "CPU cores of TV-L1 to keep up"
            )
    print(
        f"(host: {res['host']['cpus']} CPUs, load average {res['host']['load_avg']:.1f}, torch {res['host']['torch']}, OpenCV "
        f"{res['host']['opencv']}"
        + (f", GPU {res['host']['gpu']}" if res["host"]["gpu"] else "")
        + ")"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
