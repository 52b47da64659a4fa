"""TV-L1 optical flow speed: the PyTorch TV-L1 (``tvl1-torch``) against OpenCV's DualTVL1, same frames, same process.

For each frame size (224x224 and 256x340, the short-side-256 frame of 4:3 video on which the
pipeline computes flow) it measures, on one set of generated frame pairs (a textured scene panning
2 px/frame with a disc crossing it):

- OpenCV TV-L1 pairs/s on one thread (the per-core baseline of docs/cost_model.md);
- tvl1-torch pairs/s on ``--device`` for each batch size of the sweep, its peak memory (CPU: peak RSS
  over the run minus the RSS before it, sampled every 5 ms; CUDA: torch.cuda.max_memory_allocated) and
  the primal-dual iterations per pair (the work the epsilon rule left to do);
- the ratio tvl1-torch / OpenCV pairs/s, and the end-point error between the two flows (px).

    python benchmarks/bench_flow.py --device cpu                        # ~3 min on 2 cores; torch on 1 thread
    python benchmarks/bench_flow.py --device cuda                       # GPU: batch sweep up to 256 pairs
    python benchmarks/bench_flow.py --device cuda --compile             # + torch.compile'd step (fused kernels)
    python benchmarks/bench_flow.py --device cuda --pairs 512 --batches 64,128,256,512

Results go to benchmarks/results/flow_<device>.json (``--json`` to choose). The CUDA target of issue 15:
at least 300 pairs/s at 256x340 on one H100-class GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = ((224, 224), (256, 340))  # (H, W)


def make_pairs(n_pairs: int, height: int, width: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, H, W) uint8 first and second frames: a smooth texture panning 2 px/frame right, a bright disc moving down-left."""
    import cv2

    rng = np.random.default_rng(seed)
    n = n_pairs + 1
    big = cv2.GaussianBlur(rng.uniform(0, 255, (height + 8, width + 2 * n + 8)).astype(np.float32), (0, 0), 3)
    big = ((big - big.min()) / (big.max() - big.min()) * 200 + 20).astype(np.uint8)
    frames = []
    for i in range(n):
        img = np.ascontiguousarray(big[4:4 + height, 2 * i:2 * i + width])
        cv2.circle(img, (width - 40 - 3 * i, 40 + 2 * i), 25, 250, -1)
        frames.append(img)
    frames = np.stack(frames)
    return frames[:-1], frames[1:]


