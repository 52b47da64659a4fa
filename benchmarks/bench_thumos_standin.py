"""The localization-quality report on the THUMOS'14 stand-in (issue 3): STAR, its ablations, STPN.

Steps (each skipped when its output already exists, so a rerun only re-benchmarks):
1. ``build_standin(<work>/standin, scale, seed)``: the stand-in in the W-TALC layout;
2. ``import_wtalc`` into ``<work>/lake`` (a no-op when the same content is already there);
3. ``run_benchmark``: STAR (the default recipe: stage 1 + self-training), its stage 1 alone, the
   paper preset, the STPN-style baseline, the supervised upper bound, Table 1 (all module
   combinations) and Table 2 (localizers), THUMOS'14 protocol.

One setting and seed through the real lake path; the multi-seed, multi-setting tables of issue 14
come from ``benchmarks/bench_protocol.py``.

    python benchmarks/bench_thumos_standin.py --work /tmp/bench                 # full size, seed 0, the defaults
    python benchmarks/bench_thumos_standin.py --difficulty context --seed 1     # another setting and seed
    python benchmarks/bench_thumos_standin.py --preset paper --no-ablation      # the paper's literal STAR
    python benchmarks/bench_thumos_standin.py --epochs 8 --set train.lr=1e-3    # reduced budget, say so
    python benchmarks/bench_thumos_standin.py --scale small --epochs 30 --set train.lr=3e-3   # CI-sized smoke run

Writes ``<work>/report-<tag>.json`` (the `star benchmark` JSON plus timings, peak memory, machine
load) and ``<work>/report-<tag>.md`` (the tables as in the issue report) and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

log = logging.getLogger("bench_thumos_standin")


def ensure_data(work: Path, scale: str, seed: int, dataset: str, difficulty: str = "standard") -> tuple[str, dict]:
    """Stand-in files and lake dataset under ``work``; returns (lake URI, phase timings)."""
    from jobs.runtime import Progress
    from star_core.io import standin
    from star_core.io.wtalc_import import import_wtalc

    timings: dict[str, float] = {}
    out = work / (f"standin-{scale}-s{seed}" + ("" if difficulty == "standard" else f"-{difficulty}"))
    marker_path = out / standin.ANNOTATIONS_DIR / "synth.json"
    if not (marker_path.exists() and (out / standin.FEATURES_FILE).exists()):
        progress: Progress | None = None

        def on_progress(done: int, total: int, n: int) -> None:
            nonlocal progress
            progress = progress or Progress(total=total, what="videos")
            progress.update(done=1, segments=n)

        t0 = time.monotonic()
        standin.build_standin(str(out), scale, seed, on_progress=on_progress, difficulty=difficulty)
        timings["synth_s"] = time.monotonic() - t0
    marker = json.loads(marker_path.read_text())
    lake = str(work / "lake")
    t0 = time.monotonic()
    result = import_wtalc(marker["features"], marker["annotations"], lake, dataset)
    timings["import_s"] = time.monotonic() - t0
    log.info("dataset %s v%d (%s): %s", dataset, result.version, "created" if result.created else "unchanged", result.splits)
    return lake, timings


def markdown(report, doc: dict, args: argparse.Namespace, timings: dict) -> str:
    """The issue report: tables, timings, memory, what was run."""
    lines = [
        f"# STAR on the THUMOS'14 stand-in ({args.scale}, {args.difficulty}, seed {args.seed})",
        "",
        f"Preset: {args.preset or 'none (the default recipe)'}; config overrides: "
        f"`{' '.join(args.overrides) or '(none)'}`; epochs: {doc['config']['train.epochs']}.",
        f"Data: {doc['dataset']['n_train']} training videos, {doc['dataset']['n_test']} test videos "
        f"(excluded: {', '.join(doc['protocol']['exclude_videos'])}; Ambiguous segments ignored).",
        "",
        "```",
        report.tables(),
        "```",
        "",
        "| phase | wall s |",
        "|---|---|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    lines += [
        "",
        f"Peak RSS: {doc['peak_rss_mb']:.0f} MB (main process), {doc['worker_peak_rss_mb']:.0f} MB (largest "
        f"Table 1 worker). Machine: {os.cpu_count()} CPUs, {platform.processor() or platform.machine()}, "
        f"load average at start {doc['machine']['load_start']}, at end {doc['machine']['load_end']}; CPU "
        f"time {doc['machine']['cpu_s']:.0f} s (+ {doc['machine']['cpu_children_s']:.0f} s in workers).",
        "",
        "Attention diagnostics of the main model on the test split (teacher-forced):",
        "",
    ]
    lines += [f"- {k}: {v:.3f}" for k, v in doc["diagnostics"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="./bench-standin", help="work folder (stand-in files, lake, reports)")
    parser.add_argument("--scale", choices=("small", "full"), default="full")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--difficulty",
        default="standard",
        help="stand-in difficulty setting (star_core.synth.DIFFICULTIES); several seeds and settings: bench_protocol.py",
    )
    parser.add_argument("--preset", default=None, help="named settings of the main row (paper)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every model (default: train.epochs of the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    parser.add_argument("--config", default=None, help="YAML/JSON config file")
    parser.add_argument("--no-ablation", action="store_true", help="main row and baseline only")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--workers", type=int, default=1, help="processes for the Table 1 trainings (1 torch thread each)")
    parser.add_argument("--tag", default=None, help="report name suffix (default: scale-seed-epochs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import resource

    import torch

    from jobs.benchmark import run_benchmark
    from star_core.config import load_config

    if args.threads:
        torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t0 = time.monotonic()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = f"th14-standin-{args.scale}-s{args.seed}" + ("" if args.difficulty == "standard" else f"-{args.difficulty}")
    lake, timings = ensure_data(work, args.scale, args.seed, dataset, args.difficulty)
    overrides = list(args.overrides) + ([f"train.epochs={args.epochs}"] if args.epochs else [])
    cfg = load_config(
        args.config,
        overrides,
        preset=args.preset,
        values={"storage.lake_uri": lake, "benchmark.ablation": not args.no_ablation, "benchmark.processes": args.workers},
    )
    t1 = time.monotonic()
    report = run_benchmark(cfg, dataset)
    timings["benchmark_s"] = time.monotonic() - t1
    timings["total_s"] = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    doc = report.to_json()
    doc["timings"] = {k: round(v, 1) for k, v in timings.items()}
    doc["machine"] = {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_start": [round(x, 1) for x in load_start],
        "load_end": [round(x, 1) for x in os.getloadavg()],
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_children_s": round(sum(getattr(resource.getrusage(resource.RUSAGE_CHILDREN), f) for f in ("ru_utime", "ru_stime")), 1),
    }
    doc["overrides"] = overrides
    tag = args.tag or f"{args.scale}-{args.difficulty}-s{args.seed}-e{cfg.train.epochs}"
    (work / f"report-{tag}.json").write_text(json.dumps(doc, indent=2, default=float))
    (work / f"report-{tag}.md").write_text(markdown(report, doc, argparse.Namespace(**{**vars(args), "overrides": overrides}), timings))
    print(report.tables())
    print(f"\nreport: {work / f'report-{tag}.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
