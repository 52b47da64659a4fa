"""Where the detection job's memory goes over time: private memory per process, every second.

Runs the I/O path of ``jobs.detect`` (Ray Data Parquet read + row decoding in the actors, no
model; ``bench_detect.io_only_pass``) over a stand-in lake written by ``bench_detect.py`` and
prints the summed private memory (heaps, without the object store's shared arena) of the whole
process tree every 10 s, and the processes holding it at the peak. A flat series over the run
means memory does not grow with the number of videos streamed.

    python benchmarks/bench_detect_memory.py /tmp/star-bench-detect/lake-10000 [--object-store-mb 2048]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import bench_detect as b  # noqa: E402


def _cmd(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline") as fh:
            return fh.read().replace("\0", " ").strip()[:50]
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("lake", help="a lake written by bench_detect.py (lake-<N>)")
    parser.add_argument("--object-store-mb", type=int, default=2048)
    parser.add_argument("--actors", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH", "")]
    )  # workers import bench_detect

    from jobs.runtime import ensure_ray

    ensure_ray(None, num_cpus=2, object_store_memory=args.object_store_mb * 2**20)
    stop = threading.Event()
    peak: dict = {"mb": 0, "at_s": 0.0, "top": []}
    series: list[tuple[int, int, int]] = []
    t0 = time.monotonic()

    def sample() -> None:
        while not stop.wait(1.0):
            rows = []
            for pid in b._descendants(os.getpid()):
                rows.append((b.memory_kb(pid)[1] // 1024, pid, _cmd(pid)))
            total = sum(r[0] for r in rows)
            series.append((round(time.monotonic() - t0), total, len(rows)))
            if total > peak["mb"]:
                peak.update(mb=total, at_s=time.monotonic() - t0, top=sorted(rows, reverse=True)[:8])

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    result = b.io_only_pass(args.lake, args.actors, 0.5, 16)
    stop.set()
    thread.join()
    print(result)
    print(f"peak private memory {peak['mb']} MB at {peak['at_s']:.0f} s, largest processes:")
    for mb, pid, cmd in peak["top"]:
        print(f"  {mb:6d} MB  {pid:7d}  {cmd}")
    print("series (elapsed s, private MB, processes), every 10 s:")
    for s, mb, n in series[::10]:
        print(f"  {s:5d} {mb:6d} {n:3d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