class PeakRSS:
    """Peak resident memory of this process while the block runs, minus the RSS when it started (bytes)."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s, self.peak_b, self.base_b = every_s, 0, 0
        self._stop = threading.Event()

    @staticmethod
    def rss_b() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak_b = max(self.peak_b, self.rss_b())

    def __enter__(self) -> "PeakRSS":
        self.base_b = self.peak_b = self.rss_b()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_b = max(self.peak_b, self.rss_b())

    @property
    def delta_b(self) -> int:
        return self.peak_b - self.base_b


def bench_opencv(first: np.ndarray, second: np.ndarray) -> tuple[dict, np.ndarray]:
    import cv2

    from star_core.video.flow import FlowEstimator

    cv2.setNumThreads(1)
    est = FlowEstimator("tvl1")
    est(first[0], second[0])  # warm-up (allocations)
    c0, t0 = time.process_time(), time.perf_counter()
    flows = np.stack([est(a, b) for a, b in zip(first, second)])
    dt, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    return {"pairs": len(first), "seconds": round(dt, 3), "pairs_per_s": round(len(first) / dt, 3), "cpu_s": round(cpu_s, 3),
            "pairs_per_cpu_s": round(len(first) / cpu_s, 3), "threads": 1}, flows


def bench_torch(first: np.ndarray, second: np.ndarray, device: str, batch: int, reference: np.ndarray, compile: bool = False) -> dict:
    import torch

    from star_core.video.flow_torch import TorchTVL1

    solver = TorchTVL1(device=device, batch_size=batch, compile=compile)
    warm = min(batch, len(first)) if compile else 1  # compiled: every level's shape at this batch size, before timing
    solver.flow_pairs(first[:warm], second[:warm])  # warm-up: allocator, kernels
    solver.stats = type(solver.stats)()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_b = torch.cuda.memory_allocated()
    with PeakRSS() as rss:
        c0, t0 = time.process_time(), time.perf_counter()
        flow = solver.flow_pairs(first, second)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        dt, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "batch": batch, "compiled": compile, "pairs": len(first), "seconds": round(dt, 3), "pairs_per_s": round(len(first) / dt, 3),
        "cpu_s": round(cpu_s, 3), "pairs_per_cpu_s": round(len(first) / cpu_s, 3),  # CPU: robust to other load on a shared host
        "iterations_per_pair": round(solver.stats.pair_iterations / max(solver.stats.pairs, 1), 1),
        "batch_iterations": solver.stats.batch_iterations,
        # on the pairs OpenCV computed (the first len(reference))
        "epe_vs_opencv_px": round(float(np.linalg.norm(_hwc(flow[:len(reference)]) - reference, axis=-1).mean()), 5),
    }
    if device.startswith("cuda"):
        out["peak_memory_mb"] = round((torch.cuda.max_memory_allocated() - base_b) / 2**20, 1)
        out["memory_kind"] = "torch.cuda.max_memory_allocated - allocated before"
    else:
        out["peak_memory_mb"] = round(rss.delta_b / 2**20, 1)
        out["memory_kind"] = "peak RSS - RSS before (sampled every 5 ms)"
    return out


def _hwc(flow) -> np.ndarray:
    """(N, 2, H, W) torch flow -> (N, H, W, 2) numpy (OpenCV's layout)."""
    return flow.permute(0, 2, 3, 1).cpu().numpy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device for tvl1-torch: cpu | cuda | cuda:N (OpenCV always runs on the CPU)")
    ap.add_argument("--pairs", type=int, default=None, help="frame pairs per size (default: 8 on cpu, 256 on cuda)")
    ap.add_argument("--opencv-pairs", type=int, default=None, help="pairs OpenCV computes (default: min(pairs, 8)); the EPE uses these")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default: 1,4,8 on cpu; 16,64,128,256 on cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a per-core figure, like OpenCV's)")
    ap.add_argument("--sizes", default=None, help="HxW list, e.g. 224x224,256x340 (default both)")
    ap.add_argument("--compile", action="store_true", help="also run tvl1-torch with torch.compile (fused step) at each batch size")
    ap.add_argument("--json", default=None, help="results file (default benchmarks/results/flow_<device>.json)")
    ap.add_argument("--opencv-cache", default=None,
                    help="npz of OpenCV's results: read when present, else computed and written (for a GPU host without opencv-contrib)")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("bench_flow: --device cuda but torch sees no GPU", file=sys.stderr)
        return 2
    n_pairs = args.pairs or (256 if cuda else 8)
    n_cv = args.opencv_pairs or min(n_pairs, 8)
    batches = [int(b) for b in (args.batches or ("16,64,128,256" if cuda else "1,4,8")).split(",")]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")] if args.sizes else list(SIZES)
    report = {
        "device": args.device, "gpu": torch.cuda.get_device_name() if cuda else None, "torch": torch.__version__,
        "torch_threads": args.threads, "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "load_avg_1min_at_start": round(os.getloadavg()[0], 2), "sizes": {},
    }
    cache = dict(np.load(args.opencv_cache, allow_pickle=False)) if args.opencv_cache and Path(args.opencv_cache).exists() else None
    cache_out: dict[str, np.ndarray] = {}
    for h, w in sizes:
        first, second = make_pairs(n_pairs, h, w)
        key = f"{h}x{w}"
        if cache is not None:  # OpenCV measured on another host (recorded as such in the report)
            cv_res = {**json.loads(str(cache[f"{key}/res"])), "measured_on": str(cache["host"])}
            cv_flow = cache[f"{key}/flow"][:n_cv]
        else:
            cv_res, cv_flow = bench_opencv(first[:n_cv], second[:n_cv])
            cache_out[f"{key}/res"], cache_out[f"{key}/flow"] = np.array(json.dumps(cv_res)), cv_flow
        print(f"{h}x{w}: OpenCV TV-L1 (1 thread) {cv_res['pairs_per_s']:.3f} pairs/s "
              f"({cv_res['pairs_per_cpu_s']:.3f} per CPU-s) over {n_cv} pairs", flush=True)
        runs = []
        for batch, compiled in [(b, c) for b in batches for c in ((False, True) if args.compile else (False,))]:
            res = bench_torch(first, second, args.device, batch, cv_flow, compiled)
            res["ratio_vs_opencv_core"] = round(res["pairs_per_s"] / cv_res["pairs_per_s"], 3)  # wall clock, same process
            if not cuda:  # both on one thread: CPU-seconds are the fairer per-core comparison on a loaded host
                res["cpu_ratio_vs_opencv"] = round(res["pairs_per_cpu_s"] / cv_res["pairs_per_cpu_s"], 3)
            runs.append(res)
            per_cpu = "" if cuda else f" (x{res['cpu_ratio_vs_opencv']:.2f} per CPU-s)"
            print(f"  tvl1-torch {args.device} batch {batch:4d}{' compiled' if compiled else ''}: {res['pairs_per_s']:9.3f} pairs/s  "
                  f"x{res['ratio_vs_opencv_core']:.2f} vs one OpenCV core{per_cpu}  peak {res['peak_memory_mb']:.0f} MB  "
                  f"{res['iterations_per_pair']:.0f} it/pair  EPE {res['epe_vs_opencv_px']:.4f} px", flush=True)
        best = max(runs, key=lambda r: r["pairs_per_s"])
        report["sizes"][f"{h}x{w}"] = {"opencv": cv_res, "torch": runs, "best_batch": best["batch"], "best_compiled": best["compiled"],
                                       "best_ratio_vs_opencv_core": best["ratio_vs_opencv_core"]}
        print(f"  best: batch {best['batch']}, {best['pairs_per_s']:.3f} pairs/s = {best['ratio_vs_opencv_core']:.2f} x OpenCV on one core",
              flush=True)
    report["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    if args.opencv_cache and cache is None:
        np.savez_compressed(args.opencv_cache, host=np.array(platform.node()), **cache_out)
    out = Path(args.json or Path(__file__).resolve().parent / "results" / f"flow_{args.device.replace(':', '')}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"results: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
